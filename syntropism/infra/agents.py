"""The agent registry's persistence: an agent row and its ledger accounts, created in one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from syntropism.domain.economy import LedgerError
from syntropism.domain.events import AgentSpawned, AgentSpawnedData
from syntropism.domain.identity import check_agent_id
from syntropism.domain.models import from_micros
from syntropism.infra.ledger import open_accounts
from syntropism.infra.outbox import record_event
from syntropism.infra.tables import Account, Agent


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
    check_agent_id(agent_id)  # a plain, unreserved name: it becomes a folder, account names and key scopes
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


@dataclass(frozen=True)
class Standing:
    """An agent's status and credits."""

    agent_id: str
    status: str
    available: Decimal
    locked: Decimal


def standings(session: Session, agent_ids: Sequence[str] | None = None) -> list[Standing]:
    """Every agent (or these) with its available and locked credits, oldest first, in one query."""
    query = (
        select(Agent.id, Agent.status, Account.kind, Account.credits_micros - Account.debits_micros)
        .join(Account, Account.agent_id == Agent.id)
        .order_by(Agent.created_at, Agent.id)
    )
    if agent_ids is not None:
        query = query.where(Agent.id.in_(agent_ids))
    found: dict[str, tuple[str, dict[str, int]]] = {}
    for agent_id, status, kind, micros in session.execute(query):
        found.setdefault(agent_id, (status, {}))[1][kind] = micros
    return [
        Standing(agent_id, status, from_micros(credits.get("available", 0)), from_micros(credits.get("locked", 0)))
        for agent_id, (status, credits) in found.items()
    ]
