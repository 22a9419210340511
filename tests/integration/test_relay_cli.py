"""``syntropism relay`` builds its relay as ``syntropism run`` does: it keeps published outbox rows for the
configured ``outbox_retention_seconds`` (not the default day) and stamps the configured ``correlation_id``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from syntropism.cli.relay import relay_outbox
from syntropism.config import Settings
from syntropism.domain.events import Event
from syntropism.infra.database import Database
from syntropism.infra.nats_bus import EventBus
from syntropism.infra.outbox import record_event
from syntropism.infra.tables import Agent, OutboxEvent
from tests.samples import sample_event

CORRELATION_ID = "split-relay-7"


def commit_state_change(database: Database, agent_id: str) -> Event:
    """A real state change (an agent appears) committed with its event, which carries no correlation id."""
    event = sample_event("agent.spawned", agent_id=agent_id)
    assert event.correlation_id is None
    with database.transaction() as session:
        session.add(Agent(id=agent_id, name=agent_id, entry_point="main.py"))
        record_event(session, event)
    return event


def published_long_ago(database: Database, agent_id: str, age: timedelta) -> None:
    with database.transaction() as session:
        session.execute(
            update(OutboxEvent)
            .where(OutboxEvent.agent_id == agent_id)
            .values(published_at=datetime.now(UTC) - age, stream_seq=0)
        )


def outbox_rows(database: Database) -> Sequence[OutboxEvent]:
    with database.reader() as session:
        return session.scalars(select(OutboxEvent).order_by(OutboxEvent.id)).all()


async def stream_events(bus: EventBus) -> list[Event]:
    return [received.event async for received in bus.read()]


async def test_relay_prunes_on_the_configured_retention_and_stamps_the_correlation_id(
    settings: Settings, database: Database, bus: EventBus
) -> None:
    configured = settings.model_copy(update={"outbox_retention_seconds": 3600, "correlation_id": CORRELATION_ID})
    commit_state_change(database, "old")
    published_long_ago(database, "old", timedelta(hours=2))  # past the configured hour, within the default day
    fresh = commit_state_change(database, "fresh")
    stop = asyncio.Event()
    relaying = asyncio.create_task(relay_outbox(configured, once=False, stop=stop))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not relaying.done():
        rows = outbox_rows(database)
        if [row.agent_id for row in rows] == ["fresh"] and rows[0].published_at is not None:
            break
        await asyncio.sleep(0.05)
    stop.set()
    assert await relaying == 1
    [row] = outbox_rows(database)  # the two-hour-old row pruned; the one just published kept
    assert row.agent_id == "fresh" and row.published_at is not None
    [event] = await stream_events(bus)
    assert event.event_id == fresh.event_id and event.correlation_id == CORRELATION_ID


async def test_relay_command_stamps_the_configured_correlation_id(
    settings: Settings, database: Database, bus: EventBus
) -> None:
    event = commit_state_change(database, "a1")
    env = {
        **os.environ,
        "SYNTROPISM_STATE_DIR": str(settings.state_dir),
        "SYNTROPISM_NATS_URL": settings.nats_url or "",
        "SYNTROPISM_CORRELATION_ID": CORRELATION_ID,
    }
    command = [sys.executable, "-m", "syntropism", "relay", "--once"]
    done = await asyncio.to_thread(subprocess.run, command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "relayed 1 events" in done.stdout
    [published] = await stream_events(bus)
    assert published.event_id == event.event_id and published.correlation_id == CORRELATION_ID
