"""The operator's endpoints, behind the operator token."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Depends
from sqlalchemy import select

from syntropism.api.dependencies import ERRORS, IdempotencyKey, ServicesDep, operator
from syntropism.api.routes.market import place_bid
from syntropism.api.shapes import agent_out, bid_out, market_state_out, placed_out, receipt_out
from syntropism.domain import economy
from syntropism.domain.errors import Reason, Refused
from syntropism.domain.identity import operator_key
from syntropism.infra.tables import Agent, Bid, Execution
from syntropism.schemas import (
    AdminBidIn,
    AgentDetailOut,
    AgentIn,
    AgentOut,
    BidOut,
    ExecutionOut,
    GrantIn,
    MarketStateOut,
    PromptOut,
    ReceiptOut,
    RewardIn,
    ScoreIn,
)

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(operator)], responses=ERRORS)


@router.post("/agents", response_model=AgentOut, status_code=201)
def create_agent(svc: ServicesDep, body: AgentIn) -> AgentOut:
    grant = economy.parse_amount(body.initial_grant, "initial_grant") if body.initial_grant not in (0, "0") else 0
    svc.social.create_agent(
        body.agent_id, name=body.name, files=body.files, entry_point=body.entry_point, grant_micros=grant
    )
    with svc.database.reader() as session:
        return agent_out(session, session.get_one(Agent, body.agent_id))


@router.get("/agents", response_model=list[AgentOut])
def list_agents(svc: ServicesDep) -> list[AgentOut]:
    with svc.database.reader() as session:
        return [
            agent_out(session, agent) for agent in session.scalars(select(Agent).order_by(Agent.created_at, Agent.id))
        ]


@router.get("/agents/{agent_id}", response_model=AgentDetailOut)
def inspect_agent(svc: ServicesDep, agent_id: str) -> AgentDetailOut:
    with svc.database.reader() as session:
        agent = session.get(Agent, agent_id)
        if agent is None:
            raise Refused(Reason.UNKNOWN_AGENT, f"no such agent: {agent_id}")
        executions = session.scalars(
            select(Execution).where(Execution.agent_id == agent_id).order_by(Execution.allocated_at.desc()).limit(20)
        ).all()
        bids = session.scalars(
            select(Bid).where(Bid.agent_id == agent_id, Bid.status == "pending").order_by(Bid.seq)
        ).all()
        return AgentDetailOut(
            agent=agent_out(session, agent),
            executions=[
                ExecutionOut(
                    execution_id=e.id,
                    agent_id=e.agent_id,
                    status=e.status,
                    reason=e.reason,
                    bid_id=e.bid_id,
                    started_at=e.started_at,
                    ended_at=e.ended_at,
                    exit_code=e.exit_code,
                    signal=e.signal,
                    cpu_seconds=e.cpu_seconds,
                    peak_memory_bytes=e.peak_memory_bytes,
                )
                for e in executions
            ],
            pending_bids=[bid_out(b) for b in bids],
        )


@router.get("/market", response_model=MarketStateOut)
def admin_market_state(svc: ServicesDep) -> MarketStateOut:
    """Every resource's price, utilization and supply, as the agents see them (``own_bids`` is empty)."""
    return market_state_out(svc, [])


@router.post("/grant", response_model=ReceiptOut)
def admin_grant(svc: ServicesDep, body: GrantIn, key: IdempotencyKey) -> ReceiptOut:
    operation = economy.grant(
        body.agent_id, body.amount, idempotency_key=operator_key("grant", key), reason=body.reason
    )
    return receipt_out(svc.ledger.execute(operation))


@router.post("/reward", response_model=ReceiptOut)
def admin_reward(svc: ServicesDep, body: RewardIn, key: IdempotencyKey) -> ReceiptOut:
    """Mint credits for an agent's work; with ``prompt_id``, that prompt's scoring (once)."""
    receipt = svc.attention.reward(
        body.agent_id,
        interesting=body.interesting,
        useful=body.useful,
        understandable=body.understandable,
        idempotency_key=operator_key("reward", key),
        prompt_id=body.prompt_id,
    )
    return receipt_out(receipt)


@router.get("/prompts", response_model=list[PromptOut])
def pending_prompts(svc: ServicesDep) -> list[PromptOut]:
    """The prompts waiting for the human, oldest first."""
    return [PromptOut(**asdict(p)) for p in svc.attention.pending()]


@router.post("/prompts/{prompt_id}/score", response_model=PromptOut)
def score_prompt(svc: ServicesDep, prompt_id: str, body: ScoreIn) -> PromptOut:
    """The human's score: mints I·W_i + U·W_u + Un·W_un credits to the agent, once."""
    scored = svc.attention.score(
        prompt_id, interesting=body.interesting, useful=body.useful, understandable=body.understandable
    )
    return PromptOut(**asdict(scored))


@router.post("/bids", response_model=BidOut)
def admin_bid(svc: ServicesDep, body: AdminBidIn, key: IdempotencyKey) -> BidOut:
    return place_bid(svc, body.agent_id, body, operator_key("bid", key))


@router.delete("/bids/{bid_id}", response_model=BidOut)
def admin_cancel_bid(svc: ServicesDep, bid_id: str) -> BidOut:
    with svc.database.reader() as session:
        bidder = session.scalar(select(Bid.agent_id).where(Bid.id == bid_id))
    if bidder is None:
        raise Refused(Reason.NOT_FOUND, f"no bid {bid_id}")
    return placed_out(svc.market.cancel_bid(bidder, bid_id))


@router.post("/executions/{execution_id}/kill", status_code=202)
async def admin_kill(svc: ServicesDep, execution_id: str) -> dict[str, str]:
    if svc.executions is None or not await svc.executions.kill(execution_id):
        raise Refused(Reason.NOT_FOUND, f"execution {execution_id} is not running here")
    return {"execution_id": execution_id, "status": "killing"}
