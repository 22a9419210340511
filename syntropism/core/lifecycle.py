"""An agent's life between runs: active while something will run it, dormant when nothing will (DESIGN §5).

"Something will run it" means an execution allocated or running, or a pending bid by it (for itself) or for it.
Every change that can end the last of those — an execution ending, a bid expiring as outbid, a bid withdrawn —
calls :func:`settle_dormancy` in its own transaction, so no agent stays ``active`` with nothing ahead of it (and
so never dies of poverty).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from syntropism.domain.events import AgentDormant, AgentDormantData, Event
from syntropism.domain.status import AgentStatus
from syntropism.infra import allocations, bids
from syntropism.infra.agents import locked_agent
from syntropism.infra.database import Session
from syntropism.infra.outbox import record_event
from syntropism.infra.tables import utcnow


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
        agent = locked_agent(session, agent_id)
        if agent is None or agent.status != AgentStatus.ACTIVE or _has_future(session, agent_id):
            continue
        agent.status, agent.status_changed_at = AgentStatus.DORMANT, utcnow()
        last = last_execution_id or allocations.latest_of(session, agent_id)
        record(session, AgentDormant(agent_id=agent_id, data=AgentDormantData(last_execution_id=last)))
        dormant.append(agent_id)
    return dormant


def _has_future(session: Session, agent_id: str) -> bool:
    """Whether something will run the agent: a live execution of it, or a pending bid that would run it."""
    return allocations.has_live(session, agent_id) or bids.has_pending_for(session, agent_id)
