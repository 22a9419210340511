"""The market as an agent sees it: prices, its own bids; placing and cancelling bids."""

from __future__ import annotations

from fastapi import APIRouter

from syntropism.api.dependencies import ERRORS, CallerDep, IdempotencyKey, Services, ServicesDep
from syntropism.api.shapes import market_state_out, placed_out
from syntropism.domain.identity import agent_key
from syntropism.infra import read_models
from syntropism.schemas import BidIn, BidOut, MarketStateOut

router = APIRouter(prefix="/market", tags=["market"], responses=ERRORS)


@router.get("/state", response_model=MarketStateOut)
def get_market_state(svc: ServicesDep, me: CallerDep) -> MarketStateOut:
    own = read_models.pending_bids(svc.database, me.agent_id)
    return market_state_out(svc.market.market_state(), own)


@router.post("/bid", response_model=BidOut)
def post_bid(svc: ServicesDep, me: CallerDep, body: BidIn, key: IdempotencyKey) -> BidOut:
    return place_bid(svc, me.agent_id, body, agent_key(me.agent_id, "bid", key))


def place_bid(svc: Services, payer: str, body: BidIn, key: str) -> BidOut:
    """The bid ``payer`` places under ``key``, already scoped to whoever sent it (the agent or the operator)."""
    placed = svc.market.place_bid(
        payer,
        body.bundle,
        body.amount,
        idempotency_key=key,
        lifetime_cycles=body.lifetime_cycles,
        on_behalf_of=body.on_behalf_of,
    )
    return placed_out(placed)


@router.delete("/bid/{bid_id}", response_model=BidOut)
def delete_bid(svc: ServicesDep, me: CallerDep, bid_id: str) -> BidOut:
    return placed_out(svc.market.cancel_bid(me.agent_id, bid_id))
