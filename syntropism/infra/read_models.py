"""The read side: what the operator's API, the live view and the CLI show of the economy, as plain frozen values.

Each function reads one consistent snapshot (a read-only session that never takes SQLite's write lock) and
answers with dataclasses rather than ORM rows, so nothing above this module holds a session, lazily loads a
column or learns the tables' shape. The writes stay with the services and their adapters.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from syntropism.domain.models import ResourceBundle, from_micros
from syntropism.domain.status import AgentStatus, BidStatus, ExecutionStatus, PromptStatus
from syntropism.infra.database import Database
from syntropism.infra.tables import Account, Agent, Bid, Execution, OutboxEvent, Prompt, bundle_of

RECENT_EXECUTIONS = 20  # what an agent's detail shows of its past


@dataclass(frozen=True)
class AgentView:
    """An agent as the operator sees it: who it is, its status and its credits."""

    agent_id: str
    name: str
    status: AgentStatus
    parent_id: str | None
    entry_point: str
    available: Decimal
    locked: Decimal
    created_at: datetime


@dataclass(frozen=True)
class ExecutionView:
    """One execution of an agent: when it ran, how it ended and what it used."""

    execution_id: str
    agent_id: str
    status: ExecutionStatus
    reason: str | None
    bid_id: str | None
    started_at: datetime | None
    ended_at: datetime | None
    exit_code: int | None
    signal: int | None
    cpu_seconds: float | None
    peak_memory_bytes: int | None


@dataclass(frozen=True)
class PendingBidView:
    """A bid still in the book (named apart from :class:`syntropism.domain.clearing.BidView`, the auction's)."""

    bid_id: str
    agent_id: str
    on_behalf_of: str | None
    amount: Decimal
    status: BidStatus
    bundle: ResourceBundle
    cycles_remaining: int


@dataclass(frozen=True)
class AgentDetail:
    """An agent with its latest executions (newest first) and its pending bids (in placement order)."""

    agent: AgentView
    executions: tuple[ExecutionView, ...]
    pending_bids: tuple[PendingBidView, ...]


@dataclass(frozen=True)
class AgentActivity:
    """An agent with how many times it ran and how its last execution ended (the CLI's ``agents`` table)."""

    agent: AgentView
    executions: int
    last_end_reason: str | None


@dataclass(frozen=True)
class Workload:
    """What is under way: executions running and prompts waiting for the human (the CLI's ``status``)."""

    executions_running: int
    prompts_waiting: int


@dataclass(frozen=True)
class RecentEvent:
    event_type: str
    agent_id: str | None
    created_at: datetime


@dataclass(frozen=True)
class WaitingPrompt:
    prompt_id: str
    agent_id: str
    text: str
    created_at: datetime


# --- agents ---------------------------------------------------------------------------------------------------


def _agent_views(session: Session, agent_ids: Collection[str] | None = None) -> list[AgentView]:
    """Every agent (or these), oldest first, with its credits: one statement, a row per agent and account."""
    query = (
        select(
            Agent.id,
            Agent.name,
            Agent.status,
            Agent.parent_id,
            Agent.entry_point,
            Agent.created_at,
            Account.kind,
            Account.credits_micros - Account.debits_micros,
        )
        .join(Account, Account.agent_id == Agent.id)
        .order_by(Agent.created_at, Agent.id)
    )
    if agent_ids is not None:
        query = query.where(Agent.id.in_(agent_ids))
    rows: dict[str, tuple[str, str, str | None, str, datetime]] = {}
    balances: dict[str, dict[str, int]] = {}
    for agent_id, name, status, parent_id, entry_point, created_at, kind, micros in session.execute(query):
        rows.setdefault(agent_id, (name, status, parent_id, entry_point, created_at))
        balances.setdefault(agent_id, {})[kind] = micros
    return [
        AgentView(
            agent_id,
            name,
            AgentStatus(status),
            parent_id,
            entry_point,
            from_micros(balances[agent_id].get("available", 0)),
            from_micros(balances[agent_id].get("locked", 0)),
            created_at,
        )
        for agent_id, (name, status, parent_id, entry_point, created_at) in rows.items()
    ]


def agents(database: Database) -> list[AgentView]:
    """Every agent with its credits, oldest first."""
    with database.reader() as session:
        return _agent_views(session)


def agent(database: Database, agent_id: str) -> AgentView | None:
    """The agent with its credits; None if there is no such agent."""
    with database.reader() as session:
        found = _agent_views(session, [agent_id])
    return found[0] if found else None


def agent_detail(database: Database, agent_id: str, *, executions: int = RECENT_EXECUTIONS) -> AgentDetail | None:
    """The agent, its latest ``executions`` and its pending bids, from one snapshot; None if there is no such
    agent."""
    with database.reader() as session:
        found = _agent_views(session, [agent_id])
        if not found:
            return None
        latest = session.scalars(
            select(Execution)
            .where(Execution.agent_id == agent_id)
            .order_by(Execution.allocated_at.desc())
            .limit(executions)
        )
        return AgentDetail(found[0], tuple(_execution_view(e) for e in latest), tuple(_pending_bids(session, agent_id)))


def agent_activity(database: Database) -> list[AgentActivity]:
    """Every agent, oldest first, with its number of executions and the reason its latest terminated one ended."""
    with database.reader() as session:
        views = _agent_views(session)
        runs = dict(session.execute(select(Execution.agent_id, func.count()).group_by(Execution.agent_id)).all())
        ended = (
            select(Execution.agent_id, Execution.reason)
            .where(Execution.status == ExecutionStatus.TERMINATED)
            .order_by(Execution.ended_at)
        )
        last = dict(session.execute(ended).all())  # in order of ending: the latest per agent wins
    return [AgentActivity(view, runs.get(view.agent_id, 0), last.get(view.agent_id)) for view in views]


def _execution_view(row: Execution) -> ExecutionView:
    return ExecutionView(
        execution_id=row.id,
        agent_id=row.agent_id,
        status=ExecutionStatus(row.status),
        reason=row.reason,
        bid_id=row.bid_id,
        started_at=row.started_at,
        ended_at=row.ended_at,
        exit_code=row.exit_code,
        signal=row.signal,
        cpu_seconds=row.cpu_seconds,
        peak_memory_bytes=row.peak_memory_bytes,
    )


# --- bids -----------------------------------------------------------------------------------------------------


def pending_bids(database: Database, agent_id: str) -> list[PendingBidView]:
    """The bids ``agent_id`` placed (and pays for) that are still in the book, in placement order."""
    with database.reader() as session:
        return _pending_bids(session, agent_id)


def _pending_bids(session: Session, agent_id: str) -> list[PendingBidView]:
    query = select(Bid).where(Bid.agent_id == agent_id, Bid.status == BidStatus.PENDING).order_by(Bid.seq)
    return [
        PendingBidView(
            bid_id=bid.id,
            agent_id=bid.agent_id,
            on_behalf_of=bid.on_behalf_of,
            amount=from_micros(bid.amount_micros),
            status=BidStatus(bid.status),
            bundle=bundle_of(bid),
            cycles_remaining=bid.cycles_remaining,
        )
        for bid in session.scalars(query)
    ]


def bidder_of(database: Database, bid_id: str) -> str | None:
    """Who placed the bid (and pays for it); None if there is no such bid."""
    with database.reader() as session:
        return session.scalar(select(Bid.agent_id).where(Bid.id == bid_id))


# --- activity -------------------------------------------------------------------------------------------------


def workload(database: Database) -> Workload:
    """How many executions run and how many prompts wait for the human, from one snapshot."""
    with database.reader() as session:
        running = session.scalar(
            select(func.count()).select_from(Execution).where(Execution.status == ExecutionStatus.RUNNING)
        )
        waiting = session.scalar(select(func.count()).select_from(Prompt).where(Prompt.status == PromptStatus.PENDING))
    return Workload(running or 0, waiting or 0)


def recent_events(database: Database, *, limit: int, excluding: Collection[str] = ()) -> list[RecentEvent]:
    """The latest ``limit`` events recorded in the outbox, newest first, leaving out the types in ``excluding``
    (the routine ones a view would drown in)."""
    query = select(OutboxEvent.event_type, OutboxEvent.agent_id, OutboxEvent.created_at)
    if excluding:
        query = query.where(OutboxEvent.event_type.not_in(excluding))
    with database.reader() as session:
        rows = session.execute(query.order_by(OutboxEvent.id.desc()).limit(limit))
        return [RecentEvent(event_type, agent_id, created_at) for event_type, agent_id, created_at in rows]


def waiting_prompts(database: Database) -> list[WaitingPrompt]:
    """The prompts waiting for the human, oldest first, as stored (expiring stale ones is the attention
    service's work, not a reader's)."""
    query = (
        select(Prompt.id, Prompt.agent_id, Prompt.text, Prompt.created_at)
        .where(Prompt.status == PromptStatus.PENDING)
        .order_by(Prompt.created_at)
    )
    with database.reader() as session:
        return [WaitingPrompt(*row) for row in session.execute(query)]


def committed_events(database: Database) -> int:
    """How many events the database committed to its outbox, published or not."""
    with database.reader() as session:
        return session.scalar(select(func.count()).select_from(OutboxEvent)) or 0
