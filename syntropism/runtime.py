"""The composition root: the one place that builds the economy's parts and wires them together.

Every way of running Syntropism — ``syntropism run``, the CLI's commands, the benchmark runner, the tests and,
later, each separately started service — builds its parts here: :func:`build_relay`, :func:`build_services`,
:func:`build_market` and :class:`Runtime`, which composes them all into one process. Nothing below this module
(``core/``, ``infra/``, ``domain/``) knows the HTTP surface exists.

Start order: own the state folder → migrate the database → start (or connect to) NATS → ensure the stream →
relay. Stop order is the reverse, and the outbox is drained before NATS goes away, so a clean stop leaves no
committed event unpublished. Later capabilities (market, executor, System Service) attach to a started
:class:`Runtime` and use its ``database``, ``bus`` and ``relay``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

from fastapi import FastAPI

from syntropism.api.app import create_app
from syntropism.api.dependencies import Services
from syntropism.api.fairness import FairTurns
from syntropism.api.server import ApiServer
from syntropism.config import Settings
from syntropism.core.accounts import AccountsService
from syntropism.core.allocation import AllocationScheduler, CycleReport
from syntropism.core.attention import AttentionService
from syntropism.core.execution import ExecutionManager
from syntropism.core.intelligence import IntelligenceService
from syntropism.core.market import MarketManager
from syntropism.core.social import SocialService
from syntropism.infra.database import Database
from syntropism.infra.embedded_nats import EmbeddedNatsServer, redacted
from syntropism.infra.ledger import Ledger
from syntropism.infra.nats_bus import EventBus
from syntropism.infra.outbox import OutboxRelay
from syntropism.infra.sandbox import Sandbox
from syntropism.infra.state_dir import RuntimeInfo, StateDirLock, operator_token, read_runtime_info, socket_path_for
from syntropism.infra.telemetry import setup_tracing
from syntropism.infra.tokens import TokenLookup

log = logging.getLogger(__name__)
RELAY_TASK = "outbox-relay"


def build_database(settings: Settings) -> Database:
    return Database(settings.effective_database_url, sqlite_synchronous=settings.sqlite_synchronous)


def build_relay(database: Database, bus: EventBus, settings: Settings) -> OutboxRelay:
    """The outbox relay with every setting it takes: ``syntropism run`` and ``syntropism relay`` alike."""
    return OutboxRelay(
        database,
        bus,
        batch_size=settings.relay_batch_size,
        poll_seconds=settings.relay_poll_seconds,
        retention_seconds=settings.outbox_retention_seconds,
        correlation_id=settings.correlation_id,
    )


def build_market(database: Database, settings: Settings) -> tuple[MarketManager, AllocationScheduler]:
    market = MarketManager(database, settings)
    return market, AllocationScheduler(database, settings, market, mechanism=settings.market_mechanism)


def build_services(
    database: Database,
    settings: Settings,
    operator_token: str,
    executions: ExecutionManager | None = None,
    market: MarketManager | None = None,
) -> Services:
    """What the System Service's endpoints work with. ``market`` is the runtime's own, so one market manager
    (and its per-bidder rejection budget) serves both the clearing loop and the API; the accounts service works
    through the same ledger (and its group commit), social and attention services as the endpoints."""
    ledger = Ledger(database)
    social = SocialService(database, settings)
    attention = AttentionService(database, settings)
    return Services(
        database=database,
        settings=settings,
        ledger=ledger,
        market=market if market is not None else MarketManager(database, settings),
        social=social,
        operator_token=operator_token,
        intelligence=IntelligenceService(database, settings),
        attention=attention,
        accounts=AccountsService(database, ledger, social, attention),
        tokens=TokenLookup(database),
        turns=FairTurns(
            settings.agent_requests_in_flight,
            settings.requests_in_flight_per_execution,
            settings.requests_queued_per_execution,
            settings.requests_per_second_per_execution,
        ),
        executions=executions,
    )


class Runtime:
    """One running economy on one state folder."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.lock = StateDirLock(settings.state_dir)
        self.database = build_database(settings)
        self.nats_server: EmbeddedNatsServer | None = None
        self.bus: EventBus | None = None
        self.relay: OutboxRelay | None = None
        self.market, self.scheduler = build_market(self.database, settings)
        self.executions: ExecutionManager | None = None
        self.services: Services | None = None
        self.api: ApiServer | None = None
        self.cycles_done = 0
        self.stopping = asyncio.Event()
        self._relay_stopping = asyncio.Event()  # set only once the producers have finished
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.lock.acquire()
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        setup_tracing(self.settings)
        await asyncio.to_thread(self.database.migrate)
        nats_url = self.settings.nats_url
        if nats_url is None:
            self.nats_server = EmbeddedNatsServer(self.settings.nats_store_dir, binary=self.settings.nats_server_binary)
            nats_url = await self.nats_server.start()
        self.bus = await EventBus.connect(nats_url, self.settings)
        await self.bus.ensure_stream()
        self.relay = build_relay(self.database, self.bus, self.settings)
        self.relay.wake_on_commit(asyncio.get_running_loop())
        self._tasks.append(asyncio.create_task(self.relay.run(self._relay_stopping), name=RELAY_TASK))
        sandbox = await asyncio.to_thread(Sandbox.detect, self.settings.sandbox_disable)
        if "filesystem" not in sandbox.layers:
            log.error(
                "AGENTS ARE NOT ISOLATED: without bubblewrap (%s) every agent runs as this user, outside any "
                "namespace, and can read and write the database, the operator token and every other agent's "
                "workspace. Run only agents you trust, or install bubblewrap (apt-get install bubblewrap).",
                sandbox.unavailable.get("filesystem", "missing"),
            )
        socket_path = socket_path_for(self.settings)
        self.executions = ExecutionManager(
            self.database,
            self.settings,
            sandbox,
            service_socket=socket_path,
            correlation_id=self.settings.correlation_id,
        )
        self.services = services = build_services(
            self.database, self.settings, operator_token(self.settings), self.executions, self.market
        )
        self.executions.on_terminated(lambda outcome: services.intelligence.forget(outcome.execution_id))
        self.api = ApiServer(create_app(self.services), self.settings.api_host, self.settings.api_port, socket_path)
        await self.api.start()
        self._tasks.append(asyncio.create_task(self.executions.run(self.stopping), name="execution-manager"))
        self.lock.advertise(
            RuntimeInfo(os.getpid(), nats_url, self.settings.effective_database_url, datetime.now(UTC).isoformat())
        )
        log.info(
            "runtime ready: database %s, NATS %s%s, stream %s, System Service %s",
            self.database.engine.url.render_as_string(hide_password=True),
            redacted(nats_url),
            " (embedded)" if self.nats_server else "",
            self.settings.stream_name,
            self.api.url,
        )

    @staticmethod
    def freeze_startup_heap() -> None:
        """Move everything loaded at start (modules, models, SQLAlchemy's and Pydantic's caches) out of the cyclic
        garbage collector's reach: a full collection then walks only what requests made since, instead of pausing
        every request in flight for tens of milliseconds (the System Service's p99 at 32 concurrent requests:
        ~100 ms without, ~35 ms with). For the process that serves, once it has started."""
        gc.collect()
        gc.freeze()

    def request_stop(self) -> None:
        self.stopping.set()

    def start_clearing(
        self, *, cycles: int | None = None, on_cycle: Callable[[CycleReport], None] | None = None
    ) -> None:
        """Clear the market every ``clearing_interval_seconds``; after ``cycles`` cycles, stop the runtime."""
        self._tasks.append(asyncio.create_task(self._clearing_loop(cycles, on_cycle), name="clearing-loop"))

    async def _clearing_loop(self, cycles: int | None, on_cycle: Callable[[CycleReport], None] | None) -> None:
        interval = self.settings.clearing_interval_seconds
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), timeout=interval)
            if self.stopping.is_set():
                return
            # One cycle at a time: the next waits for this one, however long it takes.
            try:
                report = await self.clear_once()
            except Exception:
                log.exception(
                    "market cycle %d failed and was rolled back; retrying next interval", self.cycles_done + 1
                )
                continue
            if on_cycle is not None:
                on_cycle(report)
            if cycles is not None and self.cycles_done >= cycles:
                log.info("%d cycles done: stopping", self.cycles_done)
                self.request_stop()

    async def clear_once(self) -> CycleReport:
        """One market cycle: clear, hand the winners to the execution manager, then sweep for dead agents and
        expired prompts. The clearing loop calls it on its schedule; a benchmark calls it step by step."""
        report = await asyncio.to_thread(self.scheduler.run_allocation_cycle)
        self.cycles_done += 1
        if self.executions is not None and report.winners:
            self.executions.wake()
        if self.services is not None:
            try:
                await asyncio.to_thread(self.services.social.bury_the_destitute)
                await asyncio.to_thread(self.services.attention.expire)
            except Exception:
                log.exception("the sweep for dead agents and expired prompts failed; retrying next cycle")
        return report

    async def wait(self, seconds: float | None = None) -> None:
        """Run until a stop is requested (signal, caller) or ``seconds`` have passed."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)

    async def stop(self) -> None:
        self.stopping.set()
        # Producers first (a cycle in flight commits, running agents end or are killed, the API answers its last
        # calls), then the relay, which drains what they committed.
        for task in sorted(self._tasks, key=lambda t: t.get_name() == RELAY_TASK):
            if task.get_name() == RELAY_TASK:
                if self.api is not None:
                    await self.api.stop()
                    self.api = None
                if self.services is not None:
                    await self.services.intelligence.close()
                self._relay_stopping.set()
            try:
                await task
            except Exception:
                log.exception("task %s failed while stopping", task.get_name())
        self._tasks.clear()
        if self.api is not None:  # never got as far as the relay
            await self.api.stop()
            self.api = None
        if self.bus is not None:
            await self.bus.close()
            self.bus = None
        if self.nats_server is not None:
            self.nats_server.stop()
            self.nats_server = None
        self.database.dispose()
        self.lock.release()

    def install_signal_handlers(self) -> None:
        """Ctrl-C / SIGTERM ask for a clean stop instead of tearing the process down mid-transaction."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("received %s: stopping cleanly", sig.name)
        self.request_stop()

    async def __aenter__(self) -> Runtime:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


@contextlib.asynccontextmanager
async def open_bus(settings: Settings) -> AsyncIterator[EventBus]:
    """The event bus for a reader such as ``syntropism events``.

    Connects to the configured NATS, else to the embedded server of the runtime that owns the state folder;
    when no runtime runs, starts the embedded server on the stored data for as long as the reader needs it.
    """
    if settings.nats_url:
        url, server, lock = settings.nats_url, None, None
    else:
        lock = StateDirLock(settings.state_dir)
        if lock.try_acquire():
            server = EmbeddedNatsServer(settings.nats_store_dir, binary=settings.nats_server_binary)
            url = await server.start()
        else:
            info = read_runtime_info(settings.state_dir)
            if info is None:
                raise RuntimeError(f"a runtime holds {settings.state_dir} but has not advertised its NATS yet")
            url, server, lock = info.nats_url, None, None
    try:
        bus = await EventBus.connect(url, settings)
        try:
            await bus.ensure_stream()
            yield bus
        finally:
            await bus.close()
    finally:
        if server is not None:
            server.stop()
        if lock is not None:
            lock.release()


@contextlib.asynccontextmanager
async def open_relay(settings: Settings) -> AsyncIterator[OutboxRelay]:
    """The outbox relay of a split deployment (``syntropism relay``): the configured database, migrated, and the
    configured NATS, with the relay :func:`build_relay` makes for ``syntropism run`` too — so that both keep
    published rows for the same ``outbox_retention_seconds`` and stamp the same ``correlation_id``."""
    setup_tracing(settings)
    database = build_database(settings)
    try:
        await asyncio.to_thread(database.migrate)
        bus = await EventBus.connect(settings.nats_url or "", settings)
        try:
            await bus.ensure_stream()
            yield build_relay(database, bus, settings)
        finally:
            await bus.close()
    finally:
        database.dispose()


@contextlib.asynccontextmanager
async def serve_on_loopback(app: FastAPI) -> AsyncIterator[str]:
    """Serve the ASGI ``app`` on a free loopback port until the block ends, and yield its base URL.

    For the stand-ins a benchmark puts outside the system under test (the echo LLM upstream): they are served
    as the System Service is, and what serves them stays below the composition root."""
    server = ApiServer(app, "127.0.0.1", 0, None)
    await server.start()
    try:
        yield server.url
    finally:
        await server.stop()
