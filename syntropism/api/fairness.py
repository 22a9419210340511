"""Fair turns between agents: one execution's requests are served at most ``requests_per_second_per_execution``
a second (a burst of as many), the System Service serves at most ``agent_requests_in_flight`` agent requests at
once and hands free turns to the executions that wait in round-robin order, serves at most
``requests_in_flight_per_execution`` of one execution at once, and lets at most ``requests_queued_per_execution``
more of its requests wait (``429 too_many_requests`` past that).

The service is one process with one database writer (SQLite): an agent that opens many connections would
otherwise keep that many requests in front of every other agent's, and take the CPU and the write lock from the
market's cycle. With turns, an honest agent's request waits behind at most one request of each other agent, however
fast they send theirs. Waiting happens here, in the event loop, before any work or thread is spent on a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable


class TooManyRequests(Exception):
    pass


class FairTurns:
    def __init__(
        self,
        capacity: int,
        per_execution: int,
        queued: int,
        rate: float = float("inf"),
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        assert capacity >= 1 and per_execution >= 1 and queued >= 0 and rate > 0
        self.capacity, self.per_execution, self.queued, self.rate = capacity, per_execution, queued, rate
        self.clock = clock
        self._next_free: dict[str, float] = {}  # execution → when its request budget is full again (GCRA)
        self.busy = 0  # turns held, over all executions
        self._serving: dict[str, int] = {}  # execution → its turns held
        self._users: dict[str, int] = {}  # execution → its requests holding or waiting for a turn
        self._waiting: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()  # round-robin order

    @contextlib.asynccontextmanager
    async def turn(self, execution_id: str) -> AsyncIterator[None]:
        """Hold a turn while the request is served; :class:`TooManyRequests` (before waiting) when too many of
        the execution's requests are in flight or waiting already."""
        users = self._users.get(execution_id, 0)
        if users >= self.per_execution + self.queued:
            raise TooManyRequests(f"{users} requests of this execution are being served or waiting")
        self._users[execution_id] = users + 1
        try:
            delay = self._reserve(execution_id)
            if delay > 0:
                await asyncio.sleep(delay)
            await self._acquire(execution_id)
            try:
                yield
            finally:
                self._release(execution_id)
        finally:
            left = self._users[execution_id] - 1
            if left:
                self._users[execution_id] = left
            else:
                del self._users[execution_id]
                if self._next_free.get(execution_id, 0.0) <= self.clock():
                    self._next_free.pop(execution_id, None)  # its budget is full again: nothing to remember

    def _reserve(self, execution_id: str) -> float:
        """Take one request from the execution's budget (``rate`` a second, a burst of ``rate``); returns how
        long this request must wait for it (GCRA: a virtual time at which the budget is full again)."""
        if self.rate == float("inf"):
            return 0.0
        now = self.clock()
        interval, burst = 1 / self.rate, max(1.0, self.rate)
        full_at = max(self._next_free.get(execution_id, now), now) + interval
        self._next_free[execution_id] = full_at
        return max(0.0, full_at - now - burst * interval)

    async def _acquire(self, execution_id: str) -> None:
        if self._may_serve(execution_id) and execution_id not in self._waiting:  # free turns reach waiters at once
            self._grant(execution_id)
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(execution_id, deque()).append(granted)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self._release(execution_id)  # the turn came as the request was abandoned: pass it on
            else:
                self._forget(execution_id, granted)
            raise

    def _may_serve(self, execution_id: str) -> bool:
        return self.busy < self.capacity and self._serving.get(execution_id, 0) < self.per_execution

    def _grant(self, execution_id: str) -> None:
        self.busy += 1
        self._serving[execution_id] = self._serving.get(execution_id, 0) + 1

    def _release(self, execution_id: str) -> None:
        self.busy -= 1
        serving = self._serving[execution_id] - 1
        if serving:
            self._serving[execution_id] = serving
        else:
            del self._serving[execution_id]
        self._dispatch()

    def _dispatch(self) -> None:
        """Give free turns to waiting executions, the longest-unserved first, one request each per round."""
        while self.busy < self.capacity:
            chosen = next((e for e in self._waiting if self._may_serve(e)), None)
            if chosen is None:
                return
            queue = self._waiting[chosen]
            granted = queue.popleft()
            if queue:
                self._waiting.move_to_end(chosen)  # its next request waits for everyone else's turn
            else:
                del self._waiting[chosen]
            self._grant(chosen)
            granted.set_result(None)

    def _forget(self, execution_id: str, granted: asyncio.Future[None]) -> None:
        queue = self._waiting.get(execution_id)
        if queue is not None:
            with contextlib.suppress(ValueError):
                queue.remove(granted)
            if not queue:
                del self._waiting[execution_id]
