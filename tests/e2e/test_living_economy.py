"""The living economy end to end: ``syntropism run`` as a user runs it, judged from outside — its event stream,
its ledger, its database — then stopped, killed, restarted."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.terminal import Terminal

COMMAND = [sys.executable, "-m", "syntropism"]


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNTROPISM_")}
    # One core of capacity, whatever the host has: the starters must compete for it.
    return env | {
        "SYNTROPISM_API_PORT": "0",
        "SYNTROPISM_KILL_GRACE_SECONDS": "1",
        "SYNTROPISM_CPU_CORES": "1",
        "COLUMNS": "160",
    }


def syntropism(state: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, "--state-dir", str(state), *args], capture_output=True, text=True, timeout=timeout, env=environment()
    )


def events(state: Path, *types: str) -> list[dict[str, Any]]:
    flags = [f for t in types for f in ("--type", t)]
    result = syntropism(state, "events", "--json", *flags)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def database(state: Path) -> sqlite3.Connection:
    return sqlite3.connect(state / "syntropism.db")


def assert_consistent(state: Path) -> None:
    """What must hold after any run, however it ended."""
    verify = syntropism(state, "ledger", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    with database(state) as db:
        assert db.execute("SELECT count(*) FROM executions WHERE status = 'running'").fetchone() == (0,)
        won = {row[0] for row in db.execute("SELECT id FROM bids WHERE status = 'won'")}
        transfers = db.execute("SELECT count(*) FROM transfers").fetchone()[0]
        outbox_ids = [row[0] for row in db.execute("SELECT event_id FROM outbox")]
    unlocked = events(state, "economy.credits_unlocked")
    wrongly = {e["data"]["bid_id"] for e in unlocked if e["data"]["reason"] in ("outbid", "expired")} & won
    assert not wrongly, f"bids both won and unlocked: {wrongly}"
    stream = events(state)
    stream_ids = [e["event_id"] for e in stream]
    assert len(stream_ids) == len(set(stream_ids)), "no event reached the stream twice"
    assert set(outbox_ids) == set(stream_ids), "every committed event reached the stream, and nothing else did"
    economy_events = [e for e in stream if e["type"].startswith("economy.")]
    assert len(economy_events) == transfers, "exactly one economy event per journal entry"


def test_run_lives_then_resumes_from_the_same_ledger(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = syntropism(state, "run", "--cycles", "20", "--interval", "0.5", "--seed", "1", "--quiet")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "starter agents: zi-1, careful-1, broker-1, thinker-1, poet-1, shell-1" in first.stdout
    assert "Stopped cleanly. Cycles this run: 20" in first.stdout
    assert_consistent(state)

    prices = [
        e["data"]["new_price"] for e in events(state, "market.price_discovered") if e["data"]["resource"] == "cpu"
    ]
    assert len(set(prices)) > 3, f"prices moved: {prices}"
    started = events(state, "execution.started")
    ended = events(state, "execution.terminated")
    assert started, "at least one agent ran"
    assert {e["data"]["execution_id"] for e in started} == {e["data"]["execution_id"] for e in ended}
    assert any(e["data"]["outcome"] != "won" for e in events(state, "market.bid_processed")), "a bid lost"
    minted_before = syntropism(state, "status").stdout.split("minted ")[1].split()[0]

    second = syntropism(state, "run", "--cycles", "5", "--interval", "0.5", "--seed", "1", "--quiet")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resuming" in second.stdout and "starter agents" not in second.stdout
    cycles = [e["data"]["cycle"] for e in events(state, "scheduler.cycle_completed")]
    assert cycles == list(range(1, 26)), "the second run went on from cycle 21"
    assert_consistent(state)
    status = syntropism(state, "status")
    assert status.returncode == 0 and "invariant holds" in status.stdout
    assert status.stdout.split("minted ")[1].split()[0] == minted_before, "no credits were granted twice"
    agents = syntropism(state, "agents")
    assert "zi-1" in agents.stdout and "shell-1" in agents.stdout


def test_a_run_killed_mid_cycle_restarts_consistent(tmp_path: Path) -> None:
    state = tmp_path / "state"
    process = subprocess.Popen(
        [*COMMAND, "--state-dir", str(state), "run", "--interval", "0.3", "--seed", "2", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environment(),
    )
    assert process.stdout is not None
    for line in process.stdout:  # wait until the economy is busy: a few cycles, agents running
        if line.startswith("cycle 6:"):
            break
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    process.stdout.close()

    again = syntropism(state, "run", "--cycles", "3", "--interval", "0.3", "--quiet")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resuming" in again.stdout
    assert_consistent(state)
    killed = [e for e in events(state, "execution.terminated") if e["data"]["reason"] == "killed"]
    with database(state) as db:
        ran = db.execute("SELECT count(*) FROM executions WHERE started_at IS NOT NULL").fetchone()[0]
    assert ran > 0 and all(e["data"]["detail"] for e in killed)


def test_the_live_view_shows_the_market_and_its_agents(tmp_path: Path) -> None:
    state = tmp_path / "state"
    terminal = Terminal(
        [*COMMAND, "--state-dir", str(state), "run", "--cycles", "8", "--interval", "0.3", "--seed", "3"],
        env=environment() | {"TERM": "xterm-256color"},
        columns=140,
        rows=60,
    )
    terminal.expect("starter agents")
    terminal.expect(r"cycle \d+")
    terminal.expect("market")
    terminal.expect(r"cpu\s+│\s+\d+\.\d{4}")  # a price in the market table
    terminal.expect(r"zi-1\s+│\s+(active|dormant)")  # an agent with its status
    terminal.expect("recent events")
    terminal.expect("Stopped cleanly", within=60)
    assert terminal.close() == 0
