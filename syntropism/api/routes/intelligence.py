"""The metered LLM proxy: an OpenAI-compatible chat completion charged against the execution's quota."""

from __future__ import annotations

from fastapi import APIRouter, Response

from syntropism.api.dependencies import ERRORS, CallerDep, IdempotencyKey, ServicesDep
from syntropism.api.streaming import inference_response
from syntropism.schemas import ErrorBody, InferenceIn

router = APIRouter(tags=["intelligence"], responses=ERRORS)


@router.post(
    "/intelligence/inference",
    responses={
        429: {"model": ErrorBody},
        502: {"model": ErrorBody},
        503: {"model": ErrorBody},
        504: {"model": ErrorBody},
    },
)
async def post_inference(svc: ServicesDep, me: CallerDep, body: InferenceIn, key: IdempotencyKey) -> Response:
    """An OpenAI-compatible chat completion (streamed when ``stream`` is true), metered against your quota: its
    worst case (prompt bound + n × max_tokens) is reserved before it goes upstream, its usage charged after."""
    request = body.model_dump(exclude_none=True, by_alias=True)  # the wire names (response_format's "schema")
    return inference_response(await svc.intelligence.infer(me.agent_id, me.execution_id, request, key))
