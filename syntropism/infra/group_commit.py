"""Group commit for blocking callers: concurrent requests share one transaction, and so one fsync."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar, cast

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class _Ticket(Generic[T, R]):
    """One caller's request in the group-commit queue."""

    __slots__ = ("done", "error", "item", "promoted", "result", "wakeup")

    def __init__(self, item: T) -> None:
        self.item = item
        self.done = False
        self.promoted = False
        self.result: R | None = None
        self.error: BaseException | None = None
        self.wakeup = threading.Event()


class GroupCommitter(Generic[T, R]):
    """Group commit, leader/follower style, as databases do for their log.

    Each caller queues a ticket. If nobody is committing, it becomes the leader and commits every queued
    ticket (up to ``max_batch``) in one transaction, round after round; the others sleep on their own ticket.
    Once the leader's own request is done it hands leadership to the oldest waiting caller, or stands down
    when the queue is empty. When several callers were active recently, the leader waits up to ``max_wait``
    for them to queue before committing (PostgreSQL's commit_delay/commit_siblings), so they share one
    fsync. A lone caller never waits and never hands off to another thread.
    """

    def __init__(
        self,
        run_batch: Callable[[list[T]], list[R | BaseException]],
        *,
        max_batch: int,
        max_wait: float = 0.002,
        sibling_window: float = 0.05,
    ) -> None:
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._max_wait = max_wait
        self._sibling_window = sibling_window
        self._cond = threading.Condition()
        self._pending: list[_Ticket[T, R]] = []
        self._leading = False
        self._wanted = 0  # while the leader gathers: how many queued requests complete its batch
        self._last_seen: dict[int, float] = {}  # thread id → when it last queued a request

    @property
    def queued(self) -> int:
        """Requests waiting for the next batch."""
        with self._cond:
            return len(self._pending)

    def execute(self, item: T) -> R:
        ticket: _Ticket[T, R] = _Ticket(item)
        with self._cond:
            self._pending.append(ticket)
            self._last_seen[threading.get_ident()] = time.monotonic()
            lead = not self._leading
            self._leading = True
            if len(self._pending) == self._wanted:
                self._cond.notify()  # the leader is gathering a batch, and it is now complete
        if not lead:
            ticket.wakeup.wait()
            if not ticket.promoted:
                return self._outcome(ticket)
        self._lead(ticket)
        return self._outcome(ticket)

    def _lead(self, own: _Ticket[T, R]) -> None:
        while True:
            self._commit(self._gather())
            with self._cond:
                if not self._pending:
                    self._leading = False
                    return
                if own.done:
                    successor = self._pending[0]  # leadership passes on; _leading stays True
                    successor.promoted = True
                    successor.wakeup.set()
                    return

    @staticmethod
    def _outcome(ticket: _Ticket[T, R]) -> R:
        if ticket.error is not None:
            raise ticket.error
        return cast(R, ticket.result)  # done without an error: its result is set (and R itself may admit None)

    def _gather(self) -> list[_Ticket[T, R]]:
        with self._cond:
            now = time.monotonic()
            self._last_seen = {t: seen for t, seen in self._last_seen.items() if now - seen <= self._sibling_window}
            self._wanted = min(len(self._last_seen), self._max_batch)
            deadline = now + self._max_wait
            while len(self._pending) < self._wanted and (remaining := deadline - time.monotonic()) > 0:
                self._cond.wait(remaining)
            self._wanted = 0
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
        return batch

    def _commit(self, batch: list[_Ticket[T, R]]) -> None:
        try:
            results = self._run_batch([ticket.item for ticket in batch])
        except BaseException as exc:  # the whole transaction failed: every caller in it learns why
            log.exception("group commit of %d requests failed", len(batch))
            results = [exc] * len(batch)
        for ticket, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                ticket.error = result
            else:
                ticket.result = result
            ticket.done = True
            ticket.wakeup.set()
