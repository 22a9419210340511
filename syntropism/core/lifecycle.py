"""An agent's life between runs: active while something will run it, dormant when nothing will (DESIGN §5).

"Something will run it" means an execution allocated or running, or a pending bid by it (for itself) or for it.
Every change that can end the last of those — an execution ending, a bid expiring as outbid, a bid withdrawn —
calls :func:`settle_dormancy` in its own transaction, so no agent stays ``active`` with nothing ahead of it (and
so never dies of poverty).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from syntropism.domain.events import AgentDormant, AgentDormantData, Event
from syntropism.infra.outbox import record_event
from syntropism.infra.tables import Agent, Bid, Execution, utcnow

LIVE_EXECUTIONS = ("allocated", "running")


def settle_dormancy(
    session: Session,
    agent_ids: Iterable[str],
    *,
    last_execution_id: str | None = None,
    record: Callable[[Session, Event], None] = record_event,
) -> list[str]:
    """Make each active agent among ``agent_ids`` dormant when nothing will run it again; returns those."""
    dormant = []
    for agent_id in sorted(set(agent_ids)):  # one lock order
        agent = session.get(Agent, agent_id, with_for_update=True)
        if agent is None or agent.status != "active" or _has_future(session, agent_id):
            continue
        agent.status, agent.status_changed_at = "dormant", utcnow()
        last = last_execution_id or session.scalar(
            select(Execution.id).where(Execution.agent_id == agent_id).order_by(Execution.allocated_at.desc()).limit(1)
        )
        record(session, AgentDormant(agent_id=agent_id, data=AgentDormantData(last_execution_id=last)))
        dormant.append(agent_id)
    return dormant


def _has_future(session: Session, agent_id: str) -> bool:
    live = session.scalar(
        select(Execution.id).where(Execution.agent_id == agent_id, Execution.status.in_(LIVE_EXECUTIONS)).limit(1)
    )
    if live is not None:
        return True
    pending = session.scalar(
        select(Bid.id)
        .where(
            Bid.status == "pending",
            or_(Bid.on_behalf_of == agent_id, (Bid.agent_id == agent_id) & Bid.on_behalf_of.is_(None)),
        )
        .limit(1)
    )
    return pending is not None
