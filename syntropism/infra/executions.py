"""The execution rows' life as the execution manager writes it: allocated → running → terminated.

Each change is one conditional ``UPDATE`` (on the status it expects), so two managers on one database never
both claim, or both end, one execution; the caller's transaction holds it with its events.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from syntropism.domain.events import TerminationReason
from syntropism.domain.status import AgentStatus, ExecutionStatus
from syntropism.infra.tables import Agent, Bid, Execution, utcnow


@dataclass(frozen=True)
class Allocated:
    """An allocated execution with what starting it needs: its agent's entry point and status, and who paid."""

    execution: Execution
    entry_point: str
    agent_status: str  # an AgentStatus
    payer_id: str | None  # the bidder of the bid that won it; None for an operator's allocation


@dataclass(frozen=True)
class LeftRunning:
    """An execution recorded as running, as an earlier runtime may have left it."""

    execution_id: str
    agent_id: str
    started_at: datetime | None


def allocated(session: Session) -> list[Allocated]:
    """Every allocated execution, oldest allocation first."""
    rows = session.execute(
        select(Execution, Agent.entry_point, Agent.status, Bid.agent_id)
        .join(Agent, Agent.id == Execution.agent_id)
        .outerjoin(Bid, Bid.id == Execution.bid_id)
        .where(Execution.status == ExecutionStatus.ALLOCATED)
        .order_by(Execution.allocated_at, Execution.id)
    ).all()
    return [Allocated(*row) for row in rows]


def claim(session: Session, execution_id: str, token_hash: str) -> bool:
    """Move an allocated execution to running with its token's hash; False when another manager was first."""
    claimed = session.execute(
        update(Execution)
        .where(Execution.id == execution_id, Execution.status == ExecutionStatus.ALLOCATED)
        .values(status=ExecutionStatus.RUNNING, started_at=utcnow(), token_hash=token_hash)
    )
    return bool(claimed.rowcount == 1)  # type: ignore[attr-defined]


def end_unstarted(session: Session, execution_id: str, reason: TerminationReason, detail: str) -> bool:
    """End an execution that never ran; False when it is no longer allocated."""
    ended = session.execute(
        update(Execution)
        .where(Execution.id == execution_id, Execution.status == ExecutionStatus.ALLOCATED)
        .values(status=ExecutionStatus.TERMINATED, ended_at=utcnow(), reason=reason.value, detail=detail)
    )
    return bool(ended.rowcount == 1)  # type: ignore[attr-defined]


def record_started(session: Session, execution_id: str, pid: int, sandbox_layers: dict[str, object]) -> None:
    """The process that runs it, and the sandbox layers it runs inside (applied and missing)."""
    session.execute(
        update(Execution).where(Execution.id == execution_id).values(pid=pid, sandbox_layers=json.dumps(sandbox_layers))
    )


def wake_if_dormant(session: Session, agent_id: str) -> bool:
    """Make a dormant agent active (its row locked first); True when it was dormant."""
    agent = session.get(Agent, agent_id, with_for_update=True)
    if agent is None or agent.status != AgentStatus.DORMANT:
        return False
    agent.status, agent.status_changed_at = AgentStatus.ACTIVE, utcnow()
    return True


def record_terminated(
    session: Session,
    execution_id: str,
    *,
    reason: TerminationReason,
    exit_code: int | None,
    signal: int | None,
    cpu_seconds: float,
    peak_memory_bytes: int,
    detail: str | None,
) -> None:
    """How it ended. The token's hash stays: a late call with the token is told it expired, not that it is unknown."""
    session.execute(
        update(Execution)
        .where(Execution.id == execution_id)
        .values(
            status=ExecutionStatus.TERMINATED,
            ended_at=utcnow(),
            reason=reason.value,
            exit_code=exit_code,
            signal=signal,
            cpu_seconds=cpu_seconds,
            peak_memory_bytes=peak_memory_bytes,
            detail=detail,
        )
    )


def left_running(session: Session) -> list[LeftRunning]:
    """Every execution recorded as running."""
    rows = session.execute(
        select(Execution.id, Execution.agent_id, Execution.started_at).where(
            Execution.status == ExecutionStatus.RUNNING
        )
    ).all()
    return [LeftRunning(*row) for row in rows]
