"""End to end: reference agents — one written with the SDK, one in shell with curl — run inside the sandbox,
bid, win, run, and bid again, in a running economy."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from syntropism.config import Settings
from syntropism.core.execution import Outcome
from syntropism.domain.events import TerminationReason
from syntropism.runtime import Runtime, open_bus
from tests.support.fake_llm import fake_llm
from tests.support.waiting import eventually

AGENTS = Path(__file__).resolve().parents[2] / "agents"
FIRST_BID = {"cpu_percent": "0.4", "memory_percent": "0.05", "duration_seconds": 4}
OPERATOR = "operator"


def economy(tmp_path: Path, **overrides: Any) -> Settings:
    """A fast-clearing economy of one core and 2 GiB (unless overridden), with a known operator token."""
    base = {"clearing_interval_seconds": 0.2, "cpu_cores": 1, "memory_bytes": 2 * 2**30}
    return Settings(state_dir=tmp_path / "state", operator_token=OPERATOR, **(base | overrides))


async def add_agent(
    runtime: Runtime,
    agent_id: str,
    kind: str,
    *,
    entry: str = "main.py",
    grant: str = "50",
    extra_files: dict[str, str] | None = None,
    first_bid: dict[str, Any] | None = FIRST_BID,
) -> None:
    """Create an agent from ``agents/<kind>`` through the operator API and, unless ``first_bid`` is None, bid
    for its first run from its own credits."""
    assert runtime.api is not None
    files = {entry: (AGENTS / kind / entry).read_text(), **(extra_files or {})}
    async with httpx.AsyncClient(base_url=runtime.api.url, headers={"Authorization": f"Bearer {OPERATOR}"}) as admin:
        created = await admin.post(
            "/admin/agents", json={"agent_id": agent_id, "files": files, "entry_point": entry, "initial_grant": grant}
        )
        assert created.status_code == 201, created.text
        if first_bid is not None:
            placed = await admin.post(
                "/admin/bids",
                headers={"Idempotency-Key": f"first-{agent_id}"},
                json={"agent_id": agent_id, "bundle": first_bid, "amount": "1"},
            )
            assert placed.status_code == 200, placed.text


async def test_an_sdk_agent_and_a_curl_agent_bid_win_run_and_bid_again(tmp_path: Path) -> None:
    settings = economy(tmp_path)
    runtime = Runtime(settings)
    await runtime.start()
    completed: Counter[str] = Counter()
    outcomes: list[Outcome] = []
    enough = asyncio.Event()

    def on_end(outcome: Outcome) -> None:
        outcomes.append(outcome)
        if outcome.reason is TerminationReason.COMPLETED:
            completed[outcome.agent_id] += 1
        if all(completed[a] >= 2 for a in ("sdk-agent", "curl-agent")):
            enough.set()

    try:
        assert runtime.executions is not None and runtime.api is not None
        runtime.executions.on_terminated(on_end)
        await add_agent(runtime, "sdk-agent", "random_bidder")
        await add_agent(runtime, "curl-agent", "curl_bidder", entry="main.sh")
        runtime.start_clearing()
        async with asyncio.timeout(60):
            await enough.wait()
    finally:
        await runtime.stop()

    failures = [o for o in outcomes if o.reason is not TerminationReason.COMPLETED or o.exit_code != 0]
    logs = {p.name: p.read_text() for p in settings.logs_dir.rglob("*.log")}
    assert not failures, (failures, logs)
    layers = set(outcomes[0].layers["applied"])  # type: ignore[arg-type]
    assert {"filesystem", "network", "pid-namespace"} <= layers, "they ran inside the sandbox"
    async with open_bus(settings) as bus:
        events = [received.event async for received in bus.read(["market.bid_placed", "execution.started"])]
    for agent_id in ("sdk-agent", "curl-agent"):
        own_bids = [e for e in events if e.type == "market.bid_placed" and e.agent_id == agent_id]
        runs = [e for e in events if e.type == "execution.started" and e.agent_id == agent_id]
        assert len(runs) >= 2 and len(own_bids) >= 2, (agent_id, len(runs), len(own_bids))
        # The second run was won by a bid the agent placed itself, from inside its first run.
        assert runs[1].data.bid_id in {b.data.bid_id for b in own_bids[1:]}  # type: ignore[attr-defined]
    workspace = settings.effective_workspace_root
    assert '"runs": ' in (workspace / "curl-agent" / "state.json").read_text()
    assert '"runs": ' in (workspace / "sdk-agent" / "state.json").read_text()


async def test_the_broker_wakes_the_thinker_when_cpu_is_cheap_and_the_conservative_bidder_keeps_going(
    tmp_path: Path,
) -> None:
    settings = economy(tmp_path, cpu_cores=2, memory_bytes=4 * 2**30)
    runtime = Runtime(settings)
    await runtime.start()
    completed: Counter[str] = Counter()
    enough = asyncio.Event()

    def on_end(outcome: Outcome) -> None:
        if outcome.reason is TerminationReason.COMPLETED:
            completed[outcome.agent_id] += 1
        if completed["thinker"] >= 1 and completed["broker"] >= 2 and completed["conservative"] >= 2:
            enough.set()

    try:
        assert runtime.executions is not None and runtime.api is not None
        runtime.executions.on_terminated(on_end)
        await add_agent(runtime, "broker", "broker", grant="100", extra_files={"team.json": '{"thinker": "thinker"}'})
        await add_agent(runtime, "thinker", "thinker", grant="100", first_bid=None)  # only the broker wakes it
        await add_agent(runtime, "conservative", "conservative", grant="100")
        runtime.start_clearing()
        async with asyncio.timeout(60):
            await enough.wait()
        broker_state = settings.effective_workspace_root / "broker" / "state.json"
        await eventually(lambda: "reports" in broker_state.read_text(), within=30, what="the broker read a report")
    finally:
        await runtime.stop()

    async with open_bus(settings) as bus:
        awake = [r.event async for r in bus.read(["agent.awake"]) if r.event.agent_id == "thinker"]
    assert awake and awake[0].data.woken_by == "broker"  # type: ignore[attr-defined]
    thinker_state = (settings.effective_workspace_root / "thinker" / "state.json").read_text()
    assert '"results": [' in thinker_state


async def test_the_poet_thinks_with_the_llm_from_inside_the_sandbox(tmp_path: Path) -> None:
    with fake_llm() as (llm_url, calls):
        settings = economy(tmp_path, llm_base_url=llm_url, llm_spend_limit=100)  # 100 tokens/s: 100 % of tokens
        runtime = Runtime(settings)
        await runtime.start()
        ended = asyncio.Event()
        try:
            assert runtime.executions is not None and runtime.api is not None
            runtime.executions.on_terminated(lambda outcome: ended.set())
            rich = {**FIRST_BID, "tokens_percent": "1", "duration_seconds": 4}  # 400 tokens: room for a poem
            await add_agent(runtime, "poet", "poet", first_bid=rich)
            runtime.start_clearing()
            async with asyncio.timeout(30):
                await ended.wait()
        finally:
            await runtime.stop()
    state = json.loads((settings.effective_workspace_root / "poet" / "state.json").read_text())
    assert state["poems"][0]["source"] == "llm", state
    assert len(calls) == 1 and calls[0]["max_tokens"] == 60
    async with open_bus(settings) as bus:
        consumed = [r.event async for r in bus.read(["intelligence.tokens_consumed"])]
    assert [e.agent_id for e in consumed] == ["poet"]
    assert consumed[0].data.completion_tokens == 60  # type: ignore[attr-defined]
