"""Shared fixtures: a real embedded nats-server with JetStream, a real SQLite file, the real stream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from syntropism.config import Settings
from syntropism.infra.database import Database
from syntropism.infra.embedded_nats import EmbeddedNatsServer
from syntropism.infra.nats_bus import EventBus


@pytest.fixture(autouse=True)
def _clean_syntropism_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see only the settings they set, never the developer's SYNTROPISM_* environment."""
    import os

    for name in list(os.environ):
        if name.startswith("SYNTROPISM_"):
            monkeypatch.delenv(name)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[EmbeddedNatsServer]:
    server = EmbeddedNatsServer(tmp_path / "nats")
    await server.start()
    yield server
    server.stop()


@pytest.fixture
def settings(state_dir: Path, nats_server: EmbeddedNatsServer) -> Settings:
    return Settings(state_dir=state_dir, nats_url=nats_server.url)


@pytest.fixture
def database(settings: Settings) -> Iterator[Database]:
    db = Database(settings.effective_database_url)
    db.migrate()
    yield db
    db.dispose()


@pytest.fixture
async def bus(settings: Settings) -> AsyncIterator[EventBus]:
    assert settings.nats_url
    event_bus = await EventBus.connect(settings.nats_url, settings)
    await event_bus.ensure_stream()
    yield event_bus
    await event_bus.close()
