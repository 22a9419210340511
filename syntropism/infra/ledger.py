"""The ledger's persistence: operations from ``domain.economy`` applied to the database, in batches.

A batch loads the accounts it touches (row-locked on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` already holds
the write lock), applies each operation in memory with :func:`domain.economy.post`, then writes the journal
rows, the new account totals and one outbox event per operation with a few bulk statements, in one
transaction. An operation that fails changes nothing, and never spoils the others in its batch.

Callers either pass a session (the operation joins their transaction, e.g. a bid row and its lock) or call
:meth:`Ledger.execute`, whose group commit writes the requests of concurrent callers in one transaction, so
they share an fsync, as TigerBeetle batches transfers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any, Protocol

from sqlalchemy import Connection, PoolProxiedConnection, bindparam, func, insert, or_, select
from sqlalchemy.orm import Session

from syntropism.domain.economy import (
    MAX_JOURNAL_SEQ,
    SYSTEM_BURN,
    SYSTEM_MINT,
    AccountState,
    InvariantReport,
    LedgerError,
    Operation,
    OperationKind,
    available_account,
    check_invariant,
    event_for,
    locked_account,
    post,
)
from syntropism.domain.errors import Reason
from syntropism.domain.models import from_micros, time_ordered_id
from syntropism.infra.database import Database
from syntropism.infra.faults import crash_point
from syntropism.infra.group_commit import GroupCommitter
from syntropism.infra.hot_sql import TRANSFERS, HotSql
from syntropism.infra.outbox import mark_events_staged, outbox_row
from syntropism.infra.tables import Account, Agent, utcnow
from syntropism.infra.telemetry import trace_headers

log = logging.getLogger(__name__)

ACCOUNTS = Account.__table__
BALANCE = select(ACCOUNTS.c.id, ACCOUNTS.c.credits_micros - ACCOUNTS.c.debits_micros).where(
    ACCOUNTS.c.id.in_(bindparam("accounts", expanding=True))
)
MAX_BATCH = 1000
RETRIES = 5


class TransferRow(Protocol):
    """A journal entry as read back (a ``transfers`` row) or as just written in this batch."""

    id: str
    kind: str
    amount_micros: int
    debit_account_id: str
    credit_account_id: str
    debit_balance_after_micros: int
    credit_balance_after_micros: int
    reference: str | None
    memo: str | None
    created_at: datetime


@dataclass(frozen=True)
class Receipt:
    """The outcome of an operation; a repeat with the same idempotency key returns the first receipt."""

    transfer_id: str
    kind: OperationKind
    amount: Decimal
    debit_account: str
    credit_account: str
    debit_balance_after: Decimal
    credit_balance_after: Decimal
    reference: str | None
    memo: str | None
    created_at: datetime
    replayed: bool = False

    @classmethod
    def from_row(cls, row: TransferRow, *, replayed: bool) -> Receipt:
        return cls(
            transfer_id=row.id,
            kind=OperationKind(row.kind),
            amount=from_micros(row.amount_micros),
            debit_account=row.debit_account_id,
            credit_account=row.credit_account_id,
            debit_balance_after=from_micros(row.debit_balance_after_micros),
            credit_balance_after=from_micros(row.credit_balance_after_micros),
            reference=row.reference,
            memo=row.memo,
            created_at=row.created_at,
            replayed=replayed,
        )


@dataclass(frozen=True)
class Balance:
    agent_id: str
    available: Decimal
    locked: Decimal


@dataclass(frozen=True)
class HistoryPage:
    entries: list[Receipt]
    next_before: int | None  # pass as ``before`` for the next (older) page; None when there is none


@dataclass(frozen=True)
class VerifyReport:
    invariant: InvariantReport
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.invariant.holds and not self.problems


Request = tuple[Operation, dict[str, str]]  # an operation and the caller's trace context


def open_accounts(session: Session, agent_id: str) -> None:
    """Create an agent's available and locked accounts (the agent row must exist)."""
    session.execute(
        insert(Account),
        [
            {"id": available_account(agent_id), "agent_id": agent_id, "kind": "available"},
            {"id": locked_account(agent_id), "agent_id": agent_id, "kind": "locked"},
        ],
    )


def _replay(operation: Operation, row: Any) -> Receipt:
    if not operation.same_request_as(row.kind, row.debit_account_id, row.credit_account_id, row.amount_micros):
        raise LedgerError(
            Reason.IDEMPOTENCY_CONFLICT,
            f"idempotency key {operation.idempotency_key!r} was used for a different operation "
            f"({row.kind} of {from_micros(row.amount_micros)} from {row.debit_account_id} to {row.credit_account_id})",
        )
    return Receipt.from_row(row, replayed=True)


def apply_batch(connection: Connection, requests: Sequence[Request]) -> list[Receipt | LedgerError]:
    """Apply operations in order inside ``connection``'s transaction; one receipt or error per operation.

    The caller commits, and marks its transaction as having staged events when any receipt is fresh.
    """
    return apply_batch_raw(connection.connection.driver_connection, HotSql.of(connection), requests)


def apply_batch_raw(dbapi_connection: Any, sql: HotSql, requests: Sequence[Request]) -> list[Receipt | LedgerError]:
    """:func:`apply_batch` on a DBAPI connection whose write transaction is open."""
    cursor = dbapi_connection.cursor()
    try:
        keys = list({operation.idempotency_key for operation, _ in requests})
        existing: dict[str, Any] = {
            row["idempotency_key"]: SimpleNamespace(**row)
            for row in map(sql.transfer_row, _select_in(cursor, sql.select_transfers_by_key, keys))
        }
        account_ids = sorted({a for op, _ in requests for a in (op.debit_account, op.credit_account)})
        accounts = {
            row[0]: AccountState(row[0], row[1], row[2], bool(row[3]))
            for row in _select_in(cursor, sql.select_accounts, account_ids)  # sorted chunks keep one lock order
        }
        dead = _dead_recipients(cursor, sql, [op for op, _ in requests])
        now = utcnow()
        stamp = sql.timestamp(now)
        results: list[Receipt | LedgerError] = []
        transfer_rows: list[tuple[Any, ...]] = []
        event_rows: list[tuple[Any, ...]] = []
        touched: set[str] = set()
        for operation, headers in requests:
            try:
                if operation.idempotency_key in existing:
                    results.append(_replay(operation, existing[operation.idempotency_key]))
                    continue
                if operation.credit_account in dead:
                    dead_agent = dead[operation.credit_account]
                    raise LedgerError(Reason.AGENT_DEAD, f"{dead_agent} has died: it takes no credits")
                posting = post(operation, accounts)
            except LedgerError as error:
                results.append(error)
                continue
            transfer_id = time_ordered_id()
            row = {
                "id": transfer_id,
                "idempotency_key": operation.idempotency_key,
                "kind": operation.kind.value,
                "debit_account_id": operation.debit_account,
                "credit_account_id": operation.credit_account,
                "amount_micros": operation.amount_micros,
                "debit_balance_after_micros": posting.debit_balance_after,
                "credit_balance_after_micros": posting.credit_balance_after,
                "reference": operation.reference,
                "memo": operation.memo,
                "created_at": now,
            }
            written = SimpleNamespace(**row)
            existing[operation.idempotency_key] = written  # a repeat later in this batch replays this one
            transfer_rows.append(sql.transfer_values(row, stamp))
            event_rows.append(sql.outbox_values(outbox_row(event_for(posting, transfer_id), headers), stamp))
            touched.update((operation.debit_account, operation.credit_account))
            results.append(Receipt.from_row(written, replayed=False))
        if transfer_rows:
            cursor.executemany(sql.insert_transfers, transfer_rows)
            cursor.executemany(
                sql.update_account,
                [(accounts[a].debits_micros, accounts[a].credits_micros, a) for a in sorted(touched)],
            )
            cursor.executemany(sql.insert_outbox, event_rows)
            crash_point("ledger.before_commit")
        return results
    finally:
        cursor.close()


IN_CHUNK = 500  # ids per IN list: far below SQLite's and PostgreSQL's parameter limits, whatever the batch


def _select_in(cursor: Any, statement: Callable[[int], str], values: Sequence[Any]) -> list[Any]:
    """The rows of ``statement(n)`` over ``values``, IN list by IN list of at most :data:`IN_CHUNK`."""
    rows: list[Any] = []
    for start in range(0, len(values), IN_CHUNK):
        chunk = values[start : start + IN_CHUNK]
        cursor.execute(statement(len(chunk)), chunk)
        rows.extend(cursor.fetchall())
    return rows


CREDITS_AN_AGENT = (OperationKind.TRANSFER, OperationKind.REWARD, OperationKind.GRANT)


def _dead_recipients(cursor: Any, sql: HotSql, operations: Sequence[Operation]) -> dict[str, str]:
    """Available accounts of dead agents that these operations would credit → the agent: a dead agent's
    accounts are closed (nothing can be paid, rewarded or granted to it)."""
    recipients = {
        op.credit_account: op.credit_account.split(":")[1]
        for op in operations
        if op.kind in CREDITS_AN_AGENT and op.credit_account.startswith("agent:")
    }
    if not recipients:
        return {}
    dead = {row[0] for row in _select_in(cursor, sql.select_dead_agents, sorted(set(recipients.values())))}
    return {account: agent for account, agent in recipients.items() if agent in dead}


def apply(session: Session, operation: Operation) -> Receipt:
    """Apply one operation inside the caller's transaction; raises :class:`LedgerError` when refused."""
    [result] = apply_batch(session.connection(), [(operation, trace_headers())])
    if isinstance(result, LedgerError):
        raise result
    if not result.replayed:
        mark_events_staged(session)
    return result


class Ledger:
    """The Economic Engine's entry point: operations, balances, history and the invariant check."""

    def __init__(self, database: Database, *, max_batch: int = MAX_BATCH) -> None:
        self.database = database
        self._committer: GroupCommitter[Request, Receipt] = GroupCommitter(self._commit_batch, max_batch=max_batch)
        self._writer: PoolProxiedConnection | None = None  # used only by the group commit's leader
        self._sql = HotSql(database.engine.dialect)

    def _writer_connection(self) -> PoolProxiedConnection:
        if self._writer is None:
            self._writer = self.database.dedicated_connection()
        return self._writer

    def _commit_batch(self, requests: list[Request]) -> list[Receipt | BaseException]:
        """One transaction on the writer's own connection: no pool checkout, no ORM, one commit (one fsync)."""
        for attempt in range(1, RETRIES + 1):
            writer = self._writer_connection()
            with self.database.writing():
                try:
                    self.database.begin_write(writer.driver_connection)
                    results: list[Receipt | BaseException] = list(
                        apply_batch_raw(writer.driver_connection, self._sql, requests)
                    )
                    writer.commit()
                except BaseException as exc:
                    lost = self._abandon(writer, exc)  # rolled back before the next writer's turn
                    # PostgreSQL: a concurrent writer took the same idempotency key, or a deadlock/serialization
                    # failure: nothing was written, and the retry sees what the other committed. A lost
                    # connection may have lost the commit or only its acknowledgement: the retry's idempotency
                    # keys tell which.
                    if attempt == RETRIES or not (lost or _retryable(exc)):
                        raise
                    log.warning("ledger batch retry %d after %s", attempt, type(exc).__name__)
                    continue
            crash_point("ledger.after_commit")
            if any(isinstance(r, Receipt) and not r.replayed for r in results):
                self.database.events_committed()
            return results
        raise AssertionError("unreachable")

    def _abandon(self, writer: PoolProxiedConnection, exc: BaseException) -> bool:
        """Roll back after a failure; a connection the driver reports broken is replaced on the next batch
        (and True returned)."""
        dialect = self.database.engine.dialect
        broken = isinstance(exc, dialect.loaded_dbapi.Error) and dialect.is_disconnect(
            exc, writer.dbapi_connection, None
        )
        if not broken:
            try:
                writer.rollback()
                return False
            except dialect.loaded_dbapi.Error:
                log.exception("ledger writer connection failed to roll back; replacing it")
        log.warning("ledger writer connection lost (%s); reconnecting", exc)
        self._writer = None
        self.database.release(writer, broken=True)
        return True

    def execute(self, operation: Operation) -> Receipt:
        """Apply ``operation`` in its own transaction (shared with concurrent callers) and return its receipt.

        Blocking: from asyncio, call it through ``asyncio.to_thread``. Raises :class:`LedgerError` when refused.
        """
        return self._committer.execute((operation, trace_headers()))

    def balance(self, agent_id: str) -> Balance:
        with self.database.read_connection() as connection:
            rows = dict(
                connection.execute(BALANCE, {"accounts": [available_account(agent_id), locked_account(agent_id)]}).all()
            )
        if not rows:
            raise LedgerError(Reason.UNKNOWN_AGENT, f"no such agent: {agent_id}")
        return Balance(
            agent_id, from_micros(rows[available_account(agent_id)]), from_micros(rows[locked_account(agent_id)])
        )

    def history(self, agent_id: str, *, limit: int = 50, before: int | None = None) -> HistoryPage:
        """The agent's journal entries, newest first, ``limit`` at a time; page with ``before``."""
        if not 1 <= limit <= 500:
            raise LedgerError(Reason.INVALID_INPUT, f"limit must be from 1 to 500, got {limit}")
        if before is not None and before > MAX_JOURNAL_SEQ:  # past every (64-bit) sequence: the newest page
            before = None  # and no out-of-range integer for the database driver
        accounts = [available_account(agent_id), locked_account(agent_id)]
        with self.database.reader() as session:
            if session.get(Agent, agent_id) is None:
                raise LedgerError(Reason.UNKNOWN_AGENT, f"no such agent: {agent_id}")
            statement = (
                select(TRANSFERS)
                .where(or_(TRANSFERS.c.debit_account_id.in_(accounts), TRANSFERS.c.credit_account_id.in_(accounts)))
                .order_by(TRANSFERS.c.seq.desc())
                .limit(limit + 1)
            )
            if before is not None:
                statement = statement.where(TRANSFERS.c.seq < before)
            rows = session.execute(statement).all()
        page = rows[:limit]
        next_before = page[-1].seq if len(rows) > limit else None
        return HistoryPage([Receipt.from_row(row, replayed=False) for row in page], next_before)

    def verify(self) -> VerifyReport:
        """Check the invariant and that every account's totals equal the sums of its journal entries."""
        with self.database.reader() as session:
            accounts = [
                AccountState(*row)
                for row in session.execute(
                    select(
                        ACCOUNTS.c.id,
                        ACCOUNTS.c.debits_micros,
                        ACCOUNTS.c.credits_micros,
                        ACCOUNTS.c.debits_must_not_exceed_credits,
                    ).order_by(ACCOUNTS.c.id)
                )
            ]
            debits = dict(
                session.execute(
                    select(TRANSFERS.c.debit_account_id, func.sum(TRANSFERS.c.amount_micros)).group_by(
                        TRANSFERS.c.debit_account_id
                    )
                ).all()
            )
            credits = dict(
                session.execute(
                    select(TRANSFERS.c.credit_account_id, func.sum(TRANSFERS.c.amount_micros)).group_by(
                        TRANSFERS.c.credit_account_id
                    )
                ).all()
            )
            bad_entries = session.execute(
                select(TRANSFERS.c.seq, TRANSFERS.c.id).where(
                    or_(TRANSFERS.c.amount_micros <= 0, TRANSFERS.c.debit_account_id == TRANSFERS.c.credit_account_id)
                )
            ).all()
        problems = []
        for account in accounts:
            journal_debits, journal_credits = int(debits.get(account.id) or 0), int(credits.get(account.id) or 0)
            if (account.debits_micros, account.credits_micros) != (journal_debits, journal_credits):
                problems.append(
                    f"account {account.id}: totals debits {account.debits_micros} credits {account.credits_micros} "
                    f"(micro-credits) ≠ journal debits {journal_debits} credits {journal_credits}"
                )
        for account_id in sorted((set(debits) | set(credits)) - {a.id for a in accounts}):
            problems.append(f"journal entries name account {account_id}, which does not exist")
        for seq, transfer_id in bad_entries:
            problems.append(f"journal entry #{seq} ({transfer_id}) does not balance: amount ≤ 0 or a single account")
        for system_account in (SYSTEM_MINT, SYSTEM_BURN):
            if system_account not in {a.id for a in accounts}:
                problems.append(f"system account {system_account} is missing")
        return VerifyReport(check_invariant(accounts), tuple(problems))


def _retryable(exc: BaseException) -> bool:
    """A PostgreSQL unique violation (a concurrent writer used the same idempotency key), serialization failure
    or deadlock: the batch is safe to run again."""
    code = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    return code in {"23505", "40001", "40P01"}
