"""clear_market time for 10^3 to 10^6 pending bids (first-price greedy, all-or-nothing, price discovery).

Baseline: the same greedy pass written plainly — one Python object per bid, sorted, a loop that checks and
subtracts Decimal fractions bid by bid — measured up to 10^5 bids (10^6 would take minutes).
Bids are random but seeded: each asks for 1–30 % of about half the resources, 1–60 s, 1–100 credits.

Run: ``python bench/bench_clearing.py`` (after ``make test`` has set up ``.venv``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from syntropism.core.scheduler import PPM, RESOURCES, BidBook, clear_market
from syntropism.domain.models import Resource

PREVIOUS = dict.fromkeys(Resource, Decimal(1))
TARGETS = {10**5: 0.1, 10**6: 1.0}
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
    print(json.dumps(results))


if __name__ == "__main__":
    main()
