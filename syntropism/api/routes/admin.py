"""The operator's endpoints, behind the operator token."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from syntropism.api.dependencies import ERRORS, IdempotencyKey, ServicesDep, operator
from syntropism.api.routes.market import place_bid
from syntropism.api.shapes import agent_detail_out, agent_out, market_state_out, placed_out, prompt_out, receipt_out
from syntropism.domain.errors import Reason, Refused
from syntropism.domain.identity import operator_key
from syntropism.infra import read_models
from syntropism.schemas import (
    AdminBidIn,
    AgentDetailOut,
    AgentIn,
    AgentOut,
    BidOut,
    GrantIn,
    MarketStateOut,
    PromptOut,
    ReceiptOut,
    RewardIn,
    ScoreIn,
)

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(operator)], responses=ERRORS)
KILLING = "killing"  # an answer, not a stored status: the execution ends when its process does


@router.post("/agents", response_model=AgentOut, status_code=201)
def create_agent(svc: ServicesDep, body: AgentIn) -> AgentOut:
    created = svc.accounts.create_agent(
        body.agent_id, name=body.name, files=body.files, entry_point=body.entry_point, initial_grant=body.initial_grant
    )
    return agent_out(created)


@router.get("/agents", response_model=list[AgentOut])
def list_agents(svc: ServicesDep) -> list[AgentOut]:
    return [agent_out(agent) for agent in read_models.agents(svc.database)]


@router.get("/agents/{agent_id}", response_model=AgentDetailOut)
def inspect_agent(svc: ServicesDep, agent_id: str) -> AgentDetailOut:
    detail = read_models.agent_detail(svc.database, agent_id)
    if detail is None:
        raise Refused(Reason.UNKNOWN_AGENT, f"no such agent: {agent_id}")
    return agent_detail_out(detail)


@router.get("/market", response_model=MarketStateOut)
def admin_market_state(svc: ServicesDep) -> MarketStateOut:
    """Every resource's price, utilization and supply, as the agents see them (``own_bids`` is empty)."""
    return market_state_out(svc.market.market_state(), [])


@router.post("/grant", response_model=ReceiptOut)
def admin_grant(svc: ServicesDep, body: GrantIn, key: IdempotencyKey) -> ReceiptOut:
    return receipt_out(svc.accounts.grant(body.agent_id, body.amount, key=key, reason=body.reason))


@router.post("/reward", response_model=ReceiptOut)
def admin_reward(svc: ServicesDep, body: RewardIn, key: IdempotencyKey) -> ReceiptOut:
    """Mint credits for an agent's work; with ``prompt_id``, that prompt's scoring (once)."""
    receipt = svc.accounts.reward(
        body.agent_id,
        interesting=body.interesting,
        useful=body.useful,
        understandable=body.understandable,
        key=key,
        prompt_id=body.prompt_id,
    )
    return receipt_out(receipt)


@router.get("/prompts", response_model=list[PromptOut])
def pending_prompts(svc: ServicesDep) -> list[PromptOut]:
    """The prompts waiting for the human, oldest first."""
    return [prompt_out(p) for p in svc.attention.pending()]


@router.post("/prompts/{prompt_id}/score", response_model=PromptOut)
def score_prompt(svc: ServicesDep, prompt_id: str, body: ScoreIn) -> PromptOut:
    """The human's score: mints I·W_i + U·W_u + Un·W_un credits to the agent, once."""
    scored = svc.attention.score(
        prompt_id, interesting=body.interesting, useful=body.useful, understandable=body.understandable
    )
    return prompt_out(scored)


@router.post("/bids", response_model=BidOut)
def admin_bid(svc: ServicesDep, body: AdminBidIn, key: IdempotencyKey) -> BidOut:
    return place_bid(svc, body.agent_id, body, operator_key("bid", key))


@router.delete("/bids/{bid_id}", response_model=BidOut)
def admin_cancel_bid(svc: ServicesDep, bid_id: str) -> BidOut:
    bidder = read_models.bidder_of(svc.database, bid_id)
    if bidder is None:
        raise Refused(Reason.NOT_FOUND, f"no bid {bid_id}")
    return placed_out(svc.market.cancel_bid(bidder, bid_id))


@router.post("/executions/{execution_id}/kill", status_code=202)
async def admin_kill(svc: ServicesDep, execution_id: str) -> dict[str, str]:
    if svc.executions is None or not await svc.executions.kill(execution_id):
        raise Refused(Reason.NOT_FOUND, f"execution {execution_id} is not running here")
    return {"execution_id": execution_id, "status": KILLING}
