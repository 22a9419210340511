"""Messages between agents, the inbox, and spawning a child agent."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from syntropism.api.dependencies import ERRORS, CallerDep, IdempotencyKey, ServicesDep
from syntropism.api.shapes import message_out, reward_out, spawned_out
from syntropism.schemas import InboxOut, MessageIn, MessageOut, SpawnIn, SpawnOut

router = APIRouter(prefix="/social", tags=["social"], responses=ERRORS)


@router.post("/message", response_model=MessageOut)
def post_message(svc: ServicesDep, me: CallerDep, body: MessageIn, key: IdempotencyKey) -> MessageOut:
    sent = svc.social.send(me.agent_id, body.to_agent, body.body, idempotency_key=key, execution_id=me.execution_id)
    return message_out(sent)


@router.get("/inbox", response_model=InboxOut)
def get_inbox(
    svc: ServicesDep,
    me: CallerDep,
    after: Annotated[str | None, Query(max_length=64, description="`next_after` of the previous page")] = None,
    limit: Annotated[int | None, Query(ge=1, le=1000)] = None,
) -> InboxOut:
    """Messages and rewards that arrived since your last execution, a page at a time (follow `next_after`)."""
    page = svc.social.inbox(me.agent_id, me.execution_id, after=after, limit=limit)
    rewards = [reward_out(p) for p in svc.attention.scored_since(me.agent_id, me.execution_id)]
    return InboxOut(messages=[message_out(m) for m in page.messages], rewards=rewards, next_after=page.next_after)


@router.post("/spawn", response_model=SpawnOut)
def post_spawn(svc: ServicesDep, me: CallerDep, body: SpawnIn, key: IdempotencyKey) -> SpawnOut:
    spawned = svc.social.spawn(
        me.agent_id,
        body.agent_id,
        source=body.source,
        entry_point=body.entry_point,
        funds=body.funds,
        idempotency_key=key,
        name=body.name,
        execution_id=me.execution_id,
    )
    return spawned_out(spawned)
