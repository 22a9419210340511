"""The runtime composes database, NATS, relay and clearing loop; a stop loses nothing in flight."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from syntropism.config import Settings
from syntropism.domain import economy as E
from syntropism.infra.agents import register_agent
from syntropism.infra.ledger import Ledger
from syntropism.runtime import Runtime, open_bus


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


async def test_a_won_bid_runs_its_agent_and_the_stream_tells_the_whole_story(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state", clearing_interval_seconds=0.05, cpu_cores=1, memory_bytes=2**30)
    runtime = Runtime(settings)
    await runtime.start()
    try:
        assert runtime.executions is not None
        with runtime.database.transaction() as session:
            register_agent(session, "solo")
        (runtime.executions.workspace_of("solo") / "main.py").write_text("print('hello from the sandbox')\n")
        await asyncio.to_thread(Ledger(runtime.database).execute, E.grant("solo", 10, idempotency_key="grant"))
        ended = asyncio.Event()
        runtime.executions.on_terminated(lambda outcome: ended.set())
        bundle = {"cpu_percent": "0.2", "memory_percent": "0.1", "duration_seconds": 5}
        runtime.market.place_bid("solo", bundle, 3, idempotency_key="first-bid")
        runtime.start_clearing()
        async with asyncio.timeout(30):
            await ended.wait()
    finally:
        await runtime.stop()

    async with open_bus(settings) as bus:
        events = [received.event async for received in bus.read(["execution", "agent"])]
    kinds = [event.type for event in events]
    assert kinds == ["agent.spawned", "agent.awake", "execution.started", "execution.terminated", "agent.dormant"]
    assert events[3].data.reason == "completed"  # type: ignore[attr-defined]
    logs = list((settings.logs_dir / "solo").glob("*.log"))
    assert [log.read_text() for log in logs] == ["hello from the sandbox\n"]
