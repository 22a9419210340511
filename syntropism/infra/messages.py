"""The messages table: a message between agents, the quotas counted from it, and its delivery to the first
execution of the recipient that reads its inbox.

A message is delivered by one conditional ``UPDATE`` (on still being undelivered), so two executions reading
one inbox at once never both take a message.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.orm import Session

from syntropism.infra.tables import Message


def _undelivered(to_agent: str) -> ColumnElement[bool]:
    return (Message.to_agent_id == to_agent) & Message.delivered_execution_id.is_(None)


def _delivered_to(agent_id: str, execution_id: str, after: str | None) -> ColumnElement[bool]:
    mine = (Message.to_agent_id == agent_id) & (Message.delivered_execution_id == execution_id)
    return mine if after is None else mine & (Message.id > after)


def by_key(session: Session, from_agent: str, idempotency_key: str) -> Message | None:
    """The message ``from_agent`` sent under this idempotency key, if any."""
    return session.scalars(
        select(Message).where(Message.from_agent_id == from_agent, Message.idempotency_key == idempotency_key)
    ).one_or_none()


def was_sent(session: Session, from_agent: str, idempotency_key: str) -> bool:
    """Whether ``from_agent`` sent a message under this key (its id alone is read)."""
    sent = session.scalar(
        select(Message.id).where(Message.from_agent_id == from_agent, Message.idempotency_key == idempotency_key)
    )
    return sent is not None


def add(
    session: Session,
    message_id: str,
    *,
    from_agent: str,
    to_agent: str,
    body: str,
    idempotency_key: str,
    created_at: datetime,
    execution_id: str | None,
) -> Message:
    message = Message(
        id=message_id,
        from_agent_id=from_agent,
        to_agent_id=to_agent,
        body=body,
        idempotency_key=idempotency_key,
        created_at=created_at,
        sent_execution_id=execution_id,
    )
    session.add(message)
    return message


def sent_by_execution(session: Session, execution_id: str) -> int:
    """How many messages this execution sent."""
    return session.scalar(select(func.count()).where(Message.sent_execution_id == execution_id)) or 0


def waiting_for(session: Session, to_agent: str) -> int:
    """How many messages wait for ``to_agent``, delivered to none of its executions yet."""
    return session.scalar(select(func.count()).where(_undelivered(to_agent))) or 0


def any_waiting_for(session: Session, to_agent: str) -> bool:
    return session.scalar(select(Message.id).where(_undelivered(to_agent)).limit(1)) is not None


def delivered_count(session: Session, agent_id: str, execution_id: str, *, after: str | None) -> int:
    """How many messages were delivered to this execution (past ``after``, a message id)."""
    return session.scalar(select(func.count()).where(_delivered_to(agent_id, execution_id, after))) or 0


def delivered_page(
    session: Session, agent_id: str, execution_id: str, *, after: str | None, limit: int
) -> list[Message]:
    """Up to ``limit`` messages delivered to this execution past ``after``, oldest first."""
    return list(
        session.scalars(
            select(Message).where(_delivered_to(agent_id, execution_id, after)).order_by(Message.id).limit(limit)
        ).all()
    )


def deliver_oldest(session: Session, agent_id: str, execution_id: str, count: int) -> list[str]:
    """Hand the ``count`` oldest undelivered messages of ``agent_id`` to this execution; returns their ids."""
    oldest = select(Message.id).where(_undelivered(agent_id)).order_by(Message.id).limit(count)
    claimed = session.scalars(
        update(Message)
        .where(Message.id.in_(oldest.scalar_subquery()), Message.delivered_execution_id.is_(None))
        .values(delivered_execution_id=execution_id)
        .returning(Message.id)
    ).all()
    return list(claimed)
