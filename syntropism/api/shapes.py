"""The service results shaped as the wire models the API answers with."""

from __future__ import annotations

from dataclasses import asdict

from sqlalchemy.orm import Session

from syntropism.api.dependencies import Services
from syntropism.core.market import PlacedBid, bundle_of
from syntropism.domain.models import from_micros
from syntropism.infra.agents import standings
from syntropism.infra.ledger import Receipt
from syntropism.infra.tables import Agent, Bid
from syntropism.schemas import AgentOut, BidOut, MarketStateOut, ReceiptOut, ResourceStateOut


def receipt_out(receipt: Receipt) -> ReceiptOut:
    return ReceiptOut(**{**asdict(receipt), "kind": receipt.kind.value})


def bid_out(bid: Bid) -> BidOut:
    return BidOut(
        bid_id=bid.id,
        agent_id=bid.agent_id,
        on_behalf_of=bid.on_behalf_of,
        amount=from_micros(bid.amount_micros),
        status=bid.status,
        bundle=bundle_of(bid),
        cycles_remaining=bid.cycles_remaining,
    )


def placed_out(placed: PlacedBid) -> BidOut:
    return BidOut(
        bid_id=placed.bid_id,
        agent_id=placed.agent_id,
        on_behalf_of=placed.on_behalf_of,
        amount=placed.amount,
        status=placed.status,
        bundle=placed.bundle,
        cycles_remaining=placed.cycles_remaining,
        replayed=placed.replayed,
    )


def agent_out(session: Session, agent: Agent) -> AgentOut:
    [standing] = standings(session, [agent.id])
    return AgentOut(
        agent_id=agent.id,
        name=agent.name,
        status=agent.status,  # type: ignore[arg-type]
        parent_id=agent.parent_id,
        entry_point=agent.entry_point,
        available=standing.available,
        locked=standing.locked,
        created_at=agent.created_at,
    )


def market_state_out(svc: Services, own: list[BidOut]) -> MarketStateOut:
    states = svc.market.market_state()
    return MarketStateOut(
        cycle=max(s.cycle for s in states),
        resources=[
            ResourceStateOut(
                resource=s.resource,
                price=s.current_market_price,
                utilization=s.current_utilization,
                supply=s.available_supply,
                cycle=s.cycle,
            )
            for s in states
        ],
        own_bids=own,
    )
