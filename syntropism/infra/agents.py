"""The agent registry's persistence: an agent row and its ledger accounts, created in one transaction; and
the agents as the lifecycle finds them (locked before a change of status, or destitute)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from syntropism.domain.economy import LedgerError
from syntropism.domain.errors import Reason
from syntropism.domain.events import AgentSpawned, AgentSpawnedData
from syntropism.domain.identity import check_agent_id
from syntropism.domain.models import from_micros
from syntropism.domain.status import LIVE_EXECUTION_STATUSES, AgentStatus, BidStatus
from syntropism.infra.ledger import open_accounts
from syntropism.infra.outbox import record_event
from syntropism.infra.tables import Account, Agent, Bid, Execution

COUNT = select(func.count()).select_from(Agent)


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
        raise LedgerError(Reason.AGENT_EXISTS, f"agent {agent_id} already exists")
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


def get_agent(session: Session, agent_id: str) -> Agent | None:
    return session.get(Agent, agent_id)


def existing_agent(session: Session, agent_id: str) -> Agent:
    """The agent's row, which the caller knows exists (NoResultFound if it does not)."""
    return session.get_one(Agent, agent_id)


def locked_agent(session: Session, agent_id: str) -> Agent | None:
    """The agent's row, locked until the transaction ends: its status changes one writer at a time."""
    return session.get(Agent, agent_id, with_for_update=True)


def count_agents(session: Session) -> int:
    return session.scalar(COUNT) or 0


def destitute_agents(
    session: Session, cutoff: datetime, *, among: Sequence[str] | None = None, lock: bool = False
) -> list[str]:
    """Agents dormant since before ``cutoff`` with no credits, nothing allocated or running and no pending bid by or
    for them (or those of ``among``). With ``lock``, their accounts are locked first on PostgreSQL, in one order, so
    no credit reaches them before the caller's transaction ends (SQLite's BEGIN IMMEDIATE holds every row already)."""
    balance = func.sum(Account.credits_micros - Account.debits_micros)
    live = select(Execution.id).where(Execution.agent_id == Agent.id, Execution.status.in_(LIVE_EXECUTION_STATUSES))
    pending = select(Bid.id).where(
        Bid.status == BidStatus.PENDING, or_(Bid.on_behalf_of == Agent.id, Bid.agent_id == Agent.id)
    )
    query = (
        select(Agent.id)
        .join(Account, Account.agent_id == Agent.id)
        .where(
            Agent.status == AgentStatus.DORMANT, Agent.status_changed_at <= cutoff, ~live.exists(), ~pending.exists()
        )
        .group_by(Agent.id)
        .having(balance <= 0)
    )
    if among is not None:
        if lock and session.get_bind().dialect.name != "sqlite":
            session.execute(
                select(Account.id).where(Account.agent_id.in_(among)).order_by(Account.id).with_for_update()
            )
        query = query.where(Agent.id.in_(among))
    return list(session.scalars(query).all())
