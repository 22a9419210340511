"""A scenario's steps, carried out on its run's system: bids, market cycles cleared one by one, the ledger's
operations, and waits on the stream.

The market is driven cycle by cycle rather than on a clock, so that a scenario is deterministic; every step's
idempotency key is scoped to the run and the step's place, so that a retried step never applies twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from syntropism.benchmarks.checks import EventJson, matches
from syntropism.benchmarks.collector import EventCollector
from syntropism.benchmarks.scenario import (
    BidStep,
    CyclesStep,
    GrantStep,
    RewardStep,
    SettleStep,
    Step,
    TransferStep,
    WaitForStep,
)
from syntropism.domain import economy
from syntropism.domain.identity import scoped_key
from syntropism.runtime import Runtime

LedgerStep = RewardStep | GrantStep | TransferStep


@dataclass(frozen=True)
class StepDriver:
    """Carries out steps on one run's ``runtime``, watching the run's events through its ``collector``."""

    runtime: Runtime
    collector: EventCollector
    run_id: str

    async def do(self, index: int, step: Step) -> str:
        """Carry out step ``index``; returns its outcome as the step log records it. A refusal is raised."""
        key = scoped_key("bench", "step", f"{self.run_id}:{index}")  # "bench" is a reserved id: no agent meets it
        if isinstance(step, BidStep):
            return await self._bid(step, key)
        if isinstance(step, CyclesStep):
            return await self._cycles(step)
        if isinstance(step, WaitForStep):
            await self.collector.wait_until(
                lambda events: any(matches(e, step.event) for e in events),
                within=step.timeout_seconds,
                what=step.event.describe(),
            )
            return "seen"
        if isinstance(step, SettleStep):
            await self.collector.settle(step.timeout_seconds)
            return "settled"
        return await self._ledger(step, key)

    async def _bid(self, step: BidStep, key: str) -> str:
        placed = await asyncio.to_thread(
            self.runtime.market.place_bid,
            step.agent,
            step.bundle,
            step.amount,
            idempotency_key=key,
            lifetime_cycles=step.lifetime_cycles,
            on_behalf_of=step.on_behalf_of,
        )
        return f"placed bid {placed.bid_id}"

    async def _cycles(self, step: CyclesStep) -> str:
        won = 0
        for _ in range(step.count):
            report = await self.runtime.clear_once()
            won += len(report.winners)
            if step.settle:
                await self.collector.wait_until(
                    cycle_completed(report.cycle),
                    within=step.timeout_seconds,
                    what=f"scheduler.cycle_completed of cycle {report.cycle}",
                )
                await self.collector.settle(step.timeout_seconds)
        return f"{step.count} cycle(s), {won} winner(s)"

    async def _ledger(self, step: LedgerStep, key: str) -> str:
        services = self.runtime.services
        assert services is not None
        receipt = await asyncio.to_thread(services.ledger.execute, self._operation(step, key))
        return f"{receipt.kind} {receipt.amount} ({receipt.transfer_id})"

    def _operation(self, step: LedgerStep, key: str) -> economy.Operation:
        if isinstance(step, RewardStep):
            return economy.reward(
                step.agent,
                interesting=step.interesting,
                useful=step.useful,
                understandable=step.understandable,
                weights=self.runtime.settings.reward_weights,
                idempotency_key=key,
            )
        if isinstance(step, GrantStep):
            return economy.grant(step.agent, step.amount, idempotency_key=key, reason="benchmark grant")
        return economy.transfer(step.from_agent, step.to_agent, step.amount, idempotency_key=key)


def cycle_completed(cycle: int) -> Callable[[list[EventJson]], bool]:
    """Whether the stream shows market cycle ``cycle`` completed."""

    def seen(events: list[EventJson]) -> bool:
        return any(e["type"] == "scheduler.cycle_completed" and e["data"]["cycle"] == cycle for e in events)

    return seen
