"""The MarketManager: bids in (validated, funds locked through the ledger), prices out.

Placing a bid is one transaction: the bid row, the lock of its amount and market.bid_placed commit together.
A refused bid changes nothing and is recorded as market.bid_rejected with its reason. The allocation
scheduler hands each cycle's discovered prices to :meth:`MarketManager.record_prices`, which stores them and
emits market.price_discovered, inside the cycle's transaction.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from syntropism.config import Settings
from syntropism.core.lifecycle import settle_dormancy
from syntropism.domain import economy
from syntropism.domain.clearing import RESOURCES, ClearingResult
from syntropism.domain.economy import LedgerError
from syntropism.domain.errors import Reason
from syntropism.domain.events import (
    BidCancelled,
    BidCancelledData,
    BidPlaced,
    BidPlacedData,
    BidRejected,
    BidRejectedData,
    PriceDiscovered,
    PriceDiscoveredData,
    UnlockReason,
)
from syntropism.domain.market import BidRefused, BidRequest, MarketState, validate_bid
from syntropism.domain.models import (
    Resource,
    ResourceBundle,
    fraction_to_ppm,
    from_micros,
    ppm_to_fraction,
    time_ordered_id,
)
from syntropism.domain.status import AgentStatus, BidStatus
from syntropism.infra import bids, market_state
from syntropism.infra.agents import get_agent
from syntropism.infra.database import Database, Session
from syntropism.infra.ledger import apply
from syntropism.infra.outbox import record_event
from syntropism.infra.tables import Bid, bundle_columns, utcnow
from syntropism.infra.tables import bundle_of as bundle_of  # the services and the API read stored bundles by it

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlacedBid:
    bid_id: str
    agent_id: str
    amount: Decimal
    status: BidStatus
    replayed: bool = False
    on_behalf_of: str | None = None
    bundle: ResourceBundle | None = None
    cycles_remaining: int | None = None

    @classmethod
    def of(cls, bid: Bid, *, replayed: bool = False) -> PlacedBid:
        return cls(
            bid.id,
            bid.agent_id,
            from_micros(bid.amount_micros),
            BidStatus(bid.status),
            replayed,
            bid.on_behalf_of,
            bundle_of(bid),
            bid.cycles_remaining,
        )


MAX_TRACKED_BIDDERS = 10_000


class RejectionBudget:
    """How many ``market.bid_rejected`` events one bidder may cause: ``burst`` at once, refilled at ``per_second``.

    A rejection changes no state, but its event is a durable write: a bidder flooding refused bids would
    otherwise make the database write for it as fast as it asks. Past the budget rejections are counted, and
    the next recorded one says how many were not (``unrecorded_before``)."""

    def __init__(self, burst: int = 10, per_second: float = 1.0, *, clock: Callable[[], float] = time.monotonic):
        self.burst, self.per_second, self.clock = burst, per_second, clock
        self._buckets: dict[str, tuple[float, float, int]] = {}  # bidder → (tokens, when, unrecorded)
        self._lock = threading.Lock()

    def admit(self, bidder: str) -> int | None:
        """The number of rejections not recorded since the last one, if this one is recorded; else None."""
        with self._lock:
            now = self.clock()
            tokens, when, unrecorded = self._buckets.get(bidder, (float(self.burst), now, 0))
            tokens = min(float(self.burst), tokens + (now - when) * self.per_second)
            if tokens < 1:
                self._buckets[bidder] = (tokens, now, unrecorded + 1)
                return None
            self._buckets[bidder] = (tokens - 1, now, 0)
            if len(self._buckets) > MAX_TRACKED_BIDDERS:
                self._forget_the_rested(now)
            return unrecorded

    def _forget_the_rested(self, now: float) -> None:
        """Drop bidders whose budget is full again and who have nothing uncounted: memory stays bounded."""
        for bidder, (tokens, when, unrecorded) in list(self._buckets.items()):
            if unrecorded == 0 and tokens + (now - when) * self.per_second >= self.burst:
                del self._buckets[bidder]


class MarketManager:
    def __init__(self, database: Database, settings: Settings) -> None:
        self.database = database
        self.settings = settings
        self._rejections = RejectionBudget()
        self._min_bid_micros = economy.parse_amount(settings.min_bid, "min_bid")

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
        """Validate, lock the amount and record the bid; raises :class:`BidRefused` with the reason."""
        try:
            request = validate_bid(
                bundle,
                amount,
                self.settings.default_bid_lifetime_cycles if lifetime_cycles is None else lifetime_cycles,
                max_duration_seconds=self.settings.max_duration_seconds,
            )
            self._check_minimum(request)
            with self.database.transaction() as session:
                existing = bids.by_key(session, idempotency_key)
                if existing is not None:
                    return self._replay(existing, agent_id, idempotency_key, request, on_behalf_of)
                self._check_agents(session, agent_id, on_behalf_of)
                self._check_pending_cap(session, agent_id)
                bid_id = time_ordered_id()
                bids.add(session, bid_id, agent_id, request, idempotency_key=idempotency_key, on_behalf_of=on_behalf_of)
                amount_credits = from_micros(request.amount_micros)
                try:
                    apply(
                        session, economy.lock(agent_id, amount_credits, idempotency_key=f"lock:{bid_id}", bid_id=bid_id)
                    )
                except LedgerError as error:
                    raise BidRefused(error.reason, str(error)) from None
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
                return PlacedBid(
                    bid_id,
                    agent_id,
                    amount_credits,
                    BidStatus.PENDING,
                    on_behalf_of=on_behalf_of,
                    bundle=request.bundle,
                    cycles_remaining=request.lifetime_cycles,
                )
        except BidRefused as rejection:
            self._record_rejection(agent_id, rejection, bundle, amount, on_behalf_of)
            raise

    @staticmethod
    def _replay(bid: Bid, agent_id: str, key: str, request: BidRequest, on_behalf_of: str | None) -> PlacedBid:
        """The bid this key already placed; a different bid under the same key is refused, never merged."""
        stored = (bid.agent_id, bid.on_behalf_of, bid.amount_micros, bid.lifetime_cycles)
        stored_bundle = {c: getattr(bid, c) for c in bundle_columns(request.bundle)}
        asked = (agent_id, on_behalf_of, request.amount_micros, request.lifetime_cycles)
        if (stored, stored_bundle) != (asked, bundle_columns(request.bundle)):
            raise BidRefused(Reason.IDEMPOTENCY_CONFLICT, f"idempotency key {key!r} was used for a different bid")
        return PlacedBid.of(bid, replayed=True)

    def _check_minimum(self, request: BidRequest) -> None:
        """Every pending bid is a row each cycle reads and an event it writes: a bid is at least ``min_bid``."""
        if request.amount_micros < self._min_bid_micros:
            raise BidRefused(
                Reason.BID_TOO_SMALL, f"a bid is at least {from_micros(self._min_bid_micros)} credits (min_bid)"
            )

    def _check_pending_cap(self, session: Session, agent_id: str) -> None:
        """An agent may have ``max_pending_bids_per_agent`` pending bids at once."""
        cap = self.settings.max_pending_bids_per_agent
        pending = bids.pending_count(session, agent_id, cap)
        if pending >= cap:
            raise BidRefused(
                Reason.TOO_MANY_BIDS, f"{agent_id} has {pending} pending bids, the most one agent may have; cancel one"
            )

    @staticmethod
    def _check_agents(session: Session, agent_id: str, on_behalf_of: str | None) -> None:
        for role, who in (("bidder", agent_id), ("beneficiary", on_behalf_of)):
            if who is None:
                continue
            agent = get_agent(session, who)
            if agent is None:
                raise BidRefused(Reason.UNKNOWN_AGENT, f"{role} {who} does not exist")
            if agent.status == AgentStatus.DIED:
                raise BidRefused(Reason.AGENT_DEAD, f"{role} {who} has died and can no longer take part")

    def _record_rejection(
        self, agent_id: str, rejection: BidRefused, bundle: Any, amount: Any, on_behalf_of: str | None
    ) -> None:
        valid_bundle = bundle if isinstance(bundle, ResourceBundle) else None
        try:
            valid_amount = from_micros(economy.parse_amount(amount))
        except LedgerError:
            valid_amount = None
        unrecorded = self._rejections.admit(agent_id)
        if unrecorded is None:  # this bidder's rejections are past their budget: counted, not written
            log.debug("bid by %s rejected (%s), not recorded: %s", agent_id, rejection.reason, rejection.detail)
            return
        event = BidRejected(
            agent_id=agent_id if agent_id and len(agent_id) <= 128 else None,
            data=BidRejectedData(
                reason=rejection.reason,
                detail=rejection.detail[:1000],
                bundle=valid_bundle,
                amount=valid_amount,
                on_behalf_of=on_behalf_of,
                unrecorded_before=unrecorded,
            ),
        )
        with self.database.transaction() as session:
            record_event(session, event)
        log.info("bid by %s rejected (%s): %s", agent_id, rejection.reason, rejection.detail)

    def cancel_bid(self, agent_id: str, bid_id: str) -> PlacedBid:
        """Withdraw a pending bid: its credits are unlocked."""
        with self.database.transaction() as session:
            bid = bids.locked(session, bid_id)
            if bid is None or bid.agent_id != agent_id:
                raise BidRefused(Reason.NOT_FOUND, f"{agent_id} has no bid {bid_id}")
            if bid.status != BidStatus.PENDING:
                raise BidRefused(Reason.NOT_PENDING, f"bid {bid_id} is already {bid.status}")
            bid.status, bid.resolved_at = BidStatus.CANCELLED, utcnow()
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
            settle_dormancy(session, [bid.on_behalf_of or agent_id])  # that bid may have been all it had ahead
            return PlacedBid.of(bid)

    # --- market state and prices ----------------------------------------------------------------------------

    def current_prices(self, session: Session) -> tuple[int, dict[Resource, Decimal]]:
        """The last cycle number and each resource's price, creating the rows at the initial price if needed.

        On PostgreSQL the rows are locked: runtimes sharing a database clear one cycle at a time, each reading
        the capacity in use only once the previous cycle committed, and no cycle number is used twice."""
        rows = market_state.lock_rows(session)
        missing = {r.value: self.settings.initial_price_of(r) for r in RESOURCES if r.value not in rows}
        rows |= market_state.open_rows(session, missing)
        cycle = max(row.cycle for row in rows.values())
        return cycle, {r: rows[r.value].current_market_price for r in RESOURCES}

    def record_prices(self, session: Session, cycle: int, result: ClearingResult) -> None:
        """Store the cycle's discovered prices and utilization, and emit market.price_discovered per resource."""
        rows = market_state.rows(session)
        now = utcnow()
        for resource in RESOURCES:
            row = rows[resource.value]
            old_price = row.current_market_price
            row.current_market_price = result.prices[resource]
            row.current_utilization_ppm = fraction_to_ppm(result.utilization[resource])
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
            rows = market_state.rows(session)
        return [
            MarketState(
                resource=resource,
                available_supply=Decimal(1),
                current_utilization=ppm_to_fraction(rows[resource.value].current_utilization_ppm)
                if resource.value in rows
                else Decimal(0),
                current_market_price=rows[resource.value].current_market_price
                if resource.value in rows
                else self.settings.initial_price_of(resource),
                cycle=rows[resource.value].cycle if resource.value in rows else 0,
            )
            for resource in RESOURCES
        ]
