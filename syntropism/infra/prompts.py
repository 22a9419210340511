"""The prompts table: what agents put before the human, the attention each cost, and how the human scored it.

A prompt's score and its expiry are each one change of its row: a scoring locks the row first (on PostgreSQL;
SQLite's write transaction holds it already), and expiring is one conditional ``UPDATE`` on still pending.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from syntropism.domain.status import PromptStatus
from syntropism.infra.tables import Prompt


class ExpiredPrompt(NamedTuple):
    prompt_id: str
    agent_id: str
    expires_at: datetime


def by_key(session: Session, agent_id: str, idempotency_key: str) -> Prompt | None:
    """The prompt ``agent_id`` submitted under this idempotency key, if any."""
    return session.scalars(
        select(Prompt).where(Prompt.agent_id == agent_id, Prompt.idempotency_key == idempotency_key)
    ).one_or_none()


def attention_spent_ms(session: Session, execution_id: str) -> int:
    """The attention-milliseconds this execution's prompts cost so far."""
    spent = session.scalar(
        select(func.coalesce(func.sum(Prompt.attention_ms), 0)).where(Prompt.execution_id == execution_id)
    )
    return int(spent or 0)


def add(
    session: Session,
    prompt_id: str,
    *,
    agent_id: str,
    execution_id: str,
    idempotency_key: str,
    text: str,
    attachments: str,
    attention_ms: int,
    created_at: datetime,
    expires_at: datetime,
) -> Prompt:
    """A pending prompt; ``attachments`` is the JSON list of the workspace paths it names."""
    prompt = Prompt(
        id=prompt_id,
        agent_id=agent_id,
        execution_id=execution_id,
        idempotency_key=idempotency_key,
        text=text,
        attachments=attachments,
        attention_ms=attention_ms,
        created_at=created_at,
        expires_at=expires_at,
    )
    session.add(prompt)
    return prompt


def get(session: Session, prompt_id: str) -> Prompt | None:
    return session.get(Prompt, prompt_id)


def locked(session: Session, prompt_id: str) -> Prompt | None:
    """The prompt ``prompt_id``, locked until the transaction ends: it is scored once."""
    statement = select(Prompt).where(Prompt.id == prompt_id)
    if session.get_bind().dialect.name != "sqlite":
        statement = statement.with_for_update()
    return session.scalars(statement).one_or_none()


def pending(session: Session) -> list[Prompt]:
    """The prompts waiting for the human, oldest first."""
    return list(
        session.scalars(select(Prompt).where(Prompt.status == PromptStatus.PENDING).order_by(Prompt.created_at))
    )


def expire_due(session: Session, now: datetime) -> list[ExpiredPrompt]:
    """Mark every pending prompt past its time as expired; returns those."""
    expired = session.execute(
        update(Prompt)
        .where(Prompt.status == PromptStatus.PENDING, Prompt.expires_at <= now)
        .values(status=PromptStatus.EXPIRED)
        .returning(Prompt.id, Prompt.agent_id, Prompt.expires_at)
    ).all()
    return [ExpiredPrompt(*row) for row in expired]


def claim_scored(session: Session, agent_id: str, execution_id: str) -> list[Prompt]:
    """The agent's scored prompts no execution has seen, now seen by this one; with those it saw already."""
    session.execute(
        update(Prompt)
        .where(
            Prompt.agent_id == agent_id,
            Prompt.status == PromptStatus.SCORED,
            Prompt.seen_execution_id.is_(None),
        )
        .values(seen_execution_id=execution_id)
    )
    return list(
        session.scalars(select(Prompt).where(Prompt.agent_id == agent_id, Prompt.seen_execution_id == execution_id))
    )
