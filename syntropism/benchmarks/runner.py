"""The BenchmarkRunner: runs a scenario on the real system and judges it from the event stream alone.

Each run gets its own state folder (a fresh SQLite database, workspaces), its own correlation id, stamped on
every event the run's runtime publishes, and its own JetStream consumer, which keeps only that id's events.
Runs can share one NATS server (the runner starts one embedded server for all of them) and still never see
each other's events. The runtime is the real one — scheduler, execution manager, sandboxed agents, System
Service — but the runner drives the market cycle by cycle instead of on a clock, so that a scenario is
deterministic. The only state read outside the stream is the final state, through the operator's public API.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import nats.errors
from pydantic import ValidationError
from sqlalchemy import func, select

from syntropism.api.server import ApiServer
from syntropism.benchmarks.checks import (
    CheckResult,
    EventJson,
    FinalObservation,
    check_events,
    check_final_state,
    matches,
)
from syntropism.benchmarks.echo_llm import echo_llm_app
from syntropism.benchmarks.judge import judge_run
from syntropism.benchmarks.scenario import (
    AgentSpec,
    BidStep,
    CyclesStep,
    GrantStep,
    LoadedScenario,
    RewardStep,
    SettleStep,
    Step,
    TransferStep,
    WaitForStep,
)
from syntropism.config import Settings
from syntropism.domain import economy
from syntropism.domain.errors import Refused
from syntropism.domain.events import parse_event
from syntropism.infra.database import Database
from syntropism.infra.embedded_nats import EmbeddedNatsServer
from syntropism.infra.nats_bus import EventBus
from syntropism.infra.tables import OutboxEvent
from syntropism.runtime import Runtime

log = logging.getLogger(__name__)
SCRIPTED_AGENT = Path(__file__).with_name("scripted_agent.py")
REPOSITORY = Path(__file__).resolve().parents[2]
ISOLATION_KNOBS = ("state_dir", "database_url", "nats_url", "correlation_id", "stream_name", "api_port")
SETTLE_TIMEOUT_SECONDS = 60.0
DRAIN_TIMEOUT_SECONDS = 30.0


class StepFailed(RuntimeError):
    """A step could not be carried out (a timeout, a refused set-up); the message says which and why."""


@dataclass(frozen=True)
class StepLog:
    index: int
    step: str
    outcome: str


# A scenario's verdict. ``passed``: at least one check evaluated, none failed. ``partial``: none failed, some not
# evaluated (passed only with ``allow_partial``). ``not_evaluated``: no check evaluated at all. ``failed``: a check
# failed. ``error``: the run itself broke. ``unreadable``: the scenario file could not be loaded, nothing ran.
STATUSES = ("passed", "failed", "partial", "not_evaluated", "error", "unreadable")


@dataclass
class ScenarioResult:
    scenario_id: str
    name: str
    domain: str
    path: str | None
    run_id: str
    checks: list[CheckResult] = field(default_factory=list)
    steps: list[StepLog] = field(default_factory=list)
    events: list[EventJson] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None  # the run itself broke (not a check): set up, a step, the runtime
    unreadable: bool = False  # the file could not be loaded (``error`` says which field and why); nothing ran
    seed: int | None = None  # the run's SYNTROPISM_SEED, when seeded (``--seed``, ``--repeat``)
    attempt: int = 1  # which of the scenario's repeated runs this is
    subject: dict[str, Any] | None = None  # the agent under test: its id, the program run, and whence it came

    @classmethod
    def of_unreadable(cls, path: Path, reason: str) -> ScenarioResult:
        """An errored entry for a scenario file that could not be read or is not a valid scenario."""
        return cls(path.stem, "(unreadable)", "unreadable", str(path), "", error=reason, unreadable=True)

    @property
    def evaluated(self) -> int:
        """Checks that were judged (passed or failed)."""
        return self.count("passed") + self.count("failed")

    @property
    def status(self) -> str:
        if self.unreadable:
            return "unreadable"
        if self.error:
            return "error"
        if self.count("failed"):
            return "failed"
        if not self.evaluated:
            return "not_evaluated"
        return "partial" if self.count("not_evaluated") else "passed"

    @property
    def passed(self) -> bool:
        """Passed outright: something was evaluated, nothing failed, nothing left unevaluated."""
        return self.status == "passed"

    def passes(self, allow_partial: bool = False) -> bool:
        """Counts as passed: ``passed``, or ``partial`` when partial verdicts are allowed."""
        return self.status == "passed" or (allow_partial and self.status == "partial")

    def unjudged(self, allow_partial: bool = False) -> bool:
        """Nothing failed, yet it does not count as passed because something was not evaluated."""
        return self.status == "not_evaluated" or (not allow_partial and self.status == "partial")

    @property
    def execution_seconds(self) -> float:
        """How long the run's agents ran, by the stream: the sum of wall_seconds over execution.terminated."""
        return sum(e["data"]["wall_seconds"] for e in self.events if e["type"] == "execution.terminated")

    def count(self, status: str) -> int:
        return sum(check.status == status for check in self.checks)

    def not_evaluated_reasons(self) -> list[str]:
        if not self.checks:
            return ["the scenario has no checks"]
        return [f"{c.check}: {c.reason}" for c in self.checks if c.status == "not_evaluated"]

    def as_json(self, allow_partial: bool = False) -> dict[str, Any]:
        return {
            "scenario_id": self.scenario_id,
            "name": self.name,
            "domain": self.domain,
            "path": self.path,
            "run_id": self.run_id,
            "seed": self.seed,
            "attempt": self.attempt,
            "subject": self.subject,
            "status": self.status,
            "counted_as_passed": self.passes(allow_partial),
            "error": self.error,
            "seconds": round(self.seconds, 3),
            "events": len(self.events),
            "execution_seconds": round(self.execution_seconds, 3),
            "checks_evaluated": self.evaluated,
            "checks_not_evaluated": self.count("not_evaluated"),
            "checks": [
                {
                    "check": c.check,
                    "status": c.status,
                    "reason": c.reason,
                    "event_id": (c.event or {}).get("event_id"),
                    **({"details": c.details} if c.details is not None else {}),
                }
                for c in self.checks
            ],
            "steps": [{"index": s.index, "step": s.step, "outcome": s.outcome} for s in self.steps],
        }


class EventCollector:
    """This run's events, from a consumer made before the run publishes anything; other runs' are skipped."""

    def __init__(self, bus: EventBus, correlation_id: str) -> None:
        self.bus = bus
        self.correlation_id = correlation_id
        self.events: list[EventJson] = []
        self.foreign = 0  # events of other runs this consumer saw and dropped
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def start(self) -> None:
        subscription = await self.bus.consumer(only_new=True)
        self._task = asyncio.create_task(self._pump(subscription), name=f"collector-{self.correlation_id}")

    async def _pump(self, subscription: Any) -> None:
        try:
            while not self._stop.is_set():
                try:
                    messages = await subscription.fetch(256, timeout=0.2)
                except (nats.errors.TimeoutError, TimeoutError):  # nothing new yet
                    continue
                for message in messages:
                    event = parse_event(message.data)  # strict: a malformed event fails the run loudly
                    if event.correlation_id == self.correlation_id:
                        self.events.append(json.loads(message.data))
                    else:
                        self.foreign += 1
                self._changed.set()
        finally:
            await subscription.unsubscribe()

    async def wait_until(self, condition: Callable[[list[EventJson]], bool], *, within: float, what: str) -> None:
        deadline = time.monotonic() + within
        while not condition(self.events):
            self._raise_if_failed()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StepFailed(f"{what} did not appear on the stream within {within:g} s")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=min(remaining, 0.5))

    def _raise_if_failed(self) -> None:
        if self._task is not None and self._task.done() and self._task.exception() is not None:
            raise StepFailed(f"the event consumer failed: {self._task.exception()}")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task


def unsettled(events: Sequence[EventJson]) -> set[str]:
    """Executions the stream shows allocated but not yet terminated."""
    allocated = {e["data"]["execution_id"] for e in events if e["type"] == "scheduler.resources_allocated"}
    return allocated - {e["data"]["execution_id"] for e in events if e["type"] == "execution.terminated"}


def committed_events(database_url: str) -> int:
    database = Database(database_url)
    try:
        with database.reader() as session:
            return session.scalar(select(func.count()).select_from(OutboxEvent)) or 0
    finally:
        database.dispose()


def program_files(spec: AgentSpec, scenario_path: Path | None) -> tuple[dict[str, str], str]:
    """The files an agent is created with, and its entry point."""
    if spec.program is None:
        actions = [action.model_dump(mode="json") for action in spec.actions or []]
        return {"main.py": SCRIPTED_AGENT.read_text(), "script.json": json.dumps({"actions": actions})}, "main.py"
    bases = [scenario_path.parent] if scenario_path else []
    candidates = [base / spec.program for base in [*bases, Path.cwd(), REPOSITORY]]
    source = next((c for c in candidates if c.exists()), None)
    if source is None:
        raise StepFailed(f"agent {spec.agent_id}: program {spec.program} not found (looked in {candidates})")
    paths = [source] if source.is_file() else [p for p in sorted(source.rglob("*")) if p.is_file()]
    try:
        files = {
            (path.name if path == source else str(path.relative_to(source))): path.read_text()
            for path in paths
            if "__pycache__" not in path.parts
        }
    except UnicodeDecodeError as exc:
        raise StepFailed(f"agent {spec.agent_id}: its program files must be text: {exc}") from exc
    if source.is_file():
        return files, spec.entry_point or source.name
    entry = spec.entry_point or next((name for name in ("main.py", "main.sh") if name in files), None)
    if entry is None:
        raise StepFailed(f"agent {spec.agent_id}: {source} has no main.py or main.sh; set entry_point")
    return files, entry


def subject_of(loaded: LoadedScenario, agent: str | None) -> dict[str, Any] | None:
    """What the result records of the agent under test: which agent was the subject and which program ran as
    it (``agent_under_test``: the ``--agent`` one, or the scenario's default); or, with ``--agent`` given to a
    scenario without a subject slot, that it was not used. None when neither applies."""
    spec = loaded.scenario.initial_state.subject
    if spec is None:
        if agent is None:
            return None
        note = f"the scenario has no subject slot: the agent under test ({agent}) was not used"
        return {"agent_id": None, "program": None, "agent_under_test": False, "note": note}
    return {"agent_id": spec.agent_id, "program": agent or spec.program, "agent_under_test": agent is not None}


class BenchmarkRunner:
    """Runs scenarios, each isolated; ``async with BenchmarkRunner() as runner: await runner.run(loaded)``."""

    def __init__(
        self,
        *,
        nats_url: str | None = None,
        work_dir: Path | None = None,
        keep_state: bool = False,
        judge_settings: Settings | None = None,
        agent: str | None = None,
    ) -> None:
        self.nats_url = nats_url
        self.work_dir = work_dir
        self.keep_state = keep_state
        self.judge_settings = judge_settings
        self.agent = agent  # the agent under test (``--agent``): run as each scenario's subject
        self._own_work_dir = False
        self._nats: EmbeddedNatsServer | None = None

    async def __aenter__(self) -> BenchmarkRunner:
        if self.work_dir is None:
            self.work_dir, self._own_work_dir = Path(tempfile.mkdtemp(prefix="syntropism-bench-")), True
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if self.nats_url is None:
            self._nats = EmbeddedNatsServer(self.work_dir / "nats")
            self.nats_url = await self._nats.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._nats is not None:
            self._nats.stop()
            self._nats = None
        if self._own_work_dir and not self.keep_state and self.work_dir is not None:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    async def run(self, loaded: LoadedScenario, *, seed: int | None = None, attempt: int = 1) -> ScenarioResult:
        """One isolated run of ``loaded``; ``seed`` becomes every agent's SYNTROPISM_SEED."""
        scenario = loaded.scenario
        run_id = f"bench-{scenario.scenario_id}-{uuid.uuid4().hex[:10]}"
        result = ScenarioResult(
            scenario.scenario_id,
            scenario.name,
            scenario.domain,
            str(loaded.path) if loaded.path else None,
            run_id,
            seed=seed,
            attempt=attempt,
        )
        result.checks += [
            CheckResult(f"older form: {part}", "not_evaluated", "cannot be mapped onto the current format")
            for part in loaded.not_evaluated
        ]
        began = time.perf_counter()
        assert self.work_dir is not None and self.nats_url is not None, "use the runner in `async with`"
        state_dir = self.work_dir / run_id
        try:
            await _Run(self, loaded, run_id, state_dir, result).execute()
        finally:
            result.seconds = time.perf_counter() - began
            if not self.keep_state:
                shutil.rmtree(state_dir, ignore_errors=True)
        return result

    async def run_many(
        self,
        scenarios: Sequence[LoadedScenario],
        on_result: Callable[[ScenarioResult], None] | None = None,
        *,
        repeat: int = 1,
        seed: int | None = None,
    ) -> list[ScenarioResult]:
        """Each scenario ``repeat`` times, with seeds ``seed``, ``seed + 1``, … (none when ``seed`` is None and
        there is one run; from 0 when repeating without one), scenario by scenario."""
        if repeat < 1:
            raise ValueError(f"repeat must be at least 1, got {repeat}")
        first = seed if seed is not None or repeat == 1 else 0
        results = []
        for loaded in scenarios:
            for attempt in range(1, repeat + 1):
                run_seed = None if first is None else first + attempt - 1
                result = await self.run(loaded, seed=run_seed, attempt=attempt)
                results.append(result)
                if on_result is not None:
                    on_result(result)
        return results


class _Run:
    """One scenario's run: set up, steps, final state, judging."""

    def __init__(
        self, runner: BenchmarkRunner, loaded: LoadedScenario, run_id: str, state_dir: Path, result: ScenarioResult
    ) -> None:
        self.runner, self.loaded, self.scenario = runner, loaded, loaded.scenario
        self.run_id, self.state_dir, self.result = run_id, state_dir, result
        self.runtime: Runtime | None = None
        self.collector: EventCollector | None = None
        self.http: httpx.AsyncClient | None = None
        self.result.subject = subject_of(loaded, runner.agent)

    async def execute(self) -> None:
        observed: FinalObservation | None = None
        try:
            async with self._system() as runtime:
                await self._create_agents()
                for index, step in enumerate(self.scenario.steps, start=1):
                    await self._step(index, step)
                await self._settle(SETTLE_TIMEOUT_SECONDS)
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
            self.result.checks.append(await judge_run(self.scenario, self.result.events, self.runner.judge_settings))

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
                "nats_url": self.runner.nats_url,
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
                echo = ApiServer(echo_llm_app(), "127.0.0.1", 0, None)
                await echo.start()
                stack.push_async_callback(echo.stop)
                llm_url = f"{echo.url}/v1"
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

    # --- set-up and steps -----------------------------------------------------------------------------------

    async def _admin(self, method: str, path: str, **kwargs: Any) -> Any:
        assert self.http is not None
        response = await self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise StepFailed(f"{method} {path} answered {response.status_code}: {response.text[:500]}")
        return response.json()

    async def _create_agents(self) -> None:
        for spec in self.scenario.initial_state.agents:
            if spec.subject and self.runner.agent is not None:  # the agent under test in the subject's place
                spec = spec.model_copy(update={"program": self.runner.agent, "entry_point": None})
            files, entry_point = program_files(spec, self.loaded.path)
            body = {
                "agent_id": spec.agent_id,
                "files": files,
                "entry_point": entry_point,
                "initial_grant": str(spec.balance),
            }
            await self._admin("POST", "/admin/agents", json=body)

    async def _step(self, index: int, step: Step) -> None:
        description = json.dumps(step.model_dump(mode="json", exclude_none=True))
        try:
            outcome = await self._do(index, step)
        except Refused as exc:
            outcome = f"refused: {exc.reason} ({exc.detail})"
        except StepFailed as exc:
            self.result.steps.append(StepLog(index, description, f"failed: {exc}"))
            raise StepFailed(f"step {index} ({step.do}): {exc}") from exc
        self.result.steps.append(StepLog(index, description, outcome))

    async def _do(self, index: int, step: Step) -> str:
        runtime = self.runtime
        assert runtime is not None and runtime.services is not None
        key = f"bench:{self.run_id}:{index}"
        ledger = runtime.services.ledger
        if isinstance(step, BidStep):
            placed = await asyncio.to_thread(
                runtime.market.place_bid,
                step.agent,
                step.bundle,
                step.amount,
                idempotency_key=key,
                lifetime_cycles=step.lifetime_cycles,
                on_behalf_of=step.on_behalf_of,
            )
            return f"placed bid {placed.bid_id}"
        if isinstance(step, CyclesStep):
            return await self._cycles(step)
        if isinstance(step, RewardStep):
            operation = economy.reward(
                step.agent,
                interesting=step.interesting,
                useful=step.useful,
                understandable=step.understandable,
                weights=runtime.settings.reward_weights,
                idempotency_key=key,
            )
        elif isinstance(step, GrantStep):
            operation = economy.grant(step.agent, step.amount, idempotency_key=key, reason="benchmark grant")
        elif isinstance(step, TransferStep):
            operation = economy.transfer(step.from_agent, step.to_agent, step.amount, idempotency_key=key)
        elif isinstance(step, WaitForStep):
            await self._collector().wait_until(
                lambda events: any(matches(e, step.event) for e in events),
                within=step.timeout_seconds,
                what=step.event.describe(),
            )
            return "seen"
        elif isinstance(step, SettleStep):
            await self._settle(step.timeout_seconds)
            return "settled"
        receipt = await asyncio.to_thread(ledger.execute, operation)
        return f"{receipt.kind} {receipt.amount} ({receipt.transfer_id})"

    def _collector(self) -> EventCollector:
        assert self.collector is not None
        return self.collector

    async def _cycles(self, step: CyclesStep) -> str:
        assert self.runtime is not None
        won = 0
        for _ in range(step.count):
            report = await self.runtime.clear_once()
            won += len(report.winners)
            if step.settle:
                await self._collector().wait_until(
                    lambda events, cycle=report.cycle: any(
                        e["type"] == "scheduler.cycle_completed" and e["data"]["cycle"] == cycle for e in events
                    ),
                    within=step.timeout_seconds,
                    what=f"scheduler.cycle_completed of cycle {report.cycle}",
                )
                await self._settle(step.timeout_seconds)
        return f"{step.count} cycle(s), {won} winner(s)"

    async def _settle(self, within: float) -> None:
        await self._collector().wait_until(
            lambda events: not unsettled(events), within=within, what="the end of every allocated execution"
        )

    # --- the end --------------------------------------------------------------------------------------------

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
