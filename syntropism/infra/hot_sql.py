"""Plain SQL for the few hot paths that write thousands of rows per second (ledger batches, the outbox).

SQLAlchemy's per-statement and per-row parameter processing costs more than SQLite's own work there, so these
statements run as prepared text on the DBAPI cursor. Only portable SQL is used: ``?`` placeholders, rewritten
to ``%s`` for drivers that use that style; timestamps go through the column type's own bind processing, so
rows read back through SQLAlchemy exactly as if it had written them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import Column, Connection, Dialect, Table

from syntropism.infra.tables import OutboxEvent, Transfer, table_of, utcnow

TRANSFERS = table_of(Transfer)
OUTBOX = table_of(OutboxEvent)
# created_at last: hot paths stamp a whole batch with one converted timestamp.
TRANSFER_COLUMNS = (
    "id",
    "idempotency_key",
    "kind",
    "debit_account_id",
    "credit_account_id",
    "amount_micros",
    "debit_balance_after_micros",
    "credit_balance_after_micros",
    "reference",
    "memo",
    "created_at",
)
OUTBOX_COLUMNS = ("event_id", "event_type", "subject", "payload", "headers", "agent_id", "correlation_id", "created_at")


def _insert_sql(table: Table, columns: Sequence[str]) -> str:
    return f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


def _bind(column: Column[Any], dialect: Dialect) -> Callable[[Any], Any]:
    processor = column.type.dialect_impl(dialect).bind_processor(dialect)  # the type as the dialect adapts it
    return processor or (lambda value: value)


def _result(column: Column[Any], dialect: Dialect) -> Callable[[Any], Any]:
    processor = column.type.dialect_impl(dialect).result_processor(dialect, None)
    return processor or (lambda value: value)


def driver_connection(connection: Connection) -> Any:
    """The DBAPI connection under a Core connection, for statements that bypass SQLAlchemy's row machinery."""
    driver = connection.connection.driver_connection
    if driver is None:
        raise RuntimeError("the connection was closed")
    return driver


class HotSql:
    """The prepared statements for one dialect."""

    _cache: ClassVar[dict[str, HotSql]] = {}

    def __init__(self, dialect: Dialect) -> None:
        self.dialect_name = dialect.name
        self._format = dialect.paramstyle in ("format", "pyformat")
        self._timestamp = _bind(TRANSFERS.c.created_at, dialect)  # outbox.created_at has the same type
        self._read_timestamp = _result(TRANSFERS.c.created_at, dialect)
        self.placeholder = "%s" if self._format else "?"
        self.insert_transfers = self.sql(_insert_sql(TRANSFERS, TRANSFER_COLUMNS))
        self.insert_outbox = self.sql(_insert_sql(OUTBOX, OUTBOX_COLUMNS))
        self.update_account = self.sql("UPDATE accounts SET debits_micros = ?, credits_micros = ? WHERE id = ?")

    @classmethod
    def of(cls, connection: Connection) -> HotSql:
        name = connection.dialect.name
        if name not in cls._cache:
            cls._cache[name] = cls(connection.dialect)
        return cls._cache[name]

    def sql(self, text: str) -> str:
        return text.replace("?", "%s") if self._format else text

    def placeholders(self, count: int) -> str:
        return ", ".join([self.placeholder] * count)

    def select_accounts(self, count: int) -> str:
        lock = "" if self.dialect_name == "sqlite" else " ORDER BY id FOR UPDATE"  # one lock order: no deadlocks
        return (
            "SELECT id, debits_micros, credits_micros, debits_must_not_exceed_credits FROM accounts "
            f"WHERE id IN ({self.placeholders(count)}){lock}"
        )

    def select_dead_agents(self, count: int) -> str:
        return f"SELECT id FROM agents WHERE status = 'died' AND id IN ({self.placeholders(count)})"

    def select_transfers_by_key(self, count: int) -> str:
        """The journal rows for some idempotency keys, columns in :data:`TRANSFER_COLUMNS` order."""
        return (
            f"SELECT {', '.join(TRANSFER_COLUMNS)} FROM transfers WHERE idempotency_key IN ({self.placeholders(count)})"
        )

    def transfer_row(self, values: Sequence[Any]) -> dict[str, Any]:
        """A row of :meth:`select_transfers_by_key` as a dict, created_at read as SQLAlchemy would."""
        row = dict(zip(TRANSFER_COLUMNS, values, strict=True))
        row["created_at"] = self._read_timestamp(row["created_at"])
        return row

    def timestamp(self, moment: datetime) -> Any:
        """``moment`` as the driver stores a created_at column (converted once, shared by a whole batch)."""
        return self._timestamp(moment)

    def transfer_values(self, row: dict[str, Any], stamp: Any) -> tuple[Any, ...]:
        return (*[row[c] for c in TRANSFER_COLUMNS[:-1]], stamp)

    def outbox_values(self, row: dict[str, Any], stamp: Any) -> tuple[Any, ...]:
        return (*[row[c] for c in OUTBOX_COLUMNS[:-1]], stamp)

    def insert_outbox_rows(self, connection: Connection, rows: Sequence[dict[str, Any]]) -> None:
        stamp = self.timestamp(utcnow())
        cursor = driver_connection(connection).cursor()
        try:
            cursor.executemany(self.insert_outbox, [self.outbox_values(row, stamp) for row in rows])
        finally:
            cursor.close()
