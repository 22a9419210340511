"""The System Service over real HTTP for tests: served by uvicorn in a thread of its own, on any free port."""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select

from syntropism.api.app import create_app
from syntropism.api.dependencies import Services
from syntropism.api.server import ApiServer
from syntropism.config import Settings
from syntropism.core.execution import hash_token
from syntropism.domain import economy as E
from syntropism.domain.models import time_ordered_id
from syntropism.infra.agents import register_agent
from syntropism.infra.database import Database
from syntropism.infra.tables import Agent, Bid, Execution, Message, Transfer
from syntropism.runtime import build_services


@contextmanager
def serving(
    app: FastAPI, socket_path: Path | None = None, on_stop: Callable[[], Awaitable[None]] | None = None
) -> Iterator[ApiServer]:
    """Serve ``app`` until the block ends; yields the started server (its ``url``, its ``socket_path``).
    ``on_stop`` runs in the server's event loop once it has stopped (to close what lives in that loop)."""
    server = ApiServer(app, "127.0.0.1", 0, socket_path)
    ready, failed = threading.Event(), []
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def run() -> None:
        try:
            await server.start()
        except BaseException as exc:
            failed.append(exc)
            ready.set()
            raise
        ready.set()
        await stop.wait()
        await server.stop()
        if on_stop is not None:
            await on_stop()

    thread = threading.Thread(target=loop.run_until_complete, args=(run(),), daemon=True)
    thread.start()
    ready.wait(30)
    if failed:
        raise failed[0]
    try:
        yield server
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()


OPERATOR = "operator-secret"


class Api:
    def __init__(self, services: Services, url: str) -> None:
        self.services = services
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=10)
        self.tokens: dict[str, str] = {}

    def start_execution(
        self,
        agent_id: str,
        status: str = "running",
        *,
        tokens_ppm: int = 0,
        attention_ppm: int = 0,
        duration_ms: int = 1000,
    ) -> str:
        """A running execution of ``agent_id`` and its token, as the execution manager leaves them."""
        token = secrets.token_urlsafe(32)
        with self.services.database.transaction() as session:
            session.add(
                Execution(
                    id=time_ordered_id(),
                    agent_id=agent_id,
                    cycle=0,
                    status=status,
                    cpu_ppm=0,
                    memory_ppm=0,
                    tokens_ppm=tokens_ppm,
                    attention_ppm=attention_ppm,
                    duration_ms=duration_ms,
                    token_hash=hash_token(token),
                )
            )
        return token

    def as_agent(self, agent_id: str) -> dict[str, str]:
        if agent_id not in self.tokens:
            self.tokens[agent_id] = self.start_execution(agent_id)
        return {"Authorization": f"Bearer {self.tokens[agent_id]}"}

    def call(
        self, method: str, path: str, agent: str | None = None, key: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if agent is not None:
            headers |= self.as_agent(agent)
        if key is not None:
            headers["Idempotency-Key"] = key
        return self.http.request(method, path, headers=headers, **kwargs)

    def admin(self, method: str, path: str, key: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {OPERATOR}"} | ({"Idempotency-Key": key} if key else {})
        return self.http.request(method, path, headers=headers, **kwargs)

    def snapshot(self) -> tuple[object, ...]:
        """Everything a refused call must leave as it was (events of refusals, such as bid_rejected, aside)."""
        ledger = self.services.ledger
        with self.services.database.reader() as session:
            counts = tuple(
                session.scalar(select(func.count()).select_from(table)) for table in (Transfer, Bid, Message, Agent)
            )
        balances = tuple(ledger.balance(a) for a in ("alice", "bob"))
        return counts + balances


@contextmanager
def running_api(state_dir: Path, **settings_overrides: Any) -> Iterator[Api]:
    """A System Service with agents alice and bob (100 credits each), over real HTTP; on leaving, the ledger
    invariant must hold."""
    settings = Settings(state_dir=state_dir, operator_token=OPERATOR, **settings_overrides)
    database = Database(settings.effective_database_url)
    database.migrate()
    with database.transaction() as session:
        for agent_id in ("alice", "bob"):
            register_agent(session, agent_id)
    services = build_services(database, settings, OPERATOR)
    for agent_id in ("alice", "bob"):
        services.ledger.execute(E.grant(agent_id, 100, idempotency_key=f"grant-{agent_id}"))
    try:
        with serving(create_app(services), on_stop=services.intelligence.close) as server:
            built = Api(services, server.url)
            yield built
            built.http.close()
        report = services.ledger.verify()
        assert report.ok, f"the ledger invariant must hold: {report}"
    finally:
        database.dispose()
