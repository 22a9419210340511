"""Ledger throughput at full durability: transfers/s and lock+burn pairs/s, 1 and 8 concurrent callers.

Each operation is committed durably before its caller returns (SQLite: WAL, synchronous=FULL; PostgreSQL:
fsync on, synchronous_commit on) and writes its journal row, both account totals and its event. Concurrent
callers are threads sharing one Ledger, whose group commit lets them share an fsync.

Baseline: the same transfer written by hand with the raw driver, one transaction per transfer (read both
balances, update both, insert the journal row) — what a straightforward implementation gets.

Run: ``python bench/bench_ledger.py`` (after ``make test`` has set up ``.venv``). ``--no-postgres`` skips the
PostgreSQL half (it needs the server binaries, which ``make test`` installs where it can).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from syntropism.domain import economy as E
from syntropism.infra.agents import register_agent
from syntropism.infra.database import Database
from syntropism.infra.ledger import Ledger

CALLERS = 8
TARGETS = {("transfers/s", "sqlite", 1): 2_000, ("transfers/s", "sqlite", CALLERS): 10_000}


def prepare(url: str) -> Ledger:
    database = Database(url)
    database.migrate()
    with database.transaction() as session:
        for i in range(2 * CALLERS):
            register_agent(session, f"agent-{i}")
    ledger = Ledger(database)
    for i in range(2 * CALLERS):
        ledger.execute(E.grant(f"agent-{i}", 1_000_000, idempotency_key=f"seed-{i}"))
    return ledger


def run_callers(callers: int, per_caller: int, work: Callable[[int, int], None]) -> float:
    """Seconds for ``callers`` threads to each run ``work(caller, i)`` ``per_caller`` times."""
    start = threading.Barrier(callers + 1)
    failures: list[BaseException] = []

    def caller(index: int) -> None:
        start.wait()
        try:
            for i in range(per_caller):
                work(index, i)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=caller, args=(c,)) for c in range(callers)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    if failures:
        raise RuntimeError(f"{len(failures)} callers failed; the first: {failures[0]!r}") from failures[0]
    return elapsed


def measure(ledger: Ledger, label: str, callers: int, operations: int) -> dict[str, float]:
    per_caller = operations // callers

    def transfer(caller: int, i: int) -> None:
        key = f"{label}-t-{caller}-{i}"
        ledger.execute(E.transfer(f"agent-{caller}", f"agent-{caller + CALLERS}", "0.01", idempotency_key=key))

    def lock_burn(caller: int, i: int) -> None:
        agent = f"agent-{caller + CALLERS}"
        ledger.execute(E.lock(agent, "0.01", idempotency_key=f"{label}-l-{caller}-{i}", bid_id=f"b{caller}-{i}"))
        ledger.execute(E.burn(agent, "0.01", idempotency_key=f"{label}-b-{caller}-{i}", bid_id=f"b{caller}-{i}"))

    transfers = per_caller * callers / run_callers(callers, per_caller, transfer)
    pairs = per_caller * callers / run_callers(callers, per_caller // 2, lock_burn) / 2
    return {"transfers/s": transfers, "lock+burn/s": pairs}


def raw_sqlite_baseline(url: str, operations: int) -> float:
    connection = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    began = time.perf_counter()
    for i in range(operations):
        _raw_transfer(connection.execute, "?", i)
    elapsed = time.perf_counter() - began
    connection.close()
    return operations / elapsed


def raw_postgres_baseline(url: str, operations: int) -> float:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as connection:
        began = time.perf_counter()
        for i in range(operations):
            _raw_transfer(connection.execute, "%s", i)
        return operations / (time.perf_counter() - began)


def _raw_transfer(execute: Callable[..., object], mark: str, i: int) -> None:
    debit, credit = "agent:agent-0:available", "agent:agent-8:available"
    execute("BEGIN IMMEDIATE" if mark == "?" else "BEGIN")
    execute(f"SELECT credits_micros - debits_micros FROM accounts WHERE id IN ({mark}, {mark})", (debit, credit))
    execute(f"UPDATE accounts SET debits_micros = debits_micros + 1 WHERE id = {mark}", (debit,))
    execute(f"UPDATE accounts SET credits_micros = credits_micros + 1 WHERE id = {mark}", (credit,))
    execute(
        "INSERT INTO transfers (id, idempotency_key, kind, debit_account_id, credit_account_id, amount_micros, "
        "debit_balance_after_micros, credit_balance_after_micros, created_at) "
        f"VALUES ({mark}, {mark}, 'transfer', {mark}, {mark}, 1, 0, 0, CURRENT_TIMESTAMP)",
        (f"raw-{i}", f"raw-{i}", debit, credit),
    )
    execute("COMMIT")


def bench_backend(
    backend: str, url: str, baseline_of: Callable[[int], float], operations: int
) -> list[dict[str, object]]:
    ledger = prepare(url)
    baseline = baseline_of(operations)
    figures = {callers: measure(ledger, f"{backend}{callers}", callers, operations) for callers in (1, CALLERS)}
    assert ledger.verify().ok, "the invariant must hold after the benchmark"
    ledger.database.dispose()
    results = []
    for callers, metrics in figures.items():
        for metric, value in metrics.items():
            plural = "caller" if callers == 1 else "callers"
            print(f"  {backend:8s} {metric:12s} {callers} {plural:7s} {value:>9,.0f}/s (raw baseline {baseline:,.0f})")
            results.append(
                {
                    "bench": "ledger",
                    "metric": f"{metric} {backend} {callers} {plural}",
                    "value": round(value),
                    "unit": "ops/s" if metric == "transfers/s" else "pairs/s",
                    "baseline": round(baseline),
                    "target": TARGETS.get((metric, backend, callers)),
                }
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--operations", type=int, default=4000, help="operations per measurement")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    results: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'ledger.db'}"
        results += bench_backend("sqlite", url, lambda n: raw_sqlite_baseline(url, n), args.operations)
    if not args.no_postgres:
        from tests.support.postgres import PostgresUnavailable, ephemeral_postgres

        try:
            with ephemeral_postgres() as url:
                operations = args.operations // 2
                results += bench_backend("postgres", url, lambda n: raw_postgres_baseline(url, n), operations)
        except PostgresUnavailable as exc:
            print(f"  postgres skipped: {exc}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
