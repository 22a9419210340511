"""The command line as a user runs it: real subprocesses on a fresh state folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from syntropism.domain.events import parse_event
from syntropism.infra.agents import register_agent
from syntropism.infra.database import Database
from syntropism.infra.outbox import record_event
from tests.samples import sample_event

COMMAND = [sys.executable, "-m", "syntropism"]


def syntropism(state_dir: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, "--state-dir", str(state_dir), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
    )


def _env() -> dict[str, str]:
    # These tests are about the command line itself: an economy without starter agents.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNTROPISM_")}
    return env | {"COLUMNS": "200", "SYNTROPISM_STARTER_AGENTS": "0"}


def start_runtime(state_dir: Path, *args: str) -> subprocess.Popen[str]:
    """Start ``syntropism run`` and return once it says it is running."""
    process = subprocess.Popen(
        [*COMMAND, "--state-dir", str(state_dir), "run", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        start_new_session=True,  # its own process group, like a job in a terminal
    )
    assert process.stdout is not None
    line = process.stdout.readline()  # blocks until the runtime reports, or exits
    if "Syntropism running" not in line:
        process.kill()
        _out, err = process.communicate()
        pytest.fail(f"runtime did not start: {line!r} {err}")
    return process


def test_run_for_seconds_starts_and_stops_cleanly(state_dir: Path) -> None:
    result = syntropism(state_dir, "run", "--seconds", "0.5")
    assert result.returncode == 0, result.stderr
    assert "Stopped cleanly" in result.stdout
    assert (state_dir / "syntropism.db").exists()
    assert (state_dir / "nats" / "jetstream").is_dir()
    assert not (state_dir / "runtime.json").exists()  # no longer advertised once stopped


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_stops_cleanly(state_dir: Path, sig: signal.Signals) -> None:
    """Ctrl-C signals the whole foreground process group; the runtime still drains before NATS stops."""
    _commit_events(state_dir, 3)
    process = start_runtime(state_dir, "--agents", "0")  # only the events committed above
    info = json.loads((state_dir / "runtime.json").read_text())
    assert info["pid"] == process.pid and info["nats_url"].startswith("nats://") and "@127.0.0.1:" in info["nats_url"]
    os.killpg(process.pid, sig)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "Stopped cleanly" in out
    assert [json.loads(line)["type"] for line in syntropism(state_dir, "events", "--json").stdout.splitlines()] == [
        "agent.dormant",
        "market.bid_placed",
        "agent.dormant",
    ]
    nats_pid_files = list((state_dir / "nats" / "run").glob("*.ports"))
    for ports in nats_pid_files:  # the embedded server is gone too
        pid = int(ports.stem.rsplit("_", 1)[1])
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def test_second_runtime_on_same_state_is_refused(state_dir: Path) -> None:
    first = start_runtime(state_dir)
    try:
        second = syntropism(state_dir, "run", "--seconds", "1")
        assert second.returncode == 2
        assert "another syntropism runtime" in second.stderr and str(first.pid) in second.stderr
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=30)


def _commit_events(state_dir: Path, count: int) -> list[str]:
    database = Database(f"sqlite:///{(state_dir / 'syntropism.db').resolve()}")
    database.migrate()
    ids = []
    with database.transaction() as session:
        for i in range(count):
            event_type = "market.bid_placed" if i % 2 else "agent.dormant"
            event = sample_event(event_type, agent_id=f"agent-{i % 3}")
            record_event(session, event)
            ids.append(str(event.event_id))
    database.dispose()
    return ids


def test_events_json_is_one_parseable_object_per_line(state_dir: Path) -> None:
    ids = _commit_events(state_dir, 6)
    assert syntropism(state_dir, "run", "--seconds", "0").returncode == 0  # relays the committed events

    result = syntropism(state_dir, "events", "--json")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [json.loads(line)["event_id"] for line in lines] == ids
    assert all(parse_event(line) for line in lines)

    bids = syntropism(state_dir, "events", "--json", "--type", "market.bid_placed")
    assert [json.loads(line)["type"] for line in bids.stdout.splitlines()] == ["market.bid_placed"] * 3
    by_service = syntropism(state_dir, "events", "--json", "--type", "agent")
    assert len(by_service.stdout.splitlines()) == 3
    agent = syntropism(state_dir, "events", "--json", "--agent", "agent-1")
    assert {json.loads(line)["agent_id"] for line in agent.stdout.splitlines()} == {"agent-1"}
    none = syntropism(state_dir, "events", "--json", "--type", "social.message_sent")
    assert none.returncode == 0 and none.stdout == ""

    pretty = syntropism(state_dir, "events")
    assert pretty.returncode == 0 and "market.bid_placed" in pretty.stdout


def test_events_reads_from_a_running_runtime(state_dir: Path) -> None:
    ids = _commit_events(state_dir, 2)
    runtime = start_runtime(state_dir)
    try:
        result = syntropism(state_dir, "events", "--json")
        assert result.returncode == 0, result.stderr
        assert [json.loads(line)["event_id"] for line in result.stdout.splitlines()] == ids
    finally:
        runtime.send_signal(signal.SIGINT)
        runtime.communicate(timeout=30)


def test_doctor_reports_every_layer(state_dir: Path) -> None:
    result = syntropism(state_dir, "doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("python", "nats-server", "database", "cgroups", "namespaces", "bubblewrap", "sandbox"):
        assert name in result.stdout


def test_unreachable_external_nats_fails_loudly(state_dir: Path) -> None:
    result = syntropism(
        state_dir,
        "--set",
        "nats_connect_timeout_seconds=0.5",
        "run",
        "--seconds",
        "1",
        "--nats-url",
        "nats://127.0.0.1:1",
    )
    assert result.returncode == 2
    assert "cannot connect to NATS at nats://127.0.0.1:1" in result.stderr


def test_ledger_commands(state_dir: Path) -> None:
    database = Database(f"sqlite:///{(state_dir / 'syntropism.db').resolve()}")
    database.migrate()
    with database.transaction() as session:
        register_agent(session, "alice")
    database.dispose()

    granted = syntropism(state_dir, "ledger", "grant", "alice", "12.5", "--key", "g1")
    assert granted.returncode == 0, granted.stderr
    assert "available 12.500000" in granted.stdout
    again = syntropism(state_dir, "ledger", "grant", "alice", "12.5", "--key", "g1")
    assert "already applied" in again.stdout
    assert "available 12.500000, locked 0.000000" in syntropism(state_dir, "ledger", "balance", "alice").stdout
    history = syntropism(state_dir, "ledger", "history", "alice", "--json")
    [entry] = [json.loads(line) for line in history.stdout.splitlines()]
    assert entry["kind"] == "grant" and entry["amount"] == "12.500000"

    refused = syntropism(state_dir, "ledger", "grant", "alice", "NaN")
    assert refused.returncode == 2 and "finite" in refused.stderr
    unknown = syntropism(state_dir, "ledger", "balance", "nobody")
    assert unknown.returncode == 2 and "no such agent: nobody" in unknown.stderr

    verified = syntropism(state_dir, "ledger", "verify")
    assert verified.returncode == 0 and "ledger verified" in verified.stdout


def test_ledger_verify_fails_and_names_the_offending_rows(state_dir: Path) -> None:
    assert syntropism(state_dir, "migrate").returncode == 0
    database = Database(f"sqlite:///{(state_dir / 'syntropism.db').resolve()}")
    with database.transaction() as session:
        register_agent(session, "mallory")
        session.execute(text("UPDATE accounts SET credits_micros = 1000000 WHERE id = 'agent:mallory:available'"))
    database.dispose()
    result = syntropism(state_dir, "ledger", "verify")
    assert result.returncode == 1
    assert "agent:mallory:available" in result.stderr and "≠ minted" in result.stderr


def test_run_clears_the_market_for_n_cycles(state_dir: Path) -> None:
    result = syntropism(state_dir, "run", "--cycles", "2", "--interval", "0.2")
    assert result.returncode == 0, result.stderr
    assert "cycle 1:" in result.stdout and "cycle 2:" in result.stdout and "Cycles this run: 2" in result.stdout
    cycles = syntropism(state_dir, "events", "--json", "--type", "scheduler.cycle_completed")
    assert [json.loads(line)["data"]["cycle"] for line in cycles.stdout.splitlines()] == [1, 2]
    # Restarting resumes the cycle count from the stored market state.
    assert syntropism(state_dir, "run", "--cycles", "1", "--interval", "0.1").returncode == 0
    cycles = syntropism(state_dir, "events", "--json", "--type", "scheduler.cycle_completed")
    assert [json.loads(line)["data"]["cycle"] for line in cycles.stdout.splitlines()] == [1, 2, 3]


def test_events_follow_prints_new_events_as_they_come(state_dir: Path) -> None:
    runtime = start_runtime(state_dir)
    follower = subprocess.Popen(
        [*COMMAND, "--state-dir", str(state_dir), "events", "--follow", "--json", "--type", "agent"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        [event_id] = _commit_events(state_dir, 1)  # agent.dormant, relayed by the running runtime
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(follower.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout=30)
        assert lines and json.loads(lines[0])["event_id"] == event_id
    finally:
        follower.terminate()
        follower.communicate(timeout=30)
        runtime.send_signal(signal.SIGINT)
        runtime.communicate(timeout=30)
