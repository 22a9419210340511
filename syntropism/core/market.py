"""The MarketManager: bids in (validated, funds locked through the ledger), prices out.

Placing a bid is one transaction: the bid row, the lock of its amount and market.bid_placed commit together.
A refused bid changes nothing and is recorded as market.bid_rejected with its reason. The allocation
scheduler hands each cycle's discovered prices to :meth:`MarketManager.record_prices`, which stores them and
emits market.price_discovered, inside the cycle's transaction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from syntropism.config import Settings
from syntropism.core.scheduler import PPM, RESOURCES, ClearingResult
from syntropism.domain import economy
from syntropism.domain.economy import LedgerError
from syntropism.domain.events import (
    BidCancelled,
    BidCancelledData,
    BidPlaced,
    BidPlacedData,
    BidRejectedData,
    PriceDiscovered,
    PriceDiscoveredData,
    UnlockReason,
)
from syntropism.domain.events import (
    BidRejected as BidRejectedEvent,
)
from syntropism.domain.market import BidRejected, BidRequest, MarketState, validate_bid
from syntropism.domain.models import Resource, ResourceBundle, from_micros, time_ordered_id
from syntropism.infra.database import Database
from syntropism.infra.ledger import apply
from syntropism.infra.outbox import record_event
from syntropism.infra.tables import Agent, Bid, utcnow
from syntropism.infra.tables import MarketState as MarketStateRow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlacedBid:
    bid_id: str
    agent_id: str
    amount: Decimal
    status: str
    replayed: bool = False


def bundle_columns(bundle: ResourceBundle) -> dict[str, int]:
    """A bundle as the bids/executions columns store it: fractions in ppm, duration in ms."""
    columns = {f"{r.value}_ppm": int(bundle.fraction(r) * PPM) for r in RESOURCES}
    return columns | {"duration_ms": int(bundle.duration_seconds * 1000)}


def bundle_of(row: Any) -> ResourceBundle:
    """The bundle a bids or executions row stores (the inverse of :func:`bundle_columns`)."""
    return ResourceBundle(
        **{f"{r.value}_percent": Decimal(getattr(row, f"{r.value}_ppm")) / PPM for r in RESOURCES},
        duration_seconds=Decimal(row.duration_ms) / 1000,
    )


class MarketManager:
    def __init__(self, database: Database, settings: Settings) -> None:
        self.database = database
        self.settings = settings

    # --- bids ---------------------------------------------------------------------------------------------

    def place_bid(
        self,
        agent_id: str,
        bundle: ResourceBundle | dict[str, Any],
        amount: Any,
        *,
        idempotency_key: str,
        lifetime_cycles: int | None = None,
        on_behalf_of: str | None = None,
    ) -> PlacedBid:
        """Validate, lock the amount and record the bid; raises :class:`BidRejected` with the reason."""
        try:
            request = validate_bid(
                bundle,
                amount,
                self.settings.default_bid_lifetime_cycles if lifetime_cycles is None else lifetime_cycles,
                max_duration_seconds=self.settings.max_duration_seconds,
            )
            with self.database.transaction() as session:
                existing = session.scalars(select(Bid).where(Bid.idempotency_key == idempotency_key)).one_or_none()
                if existing is not None:
                    return self._replay(existing, agent_id, idempotency_key, request)
                self._check_agents(session, agent_id, on_behalf_of)
                bid_id = time_ordered_id()
                session.add(
                    Bid(
                        id=bid_id,
                        agent_id=agent_id,
                        on_behalf_of=on_behalf_of,
                        amount_micros=request.amount_micros,
                        lifetime_cycles=request.lifetime_cycles,
                        cycles_remaining=request.lifetime_cycles,
                        idempotency_key=idempotency_key,
                        **bundle_columns(request.bundle),
                    )
                )
                session.flush()
                amount_credits = from_micros(request.amount_micros)
                try:
                    apply(
                        session, economy.lock(agent_id, amount_credits, idempotency_key=f"lock:{bid_id}", bid_id=bid_id)
                    )
                except LedgerError as error:
                    raise BidRejected(error.code, str(error)) from None
                record_event(
                    session,
                    BidPlaced(
                        agent_id=agent_id,
                        data=BidPlacedData(
                            bid_id=bid_id,
                            bundle=request.bundle,
                            amount=amount_credits,
                            lifetime_cycles=request.lifetime_cycles,
                            on_behalf_of=on_behalf_of,
                        ),
                    ),
                )
                return PlacedBid(bid_id, agent_id, amount_credits, "pending")
        except BidRejected as rejection:
            self._record_rejection(agent_id, rejection, bundle, amount, on_behalf_of)
            raise

    @staticmethod
    def _replay(bid: Bid, agent_id: str, key: str, request: BidRequest) -> PlacedBid:
        """The bid this key already placed; a different bid under the same key is refused, never merged."""
        same = (bid.agent_id, bid.amount_micros, {c: getattr(bid, c) for c in bundle_columns(request.bundle)}) == (
            agent_id,
            request.amount_micros,
            bundle_columns(request.bundle),
        )
        if not same:
            raise BidRejected("idempotency_conflict", f"idempotency key {key!r} was used for a different bid")
        return PlacedBid(bid.id, bid.agent_id, from_micros(bid.amount_micros), bid.status, replayed=True)

    @staticmethod
    def _check_agents(session: Session, agent_id: str, on_behalf_of: str | None) -> None:
        for role, who in (("bidder", agent_id), ("beneficiary", on_behalf_of)):
            if who is None:
                continue
            agent = session.get(Agent, who)
            if agent is None:
                raise BidRejected("unknown_agent", f"{role} {who} does not exist")
            if agent.status == "died":
                raise BidRejected("agent_dead", f"{role} {who} has died and can no longer take part")

    def _record_rejection(
        self, agent_id: str, rejection: BidRejected, bundle: Any, amount: Any, on_behalf_of: str | None
    ) -> None:
        valid_bundle = bundle if isinstance(bundle, ResourceBundle) else None
        try:
            valid_amount = from_micros(economy.parse_amount(amount))
        except LedgerError:
            valid_amount = None
        event = BidRejectedEvent(
            agent_id=agent_id if agent_id and len(agent_id) <= 128 else None,
            data=BidRejectedData(
                reason=rejection.reason,
                detail=rejection.detail[:1000],
                bundle=valid_bundle,
                amount=valid_amount,
                on_behalf_of=on_behalf_of,
            ),
        )
        with self.database.transaction() as session:
            record_event(session, event)
        log.info("bid by %s rejected (%s): %s", agent_id, rejection.reason, rejection.detail)

    def cancel_bid(self, agent_id: str, bid_id: str) -> PlacedBid:
        """Withdraw a pending bid: its credits are unlocked."""
        with self.database.transaction() as session:
            statement = select(Bid).where(Bid.id == bid_id)
            if session.get_bind().dialect.name != "sqlite":
                statement = statement.with_for_update()
            bid = session.scalars(statement).one_or_none()
            if bid is None or bid.agent_id != agent_id:
                raise BidRejected("not_found", f"{agent_id} has no bid {bid_id}")
            if bid.status != "pending":
                raise BidRejected("not_pending", f"bid {bid_id} is already {bid.status}")
            bid.status, bid.resolved_at = "cancelled", utcnow()
            amount = from_micros(bid.amount_micros)
            apply(
                session,
                economy.unlock(
                    agent_id, amount, idempotency_key=f"unlock:{bid_id}", reason=UnlockReason.WITHDRAWN, bid_id=bid_id
                ),
            )
            record_event(
                session, BidCancelled(agent_id=agent_id, data=BidCancelledData(bid_id=bid_id, amount_unlocked=amount))
            )
            return PlacedBid(bid_id, agent_id, amount, "cancelled")

    # --- market state and prices ----------------------------------------------------------------------------

    def current_prices(self, session: Session) -> tuple[int, dict[Resource, Decimal]]:
        """The last cycle number and each resource's price, creating the rows at the initial price if needed."""
        rows = {row.resource: row for row in session.scalars(select(MarketStateRow))}
        for resource in RESOURCES:
            if resource.value not in rows:
                row = MarketStateRow(
                    resource=resource.value, current_market_price=self.settings.initial_price_of(resource)
                )
                session.add(row)
                rows[resource.value] = row
        session.flush()
        cycle = max(row.cycle for row in rows.values())
        return cycle, {r: rows[r.value].current_market_price for r in RESOURCES}

    def record_prices(self, session: Session, cycle: int, result: ClearingResult) -> None:
        """Store the cycle's discovered prices and utilization, and emit market.price_discovered per resource."""
        rows = {row.resource: row for row in session.scalars(select(MarketStateRow))}
        now = utcnow()
        for resource in RESOURCES:
            row = rows[resource.value]
            old_price = row.current_market_price
            row.current_market_price = result.prices[resource]
            row.current_utilization_ppm = int(result.utilization[resource] * PPM)
            row.cycle, row.updated_at = cycle, now
            record_event(
                session,
                PriceDiscovered(
                    data=PriceDiscoveredData(
                        cycle=cycle,
                        resource=resource,
                        old_price=old_price,
                        new_price=result.prices[resource],
                        utilization=result.utilization[resource],
                        volume=Decimal(result.volume[resource].numerator)
                        / Decimal(result.volume[resource].denominator),
                    )
                ),
            )

    def market_state(self) -> list[MarketState]:
        with self.database.reader() as session:
            rows = {row.resource: row for row in session.scalars(select(MarketStateRow))}
        return [
            MarketState(
                resource=resource,
                available_supply=Decimal(1),
                current_utilization=Decimal(rows[resource.value].current_utilization_ppm) / PPM
                if resource.value in rows
                else Decimal(0),
                current_market_price=rows[resource.value].current_market_price
                if resource.value in rows
                else self.settings.initial_price_of(resource),
                cycle=rows[resource.value].cycle if resource.value in rows else 0,
            )
            for resource in RESOURCES
        ]
