"""One scenario's run: its own system set up, its agents created, its steps carried out, its final state read,
and the whole judged from the events its stream carried.

Each run gets its own state folder (a fresh SQLite database, workspaces), its own correlation id, stamped on
every event the run's runtime publishes, and its own consumer, which keeps only that id's events. The runtime
is the real one — scheduler, execution manager, sandboxed agents, System Service. The only state read outside
the stream is the final state, through the operator's public API.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError

from syntropism.benchmarks.checks import CheckResult, FinalObservation, check_events, check_final_state
from syntropism.benchmarks.collector import EventCollector
from syntropism.benchmarks.echo_llm import echo_llm_app
from syntropism.benchmarks.errors import StepFailed
from syntropism.benchmarks.judge import judge_run
from syntropism.benchmarks.programs import program_files, subject_of, with_agent_under_test
from syntropism.benchmarks.result import ScenarioResult, StepLog
from syntropism.benchmarks.scenario import LoadedScenario, Step
from syntropism.benchmarks.steps import StepDriver
from syntropism.config import Settings
from syntropism.domain.errors import Refused
from syntropism.infra import read_models
from syntropism.infra.database import Database
from syntropism.infra.nats_bus import EventBus
from syntropism.runtime import Runtime, serve_on_loopback

log = logging.getLogger(__name__)
ISOLATION_KNOBS = ("state_dir", "database_url", "nats_url", "correlation_id", "stream_name", "api_port")
SETTLE_TIMEOUT_SECONDS = 60.0
DRAIN_TIMEOUT_SECONDS = 30.0


class ScenarioRun:
    """One scenario's run: set up, steps, final state, judging — its outcome written into ``result``."""

    def __init__(
        self,
        loaded: LoadedScenario,
        result: ScenarioResult,
        *,
        state_dir: Path,
        nats_url: str,
        agent: str | None = None,
        judge_settings: Settings | None = None,
    ) -> None:
        self.loaded, self.scenario, self.result = loaded, loaded.scenario, result
        self.run_id, self.state_dir, self.nats_url = result.run_id, state_dir, nats_url
        self.agent = agent  # the agent under test (``--agent``): run as the scenario's subject
        self.judge_settings = judge_settings
        self.runtime: Runtime | None = None
        self.collector: EventCollector | None = None
        self.http: httpx.AsyncClient | None = None
        self.result.subject = subject_of(loaded, agent)

    async def execute(self) -> None:
        observed: FinalObservation | None = None
        try:
            async with self._system() as runtime:
                await self._create_agents()
                driver = StepDriver(runtime, self._collector(), self.run_id)
                for index, step in enumerate(self.scenario.steps, start=1):
                    await self._step(driver, index, step)
                await self._collector().settle(SETTLE_TIMEOUT_SECONDS)
                observed = await self._final_state()
                await runtime.stop()  # drains the outbox: every committed event is on the stream
                await self._drain()
        except StepFailed as exc:
            self.result.error = str(exc)
        except (Refused, ValidationError, httpx.HTTPError, OSError) as exc:
            self.result.error = f"{type(exc).__name__}: {exc}"
            log.exception("scenario %s could not run", self.scenario.scenario_id)
        assert self.collector is not None or self.result.error
        self.result.events = list(self.collector.events) if self.collector else []
        self._judge(observed)
        if self.scenario.validation.judge is not None:
            self.result.checks.append(await judge_run(self.scenario, self.result.events, self.judge_settings))

    def _judge(self, observed: FinalObservation | None) -> None:
        validation = self.scenario.validation
        self.result.checks += check_events(validation, self.result.events)
        if validation.final_state is not None:
            if observed is None:
                reason = f"the run did not get as far: {self.result.error}"
                self.result.checks.append(CheckResult("final_state", "failed", reason))
            else:
                self.result.checks += check_final_state(validation.final_state, observed)

    def settings(self, llm_url: str | None) -> Settings:
        """The run's configuration: the scenario's initial state over the runner's defaults, under the knobs
        that isolate the run from every other, which a scenario may not set."""
        state = self.scenario.initial_state
        clash = sorted(set(state.settings) & set(ISOLATION_KNOBS))
        if clash:
            raise StepFailed(f"initial_state.settings may not set {clash}: the runner isolates every run")
        capacity = {k: v for k, v in state.capacity.model_dump().items() if v is not None}
        market = {k: v for k, v in state.market.model_dump().items() if v is not None}
        if "mechanism" in market:
            market["market_mechanism"] = market.pop("mechanism")
        return Settings(
            **{
                "starter_agents": 0,
                "clearing_interval_seconds": 3600.0,  # the runner clears cycle by cycle
                "kill_grace_seconds": 1.0,
                "llm_base_url": llm_url,
                "llm_default_model": "echo" if llm_url else None,
                **capacity,
                **market,
                **state.settings,
                "initial_prices": dict(state.prices),
                "state_dir": self.state_dir,
                "database_url": f"sqlite:///{(self.state_dir / 'syntropism.db').resolve()}",
                "nats_url": self.nats_url,
                "correlation_id": self.run_id,
                **({"seed": self.result.seed} if self.result.seed is not None else {}),  # --seed over the file's
                "api_host": "127.0.0.1",
                "api_port": 0,
                "operator_token": secrets.token_urlsafe(24),
            }
        )

    @contextlib.asynccontextmanager
    async def _system(self) -> AsyncIterator[Runtime]:
        async with contextlib.AsyncExitStack() as stack:
            llm_url = None
            if self.scenario.initial_state.llm == "echo":
                llm_url = f"{await stack.enter_async_context(serve_on_loopback(echo_llm_app()))}/v1"
            try:
                settings = self.settings(llm_url)
            except ValidationError as exc:
                raise StepFailed(f"initial_state does not make a valid configuration: {exc}") from exc
            bus = await EventBus.connect(settings.nats_url or "", settings)
            stack.push_async_callback(bus.close)
            await bus.ensure_stream()
            self.collector = EventCollector(bus, self.run_id)
            await self.collector.start()
            stack.push_async_callback(self.collector.stop)
            self.runtime = runtime = Runtime(settings)
            await runtime.start()
            stack.push_async_callback(runtime.stop)
            assert runtime.api is not None and settings.operator_token
            self.http = httpx.AsyncClient(
                base_url=runtime.api.url, headers={"Authorization": f"Bearer {settings.operator_token}"}, timeout=30
            )
            stack.push_async_callback(self.http.aclose)
            yield runtime

    def _collector(self) -> EventCollector:
        assert self.collector is not None
        return self.collector

    async def _admin(self, method: str, path: str, **kwargs: Any) -> Any:
        assert self.http is not None
        response = await self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise StepFailed(f"{method} {path} answered {response.status_code}: {response.text[:500]}")
        return response.json()

    async def _create_agents(self) -> None:
        for spec in self.scenario.initial_state.agents:
            files, entry_point = program_files(with_agent_under_test(spec, self.agent), self.loaded.path)
            body = {
                "agent_id": spec.agent_id,
                "files": files,
                "entry_point": entry_point,
                "initial_grant": str(spec.balance),
            }
            await self._admin("POST", "/admin/agents", json=body)

    async def _step(self, driver: StepDriver, index: int, step: Step) -> None:
        description = json.dumps(step.model_dump(mode="json", exclude_none=True))
        try:
            outcome = await driver.do(index, step)
        except Refused as exc:
            outcome = f"refused: {exc.reason} ({exc.detail})"
        except StepFailed as exc:
            self.result.steps.append(StepLog(index, description, f"failed: {exc}"))
            raise StepFailed(f"step {index} ({step.do}): {exc}") from exc
        self.result.steps.append(StepLog(index, description, outcome))

    async def _final_state(self) -> FinalObservation:
        agents = await self._admin("GET", "/admin/agents")
        market = await self._admin("GET", "/admin/market")
        return FinalObservation(
            agents={a["agent_id"]: {k: a[k] for k in ("status", "available", "locked")} for a in agents},
            prices={r["resource"]: r["price"] for r in market["resources"]},
            total_credits=sum((Decimal(a["available"]) + Decimal(a["locked"]) for a in agents), Decimal(0)),
        )

    async def _drain(self) -> None:
        """Wait until the consumer holds every event the run committed: the one read of the run's own
        database, and only to know when the stream has caught up, never to judge."""
        assert self.runtime is not None
        committed = await asyncio.to_thread(committed_events, self.runtime.settings.effective_database_url)
        await self._collector().wait_until(
            lambda events: len(events) >= committed,
            within=DRAIN_TIMEOUT_SECONDS,
            what=f"all {committed} events of the run",
        )


def committed_events(database_url: str) -> int:
    """How many events the run's database committed (published or not): the count the stream must reach."""
    database = Database(database_url)
    try:
        return read_models.committed_events(database)
    finally:
        database.dispose()
