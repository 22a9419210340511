"""Dead agents do not run, do not earn and do not receive; the living are not buried while something will run
them; an agent with nothing ahead of it goes dormant, so poverty can end it. Real runtime, real sandbox."""

from __future__ import annotations

import tarfile
from typing import Any

import pytest
from sqlalchemy import select

from syntropism.domain.models import time_ordered_id
from syntropism.infra.tables import Agent, Execution, OutboxEvent
from tests.adversarial.conftest import Economy


@pytest.fixture
def economy_overrides() -> dict[str, Any]:
    return {"dormant_grace_seconds": 0}  # dormant and destitute: dead at the next sweep


def status(economy: Economy, agent_id: str) -> str:
    assert economy.runtime.services is not None
    with economy.runtime.services.database.reader() as session:
        return session.get_one(Agent, agent_id).status


def event_types(economy: Economy, agent_id: str) -> list[str]:
    with economy.runtime.database.reader() as session:
        return list(
            session.scalars(
                select(OutboxEvent.event_type).where(OutboxEvent.agent_id == agent_id).order_by(OutboxEvent.id)
            )
        )


async def test_agents_named_dot_and_dotdot_never_bury_the_state_folder(economy: Economy) -> None:
    """The reproduced kill: create '.' and '..' with no credits, let the death sweep run. Both are refused, the
    sweep archives nothing of the state folder, the runtime keeps serving."""
    for agent_id in (".", ".."):
        created = await economy.admin.post("/admin/agents", json={"agent_id": agent_id, "initial_grant": "0"})
        assert created.status_code == 422, created.text
    await economy.agent("pauper", grant="0")  # a real destitute agent: it dies, and only its workspace is archived
    await economy.cycle()
    await economy.cycle()
    assert (await economy.admin.get("/health")).status_code == 200
    archives = list((economy.state_dir / "archive").glob("*.tar.gz"))
    assert [a.name.split("-")[0] for a in archives] == ["pauper"]
    with tarfile.open(archives[0]) as tar:
        names = tar.getnames()
    assert names and all(n == "pauper" or n.startswith("pauper/") for n in names), names
    assert not any("syntropism.db" in n or "operator_token" in n for n in names)
    await economy.assert_market_clears()


async def test_an_agent_whose_last_credits_bought_its_run_runs_before_it_dies(economy: Economy) -> None:
    await economy.agent("spender", grant="1")
    outcome = await economy.run("spender")  # the bid burns every credit it has; the sweep runs right after
    assert outcome.reason.value == "completed", outcome
    await economy.cycle()  # now dormant and destitute, with nothing ahead: it dies
    assert status(economy, "spender") == "died"
    events = event_types(economy, "spender")
    assert events.index("execution.terminated") < events.index("agent.died"), events


async def test_a_destitute_agent_woken_on_its_behalf_is_spared_until_it_ran(economy: Economy) -> None:
    await economy.agent("pauper", grant="0")
    await economy.agent("patron", grant="10")
    placed = await economy.bid("patron", on_behalf_of="pauper", amount="2")
    assert placed.status_code == 200, placed.text
    report = await economy.cycle()
    assert placed.json()["bid_id"] in report.winners
    outcome = await economy.ended("pauper")
    assert outcome.reason.value == "completed", outcome
    assert "agent.awake" in event_types(economy, "pauper")


async def test_an_execution_of_a_dead_agent_is_never_started(economy: Economy) -> None:
    """Defence in depth: even if an execution of a dead agent were allocated, the claim refuses to run it."""
    await economy.agent("ghost", grant="0")
    execution_id = time_ordered_id()
    with economy.runtime.database.transaction() as session:
        session.get_one(Agent, "ghost").status = "died"
        session.add(
            Execution(
                id=execution_id, agent_id="ghost", cycle=0, status="allocated", cpu_ppm=100_000, memory_ppm=10_000,
                tokens_ppm=0, attention_ppm=0, duration_ms=5000,
            )
        )  # fmt: skip
    assert economy.runtime.executions is not None
    started = await economy.runtime.executions.start_allocated()
    assert started == []
    with economy.runtime.database.reader() as session:
        execution = session.get_one(Execution, execution_id)
        assert (execution.status, execution.reason, execution.token_hash) == ("terminated", "killed", None)


PAY_THE_DEAD = """
record("transfer", call("POST", "/economic/transfer", key="t", json={"to_agent": "pauper", "amount": "1"}))
record("message", call("POST", "/social/message", key="m", json={"to_agent": "pauper", "body": "hi"}))
record("bid for it", call("POST", "/market/bid", key="b", json={
    "bundle": {"cpu_percent": "0.1", "duration_seconds": 1}, "amount": "1", "on_behalf_of": "pauper"}))
"""


async def test_nothing_reaches_a_dead_agent(economy: Economy) -> None:
    await economy.agent("pauper", grant="0")
    await economy.cycle()
    assert status(economy, "pauper") == "died"
    await economy.agent("mourner", PAY_THE_DEAD, grant="10")
    before = economy.fingerprint(except_agents=("mourner",))
    outcome = await economy.run("mourner")
    assert outcome.reason.value == "completed", outcome
    for name, (code, body) in economy.results("mourner").items():
        assert (code, body["reason"]) == (409, "agent_dead"), (name, body)
    grant = await economy.admin.post(
        "/admin/grant", headers={"Idempotency-Key": "g"}, json={"agent_id": "pauper", "amount": "5"}
    )
    reward = await economy.admin.post(
        "/admin/reward",
        headers={"Idempotency-Key": "r"},
        json={"agent_id": "pauper", "interesting": 9, "useful": 9, "understandable": 9},
    )
    for answer in (grant, reward):
        assert (answer.status_code, answer.json()["reason"]) == (409, "agent_dead"), answer.text
    assert economy.runtime.services is not None
    assert economy.runtime.services.ledger.balance("pauper").available == 0
    assert economy.fingerprint(except_agents=("mourner",)) == before


BID_AND_LEAVE = """
record("bid", call("POST", "/market/bid", key="last", json={
    "bundle": {"cpu_percent": "1", "duration_seconds": 1}, "amount": "1", "lifetime_cycles": 1}))
"""


async def test_an_agent_whose_last_bid_expires_goes_dormant_and_can_die(economy: Economy) -> None:
    await economy.agent("leaver", BID_AND_LEAVE, grant="2")
    await economy.agent("hog", grant="10")
    outcome = await economy.run("leaver")  # it pays 1 for this run and leaves a bid of 1 behind
    assert outcome.reason.value == "completed", outcome
    assert status(economy, "leaver") == "active", "a pending bid lies ahead of it"
    placed = await economy.bid("hog", amount="5")  # takes half the CPU: the leaver's whole-CPU bid cannot fit
    report = await economy.cycle()
    assert placed.json()["bid_id"] in report.winners and report.outbid == 1, report
    assert status(economy, "leaver") == "dormant"
    assert event_types(economy, "leaver")[-1] in ("agent.dormant", "economy.credits_unlocked")
    await economy.ended("hog")


async def test_an_agent_whose_bid_the_operator_withdraws_goes_dormant(economy: Economy) -> None:
    await economy.agent("leaver", BID_AND_LEAVE, grant="2")
    await economy.run("leaver")
    [bid] = (await economy.admin.get("/admin/agents/leaver")).json()["pending_bids"]
    cancelled = await economy.admin.delete(f"/admin/bids/{bid['bid_id']}")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["bundle"] is not None and cancelled.json()["status"] == "cancelled"
    assert status(economy, "leaver") == "dormant"
