"""The transactional outbox against a real nats-server: nothing lost, nothing doubled, even across crashes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from opentelemetry import trace
from sqlalchemy import select

from syntropism.config import Settings
from syntropism.domain.events import Event
from syntropism.infra.database import Database
from syntropism.infra.embedded_nats import EmbeddedNatsServer
from syntropism.infra.faults import CRASH_AT_ENV
from syntropism.infra.nats_bus import EventBus, OutgoingMessage
from syntropism.infra.outbox import OutboxRelay, record_event
from syntropism.infra.tables import Agent, OutboxEvent
from syntropism.infra.telemetry import context_from_headers, setup_tracing, tracer
from tests.samples import sample_event


def commit_state_change(database: Database, agent_id: str = "a1") -> Event:
    """A real state change (an agent appears) committed with its event."""
    event = sample_event("agent.spawned", agent_id=agent_id)
    with database.transaction() as session:
        session.add(Agent(id=agent_id, name=agent_id, entry_point="main.py"))
        record_event(session, event)
    return event


async def stream_events(bus: EventBus) -> list[Event]:
    return [received.event async for received in bus.read()]


def run_relay_process(
    settings: Settings, crash_at: str | None, *, window_seconds: float | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "SYNTROPISM_STATE_DIR": str(settings.state_dir),
        "SYNTROPISM_NATS_URL": settings.nats_url or "",
    }
    if window_seconds is not None:
        env["SYNTROPISM_STREAM_DUPLICATE_WINDOW_SECONDS"] = str(window_seconds)
    if crash_at:
        env[CRASH_AT_ENV] = crash_at
    return subprocess.run(
        [sys.executable, "-m", "syntropism", "relay", "--once"], env=env, capture_output=True, text=True, timeout=60
    )


def outbox_rows(database: Database) -> Sequence[OutboxEvent]:
    with database.reader() as session:
        return session.scalars(select(OutboxEvent).order_by(OutboxEvent.id)).all()


async def test_committed_event_reaches_the_stream_once(database: Database, bus: EventBus) -> None:
    event = commit_state_change(database)
    relay = OutboxRelay(database, bus)
    assert await relay.relay_once() == 1
    assert await relay.relay_once() == 0
    assert await stream_events(bus) == [event]
    [row] = outbox_rows(database)
    assert row.published_at is not None and row.stream_seq == 1


async def test_relay_killed_before_publishing_loses_nothing(
    settings: Settings, database: Database, bus: EventBus
) -> None:
    event = commit_state_change(database)
    crashed = run_relay_process(settings, crash_at="relay.before_publish")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert await bus.stream_message_count() == 0
    assert outbox_rows(database)[0].published_at is None

    restarted = run_relay_process(settings, crash_at=None)
    assert restarted.returncode == 0, restarted.stderr
    assert await stream_events(bus) == [event]
    assert outbox_rows(database)[0].published_at is not None


async def test_relay_killed_after_publishing_does_not_duplicate(
    settings: Settings, database: Database, bus: EventBus
) -> None:
    event = commit_state_change(database)
    crashed = run_relay_process(settings, crash_at="relay.after_publish")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert await stream_events(bus) == [event]  # published, but the ack was never recorded
    assert outbox_rows(database)[0].published_at is None

    restarted = run_relay_process(settings, crash_at=None)
    assert restarted.returncode == 0, restarted.stderr
    assert await stream_events(bus) == [event]  # the re-publish was de-duplicated
    assert outbox_rows(database)[0].stream_seq == 1


async def test_relay_restarted_past_the_duplicate_window_does_not_duplicate(
    tmp_path: Path, nats_server: EmbeddedNatsServer
) -> None:
    """JetStream drops a re-publish only within its duplicate window; a relay that comes back later finds what
    the crashed one had published in the stream itself."""
    settings = Settings(state_dir=tmp_path / "late", nats_url=nats_server.url, stream_duplicate_window_seconds=1)
    database = Database(settings.effective_database_url)
    database.migrate()
    bus = await EventBus.connect(nats_server.url, settings)
    try:
        await bus.ensure_stream()
        event = commit_state_change(database)
        crashed = run_relay_process(settings, crash_at="relay.after_publish", window_seconds=1)
        assert crashed.returncode == -signal.SIGKILL, crashed.stderr
        await asyncio.sleep(1.5)  # a clock, not a synchronisation: the stream's 1 s duplicate window must pass
        restarted = run_relay_process(settings, crash_at=None, window_seconds=1)
        assert restarted.returncode == 0, restarted.stderr
        assert await stream_events(bus) == [event]
        assert outbox_rows(database)[0].stream_seq == 1
    finally:
        await bus.close()
        database.dispose()


async def test_same_event_published_twice_is_stored_once(bus: EventBus) -> None:
    event = sample_event("market.bid_placed")
    first = await bus.publish(OutgoingMessage.of(event))
    second = await bus.publish(OutgoingMessage.of(event))
    again = await bus.publish_many([OutgoingMessage.of(event)] * 3)
    assert second.duplicate and second.seq == first.seq
    assert all(ack.seq == first.seq for ack in again)  # type: ignore[union-attr]
    assert await stream_events(bus) == [event]


async def test_events_keep_commit_order(database: Database, bus: EventBus) -> None:
    committed = [commit_state_change(database, f"a{i}") for i in range(25)]
    relay = OutboxRelay(database, bus, batch_size=7)
    await relay.drain()
    assert await stream_events(bus) == committed
    assert [row.stream_seq for row in outbox_rows(database)] == list(range(1, 26))


async def test_running_relay_is_woken_by_a_commit(database: Database, bus: EventBus) -> None:
    relay = OutboxRelay(database, bus, poll_seconds=30)  # polling alone would take 30 s
    relay.wake_on_commit(asyncio.get_running_loop())
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        event = await asyncio.to_thread(commit_state_change, database)  # commits from another thread, as services do
        async with asyncio.timeout(10):
            first = await anext(aiter(bus.read(follow=True)))
    finally:
        stop.set()
        await task
    assert first.event == event
    assert await bus.stream_message_count() == 1


async def test_trace_context_travels_in_headers(settings: Settings, database: Database, bus: EventBus) -> None:
    setup_tracing(settings)
    with tracer.start_as_current_span("place bid") as span:
        commit_state_change(database)
        trace_id = span.get_span_context().trace_id
    await OutboxRelay(database, bus).drain()
    [received] = [r async for r in bus.read()]
    assert received.headers["traceparent"].split("-")[1] == format(trace_id, "032x")
    # A consumer continues the same trace from the message headers.
    continued = trace.get_current_span(context_from_headers(received.headers)).get_span_context()
    assert continued.trace_id == trace_id
    assert trace.get_current_span().get_span_context().is_valid is False


def test_embedded_server_fsyncs_every_write(nats_server: EmbeddedNatsServer) -> None:
    """JetStream acks before it fsyncs by default; the embedded server must not, or an ack could be lost."""
    with urllib.request.urlopen(f"{nats_server.monitoring_url}/varz", timeout=5) as response:
        jetstream = json.load(response)["jetstream"]["config"]
    assert jetstream["sync_always"] is True


async def test_acknowledged_event_survives_a_nats_server_crash(tmp_path, database: Database) -> None:  # type: ignore[no-untyped-def]
    server = EmbeddedNatsServer(tmp_path / "crashing-nats")
    url = await server.start()
    settings = Settings(state_dir=tmp_path / "state", nats_url=url)
    bus = await EventBus.connect(url, settings)
    await bus.ensure_stream()
    event = commit_state_change(database)
    await OutboxRelay(database, bus).drain()
    await bus.client.close()
    server.kill()  # SIGKILL right after the ack: no graceful flush

    restarted = EmbeddedNatsServer(tmp_path / "crashing-nats")
    url = await restarted.start()
    try:
        bus = await EventBus.connect(url, settings)
        assert await stream_events(bus) == [event]
        await bus.close()
    finally:
        restarted.stop()


async def test_batches_are_atomic_and_fall_back_when_some_events_are_stored(bus: EventBus) -> None:
    assert bus.atomic_batches, "the embedded nats-server supports atomic batches"
    events = [sample_event("agent.dormant", agent_id=f"a{i}") for i in range(2500)]
    messages = [OutgoingMessage.of(event) for event in events]
    # Some of them reached the stream before a crash; the whole lot is published again.
    already = await bus.publish_batch(messages[1000:1010])
    results = await bus.publish_batch(messages)
    assert all(not isinstance(result, BaseException) for result in results)
    stored = await stream_events(bus)
    assert len(stored) == len(events) and {e.event_id for e in stored} == {e.event_id for e in events}
    assert [ack.seq for ack in already] == list(range(1, 11))  # type: ignore[union-attr]
    first_chunk = results[:1000]
    assert [ack.seq for ack in first_chunk] == list(range(11, 1011))  # type: ignore[union-attr]


async def test_prune_removes_only_long_published_rows(database: Database, bus: EventBus) -> None:
    commit_state_change(database, "a1")
    relay = OutboxRelay(database, bus, retention_seconds=0)
    await relay.drain()
    commit_state_change(database, "a2")  # committed, not yet published: never pruned
    assert relay.prune() == 1
    [row] = outbox_rows(database)
    assert row.published_at is None and row.agent_id == "a2"
    assert OutboxRelay(database, bus, retention_seconds=3600).prune() == 0
