"""The Execution Manager: a won bundle becomes a sandboxed process held to its hard envelope (DESIGN §5).

Lifecycle of one execution (allocated by a market cycle):

1. **claim** — one transaction moves it from allocated to running, so no two managers start it;
2. **start** — its workspace ``workspaces/<agent_id>/`` (with ``state.json``) is set up, the sandbox prepared
   and the entry point spawned with its token, ids and the System Service address in its environment; one
   transaction records the pid, the sandbox layers (applied and missing) and ``execution.started``
   (and ``agent.awake`` when the agent was dormant);
3. **supervise** — the wall clock (``timeout``) and the CPU-seconds budget (``cpu_exceeded``) are watched
   (:mod:`syntropism.infra.supervision`), memory by the kernel (an OOM kill is ``memory_exceeded``), processes by
   the pids limit;
4. **tear down** — the whole process tree is killed, usage read, and one transaction records how it ended,
   ``execution.terminated`` and, when nothing will run it again, ``agent.dormant``.

Everything blocking runs in threads; the event loop (and the clearing loop beside it) never waits on an agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import secrets
import signal
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

from syntropism.config import Settings
from syntropism.core.lifecycle import settle_dormancy
from syntropism.core.market import bundle_of
from syntropism.domain.events import (
    AgentAwake,
    AgentAwakeData,
    Event,
    ExecutionStarted,
    ExecutionStartedData,
    ExecutionTerminated,
    ExecutionTerminatedData,
    TerminationReason,
)
from syntropism.domain.models import HardEnvelope, ResourceBundle
from syntropism.domain.status import AgentStatus
from syntropism.infra import executions
from syntropism.infra.database import Database
from syntropism.infra.outbox import record_event
from syntropism.infra.sandbox import LAUNCH_FAILED, Envelope, Launch, Sandbox
from syntropism.infra.supervision import DiskLimit, Exit, Supervised, command_for
from syntropism.infra.tables import utcnow
from syntropism.infra.workspaces import Workspaces

log = logging.getLogger(__name__)
EventT = TypeVar("EventT", bound=Event)

TOKEN_BYTES = 32
REMEMBERED_OUTCOMES = 1000
RECORD_ATTEMPTS = 5
EVENT_DETAIL_CHARS = 2000


def hash_token(token: str) -> str:
    """What the database keeps of an execution's token: enough to check one, useless to steal."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Outcome:
    """How an execution ended."""

    execution_id: str
    agent_id: str
    reason: TerminationReason
    exit_code: int | None
    signal: int | None
    wall_seconds: float
    cpu_seconds: float
    peak_memory_bytes: int
    detail: str | None = None
    layers: dict[str, object] = field(default_factory=dict)


@dataclass
class _Claim:
    """An allocated execution this manager claimed, with what it needs to start it."""

    execution_id: str
    agent_id: str
    bid_id: str | None
    payer_id: str | None
    entry_point: str
    bundle: ResourceBundle
    token: str  # handed to the agent; the database holds only its hash


@dataclass
class _Running:
    """A started execution: its process under watch, and the end its waiters wait for."""

    claim: _Claim
    process: Supervised
    done: asyncio.Event = field(default_factory=asyncio.Event)
    outcome: Outcome | None = None

    @property
    def envelope(self) -> Envelope:
        return self.process.envelope

    @property
    def started(self) -> float:
        """When it was started, on the monotonic clock."""
        return self.process.started


class ExecutionManager:
    """Starts every allocated execution, holds it to its envelope and records how it ended."""

    def __init__(
        self,
        database: Database,
        settings: Settings,
        sandbox: Sandbox,
        *,
        service_socket: Path | None = None,
        correlation_id: str | None = None,
    ) -> None:
        self.database = database
        self.settings = settings
        self.sandbox = sandbox
        self.service_socket = service_socket
        self.correlation_id = correlation_id
        self.workspaces = Workspaces.of(settings)
        self.running: dict[str, _Running] = {}
        self.ended: OrderedDict[str, Outcome] = OrderedDict()  # the latest outcomes, newest last
        self._tasks: set[asyncio.Task[None]] = set()
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._listeners: list[Callable[[Outcome], None]] = []

    # --- control --------------------------------------------------------------------------------------------

    def on_terminated(self, listener: Callable[[Outcome], None]) -> None:
        self._listeners.append(listener)

    def wake(self) -> None:
        """New executions were allocated: start them now rather than at the next poll."""
        self._wakeup.set()

    async def run(self, stop: asyncio.Event, poll_seconds: float = 1.0) -> None:
        """Start allocated executions as they appear, until ``stop``; then end the running ones."""
        await self.recover()
        while not stop.is_set():
            await self.start_allocated()
            self._wakeup.clear()
            waiters = [asyncio.ensure_future(self._wakeup.wait()), asyncio.ensure_future(stop.wait())]
            await asyncio.wait(waiters, timeout=poll_seconds, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
        await self.stop(self.settings.kill_grace_seconds)

    async def start_allocated(self) -> list[str]:
        """Claim and start every allocated execution; returns their ids (they run on in the background)."""
        if self._stopping:
            return []
        claims = await asyncio.to_thread(self._claim_allocated)
        for claim in claims:
            await self._start(claim)
        return [claim.execution_id for claim in claims]

    async def wait(self, execution_id: str) -> Outcome:
        """Wait until ``execution_id`` (started by this manager) has ended and been recorded."""
        if execution_id in self.ended:
            return self.ended[execution_id]
        running = self.running.get(execution_id)
        if running is None:
            raise KeyError(f"execution {execution_id} was not started by this manager")
        await running.done.wait()
        assert running.outcome is not None
        return running.outcome

    async def kill(
        self, execution_id: str, reason: TerminationReason = TerminationReason.KILLED, detail: str = ""
    ) -> bool:
        """End a running execution now (operator kill, shutdown); False when it is not running here."""
        running = self.running.get(execution_id)
        if running is None or running.done.is_set():
            return False
        running.process.condemn(reason, detail or "killed by the operator")
        return True

    async def stop(self, grace_seconds: float = 0.0) -> None:
        """Stop starting executions; give the running ones ``grace_seconds`` to finish, then kill them."""
        self._stopping = True
        pending = [r.done.wait() for r in self.running.values() if not r.done.is_set()]
        if pending and grace_seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*pending), grace_seconds)
        for running in list(self.running.values()):
            if not running.done.is_set():
                running.process.condemn(TerminationReason.KILLED, "the runtime stopped")
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def has_ended(self, execution_id: str) -> bool:
        """Whether this manager saw the execution end (recorded or not yet)."""
        return execution_id in self.ended

    # --- claim and start ------------------------------------------------------------------------------------

    def _claim_allocated(self) -> list[_Claim]:
        """Move every allocated execution of a living agent to running, with its token's hash already stored,
        so the agent's first call is recognised however fast it comes. An execution of an agent that died after
        its bid won never runs: it is recorded as ended (``killed``) instead."""
        claims = []
        with self.database.transaction() as session:
            for found in executions.allocated(session):
                execution = found.execution
                if found.agent_status == AgentStatus.DIED:
                    detail = "the agent died before it ran"
                    if executions.end_unstarted(session, execution.id, TerminationReason.KILLED, detail):
                        record_event(session, self._stamped(_never_ran(execution.id, execution.agent_id, detail)))
                        log.warning("execution %s of %s not started: %s", execution.id, execution.agent_id, detail)
                    continue
                token = secrets.token_urlsafe(TOKEN_BYTES)
                if not executions.claim(session, execution.id, hash_token(token)):
                    continue  # another manager claimed it first
                claims.append(
                    _Claim(
                        execution.id,
                        execution.agent_id,
                        execution.bid_id,
                        found.payer_id,
                        found.entry_point,
                        bundle_of(execution),
                        token,
                    )
                )
        return claims

    async def _start(self, claim: _Claim) -> None:
        hard = HardEnvelope.of(
            claim.bundle,
            cpu_cores=Decimal(str(self.settings.cpu_cores)),
            memory_bytes=self.settings.memory_bytes,
            llm_spend_limit=self.settings.llm_spend_limit,
        )
        envelope = Envelope(
            memory_bytes=max(hard.memory_bytes, 1),
            cpu_cores=float(hard.cpu_cores),
            wall_seconds=float(hard.wall_seconds),
            pids_max=self.settings.pids_max,
            file_bytes=self.settings.max_file_bytes,
        )
        began = time.monotonic()
        try:
            process = await asyncio.to_thread(self._spawn, claim, envelope, hard, began)
        except Exception as exc:
            log.exception("execution %s of agent %s could not start", claim.execution_id, claim.agent_id)
            outcome = Outcome(
                claim.execution_id, claim.agent_id, TerminationReason.ERROR, None, None, 0.0, 0.0, 0, str(exc)
            )
            await self._record_end_durably(outcome)
            self._notify(outcome)
            return
        running = _Running(claim, process)
        self.running[claim.execution_id] = running
        try:
            await asyncio.to_thread(self._record_start, running)
        except Exception:  # it runs but could not be recorded: it must not run unrecorded
            log.exception("execution %s started but could not be recorded; killing it", claim.execution_id)
            process.condemn(TerminationReason.ERROR, "its start could not be recorded")
        task = asyncio.create_task(self._supervise(running), name=f"execution-{claim.execution_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _spawn(self, claim: _Claim, envelope: Envelope, hard: HardEnvelope, began: float) -> Supervised:
        workspace = self.workspace_of(claim.agent_id)
        command = self._command(claim.agent_id, workspace, claim.entry_point)
        launch = self.sandbox.prepare(
            claim.execution_id, command, workspace, envelope, service_socket=self.service_socket
        )
        try:
            environment = self._environment(claim, launch, hard)
        except BaseException:
            launch.discard()
            raise
        log_path = self.settings.logs_dir / claim.agent_id / f"{claim.execution_id}.log"
        return Supervised.spawn(claim.execution_id, launch, environment, log_path, envelope, began)

    def workspace_of(self, agent_id: str) -> Path:
        """The agent's persistent workspace, created with an empty ``state.json`` on first use (never through a
        link the agent left there)."""
        return self.workspaces.ensure(agent_id)

    def _command(self, agent_id: str, workspace: Path, entry_point: str) -> list[str]:
        """How to start the entry point: a plain file of a workspace within its bounds."""
        if not self.workspaces.is_file(agent_id, entry_point):
            raise FileNotFoundError(f"entry point {entry_point!r} is not a file in workspace {workspace}")
        used, entries = self.workspaces.usage(agent_id, limit_entries=self.settings.workspace_max_entries)
        if used > self.settings.workspace_max_bytes or entries > self.settings.workspace_max_entries:
            raise ValueError(
                f"the workspace holds {used} bytes in {entries} entries, over its {self.settings.workspace_max_bytes} "
                f"bytes or {self.settings.workspace_max_entries} entries"
            )
        return command_for(workspace, entry_point, self.settings.effective_agent_python)

    def _environment(self, claim: _Claim, launch: Launch, hard: HardEnvelope) -> dict[str, str]:
        """All the agent is told: who it is, its token, where the System Service is, its envelope and deadline."""
        python_bin = str(self.settings.effective_agent_python.parent)
        deadline = datetime.now(UTC) + timedelta(seconds=float(hard.wall_seconds))
        env = {
            "PATH": f"{python_bin}:/usr/local/bin:/usr/bin:/bin",
            "HOME": launch.agent_workspace,
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "SYSTEM_SERVICE_URL": f"http://{self.settings.api_host}:{self.settings.api_port}",
            "SYNTROPISM_TOKEN": claim.token,
            "SYNTROPISM_AGENT_ID": claim.agent_id,
            "SYNTROPISM_EXECUTION_ID": claim.execution_id,
            "SYNTROPISM_CORRELATION_ID": self.correlation_id or claim.execution_id,
            "SYNTROPISM_WORKSPACE": launch.agent_workspace,
            "SYNTROPISM_DEADLINE": deadline.isoformat(),
            "SYNTROPISM_ENVELOPE": json.dumps(
                {
                    "memory_bytes": hard.memory_bytes,
                    "cpu_cores": str(hard.cpu_cores),
                    "token_quota": hard.token_quota,
                    "attention_share": str(hard.attention_share),
                    "wall_seconds": str(hard.wall_seconds),
                }
            ),
        }
        if launch.agent_socket:
            env["SYSTEM_SERVICE_SOCKET"] = launch.agent_socket  # inside the sandbox, the only way out
        if self.settings.seed is not None:
            env["SYNTROPISM_SEED"] = str(self.settings.seed)  # a seeded run: agents that draw lots seed with it
        return env

    def _record_start(self, running: _Running) -> None:
        """The pid and the sandbox layers, ``execution.started`` and, when a bid woke a dormant agent,
        ``agent.awake`` (first), in one transaction."""
        claim, process = running.claim, running.process
        launch = process.launch
        with self.database.transaction() as session:
            executions.record_started(session, claim.execution_id, process.pid, launch.layers_record())
            if claim.bid_id is not None and executions.wake_if_dormant(session, claim.agent_id):
                woken_by = claim.payer_id if claim.payer_id != claim.agent_id else None
                awake = AgentAwakeData(execution_id=claim.execution_id, bid_id=claim.bid_id, woken_by=woken_by)
                record_event(session, self._stamped(AgentAwake(agent_id=claim.agent_id, data=awake)))
            started = ExecutionStartedData(
                execution_id=claim.execution_id,
                bid_id=claim.bid_id,
                bundle=claim.bundle,
                pid=process.pid,
                sandbox_layers=launch.applied,
                missing_layers=list(launch.missing),
            )
            record_event(session, self._stamped(ExecutionStarted(agent_id=claim.agent_id, data=started)))
        log.info(
            "execution %s of agent %s started (pid %d; layers %s%s)",
            claim.execution_id,
            claim.agent_id,
            process.pid,
            ", ".join(launch.applied) or "none",
            f"; missing {', '.join(launch.missing)}" if launch.missing else "",
        )

    # --- supervise and decide -------------------------------------------------------------------------------

    async def _supervise(self, running: _Running) -> None:
        process = running.process
        try:
            ended = await process.watch(self.settings.execution_poll_seconds, self._disk_limit(running.claim))
            outcome = self._decide(running, ended)
        except Exception as exc:  # never leave an execution "running": record the failure as its end
            log.exception("supervising execution %s failed", running.claim.execution_id)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(process.kill)
            failed = Exit(None, None, False, 0.0, 0)
            outcome = self._outcome(running, failed, TerminationReason.ERROR, f"supervisor failed: {exc}")
        try:
            await self._record_end_durably(outcome)
        finally:
            running.outcome = outcome
            self._remember(outcome)
            running.done.set()
            self.running.pop(running.claim.execution_id, None)
            self._notify(outcome)

    def _disk_limit(self, claim: _Claim) -> DiskLimit:
        """The workspace is the agent's disk: past ``workspace_max_bytes`` or ``workspace_max_entries``, it is
        killed (``disk_exceeded``)."""
        max_entries = self.settings.workspace_max_entries
        usage = functools.partial(self.workspaces.usage, claim.agent_id, limit_entries=max_entries)
        return DiskLimit(self.settings.workspace_max_bytes, max_entries, usage)

    def _decide(self, running: _Running, ended: Exit) -> Outcome:
        """Why it ended: the reason it was killed for, or else what its exit says."""
        reason, detail = running.process.reason, running.process.detail
        if reason is None:
            reason, detail = _classify(ended, running.envelope)
        return self._outcome(running, ended, reason, detail)

    @staticmethod
    def _outcome(running: _Running, ended: Exit, reason: TerminationReason, detail: str | None) -> Outcome:
        return Outcome(
            running.claim.execution_id,
            running.claim.agent_id,
            reason,
            ended.exit_code,
            ended.signal,
            time.monotonic() - running.started,
            ended.cpu_seconds,
            ended.peak_memory_bytes,
            detail,
            running.process.launch.layers_record(),
        )

    # --- record the end -------------------------------------------------------------------------------------

    async def _record_end_durably(self, outcome: Outcome) -> None:
        """Record the end, retrying while the database refuses; the outcome is remembered first, so the API
        refuses the execution's token from this moment even if the record is late."""
        self._remember(outcome)
        for attempt in range(1, RECORD_ATTEMPTS + 1):
            try:
                await asyncio.to_thread(self._record_end, outcome)
                return
            except Exception:
                if attempt == RECORD_ATTEMPTS:
                    log.exception(
                        "the end of execution %s could not be recorded after %d attempts; the next start records "
                        "it as killed",
                        outcome.execution_id,
                        attempt,
                    )
                    raise
                log.warning("recording the end of execution %s failed (attempt %d); retrying", outcome.execution_id,
                            attempt, exc_info=True)  # fmt: skip
                await asyncio.sleep(0.1 * 2**attempt)

    def _record_end(self, outcome: Outcome) -> None:
        """How it ended, ``execution.terminated`` and, when nothing will run the agent again, ``agent.dormant``,
        in one transaction."""
        with self.database.transaction() as session:
            executions.record_terminated(
                session,
                outcome.execution_id,
                reason=outcome.reason,
                exit_code=outcome.exit_code,
                signal=outcome.signal,
                cpu_seconds=outcome.cpu_seconds,
                peak_memory_bytes=outcome.peak_memory_bytes,
                detail=outcome.detail,
            )
            record_event(session, self._stamped(_terminated(outcome)))
            settle_dormancy(
                session,
                [outcome.agent_id],
                last_execution_id=outcome.execution_id,
                record=lambda tx, event: record_event(tx, self._stamped(event)),
            )
        log.info(
            "execution %s of agent %s ended: %s (exit %s, signal %s, %.2f CPU-s, peak %d MiB)%s",
            outcome.execution_id,
            outcome.agent_id,
            outcome.reason.value,
            outcome.exit_code,
            outcome.signal,
            outcome.cpu_seconds,
            outcome.peak_memory_bytes // 2**20,
            f": {outcome.detail}" if outcome.detail else "",
        )

    def _stamped(self, event: EventT) -> EventT:
        """The event under this runtime's correlation id, when it has one."""
        if self.correlation_id is None:
            return event
        return event.model_copy(update={"correlation_id": self.correlation_id})

    def _remember(self, outcome: Outcome) -> None:
        self.ended[outcome.execution_id] = outcome
        while len(self.ended) > REMEMBERED_OUTCOMES:
            self.ended.popitem(last=False)

    def _notify(self, outcome: Outcome) -> None:
        for listener in self._listeners:
            try:
                listener(outcome)
            except Exception:
                log.exception("execution listener failed on %s", outcome.execution_id)

    # --- recovery -------------------------------------------------------------------------------------------

    async def recover(self) -> list[str]:
        """Executions a previous runtime left running: their processes are killed and they are recorded
        as ``killed``, so none stays "running" forever."""
        return await asyncio.to_thread(self._recover)

    def _recover(self) -> list[str]:
        with self.database.reader() as session:
            stale = executions.left_running(session)
        for execution in stale:
            self.sandbox.remove_leftovers(execution.execution_id)
            wall = (utcnow() - execution.started_at).total_seconds() if execution.started_at else 0.0
            outcome = Outcome(
                execution.execution_id, execution.agent_id, TerminationReason.KILLED, None, None, max(wall, 0.0),
                0.0, 0, "the runtime that ran it stopped before it ended; usage unknown",
            )  # fmt: skip
            self._record_end(outcome)
        if stale:
            log.warning("recovered %d executions left running by a previous runtime", len(stale))
        return [execution.execution_id for execution in stale]


def _never_ran(execution_id: str, agent_id: str, detail: str) -> ExecutionTerminated:
    return ExecutionTerminated(
        agent_id=agent_id,
        data=ExecutionTerminatedData(
            execution_id=execution_id,
            reason=TerminationReason.KILLED,
            detail=detail,
            wall_seconds=0.0,
            cpu_seconds=0.0,
            peak_memory_bytes=0,
        ),
    )


def _terminated(outcome: Outcome) -> ExecutionTerminated:
    return ExecutionTerminated(
        agent_id=outcome.agent_id,
        data=ExecutionTerminatedData(
            execution_id=outcome.execution_id,
            reason=outcome.reason,
            exit_code=outcome.exit_code,
            signal=outcome.signal,
            detail=outcome.detail[:EVENT_DETAIL_CHARS] if outcome.detail else None,
            wall_seconds=round(outcome.wall_seconds, 6),
            cpu_seconds=round(outcome.cpu_seconds, 6),
            peak_memory_bytes=outcome.peak_memory_bytes,
        ),
    )


def _classify(ended: Exit, envelope: Envelope) -> tuple[TerminationReason, str | None]:
    """What an exit nobody condemned says: killed for its memory or CPU by a kernel layer, a file too large, a
    launcher that could not enter its sandbox — or it completed."""
    cpu, sig = ended.cpu_seconds, ended.signal
    if ended.oom:
        return TerminationReason.MEMORY_EXCEEDED, f"over its memory limit of {envelope.memory_bytes} bytes"
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu >= envelope.cpu_budget_seconds):
        return (
            TerminationReason.CPU_EXCEEDED,
            f"used {cpu:.2f} CPU-s of a {envelope.cpu_budget_seconds:.2f} CPU-s budget",
        )
    if sig == signal.SIGXFSZ:  # a shell or C agent; Python ignores the signal and gets EFBIG instead
        return TerminationReason.DISK_EXCEEDED, "wrote a file past max_file_bytes (RLIMIT_FSIZE)"
    if ended.exit_code == LAUNCH_FAILED:
        return TerminationReason.ERROR, "the launcher could not put it inside its sandbox layers (see its log)"
    return TerminationReason.COMPLETED, None
