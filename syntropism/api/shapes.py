"""The service results and read-side views shaped as the wire models the API answers with."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict

from syntropism.core.attention import PromptView
from syntropism.core.market import PlacedBid
from syntropism.core.social import SentMessage, Spawned
from syntropism.domain.market import MarketState
from syntropism.infra.ledger import Receipt
from syntropism.infra.read_models import AgentDetail, AgentView, ExecutionView, PendingBidView
from syntropism.schemas import (
    AgentDetailOut,
    AgentOut,
    BidOut,
    ExecutionOut,
    MarketStateOut,
    MessageOut,
    PromptOut,
    ReceiptOut,
    ResourceStateOut,
    RewardOut,
    SpawnOut,
)


def receipt_out(receipt: Receipt) -> ReceiptOut:
    return ReceiptOut(**{**asdict(receipt), "kind": receipt.kind.value})


def bid_out(bid: PendingBidView) -> BidOut:
    return BidOut(
        bid_id=bid.bid_id,
        agent_id=bid.agent_id,
        on_behalf_of=bid.on_behalf_of,
        amount=bid.amount,
        status=bid.status,
        bundle=bid.bundle,
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


def agent_out(agent: AgentView) -> AgentOut:
    return AgentOut(
        agent_id=agent.agent_id,
        name=agent.name,
        status=agent.status,
        parent_id=agent.parent_id,
        entry_point=agent.entry_point,
        available=agent.available,
        locked=agent.locked,
        created_at=agent.created_at,
    )


def execution_out(execution: ExecutionView) -> ExecutionOut:
    return ExecutionOut(**asdict(execution))


def agent_detail_out(detail: AgentDetail) -> AgentDetailOut:
    return AgentDetailOut(
        agent=agent_out(detail.agent),
        executions=[execution_out(e) for e in detail.executions],
        pending_bids=[bid_out(b) for b in detail.pending_bids],
    )


def market_state_out(states: list[MarketState], own: Iterable[PendingBidView]) -> MarketStateOut:
    """Every resource's state; the cycle is the latest any resource was cleared in."""
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
        own_bids=[bid_out(bid) for bid in own],
    )


def message_out(message: SentMessage) -> MessageOut:
    return MessageOut(**asdict(message))


def spawned_out(spawned: Spawned) -> SpawnOut:
    return SpawnOut(**asdict(spawned))


def prompt_out(prompt: PromptView) -> PromptOut:
    return PromptOut(**asdict(prompt))


def reward_out(prompt: PromptView) -> RewardOut:
    """A scored prompt as the inbox reports it: a score never given counts as zero."""
    return RewardOut(
        prompt_id=prompt.prompt_id,
        interesting=prompt.interesting or 0,
        useful=prompt.useful or 0,
        understandable=prompt.understandable or 0,
        credits=prompt.credits or 0,
    )
