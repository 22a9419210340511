"""A run's view of the stream: the events carrying its correlation id, gathered as they arrive.

Runs can share one NATS server and one stream; each run's collector keeps only its own events, so that a
scenario is judged from exactly what its run published.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import nats.errors

from syntropism.benchmarks.checks import EventJson
from syntropism.benchmarks.errors import StepFailed
from syntropism.domain.events import parse_event
from syntropism.infra.nats_bus import EventBus


class EventCollector:
    """This run's events, from a consumer made before the run publishes anything; other runs' are skipped."""

    def __init__(self, bus: EventBus, correlation_id: str) -> None:
        self.bus = bus
        self.correlation_id = correlation_id
        self.events: list[EventJson] = []
        self.foreign = 0  # events of other runs this consumer saw and dropped
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def start(self) -> None:
        subscription = await self.bus.consumer(only_new=True)
        self._task = asyncio.create_task(self._pump(subscription), name=f"collector-{self.correlation_id}")

    async def _pump(self, subscription: Any) -> None:
        try:
            while not self._stop.is_set():
                try:
                    messages = await subscription.fetch(256, timeout=0.2)
                except (nats.errors.TimeoutError, TimeoutError):  # nothing new yet
                    continue
                for message in messages:
                    event = parse_event(message.data)  # strict: a malformed event fails the run loudly
                    if event.correlation_id == self.correlation_id:
                        self.events.append(json.loads(message.data))
                    else:
                        self.foreign += 1
                self._changed.set()
        finally:
            await subscription.unsubscribe()

    async def wait_until(self, condition: Callable[[list[EventJson]], bool], *, within: float, what: str) -> None:
        deadline = time.monotonic() + within
        while not condition(self.events):
            self._raise_if_failed()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StepFailed(f"{what} did not appear on the stream within {within:g} s")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=min(remaining, 0.5))

    async def settle(self, within: float) -> None:
        """Wait until every execution the stream shows allocated has ended."""
        await self.wait_until(
            lambda events: not unsettled(events), within=within, what="the end of every allocated execution"
        )

    def _raise_if_failed(self) -> None:
        if self._task is not None and self._task.done() and self._task.exception() is not None:
            raise StepFailed(f"the event consumer failed: {self._task.exception()}")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task


def unsettled(events: Sequence[EventJson]) -> set[str]:
    """Executions the stream shows allocated but not yet terminated."""
    allocated = {e["data"]["execution_id"] for e in events if e["type"] == "scheduler.resources_allocated"}
    return allocated - {e["data"]["execution_id"] for e in events if e["type"] == "execution.terminated"}
