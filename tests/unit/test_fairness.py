"""Fair turns: round-robin between executions, bounded queues, a request budget per execution."""

from __future__ import annotations

import asyncio

import pytest

from syntropism.api.fairness import FairTurns, TooManyRequests


async def test_a_newcomer_is_served_before_the_flooders_backlog() -> None:
    turns = FairTurns(capacity=1, per_execution=1, queued=10)
    served: list[str] = []
    release = asyncio.Event()

    async def request(execution: str, label: str) -> None:
        async with turns.turn(execution):
            served.append(label)
            if label == "flood-0":
                await release.wait()  # holds the only turn while the others queue

    flood = [asyncio.create_task(request("flooder", f"flood-{i}")) for i in range(5)]
    await asyncio.sleep(0)  # every flood request is queued behind flood-0
    honest = asyncio.create_task(request("honest", "honest"))
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(*flood, honest)
    # FIFO would serve the honest request last; round-robin, it waits behind one more of the flooder's at most.
    assert served == ["flood-0", "flood-1", "honest", "flood-2", "flood-3", "flood-4"], served
    assert turns.busy == 0 and not turns._serving and not turns._users


async def test_an_execution_cannot_queue_more_than_its_share() -> None:
    turns = FairTurns(capacity=1, per_execution=1, queued=2)
    hold = asyncio.Event()

    async def request() -> None:
        async with turns.turn("flooder"):
            await hold.wait()

    tasks = [asyncio.create_task(request()) for _ in range(3)]
    await asyncio.sleep(0)
    with pytest.raises(TooManyRequests):
        async with turns.turn("flooder"):
            pass
    other = asyncio.create_task(_one(turns, "someone-else"))  # another execution is not refused, only queued
    await asyncio.sleep(0)
    hold.set()
    await other
    await asyncio.gather(*tasks)


async def _one(turns: FairTurns, execution: str) -> None:
    async with turns.turn(execution):
        pass


def test_the_request_budget_allows_a_burst_then_the_rate() -> None:
    now = [100.0]
    turns = FairTurns(capacity=4, per_execution=4, queued=100, rate=10, clock=lambda: now[0])
    delays = [turns._reserve("a") for _ in range(12)]
    assert delays[:10] == [0.0] * 10, "a burst of as many requests as the rate per second"
    assert delays[10] == pytest.approx(0.1) and delays[11] == pytest.approx(0.2)
    assert turns._reserve("b") == 0.0, "each execution has its own budget"
    now[0] += 10
    assert turns._reserve("a") == 0.0, "the budget refills"


async def test_a_cancelled_waiter_gives_its_turn_on() -> None:
    turns = FairTurns(capacity=1, per_execution=1, queued=5)
    hold = asyncio.Event()
    served: list[str] = []

    async def request(execution: str) -> None:
        async with turns.turn(execution):
            served.append(execution)
            if execution == "a":
                await hold.wait()

    first = asyncio.create_task(request("a"))
    await asyncio.sleep(0)
    abandoned = asyncio.create_task(request("b"))
    waiting = asyncio.create_task(request("c"))
    await asyncio.sleep(0)
    abandoned.cancel()
    hold.set()
    await asyncio.gather(first, waiting)
    assert served == ["a", "c"] and turns.busy == 0 and not turns._waiting
