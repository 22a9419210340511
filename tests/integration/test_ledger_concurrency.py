"""Many callers against one balance, on SQLite and on PostgreSQL: exact totals, never below zero, and a crash
mid-operation leaves all of it or none of it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import pytest
from sqlalchemy import func, select

from syntropism.domain import economy as E
from syntropism.domain.models import from_micros, to_micros
from syntropism.infra.agents import register_agent
from syntropism.infra.database import Database
from syntropism.infra.faults import CRASH_AT_ENV
from syntropism.infra.ledger import Ledger
from syntropism.infra.tables import OutboxEvent, Transfer
from tests.support.ledger_worker import HUB, hammer

START_MICROS = 200_000_000  # the hub starts with 200 credits; callers ask for far more in total
WORKERS = [f"w{i}" for i in range(4)]


@pytest.fixture
def hub_ledger(any_database_url: str) -> Iterator[Ledger]:
    database = Database(any_database_url)
    database.migrate()
    with database.transaction() as session:
        for agent_id in (HUB, *WORKERS):
            register_agent(session, agent_id)
    ledger = Ledger(database)
    ledger.execute(E.grant(HUB, from_micros(START_MICROS), idempotency_key="seed"))
    yield ledger
    database.dispose()


def check_outcome(ledger: Ledger, results: list[tuple[str, int, str]]) -> None:
    accepted = [micros for _, micros, outcome in results if outcome == "ok"]
    refused = {outcome for _, _, outcome in results if outcome != "ok"}
    assert refused <= {"insufficient_funds"}, refused
    assert accepted and len(accepted) < len(results), "the balance ran out part-way: contention was real"
    balance = ledger.balance(HUB)
    spent = START_MICROS - to_micros(balance.available)
    assert spent == sum(accepted), "every accepted operation took exactly its amount, nothing else"
    assert spent <= START_MICROS
    with ledger.database.reader() as session:
        lowest = session.scalar(
            select(func.min(Transfer.debit_balance_after_micros)).where(
                Transfer.debit_account_id == E.available_account(HUB)
            )
        )
        journal, events = (
            session.scalar(select(func.count()).select_from(Transfer)),
            session.scalar(select(func.count()).select_from(OutboxEvent)),
        )
    assert lowest is not None and lowest >= 0, "the hub's balance never went below zero"
    assert journal == len(accepted) + 1  # + the seed grant
    assert events == journal + 1 + len(WORKERS)  # + agent.spawned for each agent
    assert ledger.verify().ok


def test_threads_share_one_ledger(hub_ledger: Ledger) -> None:
    results = hammer(hub_ledger.database.url, "w0", seed=1, operations=60, threads=8)
    check_outcome(hub_ledger, results)


def test_processes_contend_for_one_balance(hub_ledger: Ledger) -> None:
    with ProcessPoolExecutor(max_workers=len(WORKERS), mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(hammer, hub_ledger.database.url, w, i, 50, 2) for i, w in enumerate(WORKERS)]
        results = [row for future in futures for row in future.result(timeout=300)]
    check_outcome(hub_ledger, results)


@pytest.mark.parametrize(("crash_at", "applied"), [("ledger.before_commit", False), ("ledger.after_commit", True)])
def test_a_killed_process_leaves_all_or_nothing(hub_ledger: Ledger, crash_at: str, applied: bool) -> None:
    url = hub_ledger.database.url
    env = {**os.environ, CRASH_AT_ENV: crash_at}
    worker = subprocess.run(
        [sys.executable, "-m", "tests.support.ledger_worker", url, "crash-key"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert worker.returncode == -signal.SIGKILL, worker.stderr
    with hub_ledger.database.reader() as session:
        rows = session.scalars(select(Transfer).where(Transfer.idempotency_key == "crash-key")).all()
        events = session.scalars(
            select(OutboxEvent.payload).where(OutboxEvent.event_type == "economy.credits_transferred")
        ).all()
    assert len(rows) == (1 if applied else 0)
    assert len(events) == len(rows), "the operation and its event, together or not at all"
    assert hub_ledger.balance("w0").available == (5 if applied else 0)
    assert hub_ledger.verify().ok
    # The caller retries with the same key after the crash: applied exactly once either way.
    again = hub_ledger.execute(E.transfer(HUB, "w0", 5, idempotency_key="crash-key"))
    assert again.replayed == applied
    assert hub_ledger.balance("w0").available == 5
