"""What a spawn leaves in the database besides the child's row: the transfer that funded it, found again by its
idempotency key (a retried spawn is answered with the first one), and the count an execution's quota weighs."""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from syntropism.infra.hot_sql import TRANSFERS
from syntropism.infra.tables import Agent, Execution


class Funding(NamedTuple):
    transfer_id: str
    amount_micros: int


def funding(session: Session, idempotency_key: str) -> Funding | None:
    """The transfer made under this idempotency key, if any."""
    row = session.execute(
        select(TRANSFERS.c.id, TRANSFERS.c.amount_micros).where(TRANSFERS.c.idempotency_key == idempotency_key)
    ).one_or_none()
    return None if row is None else Funding(row.id, row.amount_micros)


def children_since_start(session: Session, parent_id: str, execution_id: str) -> int:
    """How many children ``parent_id`` has spawned since this execution of it started (all of them, if it has
    not started)."""
    started = session.scalar(select(Execution.started_at).where(Execution.id == execution_id))
    query = select(func.count()).where(Agent.parent_id == parent_id)
    if started is not None:
        query = query.where(Agent.created_at >= started)
    return session.scalar(query) or 0
