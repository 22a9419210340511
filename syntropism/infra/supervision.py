"""One execution's process, from spawn to reaping: held to its envelope where no kernel layer holds it.

The kernel holds what the sandbox could apply (a memory cgroup OOM-kills, a CPU quota throttles, the pids
controller stops a fork bomb). What is left is watched here: the wall clock (``timeout``); the CPU-seconds the
bundle bought, where no quota holds the share (``cpu_exceeded``); resident memory, where no memory cgroup holds
it (``memory_exceeded``); the workspace's size, the agent's disk (``disk_exceeded``). A kill is SIGKILL for the
whole tree — its cgroup, its process group, the launcher — and the first reason to kill it is the one it keeps.

The exit is learnt from a pidfd (no thread waits on the process) and reaped with ``wait4``, which, unlike
``Popen.wait``, also gives the tree's resource usage where no cgroup measures it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from syntropism.domain.events import TerminationReason
from syntropism.infra.process_tree import tree_usage
from syntropism.infra.sandbox import Envelope, Launch
from syntropism.infra.workspaces import plain_parts

log = logging.getLogger(__name__)

DISK_CHECK_SECONDS = 1.0
MIN_QUOTA_CORES = 0.01  # the kernel's minimum CFS quota, 1 ms per 100 ms period
BWRAP_SIGNALLED = 128  # bubblewrap reports a child killed by signal N as exit 128 + N


def command_for(workspace: Path, entry_point: str, python: Path) -> list[str]:
    """How to start ``entry_point`` (a plain file of ``workspace``): a ``.py`` with the agents' Python, an
    executable as itself, anything else with ``/bin/sh`` — by a relative path, so no link is followed to it."""
    relative = "./" + "/".join(plain_parts(entry_point, "entry point"))
    if entry_point.endswith(".py"):
        return [str(python), relative]
    if os.access(workspace / entry_point, os.X_OK, follow_symlinks=False):
        return [relative]
    return ["/bin/sh", relative]


@dataclass(frozen=True)
class DiskLimit:
    """The workspace's bounds, and how to measure it: ``usage()`` gives (bytes, entries)."""

    max_bytes: int
    max_entries: int
    usage: Callable[[], tuple[int, int]]


@dataclass(frozen=True)
class Exit:
    """What the kernel says of a reaped execution: how it exited and what its tree used."""

    exit_code: int | None
    signal: int | None
    oom: bool  # killed for its memory: by the cgroup's OOM killer, or failing on the address-space backstop
    cpu_seconds: float
    peak_memory_bytes: int


class Supervised:
    """A spawned execution's process tree under watch. ``reason`` and ``detail`` are set once something decided
    to kill it (an overrun here, or the manager: an operator's kill, a shutdown)."""

    def __init__(
        self, name: str, launch: Launch, process: subprocess.Popen[bytes], envelope: Envelope, started: float
    ) -> None:
        self.name = name
        self.launch = launch
        self.process = process
        self.envelope = envelope
        self.started = started  # monotonic
        self.reason: TerminationReason | None = None
        self.detail: str | None = None
        self._peak_rss = 0  # the largest resident memory seen, where no cgroup measures it
        self._next_disk_check = 0.0  # monotonic

    @classmethod
    def spawn(
        cls,
        name: str,
        launch: Launch,
        environment: Mapping[str, str],
        log_path: Path,
        envelope: Envelope,
        started: float,
    ) -> Supervised:
        """Start the prepared launch in a session of its own (signalled as one group), its output appended to
        ``log_path``. Blocking: run it in a thread. Whatever the launch made is removed if it cannot start."""
        try:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with log_path.open("ab") as log_file:
                process = subprocess.Popen(
                    launch.argv,
                    cwd=launch.cwd,
                    env=environment,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                    pass_fds=launch.pass_fds,
                )
        except BaseException:
            launch.discard()
            raise
        launch.close_fds()
        return cls(name, launch, process, envelope, started)

    @property
    def pid(self) -> int:
        return self.process.pid

    def condemn(self, reason: TerminationReason, detail: str) -> None:
        """Kill it for ``reason`` — unless it was condemned already, which keeps the first reason."""
        if self.reason is None:
            self.reason, self.detail = reason, detail
            log.info("execution %s: %s (%s); killing it", self.name, reason.value, detail)
        self.kill()

    def kill(self, *, until_empty: bool = False) -> None:
        """SIGKILL everything it started: its cgroup, its process group, the launcher itself."""
        if self.launch.cgroup is not None:
            self.launch.cgroup.kill(until_empty=until_empty)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGKILL)

    async def watch(self, poll_seconds: float, disk: DiskLimit) -> Exit:
        """Wait until it has ended — killed if it overruns — then tear it down and measure it."""
        status, rusage = await self._wait(poll_seconds, disk)
        return await asyncio.to_thread(self._tear_down, status, rusage)

    async def _wait(self, poll_seconds: float, disk: DiskLimit) -> tuple[int, resource.struct_rusage]:
        loop = asyncio.get_running_loop()
        exited = asyncio.Event()
        pidfd = os.pidfd_open(self.process.pid)
        loop.add_reader(pidfd, exited.set)
        try:
            deadline = self.started + self.envelope.wall_seconds
            while not exited.is_set():
                remaining = deadline - time.monotonic()
                if self.reason is None and remaining <= 0:
                    self.condemn(TerminationReason.TIMEOUT, f"ran past its {self.envelope.wall_seconds:g} s")
                wait = poll_seconds if self.reason is not None else max(0.0, min(poll_seconds, remaining))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(exited.wait(), wait)
                if exited.is_set():
                    break
                if self.reason is None:
                    self._check_budget()
                    if time.monotonic() >= self._next_disk_check:
                        self._next_disk_check = time.monotonic() + DISK_CHECK_SECONDS
                        await self._check_disk(disk)
                else:
                    self.kill()  # condemned and still there: a fork raced the last round
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)
        # The pidfd said it has exited: this returns at once.
        _pid, status, rusage = os.wait4(self.process.pid, os.WNOHANG)  # noqa: ASYNC222
        self.process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        return status, rusage

    def _check_budget(self) -> None:
        """Hold the limits no kernel layer holds: the CPU-seconds bought, where no CPU quota holds the share;
        the memory, where no memory cgroup holds it."""
        cgroup, applied, envelope = self.launch.cgroup, self.launch.applied, self.envelope
        if cgroup is not None:
            cgroup.memory_bytes()  # keeps a peak where the kernel has no memory.peak
        # A share below the kernel's smallest quota (1 ms per period) would get that much for free: hold it to
        # the CPU-seconds it bought instead (none, for a bundle with no CPU).
        cpu_held = "cgroup-cpu" in applied and envelope.cpu_cores >= MIN_QUOTA_CORES
        memory_held = "cgroup-memory" in applied
        if cpu_held and memory_held:
            return
        usage = tree_usage(self.process.pid)
        if usage is None:
            return
        cpu = cgroup.cpu_seconds() if cgroup is not None else None
        cpu = usage.cpu_seconds if cpu is None else cpu
        self._peak_rss = max(self._peak_rss, usage.rss_bytes)
        if not cpu_held and cpu > envelope.cpu_budget_seconds:
            detail = f"used {cpu:.2f} CPU-s of a {envelope.cpu_budget_seconds:.2f} CPU-s budget"
            self.condemn(TerminationReason.CPU_EXCEEDED, detail)
        elif not memory_held and usage.rss_bytes > envelope.memory_bytes:
            detail = f"resident memory {usage.rss_bytes} bytes over its {envelope.memory_bytes}"
            self.condemn(TerminationReason.MEMORY_EXCEEDED, detail)

    async def _check_disk(self, disk: DiskLimit) -> None:
        """One file is capped by RLIMIT_FSIZE already; this bounds the workspace's sum, and its entries."""
        used, entries = await asyncio.to_thread(disk.usage)
        if used > disk.max_bytes or entries > disk.max_entries:
            detail = (
                f"its workspace holds {used} bytes in {entries} entries, over {disk.max_bytes} bytes or "
                f"{disk.max_entries}"
            )
            self.condemn(TerminationReason.DISK_EXCEEDED, detail)

    def _tear_down(self, status: int, rusage: resource.struct_rusage) -> Exit:
        """Kill whatever outlived the launcher (daemons, orphans), read what the tree used, remove its groups."""
        cgroup = self.launch.cgroup
        self.kill(until_empty=True)
        cpu = cgroup.cpu_seconds() if cgroup is not None else None
        peak = cgroup.peak_memory_bytes() if cgroup is not None else None
        if cpu is None:
            cpu = rusage.ru_utime + rusage.ru_stime
        if not peak:
            peak = max(rusage.ru_maxrss * 1024, self._peak_rss)
        oom = cgroup is not None and cgroup.oom_killed()
        if "cgroup-memory" not in self.launch.applied and peak >= self.envelope.memory_bytes:
            oom = not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0  # it hit the address-space backstop
        if cgroup is not None:
            cgroup.remove()
        exit_code, sig = exit_of(status, bubblewrapped=self.launch.bubblewrapped)
        return Exit(exit_code, sig, oom, cpu, peak)


def exit_of(status: int, *, bubblewrapped: bool) -> tuple[int | None, int | None]:
    """(exit code, signal) of the agent from its wait status, seen through bubblewrap's way of reporting one."""
    if os.WIFSIGNALED(status):
        return None, os.WTERMSIG(status)
    code = os.WEXITSTATUS(status)
    if bubblewrapped and BWRAP_SIGNALLED < code < BWRAP_SIGNALLED + 65:
        return None, code - BWRAP_SIGNALLED
    return code, None
