"""Transactional outbox: an event commits in the same transaction as its state change; a relay publishes it.

``record_event`` adds the event to the caller's transaction, so there is no state change without its event and
no event without its state change. :class:`OutboxRelay` publishes committed rows in order, in atomic batches,
and marks a row published only after JetStream acknowledged it. A crash anywhere in between leaves the row
unpublished; the next relay publishes it again and JetStream drops the duplicate by ``Nats-Msg-Id`` — or, when
the row is older than the stream's duplicate window allows for, finds it in the stream and only marks it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeGuard, cast

from nats.js.api import PubAck
from sqlalchemy import Connection, CursorResult, delete, func, select, update
from sqlalchemy.orm import Session

from syntropism.domain.events import Event
from syntropism.infra.database import EVENTS_STAGED, Database
from syntropism.infra.faults import crash_point
from syntropism.infra.hot_sql import HotSql
from syntropism.infra.nats_bus import EventBus, OutgoingMessage
from syntropism.infra.tables import OutboxEvent, utcnow
from syntropism.infra.telemetry import trace_headers, tracer

log = logging.getLogger(__name__)
PRUNE_EVERY_SECONDS = 60.0


def outbox_row(event: Event, headers: dict[str, str] | str | None = None) -> dict[str, object]:
    """The outbox row for ``event`` (its created_at is stamped when written); ``headers`` (a dict, or already
    JSON) default to the current trace context."""
    return {
        "event_id": str(event.event_id),
        "event_type": event.type,
        "subject": event.subject,
        "payload": event.model_dump_json(),
        "headers": headers if isinstance(headers, str) else json.dumps(trace_headers() if headers is None else headers),
        "agent_id": event.agent_id,
        "correlation_id": event.correlation_id,
    }


def record_event(session: Session, event: Event) -> None:
    """Stage ``event`` in the caller's transaction, with the current trace context as its headers."""
    record_rows(session, [outbox_row(event)])


def record_rows(session: Session, rows: list[dict[str, object]]) -> None:
    """Stage many outbox rows (from :func:`outbox_row`) in the caller's transaction, in one statement."""
    if rows:
        connection = session.connection()
        HotSql.of(connection).insert_outbox_rows(connection, rows)
        mark_events_staged(session)


def mark_events_staged(transaction: Session | Connection) -> None:
    """Note that this transaction wrote outbox rows, so that its commit wakes the relay."""
    transaction.info[EVENTS_STAGED] = True


@dataclass(frozen=True)
class _PendingRow:
    row_id: int
    message: OutgoingMessage
    created_at: datetime


@dataclass
class RelayStats:
    published: int = 0
    failed: int = 0
    rounds: int = 0


class OutboxRelay:
    """Moves committed outbox rows to JetStream; run one per runtime (several are safe, only wasteful)."""

    def __init__(
        self,
        database: Database,
        bus: EventBus,
        *,
        batch_size: int = 1000,
        poll_seconds: float = 0.05,
        retention_seconds: float = 86_400,
        correlation_id: str | None = None,
    ) -> None:
        self.database = database
        self.correlation_id = correlation_id
        self.bus = bus
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.retention_seconds = retention_seconds
        self.stats = RelayStats()
        self._wakeup = asyncio.Event()
        self._next_prune = 0.0

    def wake(self) -> None:
        """Tell the relay new rows were committed, so it need not wait for its next poll."""
        self._wakeup.set()

    def wake_on_commit(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wake the relay whenever a transaction that wrote events commits, from any thread."""

        def wake_soon() -> None:
            loop.call_soon_threadsafe(self.wake)

        self.database.on_commit(wake_soon)

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until ``stop`` is set, then drain what is committed and return."""
        while not stop.is_set():
            try:
                relayed = await self.relay_once()
            except Exception:
                log.exception("outbox relay round failed; retrying in %ss", self.poll_seconds * 20)
                await self._sleep(stop, self.poll_seconds * 20)
                continue
            if relayed < self.batch_size:
                await self._prune_when_due()
                await self._sleep(stop, self.poll_seconds)
        await self.drain()

    async def _prune_when_due(self) -> None:
        loop_time = asyncio.get_running_loop().time()
        if loop_time >= self._next_prune:
            self._next_prune = loop_time + PRUNE_EVERY_SECONDS
            pruned = await asyncio.to_thread(self.prune)
            if pruned:
                log.info("pruned %d published outbox rows older than %ss", pruned, self.retention_seconds)

    def prune(self) -> int:
        """Delete rows JetStream acknowledged more than ``retention_seconds`` ago (the stream keeps the events)."""
        cutoff = utcnow() - timedelta(seconds=self.retention_seconds)
        with self.database.transaction() as session:
            result = session.execute(
                delete(OutboxEvent).where(OutboxEvent.published_at.is_not(None), OutboxEvent.published_at < cutoff)
            )
        return cast("CursorResult[Any]", result).rowcount or 0  # a DELETE's result is a cursor's

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        waiters = [asyncio.ensure_future(self._wakeup.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        self._wakeup.clear()

    async def drain(self, rounds: int = 100) -> None:
        """Publish everything committed so far (used at shutdown and by tests and benchmarks)."""
        for _ in range(rounds):
            if await self.relay_once() == 0:
                return
        log.error("outbox not drained after %s rounds: %s events wait", rounds, await self.pending_count())

    async def pending_count(self) -> int:
        return await asyncio.to_thread(self._pending_count)

    async def relay_once(self) -> int:
        """Publish one batch of unpublished rows; returns how many were acknowledged."""
        rows = await asyncio.to_thread(self._load_batch)
        if not rows:
            return 0
        rows = await self._skip_stored(rows)
        if not rows:
            return 0
        with tracer.start_as_current_span("outbox.relay", attributes={"events": len(rows)}):
            crash_point("relay.before_publish")
            results = await self.bus.publish_batch([row.message for row in rows])
            crash_point("relay.after_publish")
            acked = [(row.row_id, result.seq) for row, result in zip(rows, results, strict=True) if _is_ack(result)]
            for row, result in zip(rows, results, strict=True):
                if not _is_ack(result):
                    log.error("publishing event %s to %s failed: %r", row.message.event_id, row.message.subject, result)
            if acked:
                await asyncio.to_thread(self._mark_published, acked)
        self.stats.rounds += 1
        self.stats.published += len(acked)
        self.stats.failed += len(rows) - len(acked)
        return len(acked)

    async def _skip_stored(self, rows: list[_PendingRow]) -> list[_PendingRow]:
        """Rows older than half the stream's duplicate window may have been published by a relay that crashed
        before marking them, and JetStream would no longer drop a re-publish: those the stream already holds are
        marked published instead of sent again. Normally rows are a few milliseconds old and nothing is read."""
        window = timedelta(seconds=self.bus.settings.stream_duplicate_window_seconds / 2)
        old = [row for row in rows if row.created_at <= utcnow() - window]
        if not old:
            return rows
        since = min(row.created_at for row in old) - timedelta(seconds=60)  # the clocks of two hosts may differ
        stored = await self.bus.stored_ids({row.message.event_id for row in old}, since)
        if stored:
            log.warning("%d outbox rows were already in the stream (a relay stopped before marking them)", len(stored))
            acked = [(row.row_id, stored[row.message.event_id]) for row in old if row.message.event_id in stored]
            await asyncio.to_thread(self._mark_published, acked)
        return [row for row in rows if row.message.event_id not in stored]

    def _load_batch(self) -> list[_PendingRow]:
        with self.database.reader() as session:
            rows = session.execute(
                select(
                    OutboxEvent.id,
                    OutboxEvent.event_id,
                    OutboxEvent.subject,
                    OutboxEvent.payload,
                    OutboxEvent.headers,
                    OutboxEvent.correlation_id,
                    OutboxEvent.created_at,
                )
                .where(OutboxEvent.published_at.is_(None))
                .order_by(OutboxEvent.id)
                .limit(self.batch_size)
            ).all()
        return [
            _PendingRow(
                row.id,
                OutgoingMessage(row.event_id, row.subject, self._correlated(row), json.loads(row.headers)),
                row.created_at,
            )
            for row in rows
        ]

    def _correlated(self, row: Any) -> bytes:
        """The event as published: a runtime with a correlation id (a benchmark run) stamps it on every event
        that does not carry one, so that a consumer of a shared stream can tell its run's events apart."""
        payload: str = row.payload
        if self.correlation_id is None or row.correlation_id is not None:
            return payload.encode()
        event = json.loads(payload)
        if event.get("correlation_id") is None:
            event["correlation_id"] = self.correlation_id
        return json.dumps(event, separators=(",", ":")).encode()

    def _mark_published(self, acked: list[tuple[int, int]]) -> None:
        now = utcnow()
        with self.database.transaction() as session:
            session.execute(
                update(OutboxEvent),
                [{"id": row_id, "published_at": now, "stream_seq": seq} for row_id, seq in acked],
            )

    def _pending_count(self) -> int:
        with self.database.reader() as session:
            return session.scalar(select(func.count()).where(OutboxEvent.published_at.is_(None))) or 0


def _is_ack(result: PubAck | BaseException) -> TypeGuard[PubAck]:
    return isinstance(result, PubAck)
