"""The event bus: one JetStream stream on ``system.>``, publishing with de-duplication and reading it back.

A message's ``Nats-Msg-Id`` header is its event id, so JetStream drops a re-publish within the stream's
duplicate window: the outbox relay may safely publish an event again after a crash.

Batches go out as JetStream *atomic batches* (nats-server ≥ 2.12): the server stores all of a batch or none
and fsyncs it once, which is what makes ``sync_interval: always`` affordable. A batch holding an id the
stream already has is rejected whole (that happens after a relay crash), and is then published message by
message, pipelined, so that the duplicates are dropped one by one.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import uuid4

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    PubAck,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.api import Header as JsHeader
from nats.js.errors import APIError, NotFoundError

from syntropism.config import Settings
from syntropism.domain.events import SUBJECT_PREFIX, Event, parse_event

log = logging.getLogger(__name__)

MSG_ID_HEADER = "Nats-Msg-Id"
ALL_EVENTS = f"{SUBJECT_PREFIX}.>"
ATOMIC_BATCH_MAX = 1000  # nats-server's default limit of messages in one atomic batch
ATOMIC_MIN_SERVER = (2, 12)
BATCH_ID, BATCH_SEQUENCE, BATCH_COMMIT = JsHeader.BATCH_ID, JsHeader.BATCH_SEQUENCE, JsHeader.BATCH_COMMIT
ERR_BATCH_DUPLICATE = 10201  # "atomic publish batch contains duplicate message id"


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


class AtomicBatchRejected(RuntimeError):
    def __init__(self, description: str, err_code: int | None = None) -> None:
        super().__init__(f"atomic batch rejected: {description}")
        self.err_code = err_code


def stream_config(settings: Settings, *, allow_atomic: bool) -> StreamConfig:
    return StreamConfig(
        allow_atomic=allow_atomic or None,
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
        version = client.connected_server_version
        self.atomic_batches = (version.major, version.minor) >= ATOMIC_MIN_SERVER

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
                    connect_timeout=connect_timeout,  # type: ignore[arg-type]  # annotated int, used as a float
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
        config = stream_config(self.settings, allow_atomic=self.atomic_batches)
        try:
            await self.js.stream_info(self.settings.stream_name)
        except NotFoundError:
            await self.js.add_stream(config)
            log.info("created JetStream stream %s on %s", config.name, ALL_EVENTS)
            return
        try:
            await self.js.update_stream(config)
        except APIError as exc:
            if not self.atomic_batches:
                raise
            # An existing stream this server will not switch to atomic batches: publish message by message.
            log.warning("stream %s refuses atomic batches (%s); publishing pipelined instead", config.name, exc)
            self.atomic_batches = False
            await self.js.update_stream(stream_config(self.settings, allow_atomic=False))

    async def publish(self, message: OutgoingMessage) -> PubAck:
        """Publish one event and wait for JetStream's acknowledgement."""
        return await self.js.publish(
            message.subject,
            message.payload,
            headers=message.wire_headers(),
            stream=self.settings.stream_name,
            timeout=self.settings.publish_timeout_seconds,
        )

    async def publish_batch(self, messages: Sequence[OutgoingMessage]) -> list[PubAck | BaseException]:
        """Publish in order, as atomic batches where the server allows; one ack or error per message."""
        if not self.atomic_batches:
            return await self.publish_many(messages)
        results: list[PubAck | BaseException] = []
        for start in range(0, len(messages), ATOMIC_BATCH_MAX):
            chunk = messages[start : start + ATOMIC_BATCH_MAX]
            try:
                results.extend(await self.publish_atomic(chunk))
            except (AtomicBatchRejected, TimeoutError, nats.errors.Error) as exc:
                duplicate = isinstance(exc, AtomicBatchRejected) and exc.err_code == ERR_BATCH_DUPLICATE
                log.log(
                    logging.INFO if duplicate else logging.WARNING,
                    "%s; publishing its %d events one by one instead",
                    exc,
                    len(chunk),
                )
                results.extend(await self.publish_many(chunk))
        return results

    async def publish_atomic(self, messages: Sequence[OutgoingMessage]) -> list[PubAck]:
        """Store all ``messages`` or none (one JetStream atomic batch, at most ATOMIC_BATCH_MAX)."""
        if not messages or len(messages) > ATOMIC_BATCH_MAX:
            raise ValueError(f"an atomic batch holds 1 to {ATOMIC_BATCH_MAX} messages, not {len(messages)}")
        batch_id = uuid4().hex
        inbox = self.client.new_inbox()
        subscription = await self.client.subscribe(inbox, max_msgs=1)
        try:
            last = len(messages)
            for sequence, message in enumerate(messages, start=1):
                headers = message.wire_headers() | {BATCH_ID: batch_id, BATCH_SEQUENCE: str(sequence)}
                if sequence == last:
                    headers[BATCH_COMMIT] = "1"
                await self.client.publish(
                    message.subject, message.payload, headers=headers, reply=inbox if sequence == last else ""
                )
            reply = await subscription.next_msg(timeout=self.settings.publish_timeout_seconds)
        finally:
            await subscription.unsubscribe()
        response = json.loads(reply.data)
        if "error" in response:
            error = response["error"]
            raise AtomicBatchRejected(error.get("description", str(error)), error.get("err_code"))
        ack = PubAck.from_response(response)
        first_seq = ack.seq - last + 1
        return [PubAck(stream=ack.stream, seq=first_seq + offset) for offset in range(last)]

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

    async def consumer(
        self, event_types: Sequence[str] = (), *, only_new: bool = False
    ) -> JetStreamContext.PullSubscription:
        """An ephemeral pull consumer of the events matching ``event_types``: from the oldest stored, or with
        ``only_new`` from the moment it is made. Nothing is acknowledged; it goes away a minute after its last use."""
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.NEW if only_new else DeliverPolicy.ALL,
            ack_policy=AckPolicy.NONE,
            filter_subjects=event_filter(event_types),
            inactive_threshold=60.0,
        )
        return await self.js.pull_subscribe(ALL_EVENTS, stream=self.settings.stream_name, config=config)

    async def read(
        self, event_types: Sequence[str] = (), *, follow: bool = False, batch: int = 256
    ) -> AsyncIterator[ReceivedEvent]:
        """Every stored event matching ``event_types``, oldest first; with ``follow``, then new ones as they come."""
        subscription = await self.consumer(event_types)
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

    async def stored_ids(self, event_ids: set[str], since: datetime) -> dict[str, int]:
        """Which of ``event_ids`` the stream already holds (among messages stored since ``since``), with their
        stream sequence: how a relay tells, past the duplicate window, what a crashed relay had published.
        Reads headers only."""
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_TIME,
            # nats-py annotates a datetime (older releases: an int) and sends a string as it is, on every release
            opt_start_time=since.astimezone(UTC).isoformat().replace("+00:00", "Z"),  # type: ignore[arg-type]
            ack_policy=AckPolicy.NONE,
            headers_only=True,
            inactive_threshold=60.0,
        )
        subscription = await self.js.pull_subscribe(ALL_EVENTS, stream=self.settings.stream_name, config=config)
        found: dict[str, int] = {}
        try:
            if (await subscription.consumer_info()).num_pending == 0:
                return found
            while len(found) < len(event_ids):
                try:
                    messages = await subscription.fetch(512, timeout=1.0)
                except nats.errors.TimeoutError:
                    if (await subscription.consumer_info()).num_pending == 0:
                        return found
                    continue
                for message in messages:
                    event_id = (message.headers or {}).get(MSG_ID_HEADER)
                    if event_id in event_ids:
                        found[event_id] = message.metadata.sequence.stream
                    if message.metadata.num_pending == 0:
                        return found
        finally:
            await subscription.unsubscribe()
        return found

    async def close(self) -> None:
        if not self.client.is_closed:
            await self.client.drain()
