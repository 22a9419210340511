"""A flooding agent cannot degrade the System Service for an honest one: bid latency, cycle time, runtime memory.

A real runtime runs in this process (SQLite at full durability, embedded NATS, the sandbox, the System Service on
TCP and on its Unix socket) and the benchmark clears its market itself every ``--cycle-seconds``. Two real
sandboxed agents run in it. The honest one only hands its execution's token to the benchmark, which then bids
for it from this process over TCP — a normal bid (1 credit, one cycle), timed from the request to the answer,
then withdrawn so it never reaches the pending-bid cap — at a fixed pace. The flooder calls the System Service
over its socket as fast as its bundle (half the cores, a tenth of the memory, half the token rate) lets it, on
several connections at once: 20 kB messages to the honest agent, micro-bids (the minimum amount, and one below
it) and chat completions from a fake OpenAI-compatible upstream (in a process of its own), and counts each
answer by status and reason — so the figures show the flood was refused by the bounds (402, 422, 429), not
that it never happened.

Baseline: the same honest workload and the same cycles with no flooder (the quiet phase, run first). Targets:
the honest bid's p99 and the mean cycle time under the flood within 2× of the quiet figures, and the runtime's
resident memory (this process: VmRSS) growing by less than ``TARGET_RSS_GROWTH_MIB`` while the flood lasts.
Honest bids and cycles take turns (a bid is withdrawn before the next cycle), so no honest bid ever wins. The
honest pace (8 bids and 8 withdrawals a second) stays within one execution's request budget
(``requests_per_second_per_execution``); the flooder's does not, and its surplus waits for its own turns
(``syntropism/api/fairness.py``) — that, the cheap refusals and the bounded writes are what is measured.

Run: ``python bench/bench_flood.py [--samples 200] [--interval-ms 125] [--connections 4]`` (after ``make test``
has set up ``.venv``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from bench_api import Connection
from bench_intelligence import upstream_server  # the fake OpenAI-compatible upstream, in a process of its own

from syntropism.config import Settings
from syntropism.core.execution import Outcome
from syntropism.runtime import Runtime

TARGET_RATIO = 2.0  # under the flood, at most this many times the quiet figure
TARGET_RSS_GROWTH_MIB = 100.0  # the runtime's growth while the flood lasts, whatever the flooder sends
OPERATOR = "bench-operator"
HONEST_BID = {
    "bundle": {"cpu_percent": "0.1", "memory_percent": "0.05", "duration_seconds": 5},
    "amount": "1",
    "lifetime_cycles": 1,
}
# The honest agent: hands its token to the benchmark (through its workspace), then idles until told to stop.
HONEST = """\
import os, time
from datetime import datetime
with open("token.tmp", "w") as out:
    out.write(os.environ["SYNTROPISM_TOKEN"])
os.rename("token.tmp", "token")
end = datetime.fromisoformat(os.environ["SYNTROPISM_DEADLINE"]).timestamp() - 1
while time.time() < end and not os.path.exists("stop"):
    time.sleep(0.1)
"""
# The flooder: CONNECTIONS threads, each cycling through the four calls as fast as answers come back.
FLOODER = """\
import collections, json, os, threading, time, uuid
from datetime import datetime
import httpx

CONNECTIONS, TO = int(os.environ.get("FLOOD_CONNECTIONS", "__CONNECTIONS__")), "__TO__"
end = datetime.fromisoformat(os.environ["SYNTROPISM_DEADLINE"]).timestamp() - 1.5
big = "x" * 20000
unfit = {"cpu_percent": "1", "duration_seconds": 1}  # never fits beside a running execution: it never wins
calls = [
    ("message", "/social/message", {"to_agent": TO, "body": big}),
    ("bid 0.001", "/market/bid", {"bundle": unfit, "amount": "0.001", "lifetime_cycles": 1000}),
    ("bid 0.000001", "/market/bid", {"bundle": unfit, "amount": "0.000001"}),
    ("inference", "/intelligence/inference", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}),
]
counts, lock, run = collections.Counter(), threading.Lock(), uuid.uuid4().hex[:8]
began = time.time()

def flood(worker):
    client = httpx.Client(
        transport=httpx.HTTPTransport(uds=os.environ["SYSTEM_SERVICE_SOCKET"]),
        base_url=os.environ["SYSTEM_SERVICE_URL"],
        headers={"Authorization": "Bearer " + os.environ["SYNTROPISM_TOKEN"]},
        timeout=30,
    )
    i = 0
    while time.time() < end and not os.path.exists("stop"):
        name, path, body = calls[i % len(calls)]
        i += 1
        try:
            answer = client.post(path, json=body, headers={"Idempotency-Key": f"{run}-{worker}-{i}"})
            status = answer.status_code
            reason = None if status < 300 else answer.json().get("reason")
        except Exception as exc:
            status, reason = 0, type(exc).__name__
        with lock:
            counts[f"{name} {status} {reason or 'ok'}"] += 1
        if i == 1:
            open("flooding", "w").close()

threads = [threading.Thread(target=flood, args=(n,)) for n in range(CONNECTIONS)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
with open("result.tmp", "w") as out:
    json.dump({"counts": dict(counts), "seconds": time.time() - began}, out)
os.rename("result.tmp", "result.json")
"""


def rss_mib() -> float:
    """This process's resident memory — the runtime's, since it runs here."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


@dataclass
class Phase:
    """What one phase measured."""

    name: str
    bids_ms: list[float] = field(default_factory=list)
    cycles_ms: list[float] = field(default_factory=list)  # each clear_once, wall clock
    clearing_ms: list[float] = field(default_factory=list)  # the allocation transaction alone (report.seconds)
    failures: list[str] = field(default_factory=list)
    rss_start: float = 0.0
    rss_end: float = 0.0
    rss_peak: float = 0.0
    seconds: float = 0.0

    def watch_memory(self) -> None:
        self.rss_peak = max(self.rss_peak, rss_mib())


class Bench:
    """The runtime driven by the benchmark: its agents, its cycles, the honest agent's timed bids."""

    def __init__(self, runtime: Runtime, admin: httpx.AsyncClient, args: argparse.Namespace) -> None:
        self.runtime, self.admin, self.args = runtime, admin, args
        self.turn = asyncio.Lock()  # an honest bid and its withdrawal, or a cycle: never both at once
        self.outcomes: dict[str, Outcome] = {}
        self.ended = asyncio.Event()
        assert runtime.executions is not None
        runtime.executions.on_terminated(self._on_end)

    def _on_end(self, outcome: Outcome) -> None:
        self.outcomes[outcome.agent_id] = outcome
        self.ended.set()

    async def stop(self, *agent_ids: str) -> None:
        """Tell the agents to stop (they look for a ``stop`` file) and wait until their executions ended."""
        for agent_id in agent_ids:
            (self.workspace(agent_id) / "stop").touch()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                while not set(agent_ids) <= self.outcomes.keys():
                    self.ended.clear()
                    await self.ended.wait()

    def workspace(self, agent_id: str) -> Path:
        return self.runtime.settings.effective_workspace_root / agent_id

    async def agent(self, agent_id: str, program: str, grant: str) -> None:
        body = {"agent_id": agent_id, "files": {"main.py": program}, "initial_grant": grant}
        created = await self.admin.post("/admin/agents", json=body)
        assert created.status_code == 201, created.text

    async def run(self, agent_id: str, bundle: dict[str, Any], marker: str) -> None:
        """Bid for one run of ``agent_id``, clear the market, and wait until the run wrote ``marker``."""
        placed = await self.admin.post(
            "/admin/bids", headers={"Idempotency-Key": f"run-{agent_id}"},
            json={"agent_id": agent_id, "bundle": bundle, "amount": "1"},
        )  # fmt: skip
        assert placed.status_code == 200, placed.text
        async with self.turn:
            report = await self.runtime.clear_once()
        assert placed.json()["bid_id"] in report.winners, f"the bid for {agent_id} did not win: {report}"
        deadline = time.monotonic() + 60
        while not (self.workspace(agent_id) / marker).exists():
            if agent_id in self.outcomes:
                raise RuntimeError(f"{agent_id} ended before writing {marker}: {self.outcomes[agent_id]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{agent_id} did not write {marker} within 60 s")
            await asyncio.sleep(0.02)

    async def honest_bid(self, connection: Connection, key: str) -> tuple[float, str | None]:
        """One normal bid, timed, then its withdrawal; returns the latency and what went wrong, if anything."""
        async with self.turn:
            body = json.dumps(HONEST_BID).encode()
            began = time.perf_counter()
            status, answer = await connection.request("POST", "/market/bid", body, key)
            latency = (time.perf_counter() - began) * 1000
            if status != 200:
                return latency, f"bid {status} {answer[:200].decode(errors='replace')}"
            bid_id = json.loads(answer)["bid_id"]
            status, answer = await connection.request("DELETE", f"/market/bid/{bid_id}", key=f"{key}-withdraw")
            if status != 200:
                return latency, f"withdraw {status} {answer[:200].decode(errors='replace')}"
            return latency, None

    async def cycles(self, phase: Phase, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.args.cycle_seconds)
            if stop.is_set():
                return
            async with self.turn:
                began = time.perf_counter()
                report = await self.runtime.clear_once()
                phase.cycles_ms.append((time.perf_counter() - began) * 1000)
            phase.clearing_ms.append(report.seconds * 1000)
            phase.watch_memory()

    async def measure(self, phase: Phase, connection: Connection, *, warm_up: int = 0) -> None:
        """``--samples`` honest bids at a fixed pace (at most ``--max-seconds``) while the market clears."""
        for i in range(warm_up):
            await self.honest_bid(connection, f"warm-{phase.name}-{i}")
        phase.rss_start = phase.rss_peak = rss_mib()
        stop = asyncio.Event()
        cycling = asyncio.create_task(self.cycles(phase, stop))
        interval = self.args.interval_ms / 1000
        began = time.monotonic()
        due, i = began, 0
        while len(phase.bids_ms) < self.args.samples and time.monotonic() - began < self.args.max_seconds:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            latency, failure = await self.honest_bid(connection, f"{phase.name}-{i}-{time.monotonic_ns()}")
            phase.bids_ms.append(latency)
            if failure:
                phase.failures.append(failure)
            if i % 20 == 0:
                phase.watch_memory()
            i += 1
            due = max(due + interval, time.monotonic() - interval)  # paced; late samples are not made up for
        phase.seconds = time.monotonic() - began
        stop.set()
        await cycling
        phase.rss_end = rss_mib()
        phase.watch_memory()


async def bench(args: argparse.Namespace, llm_url: str, state_dir: Path) -> tuple[Phase, Phase, dict[str, Any]]:
    settings = Settings(
        state_dir=state_dir,
        operator_token=OPERATOR,
        api_port=0,
        clearing_interval_seconds=3600,  # the benchmark clears the market itself
        cpu_cores=2,
        memory_bytes=2 * 2**30,
        llm_base_url=llm_url,
        dormant_grace_seconds=3600,
        kill_grace_seconds=0,
        log_level="WARNING",
    )
    runtime = Runtime(settings)
    await runtime.start()
    try:
        assert runtime.api is not None
        async with httpx.AsyncClient(
            base_url=runtime.api.url, headers={"Authorization": f"Bearer {OPERATOR}"}, timeout=30
        ) as admin:
            b = Bench(runtime, admin, args)
            flood_seconds = args.max_seconds + 30  # the flood outlasts the measurement; the benchmark stops it
            await b.agent("honest", HONEST, grant="100")
            flooder = FLOODER.replace("__CONNECTIONS__", str(args.connections)).replace("__TO__", "honest")
            await b.agent("flooder", flooder, grant="100")
            await b.run(
                "honest",
                {"cpu_percent": "0.01", "memory_percent": "0.02", "duration_seconds": 3 * flood_seconds + 60},
                "token",
            )
            token = (b.workspace("honest") / "token").read_text()
            connection = await Connection.open(runtime.api.url, token)
            try:
                quiet, flood = Phase("quiet"), Phase("flood")
                await b.measure(quiet, connection, warm_up=20)
                await b.run(
                    "flooder",
                    {"cpu_percent": "0.5", "memory_percent": "0.1", "tokens_percent": "0.5",
                     "duration_seconds": flood_seconds},
                    "flooding",
                )  # fmt: skip
                await b.measure(flood, connection)
            finally:
                await connection.close()
            flood_running = "flooder" not in b.outcomes  # the flood lasted the whole measurement
            await b.stop("flooder", "honest")
            result_file = b.workspace("flooder") / "result.json"
            flooded = json.loads(result_file.read_text()) if result_file.exists() else {"counts": {}, "seconds": 0}
            outcome = b.outcomes.get("flooder")
            flooded |= {
                "lasted": flood_running,
                "ended": outcome.reason.value if outcome else "still running",
                "cpu_seconds": outcome.cpu_seconds if outcome else None,
            }
            assert runtime.services is not None
            ledger = runtime.services.ledger.verify()
            flooded["ledger_ok"] = ledger.ok
    finally:
        await runtime.stop()
    return quiet, flood, flooded


def report(args: argparse.Namespace, quiet: Phase, flood: Phase, flooded: dict[str, Any]) -> list[dict[str, Any]]:
    counts: dict[str, int] = flooded["counts"]
    total = sum(counts.values())
    accepted = sum(n for key, n in counts.items() if key.split()[-2].startswith("2"))
    refused = {}
    for key, n in counts.items():
        status, reason = key.split()[-2:]
        if not status.startswith("2"):
            refused[f"{status} {reason}"] = refused.get(f"{status} {reason}", 0) + n
    print(f"  flooder: {total} calls in {flooded['seconds']:.1f} s ({total / max(flooded['seconds'], 1e-9):.0f}/s)"
          f" on {args.connections} connections, {flooded['cpu_seconds'] or 0:.1f} CPU-s, ended "
          f"{flooded['ended']}{'' if flooded['lasted'] else ' BEFORE THE MEASUREMENT ENDED'}")  # fmt: skip
    for key in sorted(counts):
        print(f"    {key:40s} {counts[key]:7d}")
    print(f"  ledger invariant after the flood: {'holds' if flooded['ledger_ok'] else 'BROKEN'}")
    print(f"  {'':28s} {'quiet':>10s} {'flood':>10s} {'ratio':>7s}")

    def row(name: str, a: float, b: float, unit: str) -> None:
        print(f"  {name:28s} {a:8.2f}{unit:>2s} {b:8.2f}{unit:>2s} {b / a if a else float('inf'):6.2f}×")

    for name, pick in (("p50", 0.5), ("p99", 0.99)):
        row(f"honest bid {name}", percentile(quiet.bids_ms, pick), percentile(flood.bids_ms, pick), "ms")
    print(f"  {'honest bids (failed)':28s} {len(quiet.bids_ms):6d} ({len(quiet.failures)}) "
          f"{len(flood.bids_ms):6d} ({len(flood.failures)})")  # fmt: skip
    row("honest bids/s", len(quiet.bids_ms) / quiet.seconds, len(flood.bids_ms) / flood.seconds, "")
    row("cycle mean", statistics.fmean(quiet.cycles_ms), statistics.fmean(flood.cycles_ms), "ms")
    row("cycle max", max(quiet.cycles_ms), max(flood.cycles_ms), "ms")
    row("allocation txn mean", statistics.fmean(quiet.clearing_ms), statistics.fmean(flood.clearing_ms), "ms")
    print(f"  {'cycles':28s} {len(quiet.cycles_ms):8d}   {len(flood.cycles_ms):8d}")
    for phase in (quiet, flood):
        print(f"  RSS {phase.name:5s}: {phase.rss_start:.1f} → {phase.rss_end:.1f} MiB (peak {phase.rss_peak:.1f})")
    for failure in (quiet.failures + flood.failures)[:5]:
        print(f"  honest failure: {failure}")

    bid_quiet, bid_flood = percentile(quiet.bids_ms, 0.99), percentile(flood.bids_ms, 0.99)
    cycle_quiet, cycle_flood = statistics.fmean(quiet.cycles_ms), statistics.fmean(flood.cycles_ms)
    growth_quiet = quiet.rss_peak - quiet.rss_start
    growth_flood = flood.rss_peak - flood.rss_start
    flood_keys = {
        "flood_calls": total,
        "flood_accepted": accepted,
        "flood_refused": refused,
        "flood_lasted": flooded["lasted"],
    }
    return [
        {
            "bench": "flood",
            "metric": "honest bid p99 under flood",
            "value": round(bid_flood, 2),
            "unit": "ms",
            "baseline": round(bid_quiet, 2),
            "target": round(TARGET_RATIO * bid_quiet, 2),
            "met": bid_flood <= TARGET_RATIO * bid_quiet and not flood.failures and flooded["lasted"],
            "ratio": round(bid_flood / bid_quiet, 2),
            "honest_bids": len(flood.bids_ms),
            "honest_failures": len(flood.failures),
            **flood_keys,
        },
        {
            "bench": "flood",
            "metric": "cycle time mean under flood",
            "value": round(cycle_flood, 2),
            "unit": "ms",
            "baseline": round(cycle_quiet, 2),
            "target": round(TARGET_RATIO * cycle_quiet, 2),
            "met": cycle_flood <= TARGET_RATIO * cycle_quiet and flooded["lasted"],
            "ratio": round(cycle_flood / cycle_quiet, 2),
            "cycles": len(flood.cycles_ms),
            "max_ms": round(max(flood.cycles_ms), 2),
            "baseline_max_ms": round(max(quiet.cycles_ms), 2),
        },
        {
            "bench": "flood",
            "metric": "runtime RSS peak growth during flood",
            "value": round(growth_flood, 1),
            "unit": "MiB",
            "baseline": round(growth_quiet, 1),
            "target": TARGET_RSS_GROWTH_MIB,
            "met": growth_flood < TARGET_RSS_GROWTH_MIB and flooded["lasted"],
            "rss_mib": round(flood.rss_end, 1),
            "ledger_ok": flooded["ledger_ok"],
        },
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200, help="honest bids timed in each phase")
    parser.add_argument("--max-seconds", type=float, default=90, help="longest a phase may last")
    parser.add_argument("--interval-ms", type=float, default=125, help="pace of the honest bids")
    parser.add_argument("--cycle-seconds", type=float, default=0.5, help="time between market cycles")
    parser.add_argument("--connections", type=int, default=4, help="the flooder's concurrent connections")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with upstream_server() as upstream, tempfile.TemporaryDirectory(prefix="bench-flood-") as tmp:
        llm_url = f"{upstream}/v1"
        quiet, flood, flooded = asyncio.run(bench(args, llm_url, Path(tmp) / "state"))
    results = report(args, quiet, flood, flooded)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
