"""The AllocationScheduler: one market cycle applied to the economy, in one transaction.

A cycle reads the capacity in use (executions allocated and not yet terminated), the pending bids and the
last prices; :func:`clear_market` decides; then, together: winners' locked credits are burned (and any
excess over a critical-value payment unlocked), each winner gets an Execution, losers either stay pending
for the rest of their lifetime or are unlocked as outbid, the MarketManager stores the discovered prices,
and every step's event is staged. A crash anywhere in the cycle leaves the previous state intact.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np

from syntropism.config import Settings
from syntropism.core.lifecycle import settle_dormancy
from syntropism.core.market import MarketManager
from syntropism.domain import economy
from syntropism.domain.clearing import RESOURCES, BidBook, ClearingResult, Mechanism, clear_market
from syntropism.domain.economy import LedgerError, Operation
from syntropism.domain.events import (
    BidOutcome,
    BidProcessed,
    BidProcessedData,
    CycleCompleted,
    CycleCompletedData,
    Event,
    ResourcesAllocated,
    ResourcesAllocatedData,
    UnlockReason,
)
from syntropism.domain.models import Resource, bundle_from_ppm, from_micros, ppm_to_fraction, time_ordered_id
from syntropism.infra import allocations, bids
from syntropism.infra.bids import PendingBid
from syntropism.infra.database import Database, Session
from syntropism.infra.faults import crash_point
from syntropism.infra.ledger import apply_batch
from syntropism.infra.outbox import mark_events_staged, outbox_row, record_rows
from syntropism.infra.tables import utcnow
from syntropism.infra.telemetry import trace_headers, tracer

log = logging.getLogger(__name__)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for a sub-second burst of allocations.

    A cycle with 10^4 pending bids makes some 10^5 short-lived, acyclic objects (reference counting frees
    them); left on, the collector would scan the whole heap several times meanwhile, about doubling the cycle.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass
class _Cycle:
    """What one cycle works on, handed from stage to stage."""

    session: Session
    number: int
    book: BidBook
    rows: Sequence[PendingBid]
    result: ClearingResult
    operations: list[Operation]  # ledger work, applied together
    expired_runners: set[str] = field(default_factory=set)  # agents a bid of which expired: dormant now?


@dataclass(frozen=True)
class CycleReport:
    cycle: int
    bids_considered: int
    winners: list[str]  # the winning bids' ids
    carried: int
    outbid: int
    burned: Decimal
    prices: dict[Resource, Decimal]
    utilization: dict[Resource, Decimal]
    seconds: float
    winning_agents: list[str] = field(default_factory=list)  # who runs, per winning bid


class AllocationScheduler:
    def __init__(
        self, database: Database, settings: Settings, market: MarketManager | None = None, *, mechanism: Mechanism
    ) -> None:
        self.database = database
        self.settings = settings
        self.market = market or MarketManager(database, settings)
        self.mechanism = mechanism

    def capacity_in_use(self, session: Session) -> dict[Resource, Decimal]:
        """Σ of the fractions of every execution that is allocated and not yet terminated."""
        return {r: ppm_to_fraction(ppm) for r, ppm in allocations.capacity_in_use_ppm(session).items()}

    def _pending_book(self, session: Session) -> tuple[BidBook, list[PendingBid]]:
        """Every pending bid, as columns for clear_market and as light tuples for settling the cycle."""
        raw = bids.lock_pending(session)
        columns = list(zip(*raw, strict=True)) or [()] * len(PendingBid._fields)
        book = BidBook(
            ids=np.array(columns[0], dtype=np.str_),
            amounts=np.array(columns[3], dtype=np.int64),
            demand=np.array(columns[6:10], dtype=np.int64).T.reshape(len(raw), len(RESOURCES)),
            duration_ms=np.array(columns[4], dtype=np.int64),
            placed=np.array(columns[5], dtype=np.int64),
        )
        return book, [PendingBid._make(row) for row in raw]

    def run_allocation_cycle(self) -> CycleReport:
        began = time.perf_counter()
        with gc_paused(), tracer.start_as_current_span("scheduler.cycle"), self.database.transaction() as session:
            last_cycle, prices = self.market.current_prices(session)
            cycle = last_cycle + 1
            in_use = self.capacity_in_use(session)
            book, rows = self._pending_book(session)
            result = clear_market(
                book,
                in_use,
                prices,
                self.mechanism,
                decay=self.settings.price_decay,
                floor=self.settings.price_floor,
            )
            headers = json.dumps(trace_headers())
            work = _Cycle(session, cycle, book, rows, result, operations=[])
            # Stream order: allocations, then the ledger's burns and unlocks, then losers, prices, completion.
            record_rows(session, [outbox_row(event, headers) for event in self._allocate(work)])
            settled, carried, outbid = self._settle_losers(work)
            self._apply_ledger(session, work.operations)
            record_rows(session, [outbox_row(event, headers) for event in settled])
            settle_dormancy(session, work.expired_runners)
            crash_point("scheduler.mid_cycle")
            self.market.record_prices(session, cycle, result)
            completed = CycleCompleted(
                data=CycleCompletedData(
                    cycle=cycle,
                    bids_considered=len(book),
                    winners=len(result.winners),
                    losers=len(book) - len(result.winners),
                    burned=result.burned,
                    utilization=result.utilization,
                    prices=result.prices,
                    duration_ms=(time.perf_counter() - began) * 1000,
                )
            )
            record_rows(session, [outbox_row(completed, headers)])
        report = CycleReport(
            cycle=cycle,
            bids_considered=len(book),
            winners=[w.bid_id for w in result.winners],
            winning_agents=[rows[w.index].on_behalf_of or rows[w.index].agent_id for w in result.winners],
            carried=carried,
            outbid=outbid,
            burned=result.burned,
            prices=result.prices,
            utilization=result.utilization,
            seconds=time.perf_counter() - began,
        )
        log.debug(
            "cycle %d: %d bids, %d won, %d carried, %d outbid, %s burned (%.1f ms)",
            cycle,
            len(book),
            len(report.winners),
            carried,
            outbid,
            report.burned,
            report.seconds * 1000,
        )
        return report

    def _allocate(self, work: _Cycle) -> list[Event]:
        """Winners: an Execution each, their bids won, their burns (and refunds) queued; returns the events."""
        session, cycle, book, rows, result = work.session, work.number, work.book, work.rows, work.result
        operations = work.operations
        events: list[Event] = []
        now = utcnow()
        for winner in result.winners:
            row = rows[winner.index]
            execution_id = time_ordered_id()
            runner = row.on_behalf_of or row.agent_id
            ppm = {r: int(book.demand[winner.index, i]) for i, r in enumerate(RESOURCES)}
            duration_ms = int(book.duration_ms[winner.index])
            allocations.add(
                session,
                execution_id,
                agent_id=runner,
                bid_id=row.id,
                cycle=cycle,
                allocated_at=now,
                ppm=ppm,
                duration_ms=duration_ms,
            )
            bids.mark_won(session, row.id, paid_micros=economy.parse_amount(winner.payment), now=now)
            operations.append(
                economy.burn(
                    row.agent_id,
                    winner.payment,
                    idempotency_key=f"burn:{row.id}",
                    bid_id=row.id,
                    execution_id=execution_id,
                )
            )
            if winner.payment < winner.amount:
                operations.append(
                    economy.unlock(
                        row.agent_id,
                        winner.amount - winner.payment,
                        idempotency_key=f"refund:{row.id}",
                        reason=UnlockReason.REFUND,
                        bid_id=row.id,
                    )
                )
            bundle = bundle_from_ppm(ppm, duration_ms)
            events.append(
                ResourcesAllocated(
                    agent_id=runner,
                    data=ResourcesAllocatedData(
                        cycle=cycle, bid_id=row.id, execution_id=execution_id, bundle=bundle, amount=winner.payment
                    ),
                )
            )
            events.append(
                BidProcessed(
                    agent_id=row.agent_id,
                    data=BidProcessedData(
                        bid_id=row.id,
                        cycle=cycle,
                        outcome=BidOutcome.WON,
                        amount=winner.amount,
                        execution_id=execution_id,
                    ),
                )
            )
        return events

    def _settle_losers(self, work: _Cycle) -> tuple[list[Event], int, int]:
        """Every loser spends one cycle of its lifetime; those with none left are outbid and unlocked.
        Returns the events, and how many were carried and outbid."""
        session, cycle, book, rows, result = work.session, work.number, work.book, work.rows, work.result
        operations = work.operations
        events: list[Event] = []
        reasons = dict(result.loser_reasons(book))
        losers = [rows[int(i)] for i in result.loser_rows]
        if not losers:
            return events, 0, 0
        # Only the bids this cycle read (on PostgreSQL a bid placed meanwhile is left for the next cycle), each by
        # its id: no statement carries an IN list as long as the book.
        expired = {row.id for row in losers if row.cycles_remaining <= 1}
        now = utcnow()
        bids.spend_a_cycle(session, [row.id for row in losers if row.id not in expired])
        if expired:
            bids.expire(session, expired, now)
            work.expired_runners.update(row.on_behalf_of or row.agent_id for row in losers if row.id in expired)
        amounts: dict[int, Decimal] = {}  # many bids share an amount: convert each once
        for row in losers:
            amount = amounts.get(row.amount_micros) or amounts.setdefault(
                row.amount_micros, from_micros(row.amount_micros)
            )
            outcome = BidOutcome.OUTBID if row.id in expired else BidOutcome.CARRIED
            if outcome is BidOutcome.OUTBID:
                operations.append(
                    economy.unlock(
                        row.agent_id,
                        amount,
                        idempotency_key=f"unlock:{row.id}",
                        reason=UnlockReason.OUTBID,
                        bid_id=row.id,
                    )
                )
            events.append(
                BidProcessed(
                    agent_id=row.agent_id,
                    data=BidProcessedData(
                        bid_id=row.id, cycle=cycle, outcome=outcome, amount=amount, reason=reasons[row.id][:500]
                    ),
                )
            )
        return events, len(losers) - len(expired), len(expired)

    @staticmethod
    def _apply_ledger(session: Session, operations: list[Operation]) -> None:
        """Burns, refunds and unlocks, in one ledger batch inside the cycle's transaction."""
        if not operations:
            return
        headers = trace_headers()
        results = apply_batch(session.connection(), [(operation, headers) for operation in operations])
        refused = [(op, r) for op, r in zip(operations, results, strict=True) if isinstance(r, LedgerError)]
        if refused:
            operation, error = refused[0]
            raise LedgerError(
                error.code, f"cycle aborted: {operation.kind.value} for bid {operation.reference} refused: {error}"
            )
        mark_events_staged(session)
