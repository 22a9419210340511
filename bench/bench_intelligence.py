"""The LLM proxy's overhead: a chat completion through /intelligence/inference against the same request sent
straight to the upstream.

Both servers run in processes of their own: a small OpenAI-compatible fake upstream (it answers at once, so
what remains is our cost) and the System Service configured to use it. Each proxied request is authenticated,
reserved against its execution's quota and the system-wide bucket, forwarded, metered from the upstream's
``usage`` and recorded (``intelligence.tokens_consumed``, after the answer is sent).

Run: ``python bench/bench_intelligence.py [--requests 1000]`` (after ``make test`` has set up ``.venv``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_api import Connection, api_server

TARGET_OVERHEAD_P50_MS = 2.0
BODY = json.dumps({"messages": [{"role": "user", "content": "say hello"}], "max_tokens": 16}).encode()


def serve_upstream() -> None:
    from syntropism.api.server import ApiServer
    from tests.support.fake_llm import fake_llm_app

    async def run() -> None:
        server = ApiServer(fake_llm_app(), "127.0.0.1", 0, None)
        await server.start()
        print(json.dumps({"url": server.url}), flush=True)
        await asyncio.Event().wait()

    asyncio.run(run())


@contextmanager
def upstream_server() -> Iterator[str]:
    process = subprocess.Popen([sys.executable, __file__, "--serve-upstream"], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        yield json.loads(process.stdout.readline())["url"]
    finally:
        process.terminate()
        process.wait(10)


async def latencies(url: str, token: str, path: str, requests: int) -> list[float]:
    connection = await Connection.open(url, token)
    samples = []
    try:
        for i in range(requests + 50):  # the first 50 warm up
            began = time.perf_counter()
            status, answer = await connection.request("POST", path, BODY, key=f"r{i}-{time.monotonic_ns()}")
            if status != 200:
                raise RuntimeError(f"{path}: {status} {answer.decode()}")
            if i >= 50:
                samples.append((time.perf_counter() - began) * 1000)
    finally:
        await connection.close()
    return sorted(samples)


def percentile(samples: list[float], fraction: float) -> float:
    return samples[min(len(samples) - 1, int(len(samples) * fraction))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--serve-upstream", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_upstream:
        serve_upstream()
        return
    with upstream_server() as upstream:
        settings = {"llm_base_url": f"{upstream}/v1", "llm_spend_limit": 10**9}
        with api_server(settings) as (service, token):
            direct = asyncio.run(latencies(upstream, "unused", "/v1/chat/completions", args.requests))
            proxied = asyncio.run(latencies(service, token, "/intelligence/inference", args.requests))
    figures = {
        "direct p50": percentile(direct, 0.5),
        "direct p99": percentile(direct, 0.99),
        "proxied p50": percentile(proxied, 0.5),
        "proxied p99": percentile(proxied, 0.99),
    }
    overhead = {
        "overhead p50": figures["proxied p50"] - figures["direct p50"],
        "overhead p99": figures["proxied p99"] - figures["direct p99"],
    }
    for name, value in {**figures, **overhead}.items():
        print(f"  {name:14s} {value:6.2f} ms")
    results = [
        {
            "bench": "intelligence",
            "metric": name,
            "value": round(value, 3),
            "unit": "ms",
            "baseline": round(figures[f"direct {name.split()[1]}"], 3),
            "target": TARGET_OVERHEAD_P50_MS if name == "overhead p50" else None,
        }
        for name, value in overhead.items()
    ]
    print(json.dumps(results))


if __name__ == "__main__":
    if "--serve-upstream" not in sys.argv:
        os.environ.setdefault("SYNTROPISM_LOG_LEVEL", "WARNING")
    main()
