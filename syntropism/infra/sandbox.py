"""The sandbox an execution runs in: kernel-enforced limits and isolation, layer by layer.

Layers, each either applied or reported missing (with why) in the execution record, never silently skipped:

| layer | what it holds | how |
|---|---|---|
| ``cgroup-memory`` | memory ≤ the bundle's share; over it the kernel OOM-kills (SIGKILL) | cgroup v1/v2 |
| ``cgroup-cpu`` | CPU time ≤ the bundle's share of the cores per 100 ms (throttled) | CFS quota |
| ``cgroup-pids`` | at most ``pids_max`` processes and threads: fork bombs stop | pids controller |
| ``rlimits`` | no core dumps, bounded open files and file size (its log included), a per-process CPU-seconds
  backstop; when no memory cgroup holds memory, an address-space backstop at twice the bundle's memory |
  setrlimit (``ulimit``) |
| ``filesystem`` | sees only its workspace (rw), the runtime it needs (ro), a private /tmp | bubblewrap |
| ``pid-namespace`` | sees and signals only its own processes; its tree dies with the sandbox | bubblewrap |
| ``network`` | no network but loopback of its own; the System Service through a Unix socket | bubblewrap |

The wall clock, and where no cgroup holds them the CPU-seconds budget and resident memory, are watched by
:mod:`syntropism.infra.supervision`, not here.
The launcher is a few lines of ``/bin/sh`` that join the cgroups and set the rlimits, then exec bubblewrap:
nothing of the agent runs before it is inside every layer. bubblewrap reads its arguments from a memfd
(``--args FD``), so no process the agent can see names a host path in its argv.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import syntropism
from syntropism.infra.cgroups import CgroupDriver, CgroupLimits, CgroupUnavailable, ExecutionCgroup, detect_cgroups

log = logging.getLogger(__name__)

CGROUP_LAYERS = {"memory": "cgroup-memory", "cpu": "cgroup-cpu", "pids": "cgroup-pids"}
BWRAP_LAYERS = ("filesystem", "pid-namespace", "network")
ALL_LAYERS = (*CGROUP_LAYERS.values(), "rlimits", *BWRAP_LAYERS)
SWITCHES = ("cgroups", "rlimits", "bubblewrap")  # what settings.sandbox_disable may name
SANDBOX_WORKSPACE = "/workspace"
SANDBOX_SOCKET = "/run/syntropism/api.sock"
LAUNCH_FAILED = 125  # the launcher's exit status when it could not enter a layer
OPEN_FILES = 1024
ADDRESS_SPACE_SLACK = 256 * 2**20  # an interpreter maps far more than it touches
ETC_FILES = ("ld.so.cache", "localtime", "alternatives", "ssl", "nsswitch.conf", "hosts", "passwd", "group")


@dataclass(frozen=True)
class Envelope:
    """The limits one execution is held to, in absolute units."""

    memory_bytes: int
    cpu_cores: float
    wall_seconds: float
    pids_max: int
    file_bytes: int | None = None  # the largest file it may write, its log included (RLIMIT_FSIZE)

    @property
    def cpu_budget_seconds(self) -> float:
        """cpu share × cores × duration: all the CPU time the bundle bought."""
        return self.cpu_cores * self.wall_seconds


@dataclass
class Launch:
    """A prepared execution: the argv to start and the groups to watch and to tear down."""

    argv: list[str]
    cwd: Path
    cgroup: ExecutionCgroup | None
    applied: list[str]
    missing: dict[str, str]  # layer → why it is missing
    agent_workspace: str  # the workspace path as the agent sees it
    agent_socket: str | None
    pass_fds: tuple[int, ...] = ()  # descriptors the launcher inherits (bubblewrap's --args memfd)
    bubblewrapped: bool = False  # the agent runs under bubblewrap, which reports its signals as exit codes

    def layers_record(self) -> dict[str, object]:
        return {"applied": self.applied, "missing": self.missing}

    def close_fds(self) -> None:
        """Close this process's copies of the launcher's descriptors, once it has started (or failed to)."""
        for fd in self.pass_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.pass_fds = ()

    def discard(self) -> None:
        """Undo :meth:`Sandbox.prepare` for a launch that never started: its groups and descriptors go."""
        try:
            if self.cgroup is not None:
                self.cgroup.remove()
        finally:
            self.close_fds()


@dataclass
class Sandbox:
    """What this host offers, detected once; :meth:`prepare` builds each execution's launch from it."""

    cgroups: CgroupDriver | None
    bwrap: str | None
    unavailable: dict[str, str] = field(default_factory=dict)  # layer → why this host cannot apply it

    @classmethod
    def detect(cls, disable: Sequence[str] = (), *, quiet: bool = False) -> Sandbox:
        """Probe the host; ``disable`` names switches (cgroups, rlimits, bubblewrap) the operator turned off.
        Every missing layer is logged as a warning unless ``quiet`` (``doctor`` shows them itself)."""
        unknown = set(disable) - set(SWITCHES)
        if unknown:
            raise ValueError(f"unknown sandbox layer switch {sorted(unknown)}; choose from {', '.join(SWITCHES)}")
        unavailable: dict[str, str] = {}
        cgroups = None
        if "cgroups" in disable:
            unavailable.update(dict.fromkeys(CGROUP_LAYERS.values(), "turned off (sandbox_disable)"))
        else:
            try:
                cgroups = detect_cgroups()
            except CgroupUnavailable as exc:
                unavailable.update(dict.fromkeys(CGROUP_LAYERS.values(), str(exc)))
            else:
                for controller, layer in CGROUP_LAYERS.items():
                    if controller not in cgroups.controllers:
                        unavailable[layer] = f"the {controller} controller is not available to this process"
        if "rlimits" in disable:
            unavailable["rlimits"] = "turned off (sandbox_disable)"
        bwrap = None
        if "bubblewrap" in disable:
            unavailable.update(dict.fromkeys(BWRAP_LAYERS, "turned off (sandbox_disable)"))
        else:
            bwrap, why = usable_bwrap()
            if bwrap is None:
                unavailable.update(dict.fromkeys(BWRAP_LAYERS, why))
        sandbox = cls(cgroups, bwrap, unavailable)
        for layer, why in unavailable.items() if not quiet else ():
            log.warning("sandbox layer %s is missing: %s", layer, why)
        return sandbox

    @property
    def layers(self) -> list[str]:
        return [layer for layer in ALL_LAYERS if layer not in self.unavailable]

    def prepare(
        self,
        name: str,
        command: list[str],
        workspace: Path,
        envelope: Envelope,
        *,
        service_socket: Path | None = None,
        extra_ro_paths: tuple[Path, ...] = (),
    ) -> Launch:
        """Make the execution's groups and the argv that starts ``command`` inside every available layer."""
        missing = dict(self.unavailable)
        cgroup = None
        if self.cgroups is not None:
            limits = CgroupLimits(envelope.memory_bytes, envelope.cpu_cores, envelope.pids_max)
            cgroup = self.cgroups.create(name, limits)
        script = [
            f"echo $$ > {shlex.quote(str(path))} || exit {LAUNCH_FAILED}"
            for path in (cgroup.procs_files if cgroup else [])
        ]
        if "rlimits" not in missing:
            script += self._rlimits(envelope, memory_held=cgroup is not None and "memory" in cgroup.directories)
        script.append('exec "$@"')
        pass_fds: tuple[int, ...] = ()
        if self.bwrap is not None:
            options = self._bwrap_options(workspace, service_socket, extra_ro_paths)
            args_fd = _memfd_of(options)  # the options name host paths; the command must stay on the argv
            inner = [self.bwrap, "--args", str(args_fd), "--", *command]
            pass_fds = (args_fd,)
            agent_workspace = SANDBOX_WORKSPACE
            agent_socket = SANDBOX_SOCKET if service_socket else None
        else:
            inner, agent_workspace, agent_socket = (
                command,
                str(workspace),
                str(service_socket) if service_socket else None,
            )
        argv = ["/bin/sh", "-c", "\n".join(script), "syntropism-launch", *inner]
        applied = [layer for layer in ALL_LAYERS if layer not in missing]
        return Launch(
            argv, workspace, cgroup, applied, missing, agent_workspace, agent_socket, pass_fds, self.bwrap is not None
        )

    def remove_leftovers(self, name: str) -> None:
        """Kill and remove the groups an earlier runtime made for ``name``, if they are still there."""
        if self.cgroups is not None:
            leftover = self.cgroups.existing(name)
            if leftover is not None:
                leftover.kill()
                leftover.remove()

    @staticmethod
    def _rlimits(envelope: Envelope, *, memory_held: bool) -> list[str]:
        cpu = math.ceil(envelope.cpu_budget_seconds) + 1  # per process; the manager kills on the tree's total
        lines = ["ulimit -c 0", f"ulimit -n {OPEN_FILES}", f"ulimit -t {cpu}"]
        if envelope.file_bytes is not None:
            lines.append(f"ulimit -f {max(1, envelope.file_bytes // 512)}")  # POSIX sh counts 512-byte blocks
        if not memory_held:
            # Without a memory cgroup the manager watches resident memory and kills over the limit; the address
            # space cap is the backstop against growth faster than it looks (address space > resident memory).
            lines.append(f"ulimit -v {(2 * envelope.memory_bytes + ADDRESS_SPACE_SLACK) // 1024}")
        return [f"{line} || exit {LAUNCH_FAILED}" for line in lines]

    def _bwrap_options(self, workspace: Path, socket: Path | None, extra_ro_paths: tuple[Path, ...]) -> list[str]:
        argv = [
            "--die-with-parent",
            "--new-session",
            "--unshare-all",  # user, ipc, pid, net, uts, cgroup namespaces: own loopback only
            "--uid", "65534",
            "--gid", "65534",
            "--cap-drop", "ALL",
            "--hostname", "agent",
            "--proc", "/proc",
            "--dev", "/dev",
            "--tmpfs", "/tmp",
        ]  # fmt: skip
        for path in _system_paths():
            argv += (
                ["--symlink", str(path.readlink()), str(path)]
                if path.is_symlink()
                else ["--ro-bind", str(path), str(path)]
            )
        for path in dict.fromkeys([*_runtime_paths(), *extra_ro_paths]):
            argv += ["--ro-bind", str(path), str(path)]
        argv += ["--bind", str(workspace.resolve()), SANDBOX_WORKSPACE, "--chdir", SANDBOX_WORKSPACE]
        if socket is not None:
            argv += ["--ro-bind", str(socket.resolve()), SANDBOX_SOCKET]  # connect() still works on a ro mount
        return argv


def _memfd_of(args: list[str]) -> int:
    """A memfd holding ``args`` NUL-separated, read from the start (bubblewrap's ``--args FD``)."""
    fd = os.memfd_create("bwrap-args", 0)  # not CLOEXEC: the launcher inherits it through pass_fds
    os.write(fd, b"".join(arg.encode() + b"\0" for arg in args))
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _system_paths() -> list[Path]:
    paths = [Path(p) for p in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64")]
    paths += [Path("/etc") / name for name in ETC_FILES]
    return [p for p in paths if p.exists() or p.is_symlink()]


def _runtime_paths() -> list[Path]:
    """The Python the agents run on: its installation, the venv, and this package's own source."""
    package_root = Path(syntropism.__file__).resolve().parent
    paths = [Path(sys.base_prefix).resolve(), Path(sys.prefix), package_root]
    return [p for p in paths if p.exists() and not any(str(p).startswith(s) for s in ("/usr/", "/bin", "/lib"))]


def usable_bwrap() -> tuple[str | None, str]:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return None, "bubblewrap is not installed (apt-get install bubblewrap; `make test` installs it)"
    try:
        result = subprocess.run(
            [bwrap, "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "true"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"{bwrap} cannot run: {exc}"
    if result.returncode != 0:
        return None, f"{bwrap} cannot build a sandbox here: {result.stderr.strip()} (allow user namespaces)"
    return bwrap, ""
