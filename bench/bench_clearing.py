"""Clearing speed: ``clear_market`` for 10^3 to 10^6 pending bids, and a full ``run_allocation_cycle``
(SQLite at synchronous=FULL: read the bids, clear, burn, record executions, age or unlock the losers, store
prices, stage every event) for 10^3 and 10^4 pending bids.

Baselines: for ``clear_market``, the same greedy pass written plainly — one Python object per bid, sorted, a
loop that checks and subtracts Decimal fractions — up to 10^5 bids (10^6 would take minutes); for the cycle,
a straightforward ORM version that loads each bid as an object and updates and records it one by one.
Bids are random but seeded: each asks for 1–30 % of about half the resources, 1–60 s, 1–100 credits.

Run: ``python bench/bench_clearing.py`` (after ``make test`` has set up ``.venv``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from syntropism.config import Settings
from syntropism.core.allocation import AllocationScheduler
from syntropism.core.market import MarketManager
from syntropism.domain import economy
from syntropism.domain.clearing import FIRST_PRICE, PPM, RESOURCES, BidBook, clear_market
from syntropism.domain.events import BidOutcome, BidProcessed, BidProcessedData
from syntropism.domain.models import Resource, from_micros
from syntropism.infra.agents import register_agent
from syntropism.infra.database import Database
from syntropism.infra.ledger import Ledger, apply_batch
from syntropism.infra.outbox import record_event
from syntropism.infra.tables import Bid

PREVIOUS = dict.fromkeys(Resource, Decimal(1))
TARGETS = {10**5: 0.1, 10**6: 1.0}
CYCLE_TARGETS = {10**4: 0.5}
AGENTS = 100
BASELINE_MAX = 10**5


def random_book(n: int, seed: int = 7) -> BidBook:
    rng = np.random.default_rng(seed)
    demand = rng.integers(10_000, 300_000, size=(n, len(RESOURCES)), dtype=np.int64)
    demand[rng.random((n, len(RESOURCES))) < 0.5] = 0
    demand[demand.sum(axis=1) == 0, 0] = 10_000  # every bid asks for something
    return BidBook(
        ids=np.char.add("bid-", np.arange(n).astype(np.str_)),
        amounts=rng.integers(1, 100, size=n, dtype=np.int64) * 1_000_000,
        demand=demand,
        duration_ms=rng.integers(1_000, 60_000, size=n, dtype=np.int64),
        placed=np.arange(n, dtype=np.int64),
    )


def plain_greedy(book: BidBook) -> list[str]:
    """The straightforward version: objects, a sort, a per-bid loop in Decimal."""
    bids = [
        {
            "id": str(book.ids[i]),
            "amount": Decimal(int(book.amounts[i])) / 1_000_000,
            "placed": int(book.placed[i]),
            "demand": [Decimal(int(x)) / PPM for x in book.demand[i]],
        }
        for i in range(len(book))
    ]
    bids.sort(key=lambda b: (-b["amount"], b["placed"], b["id"]))
    available = [Decimal(1)] * len(RESOURCES)
    winners = []
    for b in bids:
        if all(need <= free for need, free in zip(b["demand"], available, strict=True)):
            available = [free - need for need, free in zip(b["demand"], available, strict=True)]
            winners.append(b["id"])
    return winners


def pending_market(folder: Path, n: int) -> tuple[Database, Settings]:
    """A database with ``n`` pending bids (locked, with their bid_placed events), placed in bulk."""
    settings = Settings(state_dir=folder)
    database = Database(settings.effective_database_url)
    database.migrate()
    with database.transaction() as session:
        for i in range(AGENTS):
            register_agent(session, f"agent-{i}")
    ledger = Ledger(database)
    for i in range(AGENTS):
        ledger.execute(economy.grant(f"agent-{i}", 10**7, idempotency_key=f"seed-{i}"))
    book = random_book(n)
    with database.transaction() as session:
        MarketManager(database, settings).current_prices(session)
        for i in range(n):
            columns = {f"{r.value}_ppm": int(book.demand[i, k]) for k, r in enumerate(RESOURCES)}
            session.add(
                Bid(
                    id=str(book.ids[i]),
                    agent_id=f"agent-{i % AGENTS}",
                    amount_micros=int(book.amounts[i]),
                    lifetime_cycles=3,
                    cycles_remaining=3,
                    duration_ms=int(book.duration_ms[i]),
                    **columns,
                )
            )
        session.flush()
        locks = [
            (economy.lock(f"agent-{i % AGENTS}", from_micros(int(book.amounts[i])), idempotency_key=f"lock:{i}"), {})
            for i in range(n)
        ]
        apply_batch(session.connection(), locks)
    database.dispose()
    return Database(settings.effective_database_url), settings


def orm_cycle(database: Database) -> None:
    """The straightforward version: bids as ORM objects, one update and one event at a time."""
    with database.transaction() as session:
        bids = session.query(Bid).filter(Bid.status == "pending").all()
        bids.sort(key=lambda b: (-b.amount_micros, b.seq))
        free = dict.fromkeys(("cpu", "memory", "tokens", "attention"), PPM)
        for bid in bids:
            needs = {
                "cpu": bid.cpu_ppm,
                "memory": bid.memory_ppm,
                "tokens": bid.tokens_ppm,
                "attention": bid.attention_ppm,
            }
            won = all(needs[r] <= free[r] for r in free)
            if won:
                free = {r: free[r] - needs[r] for r in free}
                bid.status = "won"
            else:
                bid.cycles_remaining -= 1
            record_event(
                session,
                BidProcessed(
                    agent_id=bid.agent_id,
                    data=BidProcessedData(
                        bid_id=bid.id,
                        cycle=1,
                        outcome=BidOutcome.WON if won else BidOutcome.CARRIED,
                        amount=from_micros(bid.amount_micros),
                    ),
                ),
            )
            session.flush()


def cycle_figures(n: int, repeat: int) -> tuple[float, float]:
    """Median seconds of ``repeat`` cycles, each on a fresh market of ``n`` pending bids; and the ORM baseline."""
    samples = []
    with tempfile.TemporaryDirectory(prefix="bench-cycle-") as tmp:
        for run in range(repeat):
            database, settings = pending_market(Path(tmp) / f"ours-{run}", n)
            report = AllocationScheduler(database, settings, mechanism=FIRST_PRICE).run_allocation_cycle()
            assert report.bids_considered == n and Ledger(database).verify().ok
            samples.append(report.seconds)
            database.dispose()
        baseline_db, _ = pending_market(Path(tmp) / "orm", n)
        began = time.perf_counter()
        orm_cycle(baseline_db)
        baseline = time.perf_counter() - began
        baseline_db.dispose()
    return statistics.median(samples), baseline


def timed(function, repeat: int) -> float:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        function()
        samples.append(time.perf_counter() - began)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results = []
    for n in (10**3, 10**4, 10**5, 10**6):
        book = random_book(n)
        result = clear_market(book, {}, PREVIOUS)
        if n <= 10**4:  # both versions must agree before their speeds are compared
            assert [w.bid_id for w in result.winners] == plain_greedy(book)
        seconds = timed(lambda book=book: clear_market(book, {}, PREVIOUS), args.repeat)
        baseline = timed(lambda book=book: plain_greedy(book), 1) if n <= BASELINE_MAX else None
        shown = f"{baseline:.4f} s" if baseline is not None else "not run"
        print(f"  clear_market {n:>9,} bids: {seconds:.4f} s  ({len(result.winners)} winners; plain loop {shown})")
        results.append(
            {
                "bench": "clearing",
                "metric": f"clear_market {n} bids",
                "value": round(seconds, 5),
                "unit": "s",
                "baseline": round(baseline, 5) if baseline is not None else None,
                "target": TARGETS.get(n),
            }
        )
    for n in (10**3, 10**4):
        seconds, baseline = cycle_figures(n, args.repeat)
        print(f"  run_allocation_cycle {n:>6,} pending bids: {seconds:.3f} s  (plain ORM cycle {baseline:.3f} s)")
        results.append(
            {
                "bench": "clearing",
                "metric": f"cycle {n} bids",
                "value": round(seconds, 4),
                "unit": "s",
                "baseline": round(baseline, 4),
                "target": CYCLE_TARGETS.get(n),
            }
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
