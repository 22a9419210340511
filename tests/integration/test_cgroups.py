"""The cgroup driver against the real kernel: every hierarchy this host mounts is exercised where it can be."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from syntropism.infra.cgroups import CgroupDriver, CgroupLimits, CgroupUnavailable, _mounts, _own_paths, detect_cgroups
from tests.support.waiting import wait_until

SPINNERS = "sh -c 'while :; do :; done' & sh -c 'while :; do :; done' & wait"


def join_and_run(group_procs: list[Path], command: str) -> subprocess.Popen[bytes]:
    joins = "; ".join(f"echo $$ > {path}" for path in group_procs)
    return subprocess.Popen(["/bin/sh", "-c", f'{joins}; exec /bin/sh -c "{command}"'])


def test_the_detected_driver_holds_a_tree_measures_it_and_kills_all_of_it() -> None:
    try:
        driver = detect_cgroups()
    except CgroupUnavailable as exc:
        pytest.skip(f"no usable cgroups on this host: {exc}")
    group = driver.create(f"test-{os.getpid()}", CgroupLimits(memory_bytes=256 * 2**20, cpu_cores=0.5, pids_max=16))
    try:
        launcher = join_and_run(group.procs_files, SPINNERS)
        wait_until(lambda: len(group.pids()) == 3, what="the shell and its two spinners joined the group")
        wait_until(lambda: (group.cpu_seconds() or 0) > 0.2, what="CPU use was measured")
        group.kill()
        assert group.pids() == []
        assert launcher.wait(5) == -9
        assert (group.peak_memory_bytes() or 0) > 0
        assert not group.oom_killed()
    finally:
        group.kill()
        group.remove()
    assert all(not directory.exists() for directory in group.directories.values())


def test_cgroup_v2_core_files_hold_measure_and_kill_a_tree() -> None:
    """cgroup.procs, cgroup.kill and cpu.stat exist in every v2 group, controllers delegated or not: this runs
    the v2 driver's membership, accounting and kill paths on the real kernel even where the memory, cpu and
    pids controllers are bound to v1 (as on this project's build machines)."""
    v2 = next((point for fstype, point, _ in _mounts() if fstype == "cgroup2"), None)
    own = _own_paths().get("")
    if v2 is None or own is None:
        pytest.skip("this host mounts no cgroup v2 hierarchy")
    base = v2 / own.lstrip("/")
    if not os.access(base, os.W_OK):
        pytest.skip(f"cannot create cgroup v2 groups under {base}")
    driver = CgroupDriver(2, {"cpu": base})  # no limits: only the core files are used
    group = driver.create(f"syntropism-test-{os.getpid()}", CgroupLimits())
    try:
        launcher = join_and_run(group.procs_files, SPINNERS)
        wait_until(lambda: len(group.pids()) == 3, what="the tree joined the group")
        wait_until(lambda: (group.cpu_seconds() or 0) > 0.2, what="cpu.stat usage_usec grew")
        group.kill()
        assert group.pids() == []
        assert launcher.wait(5) == -9
    finally:
        group.kill()
        group.remove()
