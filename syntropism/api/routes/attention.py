"""Prompts for the human: the only way new credits are earned."""

from __future__ import annotations

from fastapi import APIRouter

from syntropism.api.dependencies import ERRORS, CallerDep, IdempotencyKey, ServicesDep
from syntropism.api.shapes import prompt_out
from syntropism.schemas import PromptIn, PromptOut

router = APIRouter(tags=["attention"], responses=ERRORS)


@router.post("/attention/prompt", response_model=PromptOut)
def post_prompt(svc: ServicesDep, me: CallerDep, body: PromptIn, key: IdempotencyKey) -> PromptOut:
    """Put a prompt before the human, within your execution's attention share (402 past it)."""
    prompt = svc.attention.submit(me.agent_id, me.execution_id, body.text, body.attachments, idempotency_key=key)
    return prompt_out(prompt)
