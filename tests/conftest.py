"""Shared fixtures: a real embedded nats-server with JetStream, real SQLite files, a real PostgreSQL server."""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from syntropism.config import Settings
from syntropism.infra.database import Database
from syntropism.infra.embedded_nats import EmbeddedNatsServer
from syntropism.infra.nats_bus import EventBus
from tests.support.fake_llm import Calls, fake_llm
from tests.support.postgres import PostgresUnavailable, ephemeral_postgres


@pytest.fixture(autouse=True)
def _clean_syntropism_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see only the settings they set, never the developer's SYNTROPISM_* environment."""
    for name in list(os.environ):
        if name.startswith("SYNTROPISM_"):
            monkeypatch.delenv(name)
    # Any free port for the System Service: tests never collide with each other or a running economy.
    monkeypatch.setenv("SYNTROPISM_API_PORT", "0")


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


@pytest.fixture
def upstream() -> Iterator[tuple[str, Calls]]:
    """A fake OpenAI-compatible upstream over real HTTP (outside our system), recording every request it got."""
    with fake_llm() as served:
        yield served


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """One throwaway PostgreSQL server for the session; skipped, loudly, only where none can be had."""
    try:
        with ephemeral_postgres() as url:
            yield url
    except PostgresUnavailable as exc:
        message = f"PostgreSQL tests SKIPPED: {exc}"
        warnings.warn(message, stacklevel=1)
        pytest.skip(message)


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database on the session's PostgreSQL server."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(postgres_server).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def any_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on a SQLite file and on a real PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return request.getfixturevalue("postgres_url")
