"""Wake latency: from a committed allocation to the agent's first instruction running inside its full envelope.

Each wake: an allocated execution is committed, then timed from the execution manager picking it up (claim
transaction, workspace, cgroups, rlimits, bubblewrap, spawn) until the agent's first statement runs: a
Python program whose first line reads the clock, and which then reports that reading over the System Service
socket (so the report's own latency is not counted). The agent exits and the next wake starts. Baseline: the
same program started with a plain ``subprocess.Popen`` and no sandbox at all.

Run: ``python bench/bench_wake.py [--wakes 200]`` (after ``make test`` has set up ``.venv``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from syntropism.config import Settings
from syntropism.core.execution import ExecutionManager
from syntropism.domain.models import time_ordered_id
from syntropism.infra.agents import register_agent
from syntropism.infra.database import Database
from syntropism.infra.sandbox import Sandbox
from syntropism.infra.tables import Execution

TARGET_P50_MS = 50
AGENT = """\
import time; first_instruction = time.time()
import os, socket
s = socket.socket(socket.AF_UNIX); s.connect(os.environ["SYSTEM_SERVICE_SOCKET"])
s.sendall(repr(first_instruction).encode()); s.close()
"""


class Listener:
    """The stand-in System Service socket: receives the wall-clock time of each agent's first instruction."""

    def __init__(self) -> None:
        self.heard = asyncio.Event()
        self.at = 0.0

    async def on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.at = float(await reader.read(64))
        writer.close()
        self.heard.set()

    async def wait(self) -> float:
        async with asyncio.timeout(30):
            await self.heard.wait()
        self.heard.clear()
        return self.at


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def sandboxed_wakes(root: Path, socket_path: Path, listener: Listener, wakes: int) -> tuple[list[float], Sandbox]:
    settings = Settings(state_dir=root / "state", cpu_cores=1, memory_bytes=2**30)
    database = Database(settings.effective_database_url)
    database.migrate()
    with database.transaction() as session:
        register_agent(session, "sleeper")
    sandbox = Sandbox.detect()
    manager = ExecutionManager(database, settings, sandbox, service_socket=socket_path)
    (manager.workspace_of("sleeper") / "main.py").write_text(AGENT)
    samples = []
    try:
        for i in range(wakes + 5):  # the first few warm the page cache and are not counted
            execution_id = time_ordered_id()
            with database.transaction() as session:  # what a market cycle commits for a winner
                session.add(
                    Execution(
                        id=execution_id,
                        agent_id="sleeper",
                        cycle=i,
                        cpu_ppm=500_000,
                        memory_ppm=250_000,
                        tokens_ppm=0,
                        attention_ppm=0,
                        duration_ms=10_000,
                    )
                )
            began = time.time()
            await manager.start_allocated()
            heard = await listener.wait()
            outcome = await manager.wait(execution_id)
            if outcome.reason.value != "completed":
                raise RuntimeError(f"wake {i} ended {outcome.reason.value}: {outcome.detail}")
            if i >= 5:
                samples.append((heard - began) * 1000)
    finally:
        await manager.stop()
        database.dispose()
    return samples, sandbox


async def plain_wakes(root: Path, socket_path: Path, listener: Listener, wakes: int) -> list[float]:
    program = root / "plain.py"
    program.write_text(AGENT)
    env = {"SYSTEM_SERVICE_SOCKET": str(socket_path), "PATH": "/usr/bin:/bin"}
    samples = []
    for i in range(wakes + 5):
        began = time.time()
        process = subprocess.Popen([sys.executable, str(program)], env=env, cwd=root)  # noqa: ASYNC220 - the baseline
        heard = await listener.wait()
        await asyncio.to_thread(process.wait)
        if i >= 5:
            samples.append((heard - began) * 1000)
    return samples


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wakes", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-wake-") as tmp:
        root = Path(tmp)
        socket_path = root / "api.sock"
        listener = Listener()
        server = await asyncio.start_unix_server(listener.on_connect, path=str(socket_path))
        async with server:
            wake, sandbox = await sandboxed_wakes(root, socket_path, listener, args.wakes)
            plain = await plain_wakes(root, socket_path, listener, args.wakes)
    print(f"  layers applied: {', '.join(sandbox.layers)}")
    if sandbox.unavailable:
        print(f"  layers MISSING on this host: {', '.join(sandbox.unavailable)} (the figure is not the full envelope)")
    figures = {
        "wake p50": percentile(wake, 0.5),
        "wake p99": percentile(wake, 0.99),
        "plain subprocess p50": percentile(plain, 0.5),
        "plain subprocess p99": percentile(plain, 0.99),
    }
    for name, value in figures.items():
        print(f"  {name:22s} {value:7.1f} ms")
    print(f"  wake mean {statistics.fmean(wake):.1f} ms over {len(wake)} wakes")
    results = [
        {
            "bench": "wake",
            "metric": name,
            "value": round(value, 2),
            "unit": "ms",
            "baseline": round(figures["plain subprocess p50"], 2) if name.startswith("wake") else None,
            "target": TARGET_P50_MS if name == "wake p50" else None,
        }
        for name, value in figures.items()
    ]
    print(json.dumps(results))


if __name__ == "__main__":
    asyncio.run(main())
