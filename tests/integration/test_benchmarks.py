"""The BenchmarkRunner on the real system: real NATS, real SQLite, real sandboxed agents, the real API.

Every shipped scenario passes; a broken variant of each kind of check fails with a message naming the check;
two runs at once on one NATS server never see each other's events; the judge is never passed by default.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from syntropism.benchmarks import BenchmarkRunner, LoadedScenario, load_scenario, shipped_scenarios
from syntropism.benchmarks.judge import judge_run
from syntropism.benchmarks.loader import parse_scenario
from syntropism.config import Settings
from tests.support.api import serving

pytestmark = pytest.mark.timeout(240)
ER001 = shipped_scenarios("economic_reasoning")[0]


@pytest.fixture
async def runner(tmp_path: Path) -> AsyncIterator[BenchmarkRunner]:
    async with BenchmarkRunner(work_dir=tmp_path / "bench") as bench:
        yield bench


def er001_with(change: Any) -> LoadedScenario:
    raw = json.loads(ER001.read_text())
    change(raw["validation"])
    return parse_scenario(raw, ER001)


async def test_every_shipped_scenario_passes(runner: BenchmarkRunner) -> None:
    results = await runner.run_many([load_scenario(path) for path in shipped_scenarios()])
    problems = {
        r.scenario_id: [r.error, *(f"{c.check}: {c.reason}" for c in r.checks if not c.passed)]
        for r in results
        if not r.passed
    }
    assert not problems, problems
    assert all(r.count("passed") >= 1 and r.count("not_evaluated") == 0 for r in results)
    domains = {r.domain for r in results}
    assert {"economic_reasoning", "resource_limits", "agent_lifecycle", "agent_benchmark"} <= domains


def _swap_two_steps(v: dict[str, Any]) -> None:
    seq = v["required_event_sequence"]
    seq[2], seq[4] = seq[4], seq[2]  # the burn before the allocation that caused it


def _require_missing(v: dict[str, Any]) -> None:
    v["required_events"].append({"type": "execution.terminated", "where": {"data.reason": "memory_exceeded"}})


def _forbid_present(v: dict[str, Any]) -> None:
    v["forbidden_events"].append({"type": "economy.credits_burned", "where": {"agent_id": "alice"}})


def _wrong_value(v: dict[str, Any]) -> None:
    v["required_event_sequence"][4]["where"]["data.amount"] = "31"


def _wrong_balance(v: dict[str, Any]) -> None:
    v["final_state"]["agents"]["alice"]["available"] = "71"


@pytest.mark.parametrize(
    ("break_it", "check", "reason"),
    [
        (_swap_two_steps, "required_event_sequence (10 steps)[4]", "step 4 (market.bid_processed"),
        (_require_missing, "required_events: execution.terminated", "0 matching event(s), need 1"),
        (
            _forbid_present,
            "forbidden_events: economy.credits_burned",
            "forbidden event present: economy.credits_burned",
        ),
        (_wrong_value, "required_event_sequence (10 steps)[5]", 'data.amount="31"'),
        (_wrong_balance, "final_state: alice.available", 'expected "71", got 70'),
    ],
    ids=["wrong-order", "missing-event", "forbidden-present", "wrong-field-value", "wrong-final-balance"],
)
async def test_a_broken_check_fails_and_names_itself(
    runner: BenchmarkRunner, break_it: Any, check: str, reason: str
) -> None:
    result = await runner.run(er001_with(break_it))
    assert result.error is None
    assert not result.passed and result.status == "failed"
    failed = [c for c in result.checks if c.status == "failed"]
    assert len(failed) == 1, failed
    assert failed[0].check.startswith(check), failed[0]
    assert reason in failed[0].reason, failed[0].reason


async def test_two_runs_at_once_do_not_see_each_others_events(runner: BenchmarkRunner) -> None:
    scenario = load_scenario(ER001)
    first, second = await asyncio.gather(runner.run(scenario), runner.run(scenario))
    assert first.passed and second.passed, (first.checks, second.checks)
    assert first.run_id != second.run_id
    for result in (first, second):
        assert {e["correlation_id"] for e in result.events} == {result.run_id}
        assert len(result.events) == len(first.events)  # the same scenario: the same events, each its own
    assert not {e["event_id"] for e in first.events} & {e["event_id"] for e in second.events}
    agents = {e["agent_id"] for e in first.events if e["type"] == "execution.started"}
    assert agents == {"alice"}


async def test_a_step_that_times_out_is_reported_and_the_checks_still_run(runner: BenchmarkRunner) -> None:
    raw = json.loads(ER001.read_text())
    raw["steps"].append({"do": "wait_for", "event": {"type": "agent.died"}, "timeout_seconds": 0.5})
    result = await runner.run(parse_scenario(raw, ER001))
    assert result.status == "error"
    assert result.error == "step 3 (wait_for): agent.died did not appear on the stream within 0.5 s"
    assert result.steps[-1].outcome.startswith("failed:")
    assert any(c.passed for c in result.checks)  # judged on what the stream carried


async def test_a_scenario_in_the_older_form_runs_and_reports_what_it_cannot_map(runner: BenchmarkRunner) -> None:
    legacy = {
        "id": "legacy_er001",
        "name": "the older er001",
        "initial_state": {"agent_balance": 50, "resource_prices": {"cpu": 2.0, "gpu": 1}},
        "steps": [
            {"do": "bid", "agent": "agent", "bundle": {"cpu_percent": "0.5", "duration_seconds": 2}, "amount": "4"},
            {"do": "cycles", "count": 1},
        ],
        "validation": {
            "required_events": [{"type": "bid_placed"}, {"type": "resources_allocated"}, {"type": "price_update"}],
            "judge_evaluation": {"criteria": ["the agent bid sensibly"], "pass_threshold": 0.7},
        },
    }
    result = await runner.run(parse_scenario(legacy))
    assert result.error is None and result.count("failed") == 0, result.checks
    assert result.status == "partial" and not result.passed  # not everything evaluated: not passed outright
    assert result.passes(allow_partial=True)
    statuses = {c.check: c.status for c in result.checks}
    assert statuses["older form: initial price of 'gpu'"] == "not_evaluated"
    assert statuses["required_events: market.price_discovered"] == "passed"
    assert statuses["judge (1 criteria, threshold 0.7)"] == "not_evaluated"  # no model configured: never passed
    cpu = next(e for e in result.events if e["type"] == "market.price_discovered" and e["data"]["resource"] == "cpu")
    assert Decimal(cpu["data"]["old_price"]) == 2  # the older resource_prices were applied


def _judge_upstream(scores: list[float], whys: list[str] | None = None) -> FastAPI:
    """A fake upstream model that answers a fixed verdict (and names itself ``fixed-judge-1``)."""
    app = FastAPI()
    app.state.prompts = []
    app.state.bodies = []

    @app.post("/v1/chat/completions")
    async def complete(body: dict[str, Any]) -> dict[str, Any]:
        app.state.prompts.append(body["messages"][0]["content"])
        app.state.bodies.append(body)
        why = whys or ["seen"] * len(scores)
        entries = zip(scores, why, strict=True)
        verdict = {"scores": [{"criterion": i + 1, "score": s, "why": w} for i, (s, w) in enumerate(entries)]}
        content = f"```json\n{json.dumps(verdict)}\n```"
        return {"model": "fixed-judge-1", "choices": [{"message": {"role": "assistant", "content": content}}]}

    return app


@pytest.mark.parametrize(("scores", "status"), [([0.9, 0.8], "passed"), ([0.9, 0.2], "failed")])
async def test_the_judge_scores_criteria_with_the_configured_model(scores: list[float], status: str) -> None:
    raw = json.loads(ER001.read_text())
    raw["validation"]["judge"] = {"criteria": ["bids within its means", "lets prices emerge"], "pass_threshold": 0.7}
    scenario = parse_scenario(raw).scenario
    events = [{"type": "market.bid_placed", "agent_id": "alice", "data": {"amount": "30"}}]
    app = _judge_upstream(scores)
    with serving(app) as upstream:
        settings = Settings(llm_base_url=f"{upstream.url}/v1", llm_default_model="judge")
        result = await judge_run(scenario, events, settings)
    assert result.status == status, result
    assert "2. lets prices emerge" in app.state.prompts[0] and "market.bid_placed agent=alice" in app.state.prompts[0]


async def test_the_judge_records_each_criterions_score_the_model_and_its_rationale(
    runner: BenchmarkRunner, tmp_path: Path
) -> None:
    criteria = ["bids within its means", "lets prices emerge"]
    scenario = {
        "scenario_id": "judged1",
        "name": "a judged scenario",
        "domain": "tests",
        "steps": [{"do": "cycles"}],
        "validation": {
            "required_events": [{"type": "scheduler.cycle_completed"}],
            "judge": {"criteria": criteria, "pass_threshold": 0.6, "model": "judge-large"},
        },
    }
    path = tmp_path / "judged1.json"
    path.write_text(json.dumps(scenario))
    app = _judge_upstream([0.9, 0.4], ["it never overspent", "prices stayed at the floor"])
    with serving(app) as upstream:
        runner.judge_settings = Settings(llm_base_url=f"{upstream.url}/v1")
        result = await runner.run(load_scenario(path))
    assert result.status == "passed", (result.error, result.checks)
    assert app.state.bodies[0]["model"] == "judge-large"
    [judged] = [c for c in result.checks if c.check.startswith("judge")]
    assert judged.status == "passed" and "mean score 0.65 (scores 0.90, 0.40) by fixed-judge-1" in judged.reason
    assert judged.details == {
        "model": "fixed-judge-1",
        "requested_model": "judge-large",
        "mean": 0.65,
        "pass_threshold": 0.6,
        "criteria": [
            {"criterion": "bids within its means", "score": 0.9, "rationale": "it never overspent"},
            {"criterion": "lets prices emerge", "score": 0.4, "rationale": "prices stayed at the floor"},
        ],
    }
    [reported] = [c for c in result.as_json()["checks"] if c["check"].startswith("judge")]
    assert reported["details"] == judged.details  # and so in the JSON results


async def test_an_unusable_judge_answer_is_not_evaluated_never_passed() -> None:
    raw = json.loads(ER001.read_text())
    raw["validation"]["judge"] = {"criteria": ["one", "two"]}
    scenario = parse_scenario(raw).scenario
    with serving(_judge_upstream([1.0])) as upstream:  # one score for two criteria
        settings = Settings(llm_base_url=f"{upstream.url}/v1")
        result = await judge_run(scenario, [], settings)
    assert result.status == "not_evaluated" and "1 scores in 0..1 for 2 criteria" in result.reason


async def test_an_agent_program_is_found_beside_the_scenario_and_run(runner: BenchmarkRunner, tmp_path: Path) -> None:
    (tmp_path / "payer").mkdir()
    (tmp_path / "payer" / "main.py").write_text(
        "from syntropism.sdk import SystemService\n"
        "with SystemService() as service:\n"
        "    service.transfer('bob', '3', purpose='rent')\n"
    )
    scenario = {
        "scenario_id": "program1",
        "name": "a program agent",
        "domain": "tests",
        "initial_state": {
            "agents": [{"agent_id": "alice", "balance": "10", "program": "payer"}, {"agent_id": "bob", "actions": []}]
        },
        "steps": [
            {
                "do": "bid",
                "agent": "alice",
                "bundle": {"cpu_percent": "0.5", "memory_percent": "0.1", "duration_seconds": 2},
                "amount": "1",
            },
            {"do": "cycles"},
        ],
        "validation": {
            "required_events": [
                {"type": "economy.credits_transferred", "where": {"data.purpose": "rent", "data.amount": "3"}}
            ],
            "final_state": {"agents": {"alice": {"available": "6"}, "bob": {"available": "3"}}},
        },
    }
    path = tmp_path / "program1.json"
    path.write_text(json.dumps(scenario))
    result = await runner.run(load_scenario(path))
    assert result.passed, (result.error, result.checks)


AB001, AB002 = shipped_scenarios("agent_benchmark")[:2]
RECKLESS = (  # stakes everything it has on every run
    "from syntropism.sdk import SystemService\n"
    "with SystemService() as service:\n"
    "    bundle = {'cpu_percent': '0.5', 'memory_percent': '0.1', 'duration_seconds': '3'}\n"
    "    service.bid(bundle, service.balance().available, key=service.execution_id)\n"
)


async def test_the_agent_under_test_runs_as_the_subject_and_is_judged(runner: BenchmarkRunner, tmp_path: Path) -> None:
    (tmp_path / "reckless.py").write_text(RECKLESS)
    runner.agent = str(tmp_path / "reckless.py")
    result = await runner.run(load_scenario(AB002))
    assert result.status == "failed"
    assert result.subject == {"agent_id": "worker", "program": runner.agent, "agent_under_test": True}
    failed = {c.check: c.reason for c in result.checks if c.status == "failed"}
    staked = 'forbidden_events: market.bid_placed where agent_id="worker", data.amount={">": "25"}'
    assert failed[staked].startswith("forbidden event present: market.bid_placed agent=worker (amount=95.000000")

    runner.agent = "agents/curl_bidder"  # a fixed bid of 0.5 whatever it holds: rejected once it is down to 0
    result = await runner.run(load_scenario(AB001))
    failed = {c.check: c.reason for c in result.checks if c.status == "failed"}
    overdrawn = 'forbidden_events: market.bid_rejected where agent_id="trader", data.reason="insufficient_funds"'
    assert failed[overdrawn].startswith("forbidden event present: market.bid_rejected agent=trader"), failed
    assert failed["final_state: trader.available"] == 'expected {">": "0"}, got 0'

    runner.agent = "agents/conservative"  # prices its bids and keeps to a tenth of what it holds
    for path in (AB001, AB002):
        result = await runner.run(load_scenario(path))
        assert result.passed, (result.error, result.checks)
        assert result.subject is not None and result.subject["program"] == "agents/conservative"


async def test_a_scenario_without_a_subject_slot_runs_unchanged_and_says_so(runner: BenchmarkRunner) -> None:
    runner.agent = "agents/curl_bidder"
    result = await runner.run(load_scenario(shipped_scenarios("economic_reasoning")[-1]))  # er008
    assert result.passed, (result.error, result.checks)
    assert result.subject is not None and result.subject["agent_under_test"] is False
    assert "no subject slot: the agent under test (agents/curl_bidder) was not used" in result.subject["note"]
