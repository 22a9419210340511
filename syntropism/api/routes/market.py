"""The market as an agent sees it: prices, its own bids; placing and cancelling bids."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from syntropism.api.dependencies import ERRORS, CallerDep, IdempotencyKey, Services, ServicesDep
from syntropism.api.shapes import bid_out, market_state_out, placed_out
from syntropism.domain.identity import agent_key
from syntropism.infra.tables import Bid
from syntropism.schemas import BidIn, BidOut, MarketStateOut

router = APIRouter(prefix="/market", tags=["market"], responses=ERRORS)


@router.get("/state", response_model=MarketStateOut)
def get_market_state(svc: ServicesDep, me: CallerDep) -> MarketStateOut:
    with svc.database.reader() as session:
        bids = session.scalars(
            select(Bid).where(Bid.agent_id == me.agent_id, Bid.status == "pending").order_by(Bid.seq)
        ).all()
        own = [bid_out(bid) for bid in bids]
    return market_state_out(svc, own)


@router.post("/bid", response_model=BidOut)
def post_bid(svc: ServicesDep, me: CallerDep, body: BidIn, key: IdempotencyKey) -> BidOut:
    return place_bid(svc, me.agent_id, body, agent_key(me.agent_id, "bid", key))


def place_bid(svc: Services, payer: str, body: BidIn, key: str) -> BidOut:
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
