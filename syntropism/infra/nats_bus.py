"""The event bus: one JetStream stream on ``system.>``, publishing with de-duplication and reading it back.

A message's ``Nats-Msg-Id`` header is its event id, so JetStream drops a re-publish within the stream's
duplicate window: the outbox relay may safely publish an event again after a crash.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, PubAck, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from syntropism.config import Settings
from syntropism.domain.events import SUBJECT_PREFIX, Event, parse_event

log = logging.getLogger(__name__)

MSG_ID_HEADER = "Nats-Msg-Id"
ALL_EVENTS = f"{SUBJECT_PREFIX}.>"


@dataclass(frozen=True)
class OutgoingMessage:
    """An event ready for the wire: subject, JSON body and headers (event id, trace context)."""

    event_id: str
    subject: str
    payload: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, event: Event, headers: dict[str, str] | None = None) -> OutgoingMessage:
        return cls(str(event.event_id), event.subject, event.to_json(), dict(headers or {}))

    def wire_headers(self) -> dict[str, str]:
        return {**self.headers, MSG_ID_HEADER: self.event_id}


@dataclass(frozen=True)
class ReceivedEvent:
    stream_seq: int
    event: Event
    headers: dict[str, str]


class BusUnavailable(RuntimeError):
    """NATS could not be reached; the message names the URL and how to fix it."""


def stream_config(settings: Settings) -> StreamConfig:
    return StreamConfig(
        name=settings.stream_name,
        subjects=[ALL_EVENTS],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=settings.stream_max_age_seconds,
        max_bytes=settings.stream_max_bytes,
        duplicate_window=settings.stream_duplicate_window_seconds,
        num_replicas=settings.stream_replicas,
    )


def event_filter(event_types: Sequence[str]) -> list[str]:
    """Subjects for event-type patterns: ``market.bid_placed``, ``market.*`` or ``market`` (a whole service)."""
    subjects = []
    for pattern in event_types:
        if "." not in pattern and pattern not in ("*", ">"):
            pattern = f"{pattern}.*"
        subjects.append(f"{SUBJECT_PREFIX}.{pattern}")
    return subjects or [ALL_EVENTS]


class EventBus:
    """A connection to NATS with the system stream in place."""

    def __init__(self, client: Client, settings: Settings) -> None:
        self.client = client
        self.js: JetStreamContext = client.jetstream(publish_async_max_pending=settings.relay_batch_size * 2)
        self.settings = settings

    @classmethod
    async def connect(cls, url: str, settings: Settings) -> EventBus:
        connect_timeout = settings.nats_connect_timeout_seconds

        async def _log_error(exc: Exception) -> None:
            log.error("NATS connection error on %s: %s", url, exc)

        client = Client()
        try:
            # Reconnect forever once connected (a NATS restart must not end the economy), but give up on a
            # server that cannot be reached at all within the time below.
            await asyncio.wait_for(
                client.connect(
                    url,
                    name="syntropism",
                    connect_timeout=connect_timeout,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    error_cb=_log_error,
                ),
                timeout=connect_timeout * 2,
            )
        except Exception as exc:
            await client.close()
            raise BusUnavailable(
                f"cannot connect to NATS at {url}: {exc!r}. Unset SYNTROPISM_NATS_URL to use the embedded server, "
                "or start nats-server with JetStream (-js)."
            ) from exc
        return cls(client, settings)

    async def ensure_stream(self) -> None:
        """Create the system stream, or bring an existing one to the configured retention."""
        config = stream_config(self.settings)
        try:
            await self.js.stream_info(config.name)
        except NotFoundError:
            await self.js.add_stream(config)
            log.info("created JetStream stream %s on %s", config.name, ALL_EVENTS)
        else:
            await self.js.update_stream(config)

    async def publish(self, message: OutgoingMessage) -> PubAck:
        """Publish one event and wait for JetStream's acknowledgement."""
        return await self.js.publish(
            message.subject,
            message.payload,
            headers=message.wire_headers(),
            stream=self.settings.stream_name,
            timeout=self.settings.publish_timeout_seconds,
        )

    async def publish_many(self, messages: Sequence[OutgoingMessage]) -> list[PubAck | BaseException]:
        """Publish pipelined: send all, then collect every ack (or the error for that message), in order."""
        if not messages:
            return []
        futures = [
            await self.js.publish_async(
                message.subject, message.payload, headers=message.wire_headers(), stream=self.settings.stream_name
            )
            for message in messages
        ]
        _done, pending = await asyncio.wait(futures, timeout=self.settings.publish_timeout_seconds)
        for future in pending:
            future.cancel()  # frees its slot in the client's in-flight window
        return [
            TimeoutError("no JetStream ack in time") if f.cancelled() else (f.exception() or f.result())
            for f in futures
        ]

    async def stream_message_count(self) -> int:
        info = await self.js.stream_info(self.settings.stream_name)
        return info.state.messages

    async def read(
        self, event_types: Sequence[str] = (), *, follow: bool = False, batch: int = 256
    ) -> AsyncIterator[ReceivedEvent]:
        """Every stored event matching ``event_types``, oldest first; with ``follow``, then new ones as they come."""
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.NONE,
            filter_subjects=event_filter(event_types),
            inactive_threshold=60.0,
        )
        subscription = await self.js.pull_subscribe(ALL_EVENTS, stream=self.settings.stream_name, config=config)
        try:
            info = await subscription.consumer_info()
            if not follow and info.num_pending == 0:
                return
            while True:
                try:
                    messages = await subscription.fetch(batch, timeout=1.0)
                except nats.errors.TimeoutError:
                    if not follow and (await subscription.consumer_info()).num_pending == 0:
                        return  # what was pending expired meanwhile
                    continue
                for message in messages:
                    yield ReceivedEvent(
                        message.metadata.sequence.stream, parse_event(message.data), dict(message.headers or {})
                    )
                    if not follow and message.metadata.num_pending == 0:
                        return
        finally:
            await subscription.unsubscribe()

    async def close(self) -> None:
        if not self.client.is_closed:
            await self.client.drain()
