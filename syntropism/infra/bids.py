"""The bids table: placing and withdrawing a bid, and the statements a market cycle settles its book with.

A cycle reads every pending bid through the DBAPI cursor: 10^4 rows through SQLAlchemy's row machinery cost
more than the whole clearing. Its per-bid updates are built once, here, and run as one executemany each.
On PostgreSQL the rows a cycle or a cancellation works on are locked (``FOR UPDATE``), so the two never
settle the same bid twice; SQLite's ``BEGIN IMMEDIATE`` already holds the whole database.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from syntropism.domain.market import BidRequest
from syntropism.domain.status import BidStatus
from syntropism.infra.hot_sql import driver_connection
from syntropism.infra.tables import Bid, bundle_columns, table_of

BIDS = table_of(Bid)


class PendingBid(NamedTuple):
    """A pending bid as a cycle reads it: the columns of the plain SELECT, in its order."""

    id: str
    agent_id: str
    on_behalf_of: str | None
    amount_micros: int
    duration_ms: int
    seq: int
    cpu_ppm: int
    memory_ppm: int
    tokens_ppm: int
    attention_ppm: int
    cycles_remaining: int


PENDING_SQL = f"SELECT {', '.join(PendingBid._fields)} FROM {BIDS.name} WHERE status = '{BidStatus.PENDING.value}'"
PENDING_BIDS_OF = select(func.count()).select_from(  # built once: it runs with every bid; counts no further than cap
    select(Bid.id)
    .where(Bid.agent_id == bindparam("agent"), Bid.status == BidStatus.PENDING)
    .limit(bindparam("cap"))
    .subquery()
)
SPEND_A_CYCLE = update(BIDS).where(BIDS.c.id == bindparam("bid")).values(cycles_remaining=BIDS.c.cycles_remaining - 1)
EXPIRE = (
    update(BIDS)
    .where(BIDS.c.id == bindparam("bid"))
    .values(status=BidStatus.OUTBID, cycles_remaining=0, resolved_at=bindparam("now"))
)


# --- placing and withdrawing ---------------------------------------------------------------------------------


def by_key(session: Session, idempotency_key: str) -> Bid | None:
    """The bid placed under this idempotency key, if any."""
    return session.scalars(select(Bid).where(Bid.idempotency_key == idempotency_key)).one_or_none()


def pending_count(session: Session, agent_id: str, cap: int) -> int:
    """How many pending bids ``agent_id`` has, counted no further than ``cap``."""
    return session.scalar(PENDING_BIDS_OF, {"agent": agent_id, "cap": cap}) or 0


def add(
    session: Session,
    bid_id: str,
    agent_id: str,
    request: BidRequest,
    *,
    idempotency_key: str,
    on_behalf_of: str | None,
) -> Bid:
    """Store a pending bid for ``request``; flushed, so a second bid under the same key fails here."""
    bid = Bid(
        id=bid_id,
        agent_id=agent_id,
        on_behalf_of=on_behalf_of,
        amount_micros=request.amount_micros,
        lifetime_cycles=request.lifetime_cycles,
        cycles_remaining=request.lifetime_cycles,
        idempotency_key=idempotency_key,
        **bundle_columns(request.bundle),
    )
    session.add(bid)
    session.flush()
    return bid


def locked(session: Session, bid_id: str) -> Bid | None:
    """The bid ``bid_id``, locked until the transaction ends (a cycle settling it meanwhile waits)."""
    statement = select(Bid).where(Bid.id == bid_id)
    if session.get_bind().dialect.name != "sqlite":
        statement = statement.with_for_update()
    return session.scalars(statement).one_or_none()


def has_pending_for(session: Session, agent_id: str) -> bool:
    """Whether a pending bid would run ``agent_id``: one for it, or one by it for itself."""
    found = session.scalar(
        select(Bid.id)
        .where(
            Bid.status == BidStatus.PENDING,
            or_(Bid.on_behalf_of == agent_id, (Bid.agent_id == agent_id) & Bid.on_behalf_of.is_(None)),
        )
        .limit(1)
    )
    return found is not None


# --- a market cycle ------------------------------------------------------------------------------------------


def lock_pending(session: Session) -> list[tuple[Any, ...]]:
    """Every pending bid, as raw rows in :class:`PendingBid` order; locked on PostgreSQL (a concurrent cancel
    waits for the cycle)."""
    connection = session.connection()
    lock = "" if connection.dialect.name == "sqlite" else " FOR UPDATE"
    cursor = driver_connection(connection).cursor()
    try:
        cursor.execute(PENDING_SQL + lock)
        rows: list[tuple[Any, ...]] = cursor.fetchall()
    finally:
        cursor.close()
    return rows


def mark_won(session: Session, bid_id: str, *, paid_micros: int, now: datetime) -> None:
    session.execute(
        update(Bid).where(Bid.id == bid_id).values(status=BidStatus.WON, resolved_at=now, paid_micros=paid_micros)
    )


def spend_a_cycle(session: Session, bid_ids: Sequence[str]) -> None:
    """Each of these bids has one cycle less of its lifetime left (one statement per bid, run as a batch: no
    IN list as long as the book)."""
    if bid_ids:
        session.execute(SPEND_A_CYCLE, [{"bid": bid_id} for bid_id in bid_ids])


def expire(session: Session, bid_ids: Iterable[str], now: datetime) -> None:
    """These bids' lifetimes ran out: outbid, resolved ``now``."""
    parameters = [{"bid": bid_id, "now": now} for bid_id in bid_ids]
    if parameters:
        session.execute(EXPIRE, parameters)
