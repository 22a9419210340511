"""The ledger against real databases: every operation, its event, idempotency, history and verification."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from decimal import Decimal

import pytest
from sqlalchemy import func, select, text

from syntropism.domain import economy as E
from syntropism.domain.economy import LedgerError
from syntropism.domain.events import parse_event
from syntropism.infra.agents import register_agent
from syntropism.infra.database import Database
from syntropism.infra.ledger import Ledger, apply
from syntropism.infra.tables import OutboxEvent, Transfer

WEIGHTS = (Decimal(1), Decimal(1), Decimal(1))


@pytest.fixture
def ledger(any_database_url: str) -> Iterator[Ledger]:
    database = Database(any_database_url)
    database.migrate()
    with database.transaction() as session:
        for agent_id in ("alice", "bob"):
            register_agent(session, agent_id)
    yield Ledger(database)
    database.dispose()


def events_of(ledger: Ledger, event_type: str) -> list[dict]:  # type: ignore[type-arg]
    with ledger.database.reader() as session:
        payloads = session.scalars(
            select(OutboxEvent.payload).where(OutboxEvent.event_type == event_type).order_by(OutboxEvent.id)
        ).all()
    return [parse_event(payload).model_dump(mode="json") for payload in payloads]


def counts(ledger: Ledger) -> tuple[int, int]:
    with ledger.database.reader() as session:
        return (
            session.scalar(select(func.count()).select_from(Transfer)) or 0,
            session.scalar(select(func.count()).select_from(OutboxEvent)) or 0,
        )


def test_a_bid_lifecycle_moves_exact_credits_and_records_each_step(ledger: Ledger) -> None:
    ledger.execute(E.grant("alice", 100, idempotency_key="grant-1"))
    locked = ledger.execute(E.lock("alice", "30.5", idempotency_key="lock-1", bid_id="bid-1"))
    assert (locked.debit_balance_after, locked.credit_balance_after) == (Decimal("69.5"), Decimal("30.5"))
    ledger.execute(E.burn("alice", 20, idempotency_key="burn-1", bid_id="bid-1", execution_id="exe-1"))
    ledger.execute(E.unlock("alice", "10.5", idempotency_key="unlock-1", reason="outbid", bid_id="bid-1"))
    ledger.execute(E.transfer("alice", "bob", "0.000001", idempotency_key="pay-1", purpose="thanks"))
    ledger.execute(
        E.reward("bob", interesting=7, useful=8, understandable=6, weights=WEIGHTS, idempotency_key="reward-1")
    )

    assert ledger.balance("alice") == type(ledger.balance("alice"))("alice", Decimal("79.999999"), Decimal(0))
    assert ledger.balance("bob").available == Decimal("21.000001")
    report = ledger.verify()
    assert report.ok, report
    assert (report.invariant.minted, report.invariant.burned) == (121_000_000, 20_000_000)

    [lock_event] = events_of(ledger, "economy.credits_locked")
    assert lock_event["agent_id"] == "alice"
    assert lock_event["data"] | {"transfer_id": None} == {
        "transfer_id": None,
        "amount": "30.500000",
        "bid_id": "bid-1",
        "available_after": "69.500000",
        "locked_after": "30.500000",
    }
    [burn_event] = events_of(ledger, "economy.credits_burned")
    assert (burn_event["data"]["execution_id"], burn_event["data"]["burned_total"]) == ("exe-1", "20.000000")
    [unlock_event] = events_of(ledger, "economy.credits_unlocked")
    assert unlock_event["data"]["reason"] == "outbid" and unlock_event["data"]["available_after"] == "80.000000"
    [transfer_event] = events_of(ledger, "economy.credits_transferred")
    assert transfer_event["data"]["to_agent"] == "bob" and transfer_event["data"]["purpose"] == "thanks"
    [reward_event] = events_of(ledger, "economy.reward_issued")
    assert reward_event["data"]["minted_total"] == "121.000000" and reward_event["data"]["useful"] == 8
    assert len(events_of(ledger, "economy.credits_granted")) == 1


def test_repeating_a_key_returns_the_first_result_and_moves_nothing(ledger: Ledger) -> None:
    ledger.execute(E.grant("alice", 50, idempotency_key="grant"))
    first = ledger.execute(E.transfer("alice", "bob", 5, idempotency_key="pay"))
    before = counts(ledger)
    again = ledger.execute(E.transfer("alice", "bob", 5, idempotency_key="pay"))
    assert again.replayed and not first.replayed
    assert again.transfer_id == first.transfer_id and again.debit_balance_after == first.debit_balance_after
    assert counts(ledger) == before
    assert ledger.balance("bob").available == 5

    with pytest.raises(LedgerError, match="used for a different operation") as caught:
        ledger.execute(E.transfer("alice", "bob", 6, idempotency_key="pay"))
    assert caught.value.code == "idempotency_conflict"
    assert counts(ledger) == before


@pytest.mark.parametrize(
    ("operation", "code"),
    [
        (lambda: E.lock("alice", 1000, idempotency_key="k"), "insufficient_funds"),
        (lambda: E.transfer("alice", "bob", "100.000001", idempotency_key="k"), "insufficient_funds"),
        (lambda: E.burn("alice", 1, idempotency_key="k"), "insufficient_funds"),  # nothing locked
        (lambda: E.unlock("alice", 1, idempotency_key="k", reason="expired"), "insufficient_funds"),
        (lambda: E.transfer("alice", "nobody", 1, idempotency_key="k"), "unknown_agent"),
        (lambda: E.lock("nobody", 1, idempotency_key="k"), "unknown_agent"),
    ],
)
def test_refused_operations_change_nothing(ledger: Ledger, operation, code: str) -> None:  # type: ignore[no-untyped-def]
    ledger.execute(E.grant("alice", 100, idempotency_key="grant"))
    before = counts(ledger), ledger.balance("alice"), ledger.balance("bob")
    with pytest.raises(LedgerError) as caught:
        ledger.execute(operation())
    assert caught.value.code == code and str(caught.value)
    assert (counts(ledger), ledger.balance("alice"), ledger.balance("bob")) == before
    assert ledger.verify().ok


def test_an_operation_joins_the_callers_transaction(ledger: Ledger) -> None:
    """A bid row and its lock commit together, or neither does."""
    ledger.execute(E.grant("alice", 100, idempotency_key="grant"))
    before = counts(ledger)
    with pytest.raises(RuntimeError, match="bid insert failed"), ledger.database.transaction() as session:
        apply(session, E.lock("alice", 40, idempotency_key="lock-in-txn"))
        raise RuntimeError("bid insert failed")
    assert counts(ledger) == before and ledger.balance("alice").available == 100

    with ledger.database.transaction() as session:
        receipt = apply(session, E.lock("alice", 40, idempotency_key="lock-in-txn"))
    assert not receipt.replayed and ledger.balance("alice").locked == 40


def test_history_pages_newest_first(ledger: Ledger) -> None:
    ledger.execute(E.grant("alice", 100, idempotency_key="grant"))
    for i in range(7):
        ledger.execute(E.transfer("alice", "bob", i + 1, idempotency_key=f"pay-{i}"))
    first = ledger.history("alice", limit=3)
    assert [entry.amount for entry in first.entries] == [7, 6, 5]
    second = ledger.history("alice", limit=3, before=first.next_before)
    third = ledger.history("alice", limit=3, before=second.next_before)
    assert [entry.amount for entry in second.entries] == [4, 3, 2]
    assert [entry.kind for entry in third.entries] == [E.OperationKind.TRANSFER, E.OperationKind.GRANT]
    assert third.next_before is None
    assert len(ledger.history("bob", limit=50).entries) == 7
    with pytest.raises(LedgerError, match="no such agent"):
        ledger.history("nobody")
    with pytest.raises(LedgerError, match="limit"):
        ledger.history("alice", limit=0)


def test_verify_names_tampered_rows(ledger: Ledger) -> None:
    ledger.execute(E.grant("alice", 100, idempotency_key="grant"))
    ledger.execute(E.transfer("alice", "bob", 10, idempotency_key="pay"))
    assert ledger.verify().ok
    with ledger.database.transaction() as session:  # someone edits a balance by hand
        session.execute(
            text("UPDATE accounts SET credits_micros = credits_micros + 5 WHERE id = 'agent:bob:available'")
        )
    report = ledger.verify()
    assert not report.ok
    problems = " ".join((*report.invariant.problems, *report.problems))
    assert "agent:bob:available" in problems and "≠ journal" in problems
    assert "≠ minted" in problems


def test_every_event_parses_and_names_its_transfer(ledger: Ledger) -> None:
    ledger.execute(E.grant("alice", 10, idempotency_key="g"))
    ledger.execute(E.lock("alice", 3, idempotency_key="l"))
    with ledger.database.reader() as session:
        transfers = set(session.scalars(select(Transfer.id)).all())
        payloads = session.scalars(select(OutboxEvent.payload)).all()
    transfer_ids = {json.loads(p)["data"].get("transfer_id") for p in payloads} - {None}
    assert transfer_ids == transfers


def test_journal_timestamps_are_stored_as_the_orm_stores_them(ledger: Ledger) -> None:
    """The hot path writes raw SQL; its created_at must sort and compare with rows the ORM wrote."""
    ledger.execute(E.grant("alice", 1, idempotency_key="g"))
    with ledger.database.transaction() as session:
        session.add(Transfer(**_transfer_columns("orm-row")))
    with ledger.database.reader() as session:
        raw = session.execute(text("SELECT idempotency_key, CAST(created_at AS TEXT) FROM transfers")).all()
        parsed = session.execute(select(Transfer.idempotency_key, Transfer.created_at)).all()
    if ledger.database.backend == "sqlite":  # text: one format, or comparisons and ORDER BY go wrong
        sqlalchemy_format = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}")
        assert all(sqlalchemy_format.fullmatch(stamp) for _, stamp in raw), raw
    assert all(stamp.tzinfo is not None for _, stamp in parsed)


def _transfer_columns(key: str) -> dict[str, object]:
    return {
        "id": key,
        "idempotency_key": key,
        "kind": "grant",
        "debit_account_id": E.SYSTEM_MINT,
        "credit_account_id": E.available_account("bob"),
        "amount_micros": 1,
        "debit_balance_after_micros": -1,
        "credit_balance_after_micros": 1,
    }


def test_a_lost_database_connection_is_replaced_without_losing_or_doubling_an_operation(
    postgres_url: str,
) -> None:
    database = Database(postgres_url)
    database.migrate()
    with database.transaction() as session:
        register_agent(session, "alice")
    ledger = Ledger(database)
    try:
        ledger.execute(E.grant("alice", 10, idempotency_key="first"))
        with database.engine.connect() as admin:  # the server drops the ledger's writer connection
            killed = admin.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                    "AND datname = current_database()"
                )
            ).all()
            assert killed, "the ledger's writer connection should have been there to terminate"
        receipt = ledger.execute(E.grant("alice", 5, idempotency_key="second"))
        assert not receipt.replayed
        assert ledger.balance("alice").available == Decimal(15)
        assert ledger.verify().ok
    finally:
        database.dispose()
