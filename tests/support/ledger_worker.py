"""Ledger callers that run in their own processes: concurrency and crash tests drive them."""

from __future__ import annotations

import random
import sys
import threading

from syntropism.domain import economy as E
from syntropism.domain.economy import LedgerError
from syntropism.domain.models import from_micros
from syntropism.infra.database import Database
from syntropism.infra.ledger import Ledger

HUB = "hub"


def hammer(url: str, worker: str, seed: int, operations: int, threads: int = 1) -> list[tuple[str, int, str]]:
    """Transfers and locks against the hub's one balance; returns (key, micros, 'ok' or refusal code)."""
    database = Database(url)
    ledger = Ledger(database)
    results: list[tuple[str, int, str]] = []
    guard = threading.Lock()

    def run(thread: int) -> None:
        rng = random.Random(seed * 1000 + thread)
        for i in range(operations):
            micros = rng.randint(1, 3_000_000)
            key = f"{worker}-{thread}-{i}"
            amount = from_micros(micros)
            operation = (
                E.transfer(HUB, worker, amount, idempotency_key=key)
                if rng.random() < 0.5
                else E.lock(HUB, amount, idempotency_key=key)
            )
            try:
                ledger.execute(operation)
                outcome = "ok"
            except LedgerError as error:
                outcome = error.code
            with guard:
                results.append((key, micros, outcome))

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    database.dispose()
    return results


def transfer_once(url: str, key: str) -> None:
    """One transfer hub → w0; the crash tests kill this process at a crash point."""
    database = Database(url)
    Ledger(database).execute(E.transfer(HUB, "w0", 5, idempotency_key=key))
    database.dispose()


if __name__ == "__main__":
    transfer_once(sys.argv[1], sys.argv[2])
