"""The agent registry's persistence: an agent row and its ledger accounts, created in one transaction."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy.orm import Session

from syntropism.domain.economy import LedgerError
from syntropism.domain.events import AgentSpawned, AgentSpawnedData
from syntropism.infra.ledger import open_accounts
from syntropism.infra.outbox import record_event
from syntropism.infra.tables import Agent


def register_agent(
    session: Session,
    agent_id: str,
    *,
    name: str | None = None,
    entry_point: str = "main.py",
    parent_id: str | None = None,
    initial_grant: Decimal = Decimal(0),
) -> Agent:
    """Create an agent with empty accounts and record agent.spawned; funding it is a separate ledger grant."""
    if not agent_id or ":" in agent_id or len(agent_id) > 128:
        raise LedgerError("invalid_input", f"agent id {agent_id!r} must be 1–128 characters without ':'")
    if session.get(Agent, agent_id) is not None:
        raise LedgerError("agent_exists", f"agent {agent_id} already exists")
    agent = Agent(id=agent_id, name=name or agent_id, entry_point=entry_point, parent_id=parent_id)
    session.add(agent)
    session.flush()
    open_accounts(session, agent_id)
    record_event(
        session,
        AgentSpawned(
            agent_id=agent_id,
            data=AgentSpawnedData(
                name=agent.name, parent_id=parent_id, entry_point=entry_point, initial_grant=initial_grant
            ),
        ),
    )
    return agent
