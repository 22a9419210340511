"""Control groups for executions: a memory limit, a CPU quota and a pids limit the kernel enforces, plus the
CPU time, peak memory and OOM kills it measures, for a whole process tree.

Both hierarchies are supported. cgroup v1 (one mount per controller, as on this project's build machines):
the execution gets a group in each of the memory, cpu, cpuacct and pids hierarchies, under the runtime's own
group. cgroup v2 (a single hierarchy, what current distributions run): the runtime moves itself into a
``supervisor`` leaf so that its own group may delegate the controllers (the "no internal processes" rule),
and each execution gets a leaf beside it. A process joins by writing its pid to every ``cgroup.procs``
before it execs the agent, so nothing the agent starts escapes.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

CPU_PERIOD_US = 100_000
WANTED_V1 = ("memory", "cpu", "cpuacct", "pids")
WANTED_V2 = ("memory", "cpu", "pids")
GROUP_PREFIX = "syntropism"


class CgroupUnavailable(RuntimeError):
    """This host does not let the runtime create the groups it needs; the message says what is missing."""


@dataclass(frozen=True)
class CgroupLimits:
    memory_bytes: int | None = None
    cpu_cores: float | None = None  # a CFS quota of this many cores' time per period
    pids_max: int | None = None


def _write(path: Path, value: str) -> None:
    with open(path, "w") as handle:
        handle.write(value)


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _keyed(path: Path) -> dict[str, int]:
    """A flat-keyed cgroup file (``name value`` per line) as a dict."""
    try:
        pairs = (line.split() for line in path.read_text().splitlines())
        return {parts[0]: int(parts[1]) for parts in pairs if len(parts) == 2 and parts[1].isdigit()}
    except OSError:
        return {}


def _mounts() -> list[tuple[str, Path, set[str]]]:
    """(fstype, mount point, super options) of every cgroup mount, from /proc/self/mountinfo."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fstype, _source, options = ([*right.split(), "", "", ""])[:3]
        if fstype in ("cgroup", "cgroup2"):
            found.append((fstype, Path(left.split()[4]), set(options.split(","))))
    return found


def _own_paths() -> dict[str, str]:
    """Controller (or "" for v2) → this process's group path, from /proc/self/cgroup."""
    paths = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _hierarchy, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


def _kill_until_empty(procs_file: Path, timeout: float = 5.0) -> None:
    """SIGKILL every process listed in ``procs_file`` until none is left (a fork may race one round)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            pids = [int(p) for p in procs_file.read_text().split()]
        except FileNotFoundError:
            return
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() >= deadline:
            if timeout > 0:
                log.error("processes still in %s after %.1fs of SIGKILL: %s", procs_file, timeout, pids)
            return
        time.sleep(0.005)


def _remove(directory: Path) -> None:
    """rmdir a group; it fails with EBUSY while a just-killed process is still being torn down."""
    for _ in range(200):
        try:
            directory.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            time.sleep(0.005)
    log.error("cgroup %s could not be removed: still busy", directory)


@dataclass
class ExecutionCgroup:
    """One execution's groups. ``procs_files`` are what a starting process writes its pid into."""

    version: int
    directories: dict[str, Path]  # controller → group directory (v2: one directory under every name)
    procs_files: list[Path] = field(default_factory=list)
    _peak_seen: int = 0

    def cpu_seconds(self) -> float | None:
        if self.version == 1:
            usage = _read_int(self.directories["cpuacct"] / "cpuacct.usage") if "cpuacct" in self.directories else None
            return None if usage is None else usage / 1e9
        usage = _keyed(self.directories["cpu"] / "cpu.stat").get("usage_usec")
        return None if usage is None else usage / 1e6

    def memory_bytes(self) -> int | None:
        if "memory" not in self.directories:
            return None
        name = "memory.usage_in_bytes" if self.version == 1 else "memory.current"
        current = _read_int(self.directories["memory"] / name)
        if current is not None:
            self._peak_seen = max(self._peak_seen, current)
        return current

    def peak_memory_bytes(self) -> int | None:
        if "memory" not in self.directories:
            return None
        name = "memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"  # memory.peak: Linux ≥ 5.19
        peak = _read_int(self.directories["memory"] / name)
        return max(peak or 0, self._peak_seen)

    def oom_killed(self) -> bool:
        if "memory" not in self.directories:
            return False
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        return _keyed(self.directories["memory"] / name).get("oom_kill", 0) > 0

    def pids(self) -> list[int]:
        procs = self.procs_files[0] if self.procs_files else None
        try:
            return [int(p) for p in procs.read_text().split()] if procs else []
        except FileNotFoundError:
            return []

    def kill(self, *, until_empty: bool = True) -> None:
        """SIGKILL the whole tree: every process in the group, whatever it became. ``until_empty`` waits until
        the group is empty (a fork may race a round); otherwise one round is sent and this returns at once."""
        if self.version == 2:
            directory = next(iter(self.directories.values()))
            if (directory / "cgroup.kill").exists():  # Linux ≥ 5.14: atomic, no race with fork
                _write(directory / "cgroup.kill", "1")
        if self.procs_files:
            _kill_until_empty(self.procs_files[0], timeout=5.0 if until_empty else 0.0)

    def remove(self) -> None:
        for directory in dict.fromkeys(self.directories.values()):
            _remove(directory)


class CgroupDriver:
    """Creates execution groups in whichever hierarchy this host has."""

    def __init__(self, version: int, bases: dict[str, Path]) -> None:
        self.version = version
        self.bases = bases  # controller → the directory under which execution groups are made

    @property
    def controllers(self) -> frozenset[str]:
        return frozenset(self.bases)

    def existing(self, name: str) -> ExecutionCgroup | None:
        """The groups an earlier runtime made under ``name``, if they are still there (to kill and remove)."""
        directories = {c: base / name for c, base in self.bases.items() if (base / name).is_dir()}
        if not directories:
            return None
        procs = list(dict.fromkeys(d / "cgroup.procs" for d in directories.values()))
        return ExecutionCgroup(self.version, directories, procs)

    def create(self, name: str, limits: CgroupLimits) -> ExecutionCgroup:
        group = ExecutionCgroup(self.version, {})
        try:
            for controller, base in self.bases.items():
                directory = base / name
                if self.version == 2 and group.directories:
                    group.directories[controller] = directory  # v2: one group holds every controller
                    continue
                directory.mkdir()
                group.directories[controller] = directory
                group.procs_files.append(directory / "cgroup.procs")
            self._apply(group, limits)
        except OSError:
            group.remove()
            raise
        return group

    def _apply(self, group: ExecutionCgroup, limits: CgroupLimits) -> None:
        directories = group.directories
        if limits.memory_bytes is not None and "memory" in directories:
            memory = directories["memory"]
            if self.version == 1:
                _write(memory / "memory.limit_in_bytes", str(limits.memory_bytes))
                if (memory / "memory.memsw.limit_in_bytes").exists():  # no escape into swap
                    _write(memory / "memory.memsw.limit_in_bytes", str(limits.memory_bytes))
            else:
                _write(memory / "memory.max", str(limits.memory_bytes))
                if (memory / "memory.swap.max").exists():
                    _write(memory / "memory.swap.max", "0")
        if limits.cpu_cores is not None and "cpu" in directories:
            quota = max(1000, int(limits.cpu_cores * CPU_PERIOD_US))  # the kernel's minimum quota is 1 ms
            if self.version == 1:
                _write(directories["cpu"] / "cpu.cfs_period_us", str(CPU_PERIOD_US))
                _write(directories["cpu"] / "cpu.cfs_quota_us", str(quota))
            else:
                _write(directories["cpu"] / "cpu.max", f"{quota} {CPU_PERIOD_US}")
        if limits.pids_max is not None and "pids" in directories:
            _write(directories["pids"] / "pids.max", str(limits.pids_max))


def _probe(base: Path) -> None:
    """Make and remove a group, proving the runtime may create them here."""
    probe = base / f"{GROUP_PREFIX}-probe-{os.getpid()}"
    probe.mkdir()
    probe.rmdir()


def _detect_v1(mounts: list[tuple[str, Path, set[str]]], own: dict[str, str]) -> CgroupDriver:
    bases: dict[str, Path] = {}
    problems = []
    for controller in WANTED_V1:
        mount = next((point for fstype, point, opts in mounts if fstype == "cgroup" and controller in opts), None)
        if mount is None:
            problems.append(f"{controller}: not mounted")
            continue
        base = mount / own.get(controller, "/").lstrip("/") / GROUP_PREFIX
        try:
            base.mkdir(exist_ok=True)
            _probe(base)
        except OSError as exc:
            problems.append(f"{controller}: cannot create groups under {base.parent} ({exc.strerror})")
            continue
        bases[controller] = base
    if not bases:
        raise CgroupUnavailable("cgroup v1: " + "; ".join(problems))
    for problem in problems:
        log.warning("cgroup v1 %s", problem)
    return CgroupDriver(1, bases)


def _detect_v2(mount: Path, own_path: str) -> CgroupDriver:
    own = mount / own_path.lstrip("/")
    available = set((own / "cgroup.controllers").read_text().split())
    missing = [c for c in WANTED_V2 if c not in available]
    if len(missing) == len(WANTED_V2):
        raise CgroupUnavailable(f"cgroup v2 at {own}: none of {', '.join(WANTED_V2)} is delegated to this process")
    wanted = [c for c in WANTED_V2 if c in available]
    try:
        enabled = set((own / "cgroup.subtree_control").read_text().split())
        if not set(wanted) <= enabled:
            # Controllers can be delegated only from a group with no processes of its own: move ours to a leaf.
            supervisor = own / f"{GROUP_PREFIX}-supervisor"
            supervisor.mkdir(exist_ok=True)
            for pid in (own / "cgroup.procs").read_text().split():
                _write(supervisor / "cgroup.procs", pid)
            _write(own / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))
        base = own / GROUP_PREFIX
        base.mkdir(exist_ok=True)
        _write(base / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))
        _probe(base)
    except OSError as exc:
        raise CgroupUnavailable(f"cgroup v2 at {own}: cannot delegate {', '.join(wanted)} ({exc})") from exc
    for controller in missing:
        log.warning("cgroup v2: the %s controller is not delegated to this process", controller)
    return CgroupDriver(2, dict.fromkeys(wanted, base))


def detect_cgroups() -> CgroupDriver:
    """The cgroup driver this host allows, preferring a v2 hierarchy that has the controllers; raises
    :class:`CgroupUnavailable` saying why when neither hierarchy can be used."""
    mounts = _mounts()
    own = _own_paths()
    reasons = []
    v2 = next((point for fstype, point, _ in mounts if fstype == "cgroup2"), None)
    if v2 is not None and "" in own:
        try:
            return _detect_v2(v2, own[""])
        except (CgroupUnavailable, OSError) as exc:
            reasons.append(str(exc))
    if any(fstype == "cgroup" for fstype, _, _ in mounts):
        try:
            return _detect_v1(mounts, own)
        except CgroupUnavailable as exc:
            reasons.append(str(exc))
    raise CgroupUnavailable("; ".join(reasons) or "no cgroup filesystem is mounted")
