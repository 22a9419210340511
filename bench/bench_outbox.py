"""Outbox relay throughput: events/s from committed outbox rows to JetStream acknowledgements.

Baseline: the same number of events published one by one, each ack awaited before the next publish.
Measured: 10,000 events committed through the transactional outbox (SQLite file, WAL, synchronous=FULL),
then relayed by :class:`OutboxRelay` (pipelined publishing, acks recorded back in the database) to the embedded
nats-server with ``sync_interval: always``. Each figure is the median of ``--repeat`` runs on a fresh stream.

Run: ``python bench/bench_outbox.py`` (after ``make test`` has set up ``.venv``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from syntropism.config import Settings
from syntropism.domain.events import CreditsTransferred, CreditsTransferredData
from syntropism.infra.database import Database
from syntropism.infra.embedded_nats import EmbeddedNatsServer
from syntropism.infra.nats_bus import EventBus, OutgoingMessage
from syntropism.infra.outbox import OutboxRelay, record_event

TARGET_RATIO = 5.0


def make_event(i: int) -> CreditsTransferred:
    return CreditsTransferred(
        agent_id=f"agent-{i % 50}",
        correlation_id="bench-outbox",
        data=CreditsTransferredData(
            transfer_id=f"t{i}", from_agent=f"agent-{i % 50}", to_agent=f"agent-{(i + 1) % 50}", amount=i % 97 + 1
        ),
    )


def commit_events(database: Database, count: int, per_transaction: int = 100) -> None:
    for start in range(0, count, per_transaction):
        with database.transaction() as session:
            for i in range(start, min(start + per_transaction, count)):
                record_event(session, make_event(i))


async def fresh_stream(bus: EventBus) -> None:
    await bus.js.delete_stream(bus.settings.stream_name)
    await bus.ensure_stream()


async def baseline_awaited(bus: EventBus, count: int) -> float:
    await fresh_stream(bus)
    messages = [OutgoingMessage.of(make_event(i)) for i in range(count)]
    started = time.perf_counter()
    for message in messages:
        await bus.publish(message)
    elapsed = time.perf_counter() - started
    assert await bus.stream_message_count() == count
    return count / elapsed


async def relay_run(bus: EventBus, workdir: Path, run: int, count: int) -> float:
    await fresh_stream(bus)
    database = Database(f"sqlite:///{workdir / f'outbox-{run}.db'}")
    database.migrate()
    commit_events(database, count)
    relay = OutboxRelay(database, bus, batch_size=bus.settings.relay_batch_size)
    started = time.perf_counter()
    await relay.drain(rounds=count)
    elapsed = time.perf_counter() - started
    assert relay.stats.published == count and await relay.pending_count() == 0
    assert await bus.stream_message_count() == count
    database.dispose()
    return count / elapsed


async def main(count: int, repeat: int) -> list[dict[str, object]]:
    with tempfile.TemporaryDirectory(prefix="bench-outbox-") as tmp:
        workdir = Path(tmp)
        server = EmbeddedNatsServer(workdir / "nats")
        url = await server.start()
        try:
            settings = Settings(state_dir=workdir, nats_url=url)
            bus = await EventBus.connect(url, settings)
            await bus.ensure_stream()
            baseline = statistics.median([await baseline_awaited(bus, count) for _ in range(repeat)])
            relayed = statistics.median([await relay_run(bus, workdir, run, count) for run in range(repeat)])
            await bus.close()
        finally:
            server.stop()
    print(f"{count} events, median of {repeat} runs")
    print(f"  awaited publish, one by one : {baseline:>10,.0f} events/s")
    print(f"  outbox relay (batch {settings.relay_batch_size:>5})  : {relayed:>10,.0f} events/s")
    print(f"  ratio                       : {relayed / baseline:>10.1f}x (target ≥ {TARGET_RATIO:g}x)")
    return [
        {
            "bench": "outbox",
            "metric": "relay events/s",
            "value": round(relayed),
            "unit": "events/s",
            "baseline": round(baseline),
            "target": round(baseline * TARGET_RATIO),
        },
        {
            "bench": "outbox",
            "metric": "relay ratio vs awaited publish",
            "value": round(relayed / baseline, 2),
            "unit": "x",
            "baseline": 1.0,
            "target": TARGET_RATIO,
        },
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results = asyncio.run(main(args.events, args.repeat))
    print(json.dumps(results))
