"""The Execution Manager: a won bundle becomes a sandboxed process held to its hard envelope (DESIGN §5).

Lifecycle of one execution (allocated by a market cycle):

1. **claim** — one transaction moves it from allocated to running, so no two managers start it;
2. **start** — its workspace ``workspaces/<agent_id>/`` (with ``state.json``) is set up, the sandbox prepared
   and the entry point spawned with its token, ids and the System Service address in its environment; one
   transaction records the pid, the sandbox layers (applied and missing) and ``execution.started``
   (and ``agent.awake`` when the agent was dormant);
3. **supervise** — the wall clock (``timeout``) and the CPU-seconds budget (``cpu_exceeded``) are watched here,
   memory by the kernel (an OOM kill is ``memory_exceeded``), processes by the pids limit;
4. **tear down** — the whole process tree is killed, usage read, and one transaction records how it ended,
   ``execution.terminated`` and, when nothing will run it again, ``agent.dormant``.

Everything blocking runs in threads; the event loop (and the clearing loop beside it) never waits on an agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import secrets
import signal
import subprocess
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

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
from syntropism.infra.database import Database
from syntropism.infra.outbox import record_event
from syntropism.infra.process_tree import tree_usage
from syntropism.infra.sandbox import LAUNCH_FAILED, Envelope, Launch, Sandbox
from syntropism.infra.tables import Agent, Bid, Execution, utcnow
from syntropism.infra.workspaces import Workspaces, plain_parts

log = logging.getLogger(__name__)

TOKEN_BYTES = 32
REMEMBERED_OUTCOMES = 1000
DISK_CHECK_SECONDS = 1.0
MIN_QUOTA_CORES = 0.01  # the kernel's minimum CFS quota, 1 ms per 100 ms period
RECORD_ATTEMPTS = 5


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
    claim: _Claim
    launch: Launch
    process: subprocess.Popen[bytes]
    started: float  # monotonic
    envelope: Envelope
    reason: TerminationReason | None = None  # set when the manager decides to kill it, and why
    peak_rss: int = 0  # the largest resident memory seen, where no cgroup measures it
    detail: str | None = None
    next_disk_check: float = 0.0  # monotonic: when the workspace's size is read next
    done: asyncio.Event = field(default_factory=asyncio.Event)
    outcome: Outcome | None = None


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
        self._condemn(running, reason, detail or "killed by the operator")
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
                self._condemn(running, TerminationReason.KILLED, "the runtime stopped")
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- claim and start ------------------------------------------------------------------------------------

    def _claim_allocated(self) -> list[_Claim]:
        """Move every allocated execution of a living agent to running, with its token's hash already stored,
        so the agent's first call is recognised however fast it comes. An execution of an agent that died after
        its bid won never runs: it is recorded as ended (``killed``) instead."""
        claims = []
        with self.database.transaction() as session:
            rows = session.execute(
                select(Execution, Agent.entry_point, Agent.status, Bid.agent_id)
                .join(Agent, Agent.id == Execution.agent_id)
                .outerjoin(Bid, Bid.id == Execution.bid_id)
                .where(Execution.status == "allocated")
                .order_by(Execution.allocated_at, Execution.id)
            ).all()
            for execution, entry_point, agent_status, payer in rows:
                if agent_status == "died":
                    self._end_unstarted(session, execution.id, execution.agent_id, "the agent died before it ran")
                    continue
                token = secrets.token_urlsafe(TOKEN_BYTES)
                claimed = session.execute(
                    update(Execution)
                    .where(Execution.id == execution.id, Execution.status == "allocated")
                    .values(status="running", started_at=utcnow(), token_hash=hash_token(token))
                )
                if claimed.rowcount != 1:  # type: ignore[attr-defined]
                    continue  # another manager claimed it first
                claims.append(
                    _Claim(
                        execution.id,
                        execution.agent_id,
                        execution.bid_id,
                        payer,
                        entry_point,
                        bundle_of(execution),
                        token,
                    )
                )
        return claims

    def _end_unstarted(self, session: Session, execution_id: str, agent_id: str, detail: str) -> None:
        ended = session.execute(
            update(Execution)
            .where(Execution.id == execution_id, Execution.status == "allocated")
            .values(status="terminated", ended_at=utcnow(), reason=TerminationReason.KILLED.value, detail=detail)
        )
        if ended.rowcount != 1:  # type: ignore[attr-defined]
            return
        self._record(
            session,
            ExecutionTerminated(
                agent_id=agent_id,
                data=ExecutionTerminatedData(
                    execution_id=execution_id,
                    reason=TerminationReason.KILLED,
                    detail=detail,
                    wall_seconds=0.0,
                    cpu_seconds=0.0,
                    peak_memory_bytes=0,
                ),
            ),
        )
        log.warning("execution %s of %s not started: %s", execution_id, agent_id, detail)

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
            launch, process = await asyncio.to_thread(self._spawn, claim, envelope, hard, claim.token)
        except Exception as exc:
            log.exception("execution %s of agent %s could not start", claim.execution_id, claim.agent_id)
            outcome = Outcome(
                claim.execution_id, claim.agent_id, TerminationReason.ERROR, None, None, 0.0, 0.0, 0, str(exc)
            )
            await self._record_end_durably(outcome)
            self._notify(outcome)
            return
        running = _Running(claim, launch, process, began, envelope)
        self.running[claim.execution_id] = running
        try:
            await asyncio.to_thread(self._record_start, running)
        except Exception:  # it runs but could not be recorded: it must not run unrecorded
            log.exception("execution %s started but could not be recorded; killing it", claim.execution_id)
            self._condemn(running, TerminationReason.ERROR, "its start could not be recorded")
        task = asyncio.create_task(self._supervise(running), name=f"execution-{claim.execution_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _spawn(
        self, claim: _Claim, envelope: Envelope, hard: HardEnvelope, token: str
    ) -> tuple[Launch, subprocess.Popen[bytes]]:
        workspace = self.workspace_of(claim.agent_id)
        command = self._command(claim.agent_id, workspace, claim.entry_point)
        launch = self.sandbox.prepare(
            claim.execution_id, command, workspace, envelope, service_socket=self.service_socket
        )
        log_path = self.settings.logs_dir / claim.agent_id / f"{claim.execution_id}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with log_path.open("ab") as log_file:
                process = subprocess.Popen(
                    launch.argv,
                    cwd=launch.cwd,
                    env=self._environment(claim, launch, hard, token),
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: signalled as one
                    close_fds=True,
                    pass_fds=launch.pass_fds,
                )
        except BaseException:
            if launch.cgroup is not None:
                launch.cgroup.remove()
            raise
        finally:
            launch.close_fds()
        return launch, process

    def workspace_of(self, agent_id: str) -> Path:
        """The agent's persistent workspace, created with an empty ``state.json`` on first use (never through a
        link the agent left there)."""
        return self.workspaces.ensure(agent_id)

    def _command(self, agent_id: str, workspace: Path, entry_point: str) -> list[str]:
        """How to start the entry point: a plain file of the workspace, reached without following a link."""
        if not self.workspaces.is_file(agent_id, entry_point):
            raise FileNotFoundError(f"entry point {entry_point!r} is not a file in workspace {workspace}")
        used, entries = self.workspaces.usage(agent_id, limit_entries=self.settings.workspace_max_entries)
        if used > self.settings.workspace_max_bytes or entries > self.settings.workspace_max_entries:
            raise ValueError(
                f"the workspace holds {used} bytes in {entries} entries, over its {self.settings.workspace_max_bytes} "
                f"bytes or {self.settings.workspace_max_entries} entries"
            )
        relative = "./" + "/".join(plain_parts(entry_point, "entry point"))
        if entry_point.endswith(".py"):
            return [str(self.settings.effective_agent_python), relative]
        if os.access(workspace / entry_point, os.X_OK, follow_symlinks=False):
            return [relative]
        return ["/bin/sh", relative]

    def _environment(self, claim: _Claim, launch: Launch, hard: HardEnvelope, token: str) -> dict[str, str]:
        python_bin = str(self.settings.effective_agent_python.parent)
        deadline = datetime.now(UTC) + timedelta(seconds=float(hard.wall_seconds))
        env = {
            "PATH": f"{python_bin}:/usr/local/bin:/usr/bin:/bin",
            "HOME": launch.agent_workspace,
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "SYSTEM_SERVICE_URL": f"http://{self.settings.api_host}:{self.settings.api_port}",
            "SYNTROPISM_TOKEN": token,
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
        claim, launch = running.claim, running.launch
        with self.database.transaction() as session:
            session.execute(
                update(Execution)
                .where(Execution.id == claim.execution_id)
                .values(pid=running.process.pid, sandbox_layers=json.dumps(launch.layers_record()))
            )
            agent = session.get(Agent, claim.agent_id, with_for_update=True)
            if agent is not None and agent.status == "dormant" and claim.bid_id is not None:
                agent.status, agent.status_changed_at = "active", utcnow()
                woken_by = claim.payer_id if claim.payer_id != claim.agent_id else None
                self._record(
                    session,
                    AgentAwake(
                        agent_id=claim.agent_id,
                        data=AgentAwakeData(execution_id=claim.execution_id, bid_id=claim.bid_id, woken_by=woken_by),
                    ),
                )
            self._record(
                session,
                ExecutionStarted(
                    agent_id=claim.agent_id,
                    data=ExecutionStartedData(
                        execution_id=claim.execution_id,
                        bid_id=claim.bid_id,
                        bundle=claim.bundle,
                        pid=running.process.pid,
                        sandbox_layers=launch.applied,
                        missing_layers=list(launch.missing),
                    ),
                ),
            )
        log.info(
            "execution %s of agent %s started (pid %d; layers %s%s)",
            claim.execution_id,
            claim.agent_id,
            running.process.pid,
            ", ".join(launch.applied) or "none",
            f"; missing {', '.join(launch.missing)}" if launch.missing else "",
        )

    # --- supervise and tear down ----------------------------------------------------------------------------

    async def _supervise(self, running: _Running) -> None:
        try:
            status, rusage = await self._wait_process(running)
            outcome = await asyncio.to_thread(self._tear_down, running, status, rusage)
        except Exception as exc:  # never leave an execution "running": record the failure as its end
            log.exception("supervising execution %s failed", running.claim.execution_id)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._kill_tree, running)
            outcome = self._outcome(running, TerminationReason.ERROR, None, None, 0.0, 0, f"supervisor failed: {exc}")
        try:
            await self._record_end_durably(outcome)
        finally:
            running.outcome = outcome
            self._remember(outcome)
            running.done.set()
            self.running.pop(running.claim.execution_id, None)
            self._notify(outcome)

    async def _wait_process(self, running: _Running) -> tuple[int, object]:
        """Wait for the launcher to exit, killing it when it overruns its wall clock or CPU budget."""
        loop = asyncio.get_running_loop()
        exited = asyncio.Event()
        pidfd = os.pidfd_open(running.process.pid)
        loop.add_reader(pidfd, exited.set)
        try:
            deadline = running.started + running.envelope.wall_seconds
            poll = self.settings.execution_poll_seconds
            while not exited.is_set():
                remaining = deadline - time.monotonic()
                if running.reason is None and remaining <= 0:
                    self._condemn(
                        running, TerminationReason.TIMEOUT, f"ran past its {running.envelope.wall_seconds:g} s"
                    )
                wait = poll if running.reason is not None else max(0.0, min(poll, remaining))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(exited.wait(), wait)
                if exited.is_set():
                    break
                if running.reason is None:
                    self._check_budget(running)
                    if time.monotonic() >= running.next_disk_check:
                        running.next_disk_check = time.monotonic() + DISK_CHECK_SECONDS
                        await self._check_disk(running)
                else:
                    self._kill_tree(running)  # condemned and still there: a fork raced the last round
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)
        # The pidfd said it has exited: this returns at once (wait4, unlike Popen.wait, gives its rusage).
        _pid, status, rusage = os.wait4(running.process.pid, os.WNOHANG)  # noqa: ASYNC222
        running.process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        return status, rusage

    def _check_budget(self, running: _Running) -> None:
        """Hold the limits no kernel layer holds. Where no CPU quota holds the share, the CPU-seconds the bundle
        bought are a budget: past it, ``cpu_exceeded``. Where no memory cgroup holds the memory, the tree's
        resident memory is watched: over it, ``memory_exceeded``."""
        cgroup, applied, envelope = running.launch.cgroup, running.launch.applied, running.envelope
        if cgroup is not None:
            cgroup.memory_bytes()  # keeps a peak where the kernel has no memory.peak
        # A share below the kernel's smallest quota (1 ms per period) would get that much for free: hold it to
        # the CPU-seconds it bought instead (none, for a bundle with no CPU).
        cpu_held = "cgroup-cpu" in applied and envelope.cpu_cores >= MIN_QUOTA_CORES
        memory_held = "cgroup-memory" in applied
        if cpu_held and memory_held:
            return
        usage = tree_usage(running.process.pid)
        if usage is None:
            return
        cpu = cgroup.cpu_seconds() if cgroup is not None else None
        cpu = usage.cpu_seconds if cpu is None else cpu
        running.peak_rss = max(running.peak_rss, usage.rss_bytes)
        if not cpu_held and cpu > envelope.cpu_budget_seconds:
            detail = f"used {cpu:.2f} CPU-s of a {envelope.cpu_budget_seconds:.2f} CPU-s budget"
            self._condemn(running, TerminationReason.CPU_EXCEEDED, detail)
        elif not memory_held and usage.rss_bytes > envelope.memory_bytes:
            detail = f"resident memory {usage.rss_bytes} bytes over its {envelope.memory_bytes}"
            self._condemn(running, TerminationReason.MEMORY_EXCEEDED, detail)

    async def _check_disk(self, running: _Running) -> None:
        """The workspace is the agent's disk: past ``workspace_max_bytes`` or ``workspace_max_entries``, it is
        killed (``disk_exceeded``). One file is capped by RLIMIT_FSIZE already; this bounds their sum."""
        max_bytes, max_entries = self.settings.workspace_max_bytes, self.settings.workspace_max_entries
        used, entries = await asyncio.to_thread(
            self.workspaces.usage, running.claim.agent_id, limit_entries=max_entries
        )
        if used > max_bytes or entries > max_entries:
            detail = f"its workspace holds {used} bytes in {entries} entries, over {max_bytes} bytes or {max_entries}"
            self._condemn(running, TerminationReason.DISK_EXCEEDED, detail)

    def _condemn(self, running: _Running, reason: TerminationReason, detail: str) -> None:
        if running.reason is None:
            running.reason, running.detail = reason, detail
            log.info("execution %s: %s (%s); killing it", running.claim.execution_id, reason.value, detail)
        self._kill_tree(running)

    @staticmethod
    def _kill_tree(running: _Running, *, until_empty: bool = False) -> None:
        """SIGKILL everything the execution started: its cgroup, its process group, the launcher itself."""
        if running.launch.cgroup is not None:
            running.launch.cgroup.kill(until_empty=until_empty)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(running.process.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(running.process.pid, signal.SIGKILL)

    def _tear_down(self, running: _Running, status: int, rusage: object) -> Outcome:
        cgroup = running.launch.cgroup
        self._kill_tree(running, until_empty=True)  # whatever outlived the launcher (daemons, orphans) dies now
        cpu = cgroup.cpu_seconds() if cgroup is not None else None
        peak = cgroup.peak_memory_bytes() if cgroup is not None else None
        if cpu is None:
            cpu = rusage.ru_utime + rusage.ru_stime  # type: ignore[attr-defined]
        if not peak:
            peak = max(rusage.ru_maxrss * 1024, running.peak_rss)  # type: ignore[attr-defined]
        oom = cgroup is not None and cgroup.oom_killed()
        if "cgroup-memory" not in running.launch.applied and peak >= running.envelope.memory_bytes:
            oom = not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0  # it hit the address-space backstop
        if cgroup is not None:
            cgroup.remove()
        exit_code, sig = _exit_of(status, bubblewrapped=self.sandbox.bwrap is not None)
        reason, detail = running.reason, running.detail
        if reason is None:
            reason, detail = _classify(exit_code, sig, oom, cpu, running.envelope)
        return self._outcome(running, reason, exit_code, sig, cpu, peak, detail)

    def _outcome(
        self,
        running: _Running,
        reason: TerminationReason,
        exit_code: int | None,
        sig: int | None,
        cpu: float,
        peak: int,
        detail: str | None,
    ) -> Outcome:
        return Outcome(
            running.claim.execution_id,
            running.claim.agent_id,
            reason,
            exit_code,
            sig,
            time.monotonic() - running.started,
            cpu,
            peak,
            detail,
            running.launch.layers_record(),
        )

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

    def has_ended(self, execution_id: str) -> bool:
        """Whether this manager saw the execution end (recorded or not yet)."""
        return execution_id in self.ended

    def _record_end(self, outcome: Outcome) -> None:
        with self.database.transaction() as session:
            session.execute(
                update(Execution)
                .where(Execution.id == outcome.execution_id)
                .values(
                    status="terminated",
                    ended_at=utcnow(),
                    reason=outcome.reason.value,
                    exit_code=outcome.exit_code,
                    signal=outcome.signal,
                    cpu_seconds=outcome.cpu_seconds,
                    peak_memory_bytes=outcome.peak_memory_bytes,
                    detail=outcome.detail,  # the token's hash stays: a late call is told its token expired
                )
            )
            self._record(
                session,
                ExecutionTerminated(
                    agent_id=outcome.agent_id,
                    data=ExecutionTerminatedData(
                        execution_id=outcome.execution_id,
                        reason=outcome.reason,
                        exit_code=outcome.exit_code,
                        signal=outcome.signal,
                        detail=outcome.detail[:2000] if outcome.detail else None,
                        wall_seconds=round(outcome.wall_seconds, 6),
                        cpu_seconds=round(outcome.cpu_seconds, 6),
                        peak_memory_bytes=outcome.peak_memory_bytes,
                    ),
                ),
            )
            settle_dormancy(session, [outcome.agent_id], last_execution_id=outcome.execution_id, record=self._record)
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

    def _record(self, session: Session, event: Event) -> None:
        if self.correlation_id is not None:
            event = event.model_copy(update={"correlation_id": self.correlation_id})
        record_event(session, event)

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
            stale = session.execute(
                select(Execution.id, Execution.agent_id, Execution.started_at).where(Execution.status == "running")
            ).all()
        for execution_id, agent_id, started_at in stale:
            if self.sandbox.cgroups is not None:
                leftover = self.sandbox.cgroups.existing(execution_id)
                if leftover is not None:
                    leftover.kill()
                    leftover.remove()
            wall = (utcnow() - started_at).total_seconds() if started_at else 0.0
            outcome = Outcome(
                execution_id, agent_id, TerminationReason.KILLED, None, None, max(wall, 0.0), 0.0, 0,
                "the runtime that ran it stopped before it ended; usage unknown",
            )  # fmt: skip
            self._record_end(outcome)
        if stale:
            log.warning("recovered %d executions left running by a previous runtime", len(stale))
        return [row[0] for row in stale]


def _exit_of(status: int, *, bubblewrapped: bool) -> tuple[int | None, int | None]:
    """(exit code, signal) of the agent. bubblewrap reports a child killed by signal N as exit 128 + N."""
    if os.WIFSIGNALED(status):
        return None, os.WTERMSIG(status)
    code = os.WEXITSTATUS(status)
    if bubblewrapped and 128 < code < 128 + 65:
        return None, code - 128
    return code, None


def _classify(
    exit_code: int | None, sig: int | None, oom: bool, cpu: float, envelope: Envelope
) -> tuple[TerminationReason, str | None]:
    if oom:
        return TerminationReason.MEMORY_EXCEEDED, f"over its memory limit of {envelope.memory_bytes} bytes"
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu >= envelope.cpu_budget_seconds):
        return (
            TerminationReason.CPU_EXCEEDED,
            f"used {cpu:.2f} CPU-s of a {envelope.cpu_budget_seconds:.2f} CPU-s budget",
        )
    if sig == signal.SIGXFSZ:  # a shell or C agent; Python ignores the signal and gets EFBIG instead
        return TerminationReason.DISK_EXCEEDED, "wrote a file past max_file_bytes (RLIMIT_FSIZE)"
    if exit_code == LAUNCH_FAILED:
        return TerminationReason.ERROR, "the launcher could not put it inside its sandbox layers (see its log)"
    return TerminationReason.COMPLETED, None
