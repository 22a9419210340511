"""Agents among agents: messages, spawning children, and death by poverty (DESIGN §5, §6).

- A message commits with its ``social.message_sent`` event. An inbox shows the messages not yet delivered to an
  earlier execution of the recipient, a page at a time: each message is read by one execution (repeated reads
  within it return it again; ``social.messages_delivered`` records the hand-over), so an agent sees what arrived
  since its last execution. Messages are bounded: so many per execution, so many waiting per recipient.
- Spawning registers a child agent (``agent.spawned``) whose workspace is a copy of a file or folder from the
  parent's workspace (links and special files left out, size bounded), funded by a transfer from the parent, in
  one transaction; the copy itself is made before it. The child is dormant until a bid for it wins.
- A dormant agent with no credits (available + locked) past ``dormant_grace_seconds`` dies: its workspace is
  archived (and kept), ``agent.died`` is recorded, and no bid can be placed by or for it again.
"""

from __future__ import annotations

import logging
import tarfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from syntropism.config import Settings
from syntropism.domain import economy
from syntropism.domain.errors import Reason, Refused
from syntropism.domain.events import (
    AgentDied,
    AgentDiedData,
    MessagesDelivered,
    MessagesDeliveredData,
    MessageSent,
    MessageSentData,
)
from syntropism.domain.identity import agent_key, check_agent_id, operator_key
from syntropism.domain.models import from_micros, time_ordered_id
from syntropism.domain.status import AgentStatus
from syntropism.infra import messages, spawns
from syntropism.infra.agents import destitute_agents, existing_agent, get_agent, register_agent
from syntropism.infra.database import Database, Session
from syntropism.infra.ledger import Receipt, apply
from syntropism.infra.outbox import record_event
from syntropism.infra.tables import Message, utcnow
from syntropism.infra.workspaces import Budget, WorkspaceRefused, Workspaces, plain_parts

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 20_000
SWEEP_BATCH = 500  # agents buried per sweep at most: bounded statements and archive work


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


@dataclass(frozen=True)
class InboxPage:
    messages: list[SentMessage]
    next_after: str | None  # pass as ``after`` for the next page; None when nothing more waits


class SocialService:
    def __init__(self, database: Database, settings: Settings) -> None:
        self.database = database
        self.settings = settings
        self.workspaces = Workspaces.of(settings)

    def workspace_of(self, agent_id: str) -> Path:
        return self.workspaces.path_of(agent_id)

    # --- messages -------------------------------------------------------------------------------------------

    def send(
        self, from_agent: str, to_agent: str, body: str, *, idempotency_key: str, execution_id: str | None = None
    ) -> SentMessage:
        """Send a message. An execution may send ``messages_per_execution`` of them, and a recipient may have
        ``inbox_max_undelivered`` waiting: a message costs the system a row and an event, so it is bounded."""
        if not body or len(body) > MAX_MESSAGE_CHARS:
            raise SocialError(Reason.INVALID_MESSAGE, f"a message is 1 to {MAX_MESSAGE_CHARS} characters")
        with self.database.reader() as session:  # refuse a flood before it takes the write lock
            if not messages.was_sent(session, from_agent, idempotency_key):
                self._check_message_bounds(session, to_agent, execution_id)
        with self.database.transaction() as session:
            existing = messages.by_key(session, from_agent, idempotency_key)
            if existing is not None:
                if (existing.to_agent_id, existing.body) != (to_agent, body):
                    raise SocialError(
                        Reason.IDEMPOTENCY_CONFLICT, f"idempotency key {idempotency_key!r} was used for another message"
                    )
                return _sent(existing, replayed=True)
            recipient = get_agent(session, to_agent)
            if recipient is None:
                raise SocialError(Reason.UNKNOWN_AGENT, f"no such agent: {to_agent}")
            if recipient.status == AgentStatus.DIED:
                raise SocialError(Reason.AGENT_DEAD, f"{to_agent} has died and reads no messages")
            self._check_message_bounds(session, to_agent, execution_id)
            message = messages.add(
                session,
                time_ordered_id(),
                from_agent=from_agent,
                to_agent=to_agent,
                body=body,
                idempotency_key=idempotency_key,
                created_at=utcnow(),
                execution_id=execution_id,
            )
            record_event(
                session,
                MessageSent(
                    agent_id=from_agent,
                    data=MessageSentData(message_id=message.id, from_agent=from_agent, to_agent=to_agent, body=body),
                ),
            )
            return _sent(message)

    def _check_message_bounds(self, session: Session, to_agent: str, execution_id: str | None) -> None:
        quota = self.settings.messages_per_execution
        if execution_id is not None:
            sent = messages.sent_by_execution(session, execution_id)
            if sent >= quota:
                raise SocialError(Reason.QUOTA_EXCEEDED, f"this execution has sent its {quota} messages")
        waiting = messages.waiting_for(session, to_agent)
        if waiting >= self.settings.inbox_max_undelivered:
            raise SocialError(
                Reason.INBOX_FULL, f"{to_agent} has {waiting} unread messages waiting; it reads them when it next runs"
            )

    def inbox(
        self, agent_id: str, execution_id: str, *, after: str | None = None, limit: int | None = None
    ) -> InboxPage:
        """One page of the messages this execution reads, oldest first: those delivered to it already (repeated
        reads return them again) and, to fill the page, the oldest not yet delivered to any execution, which
        become its (``social.messages_delivered``)."""
        limit = min(limit or self.settings.inbox_page_size, self.settings.inbox_page_size)
        with self.database.transaction() as session:
            delivered = messages.delivered_count(session, agent_id, execution_id, after=after)
            if delivered < limit:
                self._deliver(session, agent_id, execution_id, limit - delivered)
            found = messages.delivered_page(session, agent_id, execution_id, after=after, limit=limit + 1)
            more = len(found) > limit or messages.any_waiting_for(session, agent_id)
            page = [_sent(m) for m in found[:limit]]
            return InboxPage(page, page[-1].message_id if more and page else None)

    def _deliver(self, session: Session, agent_id: str, execution_id: str, count: int) -> None:
        claimed = messages.deliver_oldest(session, agent_id, execution_id, count)
        if claimed:
            record_event(
                session,
                MessagesDelivered(
                    agent_id=agent_id,
                    data=MessagesDeliveredData(execution_id=execution_id, message_ids=sorted(claimed)),
                ),
            )

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
        execution_id: str | None = None,
    ) -> Spawned:
        """A child agent from ``source`` (a file or folder in the parent's workspace), funded by the parent.

        The copy is made first, into a staging folder and outside any transaction (no links followed, within
        ``spawn_max_bytes``); then one transaction registers the child, funds it and renames the copy into place."""
        check_agent_id(child_id)
        amount = economy.parse_amount(funds, "funds") if funds not in (0, "0") else 0
        funding_key = agent_key(parent_id, "spawn", idempotency_key)
        with self.database.reader() as session:
            replay = self._replayed_spawn(session, parent_id, child_id, funding_key, amount)
        if replay is not None:
            return replay
        if execution_id is not None:
            self._check_spawn_quota(parent_id, execution_id)
        budget = Budget(self.settings.spawn_max_bytes, self.settings.workspace_max_entries)
        try:
            staged = self.workspaces.stage_copy(parent_id, source, entry_point, budget)
        except WorkspaceRefused as refused:
            raise SocialError(Reason.INVALID_SPAWN, refused.detail) from None
        installed = False
        try:
            with self.database.transaction() as session:
                replay = self._replayed_spawn(session, parent_id, child_id, funding_key, amount)
                if replay is not None:
                    return replay
                register_agent(session, child_id, name=name, entry_point=entry_point, parent_id=parent_id)
                receipt: Receipt | None = None
                if amount:
                    receipt = apply(
                        session,
                        economy.transfer(
                            parent_id, child_id, from_micros(amount), idempotency_key=funding_key, purpose="spawn"
                        ),
                    )
                self.workspaces.install(staged, child_id)  # a rename, not a copy: quick inside the transaction
                installed = True
                return Spawned(child_id, parent_id, from_micros(amount), receipt.transfer_id if receipt else None)
        except BaseException:
            if installed:
                self.workspaces.remove(child_id)  # the registration did not commit
            raise
        finally:
            if not installed:
                self.workspaces.discard(staged)

    def _check_spawn_quota(self, parent_id: str, execution_id: str) -> None:
        """An execution may spawn ``spawns_per_execution`` children: each costs a workspace on the host."""
        quota = self.settings.spawns_per_execution
        with self.database.reader() as session:
            spawned = spawns.children_since_start(session, parent_id, execution_id)
        if spawned >= quota:
            raise SocialError(Reason.QUOTA_EXCEEDED, f"this execution has spawned its {quota} children")

    def _replayed_spawn(
        self, session: Session, parent_id: str, child_id: str, funding_key: str, amount: int
    ) -> Spawned | None:
        """The child this request already spawned; another request for an existing id is refused."""
        child = get_agent(session, child_id)
        if child is None:
            return None
        funding = spawns.funding(session, funding_key)
        same_request = child.parent_id == parent_id and (
            (funding is not None and funding.amount_micros == amount) or (funding is None and amount == 0)
        )
        if not same_request:
            raise SocialError(Reason.AGENT_EXISTS, f"agent {child_id} already exists")
        return Spawned(
            child_id, parent_id, from_micros(amount), funding.transfer_id if funding else None, replayed=True
        )

    # --- creation by the operator ---------------------------------------------------------------------------

    def create_agent(
        self, agent_id: str, *, name: str | None, files: dict[str, str], entry_point: str, grant_micros: int
    ) -> None:
        """An agent the operator adds, with its code: files staged first, then registered, granted and put in
        place in one transaction."""
        check_agent_id(agent_id)
        plain_parts(entry_point, "entry point")
        staged = self.workspaces.stage_files({path: content.encode() for path, content in files.items()})
        installed = False
        try:
            with self.database.transaction() as session:
                register_agent(
                    session, agent_id, name=name, entry_point=entry_point, initial_grant=from_micros(grant_micros)
                )
                if grant_micros:
                    apply(
                        session,
                        economy.grant(
                            agent_id, from_micros(grant_micros), idempotency_key=operator_key("create", agent_id)
                        ),
                    )
                self.workspaces.install(staged, agent_id)
                installed = True
        except BaseException:
            if installed:
                self.workspaces.remove(agent_id)
            raise
        finally:
            if not installed:
                self.workspaces.discard(staged)

    # --- death ----------------------------------------------------------------------------------------------

    def bury_the_destitute(self, now: datetime | None = None) -> list[str]:
        """Agents dormant with no credits for longer than the grace period die; returns their ids.

        An agent with an execution allocated or running, or a pending bid by or for it, is not dormant in fact
        and is spared. Archives are written first, outside the transaction; the transaction checks each
        candidate again (under lock) and the archives of those spared meanwhile are removed."""
        now = now or utcnow()
        cutoff = now - timedelta(seconds=self.settings.dormant_grace_seconds)
        with self.database.reader() as session:
            candidates = destitute_agents(session, cutoff)[:SWEEP_BATCH]  # the rest at the next sweep
        archives: dict[str, Path | None] = {}
        for agent_id in candidates:
            try:
                archives[agent_id] = self.workspaces.archive(agent_id, now)
            except (OSError, tarfile.TarError):
                log.exception("could not archive the workspace of %s; it dies at a later sweep", agent_id)
        if not archives:
            return []
        died: list[str] = []
        with self.database.transaction() as session:
            confirmed = set(destitute_agents(session, cutoff, among=list(archives), lock=True))
            for agent_id, archive in archives.items():
                if agent_id not in confirmed:
                    continue
                agent = existing_agent(session, agent_id)
                agent.status, agent.status_changed_at = AgentStatus.DIED, now
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
        for agent_id, archive in archives.items():
            if agent_id not in died and archive is not None:
                self.workspaces.discard_archive(archive)
        for agent_id in died:
            log.info("agent %s died: dormant and without credits past the grace period", agent_id)
        return died


def _sent(message: Message, *, replayed: bool = False) -> SentMessage:
    return SentMessage(
        message.id, message.from_agent_id, message.to_agent_id, message.body, message.created_at, replayed
    )
