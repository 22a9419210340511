"""Agents among agents: messages, spawning children, and death by poverty (DESIGN §5, §6).

- A message commits with its ``social.message_sent`` event. An inbox shows the messages not yet delivered to an
  earlier execution of the recipient: each message is read by one execution (repeated reads within it return
  it again), so an agent sees what arrived since its last execution.
- Spawning registers a child agent (``agent.spawned``) whose workspace is a copy of a file or folder from the
  parent's workspace, funded by a transfer from the parent, all in one transaction. The child is dormant until a
  bid for it wins.
- A dormant agent with no credits (available + locked) past ``dormant_grace_seconds`` dies: its workspace is
  archived (and kept), ``agent.died`` is recorded, and no bid can be placed by or for it again.
"""

from __future__ import annotations

import logging
import shutil
import tarfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from syntropism.config import Settings
from syntropism.domain import economy
from syntropism.domain.errors import Refused
from syntropism.domain.events import AgentDied, AgentDiedData, MessageSent, MessageSentData
from syntropism.domain.models import from_micros, time_ordered_id
from syntropism.infra.agents import register_agent
from syntropism.infra.database import Database
from syntropism.infra.hot_sql import TRANSFERS
from syntropism.infra.ledger import Receipt, apply
from syntropism.infra.outbox import record_event
from syntropism.infra.tables import Account, Agent, Message, utcnow

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 20_000
MAX_SPAWN_BYTES = 64 * 2**20  # what a child may inherit from its parent's workspace


class SocialError(Refused):
    """A refused message or spawn."""


@dataclass(frozen=True)
class SentMessage:
    message_id: str
    from_agent: str
    to_agent: str
    body: str
    sent_at: datetime
    replayed: bool = False


@dataclass(frozen=True)
class Spawned:
    agent_id: str
    parent_id: str
    funds: Decimal
    transfer_id: str | None
    replayed: bool = False


class SocialService:
    def __init__(self, database: Database, settings: Settings) -> None:
        self.database = database
        self.settings = settings

    def workspace_of(self, agent_id: str) -> Path:
        return (self.settings.effective_workspace_root / agent_id).resolve()

    # --- messages -------------------------------------------------------------------------------------------

    def send(self, from_agent: str, to_agent: str, body: str, *, idempotency_key: str) -> SentMessage:
        if not body or len(body) > MAX_MESSAGE_CHARS:
            raise SocialError("invalid_message", f"a message is 1 to {MAX_MESSAGE_CHARS} characters")
        with self.database.transaction() as session:
            existing = session.scalars(
                select(Message).where(Message.from_agent_id == from_agent, Message.idempotency_key == idempotency_key)
            ).one_or_none()
            if existing is not None:
                if (existing.to_agent_id, existing.body) != (to_agent, body):
                    raise SocialError(
                        "idempotency_conflict", f"idempotency key {idempotency_key!r} was used for another message"
                    )
                return _sent(existing, replayed=True)
            recipient = session.get(Agent, to_agent)
            if recipient is None:
                raise SocialError("unknown_agent", f"no such agent: {to_agent}")
            if recipient.status == "died":
                raise SocialError("agent_dead", f"{to_agent} has died and reads no messages")
            message = Message(
                id=time_ordered_id(),
                from_agent_id=from_agent,
                to_agent_id=to_agent,
                body=body,
                idempotency_key=idempotency_key,
                created_at=utcnow(),
            )
            session.add(message)
            record_event(
                session,
                MessageSent(
                    agent_id=from_agent,
                    data=MessageSentData(message_id=message.id, from_agent=from_agent, to_agent=to_agent, body=body),
                ),
            )
            return _sent(message)

    def inbox(self, agent_id: str, execution_id: str) -> list[SentMessage]:
        """The messages this execution reads: those not delivered to an earlier one, oldest first."""
        with self.database.transaction() as session:
            session.execute(
                update(Message)
                .where(Message.to_agent_id == agent_id, Message.delivered_execution_id.is_(None))
                .values(delivered_execution_id=execution_id)
            )
            messages = session.scalars(
                select(Message)
                .where(Message.to_agent_id == agent_id, Message.delivered_execution_id == execution_id)
                .order_by(Message.created_at, Message.id)
            ).all()
            return [_sent(m) for m in messages]

    # --- spawning -------------------------------------------------------------------------------------------

    def spawn(
        self,
        parent_id: str,
        child_id: str,
        *,
        source: str,
        entry_point: str,
        funds: Any,
        idempotency_key: str,
        name: str | None = None,
    ) -> Spawned:
        """A child agent from ``source`` (a file or folder in the parent's workspace), funded by the parent."""
        amount = economy.parse_amount(funds, "funds") if funds not in (0, "0") else 0
        funding_key = f"spawn:{parent_id}:{idempotency_key}"
        with self.database.transaction() as session:
            replay = self._replayed_spawn(session, parent_id, child_id, funding_key, amount)
            if replay is not None:
                return replay
            origin = self._source_path(parent_id, source)
            if not (origin / entry_point if origin.is_dir() else origin).is_file():
                raise SocialError("invalid_spawn", f"entry point {entry_point!r} is not in {source!r}")
            register_agent(session, child_id, name=name, entry_point=entry_point, parent_id=parent_id)
            receipt: Receipt | None = None
            if amount:
                receipt = apply(
                    session,
                    economy.transfer(
                        parent_id, child_id, from_micros(amount), idempotency_key=funding_key, purpose="spawn"
                    ),
                )
            self._copy_workspace(origin, child_id, entry_point)
            return Spawned(child_id, parent_id, from_micros(amount), receipt.transfer_id if receipt else None)

    def _replayed_spawn(
        self, session: Session, parent_id: str, child_id: str, funding_key: str, amount: int
    ) -> Spawned | None:
        """The child this request already spawned; another request for an existing id is refused."""
        child = session.get(Agent, child_id)
        if child is None:
            return None
        funding = session.execute(
            select(TRANSFERS.c.id, TRANSFERS.c.amount_micros).where(TRANSFERS.c.idempotency_key == funding_key)
        ).one_or_none()
        same_request = child.parent_id == parent_id and (
            (funding is not None and funding.amount_micros == amount) or (funding is None and amount == 0)
        )
        if not same_request:
            raise SocialError("agent_exists", f"agent {child_id} already exists")
        return Spawned(child_id, parent_id, from_micros(amount), funding.id if funding else None, replayed=True)

    def _source_path(self, parent_id: str, source: str) -> Path:
        workspace = self.workspace_of(parent_id)
        try:
            origin = (workspace / source).resolve()
            exists = origin.exists()
        except OSError:  # a name the filesystem refuses (too long, …) names nothing
            exists = False
        if exists and not origin.is_relative_to(workspace):
            raise SocialError("invalid_spawn", f"source {source[:200]!r} lies outside the caller's workspace")
        if not exists:
            raise SocialError("invalid_spawn", f"source {source[:200]!r} does not exist in the caller's workspace")
        size = (
            sum(p.stat().st_size for p in origin.rglob("*") if p.is_file())
            if origin.is_dir()
            else origin.stat().st_size
        )
        if size > MAX_SPAWN_BYTES:
            raise SocialError("invalid_spawn", f"source {source!r} holds {size} bytes, over {MAX_SPAWN_BYTES}")
        return origin

    def _copy_workspace(self, origin: Path, child_id: str, entry_point: str) -> None:
        target = self.workspace_of(child_id)
        if origin.is_dir():
            shutil.copytree(origin, target, dirs_exist_ok=True, symlinks=True)
        else:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, target / entry_point)
        (target / "state.json").write_text("{}\n")  # a child starts with its own, empty state

    # --- death ----------------------------------------------------------------------------------------------

    def bury_the_destitute(self, now: datetime | None = None) -> list[str]:
        """Agents dormant with no credits for longer than the grace period die; returns their ids."""
        now = now or utcnow()
        cutoff = now - timedelta(seconds=self.settings.dormant_grace_seconds)
        balance = func.sum(Account.credits_micros - Account.debits_micros)
        with self.database.transaction() as session:
            candidates = (
                session.execute(
                    select(Agent.id)
                    .join(Account, Account.agent_id == Agent.id)
                    .where(Agent.status == "dormant", Agent.status_changed_at <= cutoff)
                    .group_by(Agent.id)
                    .having(balance <= 0)
                )
                .scalars()
                .all()
            )
            died = []
            for agent_id in candidates:
                agent = session.get_one(Agent, agent_id)
                archive = self._archive(agent_id, now)
                agent.status, agent.status_changed_at = "died", now
                record_event(
                    session,
                    AgentDied(
                        agent_id=agent_id,
                        data=AgentDiedData(
                            reason=f"dormant with no credits for over {self.settings.dormant_grace_seconds:g} s",
                            workspace_archive=str(archive) if archive else None,
                        ),
                    ),
                )
                died.append(agent_id)
        for agent_id in died:
            log.info("agent %s died: dormant and without credits past the grace period", agent_id)
        return died

    def _archive(self, agent_id: str, now: datetime) -> Path | None:
        """A tar.gz of the workspace under ``state/archive/`` (the workspace itself is kept)."""
        workspace = self.workspace_of(agent_id)
        if not workspace.exists():
            return None
        archive = self.settings.state_dir / "archive" / f"{agent_id}-{now:%Y%m%dT%H%M%S}.tar.gz"
        archive.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(workspace, arcname=agent_id)
        return archive.resolve()


def _sent(message: Message, *, replayed: bool = False) -> SentMessage:
    return SentMessage(
        message.id, message.from_agent_id, message.to_agent_id, message.body, message.created_at, replayed
    )
