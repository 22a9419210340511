"""The database layer: migrations build exactly the models' schema; one transaction is all or nothing."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from syntropism.infra.database import Database
from syntropism.infra.outbox import record_event
from syntropism.infra.tables import Account, Agent, Base, MarketState, OutboxEvent
from tests.samples import sample_event


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Database:
    db = Database(f"sqlite:///{tmp_path / 'syntropism.db'}")
    db.migrate()
    yield db  # type: ignore[misc]
    db.dispose()


def test_migrations_match_the_models(sqlite_db: Database) -> None:
    assert sqlite_db.current_revision() == sqlite_db.head_revision()
    with sqlite_db.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == [], f"models and migrations disagree; add a migration: {diff}"


def test_migrate_is_idempotent(sqlite_db: Database) -> None:
    sqlite_db.migrate()
    assert sqlite_db.current_revision() == sqlite_db.head_revision()


def test_sqlite_runs_in_wal_mode_with_foreign_keys(sqlite_db: Database) -> None:
    with sqlite_db.engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert connection.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL


def test_a_failed_state_change_leaves_neither_state_nor_event(sqlite_db: Database) -> None:
    with pytest.raises(IntegrityError), sqlite_db.transaction() as session:
        session.add(Agent(id="a1", name="first", entry_point="main.py"))
        record_event(session, sample_event("agent.spawned"))
        session.flush()
        session.add(Agent(id="a1", name="duplicate", entry_point="main.py"))  # primary key clash
    with sqlite_db.reader() as session:
        assert session.scalar(select(func.count()).select_from(Agent)) == 0
        assert session.scalar(select(func.count()).select_from(OutboxEvent)) == 0


def test_state_and_event_commit_together(sqlite_db: Database) -> None:
    committed = []
    sqlite_db.on_commit(lambda: committed.append(True))
    event = sample_event("agent.spawned")
    with sqlite_db.transaction() as session:
        session.add(Agent(id="a1", name="first", entry_point="main.py"))
        record_event(session, event)
    assert len(committed) == 1
    with sqlite_db.reader() as session:
        assert session.get(Agent, "a1") is not None
        row = session.scalars(select(OutboxEvent)).one()
    assert row.event_id == str(event.event_id)
    assert row.subject == "system.agent.spawned" and row.published_at is None
    assert row.created_at.tzinfo is not None


def test_decimal_prices_are_stored_exactly(sqlite_db: Database) -> None:
    price = Decimal("3.787878787878787878787878788")
    with sqlite_db.transaction() as session:
        session.add(MarketState(resource="cpu", current_market_price=price))
    with sqlite_db.reader() as session:
        assert session.get(MarketState, "cpu").current_market_price == price  # type: ignore[union-attr]


def test_no_overdraft_is_enforced_by_the_schema(sqlite_db: Database) -> None:
    with pytest.raises(IntegrityError, match="no_overdraft"), sqlite_db.transaction() as session:
        session.add(Account(id="agent:a:available", kind="available", debits_micros=2, credits_micros=1))


@pytest.mark.parametrize("kind", ["sqlite-directory", "postgres-closed-port"])
def test_unreachable_database_fails_loudly(tmp_path: Path, kind: str) -> None:
    from syntropism.infra.database import DatabaseUnavailable

    url = f"sqlite:///{tmp_path}" if kind == "sqlite-directory" else "postgresql+psycopg://u:secret@127.0.0.1:1/db"
    db = Database(url)
    with pytest.raises(DatabaseUnavailable, match="cannot open database") as caught:
        db.check()
    assert "secret" not in str(caught.value)
