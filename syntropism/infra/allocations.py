"""Executions as the market creates them and the services weigh them: a winner's allocation, the capacity the
live ones hold, whether an agent has one ahead of it. (Their life after allocation is in ``executions``.)"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from syntropism.domain.models import Resource
from syntropism.domain.status import LIVE_EXECUTION_STATUSES
from syntropism.infra.tables import Execution, ppm_columns

CAPACITY_COLUMNS = {r: getattr(Execution, f"{r.value}_ppm") for r in Resource}
LIVE_CAPACITY = select(*[func.coalesce(func.sum(c), 0) for c in CAPACITY_COLUMNS.values()]).where(
    Execution.status.in_(LIVE_EXECUTION_STATUSES)
)


def capacity_in_use_ppm(session: Session) -> dict[Resource, int]:
    """Per resource, Σ of the shares (in ppm) of every execution allocated and not yet terminated."""
    sums = session.execute(LIVE_CAPACITY).one()
    return {resource: int(total) for resource, total in zip(CAPACITY_COLUMNS, sums, strict=True)}


def add(
    session: Session,
    execution_id: str,
    *,
    agent_id: str,
    bid_id: str,
    cycle: int,
    allocated_at: datetime,
    ppm: Mapping[Resource, int],
    duration_ms: int,
) -> None:
    """An execution allocated to ``agent_id`` by the bid that won it in ``cycle``."""
    session.add(
        Execution(
            id=execution_id,
            agent_id=agent_id,
            bid_id=bid_id,
            cycle=cycle,
            allocated_at=allocated_at,
            **ppm_columns(ppm, duration_ms),
        )
    )


def has_live(session: Session, agent_id: str) -> bool:
    """Whether an execution of ``agent_id`` is allocated or running."""
    live = session.scalar(
        select(Execution.id)
        .where(Execution.agent_id == agent_id, Execution.status.in_(LIVE_EXECUTION_STATUSES))
        .limit(1)
    )
    return live is not None


def latest_of(session: Session, agent_id: str) -> str | None:
    """The id of the agent's most recently allocated execution."""
    return session.scalar(
        select(Execution.id).where(Execution.agent_id == agent_id).order_by(Execution.allocated_at.desc()).limit(1)
    )


def locked(session: Session, execution_id: str) -> Execution:
    """The execution ``execution_id``, locked until the transaction ends (on PostgreSQL; SQLite's write
    transaction holds it already): what is spent of its share is checked and added one writer at a time."""
    statement = select(Execution).where(Execution.id == execution_id)
    if session.get_bind().dialect.name != "sqlite":
        statement = statement.with_for_update()
    return session.scalars(statement).one()
