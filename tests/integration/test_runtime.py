"""The runtime composes database, NATS, relay and clearing loop; a stop loses nothing in flight."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from syntropism.config import Settings
from syntropism.core.runtime import Runtime, open_bus


async def test_a_cycle_in_flight_at_stop_is_committed_and_relayed(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state", clearing_interval_seconds=0.01)
    runtime = Runtime(settings)
    await runtime.start()
    in_cycle, stop_requested = threading.Event(), threading.Event()
    real_cycle = runtime.scheduler.run_allocation_cycle

    def slow_cycle():  # type: ignore[no-untyped-def]
        in_cycle.set()
        stop_requested.wait(10)  # the stop arrives while this cycle is running
        return real_cycle()

    runtime.scheduler.run_allocation_cycle = slow_cycle  # type: ignore[method-assign]
    runtime.start_clearing()
    assert await asyncio.to_thread(in_cycle.wait, 10)
    runtime.request_stop()
    stop_requested.set()
    await runtime.stop()
    assert runtime.cycles_done == 1

    async with open_bus(settings) as bus:
        kinds = [received.event.type async for received in bus.read(["scheduler"])]
    assert kinds == ["scheduler.cycle_completed"], "the cycle's events reached the stream before NATS stopped"
