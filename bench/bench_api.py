"""System Service latency and throughput: GET /economic/balance and POST /market/bid at concurrency 1 and 32.

The service runs as it does in ``syntropism run`` (uvicorn, FastAPI, SQLite at full durability) in a process of
its own, so the load generator does not share its interpreter. Each request is a real HTTP round trip on
loopback with a bearer token checked against the database. Baseline: a trivial FastAPI route (``/health``)
on the same server, which measures HTTP + framework cost alone.

Run: ``python bench/bench_api.py [--requests 2000]`` (after ``make test`` has set up ``.venv``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


TARGET_BALANCE_P99_C1_MS = 5.0
# One agent sends every request here: the per-agent bounds (fair turns, the request rate, the pending-bid cap) are
# policy, not cost, and are lifted so that the figures are the service's own. tests/adversarial and
# bench/bench_flood.py measure the bounds themselves.
UNBOUNDED: dict[str, object] = {
    "requests_per_second_per_execution": 1e9,
    "requests_in_flight_per_execution": 64,
    "requests_queued_per_execution": 1024,
    "agent_requests_in_flight": 64,
    "max_pending_bids_per_agent": 10**9,
}
BUNDLE = {"cpu_percent": "0.001", "duration_seconds": 1}


def serve(state_dir: Path, overrides: dict[str, object]) -> None:
    """The server process: one funded agent with a running execution; prints the port and token, then serves."""
    from syntropism.api.app import create_app
    from syntropism.api.server import ApiServer
    from syntropism.config import Settings
    from syntropism.core.execution import hash_token
    from syntropism.domain import economy as E
    from syntropism.domain.models import time_ordered_id
    from syntropism.infra.agents import register_agent
    from syntropism.infra.database import Database
    from syntropism.infra.tables import Execution
    from syntropism.runtime import Runtime, build_services

    settings = Settings(state_dir=state_dir, operator_token="bench", **(UNBOUNDED | overrides))
    database = Database(settings.effective_database_url)
    database.migrate()
    token = secrets.token_urlsafe(32)
    with database.transaction() as session:
        register_agent(session, "bencher")
        session.flush()
        session.add(
            Execution(
                id=time_ordered_id(), agent_id="bencher", cycle=0, status="running", cpu_ppm=0, memory_ppm=0,
                tokens_ppm=1_000_000, attention_ppm=0, duration_ms=3_600_000, token_hash=hash_token(token),
            )
        )  # fmt: skip
    services = build_services(database, settings, "bench")
    services.ledger.execute(E.grant("bencher", 10**9, idempotency_key="funds"))

    async def run() -> None:
        server = ApiServer(create_app(services), "127.0.0.1", 0, None)
        await server.start()
        Runtime.freeze_startup_heap()  # as `syntropism run` does once it serves
        print(json.dumps({"url": server.url, "token": token}), flush=True)
        await asyncio.Event().wait()

    asyncio.run(run())


class Connection:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams: a load generator should cost less than the
    server it measures (httpx spends more per request than a trivial FastAPI route does)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, token: str) -> None:
        self.reader, self.writer, self.host, self.token = reader, writer, host, token

    @classmethod
    async def open(cls, url: str, token: str) -> Connection:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer, f"{host}:{port}", token)

    async def request(self, method: str, path: str, body: bytes = b"", key: str | None = None) -> tuple[int, bytes]:
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}", f"Authorization: Bearer {self.token}"]
        if body:
            head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        if key:
            head.append(f"Idempotency-Key: {key}")
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return int(status_line.split()[1]), await self.reader.readexactly(length)

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def measure(url: str, token: str, method: str, path: str, requests: int, concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    connections = [await Connection.open(url, token) for _ in range(concurrency)]
    body = json.dumps({"bundle": BUNDLE, "amount": "0.001"}).encode() if method == "POST" else b""  # min_bid

    async def worker(connection: Connection, index: int) -> None:
        for i in range(requests // concurrency):
            key = f"{index}-{i}-{time.monotonic_ns()}" if method == "POST" else None
            began = time.perf_counter()
            status, answer = await connection.request(method, path, body, key)
            latencies.append((time.perf_counter() - began) * 1000)
            if status >= 400:
                raise RuntimeError(f"{method} {path}: {status} {answer.decode()}")

    for connection in connections:
        for _ in range(10):
            await connection.request("GET", "/health")
    began = time.perf_counter()
    try:
        await asyncio.gather(*(worker(c, i) for i, c in enumerate(connections)))
    finally:
        elapsed = time.perf_counter() - began
        for connection in connections:
            await connection.close()
    latencies.sort()
    return {
        "p50": latencies[len(latencies) // 2],
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "req/s": len(latencies) / elapsed,
    }


async def bench(url: str, token: str, requests: int) -> list[dict[str, object]]:
    results: list[dict[str, object]] = []
    baseline = await measure(url, token, "GET", "/health", requests, 1)
    print(f"  baseline /health c1: p50 {baseline['p50']:.2f} ms, p99 {baseline['p99']:.2f} ms")
    for name, method, path in (("balance", "GET", "/economic/balance"), ("bid", "POST", "/market/bid")):
        for concurrency in (1, 32):
            count = requests if method == "GET" else requests // 4  # each bid is a durable transaction
            figures = await measure(url, token, method, path, count, concurrency)
            print(
                f"  {name:8s} c{concurrency:<3d} p50 {figures['p50']:6.2f} ms  p99 {figures['p99']:6.2f} ms  "
                f"{figures['req/s']:8.0f} req/s"
            )
            for metric, value in figures.items():
                unit = "req/s" if metric == "req/s" else "ms"
                results.append(
                    {
                        "bench": "api",
                        "metric": f"{name} {metric} c{concurrency}",
                        "value": round(value, 2),
                        "unit": unit,
                        "baseline": round(baseline[metric], 2) if concurrency == 1 else None,
                        "target": TARGET_BALANCE_P99_C1_MS
                        if (name, metric, concurrency) == ("balance", "p99", 1)
                        else None,
                    }
                )
    return results


@contextmanager
def api_server(overrides: dict[str, object] | None = None) -> Iterator[tuple[str, str]]:
    """The System Service in a process of its own, on fresh state; yields its URL and an agent's token."""
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", tmp, "--settings", json.dumps(overrides or {})],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "SYNTROPISM_LOG_LEVEL": "WARNING"},
        )
        try:
            assert server.stdout is not None
            ready = json.loads(server.stdout.readline())
            yield ready["url"], ready["token"]
        finally:
            server.terminate()
            server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per GET measurement (bids: a quarter)")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--settings", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, json.loads(args.settings))
        return
    with api_server() as (url, token):
        results = asyncio.run(bench(url, token, args.requests))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
