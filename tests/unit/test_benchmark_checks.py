"""The scenario format and the checks, as pure functions over a recorded stream: every check can fail, and says
which check and why."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from syntropism.benchmarks.checks import CheckResult, FinalObservation, check_events, check_final_state, satisfies
from syntropism.benchmarks.judge import parse_judgement
from syntropism.benchmarks.loader import load_scenario, parse_scenario, shipped_scenarios
from syntropism.benchmarks.report import exit_code, reliability, summary_line
from syntropism.benchmarks.result import ScenarioResult
from syntropism.benchmarks.scenario import SCHEMA_FILE, FinalState, ScenarioError, Validation, scenario_json_schema

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def event(seq: int, event_type: str, agent: str | None = None, **data: Any) -> dict[str, Any]:
    return {
        "event_id": f"e{seq}",
        "timestamp": (T0 + timedelta(seconds=seq)).isoformat(),
        "type": event_type,
        "agent_id": agent,
        "correlation_id": "run",
        "data": data,
    }


STREAM = [
    event(0, "economy.credits_locked", "alice", bid_id="b1", amount="30.000000"),
    event(1, "market.bid_placed", "alice", bid_id="b1", amount="30.000000"),
    event(2, "scheduler.resources_allocated", "alice", bid_id="b1", execution_id="x1", cycle=1),
    event(3, "economy.credits_burned", "alice", bid_id="b1", amount="30.000000", execution_id="x1"),
    event(4, "market.price_discovered", resource="cpu", old_price="1", new_price="27.27", cycle=1),
    event(10, "execution.terminated", "alice", execution_id="x1", reason="completed"),
]
GOOD_SEQUENCE = [
    {"type": "economy.credits_locked", "where": {"agent_id": "alice"}, "as": "lock"},
    {"type": "scheduler.resources_allocated", "where": {"data.bid_id": "$lock.data.bid_id"}, "as": "run"},
    {"type": "economy.credits_burned", "where": {"data.amount": "30"}},
    {"type": "market.price_discovered", "where": {"data.new_price": {">": 27, "<": "$lock.data.amount"}}},
]


def judge(validation: dict[str, Any], events: list[dict[str, Any]] = STREAM) -> list:
    return check_events(Validation.model_validate(validation), events)


def test_a_good_stream_passes_every_kind_of_event_check() -> None:
    results = judge(
        {
            "required_event_sequence": GOOD_SEQUENCE,
            "required_events": [{"type": "execution.terminated", "where": {"data.reason": "completed"}}],
            "forbidden_events": [{"type": "market.bid_rejected"}, {"type": "economy.*", "where": {"agent_id": "bob"}}],
        }
    )
    assert [r.status for r in results] == ["passed"] * 4, results
    assert results[0].event == STREAM[4]  # the event that completed the sequence
    assert "#0 economy.credits_locked → #2" in results[0].reason


def test_wrong_order_fails_naming_the_step() -> None:
    swapped = [GOOD_SEQUENCE[0], GOOD_SEQUENCE[2], GOOD_SEQUENCE[1]]
    [result] = judge({"required_event_sequence": swapped})
    assert result.status == "failed"
    assert result.check == "required_event_sequence (3 steps)[3]"
    assert "step 3 (scheduler.resources_allocated" in result.reason
    assert "after step 2 matched event #3" in result.reason


def test_a_missing_event_fails() -> None:
    [seq, req] = judge(
        {
            "required_event_sequence": [*GOOD_SEQUENCE, {"type": "agent.dormant"}],
            "required_events": [{"type": "execution.terminated", "where": {"data.reason": "memory_exceeded"}}],
        }
    )
    assert seq.status == "failed" and "no agent.dormant event at all" in seq.reason
    assert req.status == "failed" and req.check.startswith("required_events: execution.terminated")
    assert "0 matching event(s), need 1" in req.reason and "reason=completed" in req.reason


def test_a_forbidden_event_present_fails_naming_it() -> None:
    [result] = judge({"forbidden_events": [{"type": "economy.credits_burned", "where": {"agent_id": "alice"}}]})
    assert result.status == "failed"
    assert result.check == 'forbidden_events: economy.credits_burned where agent_id="alice"'
    assert "forbidden event present: economy.credits_burned agent=alice" in result.reason
    assert result.event == STREAM[3]


@pytest.mark.parametrize(
    "where",
    [
        {"data.amount": "31"},
        {"data.amount": {">": 30}},
        {"data.amount": {"in": ["10", "20"]}},
        {"data.execution_id": {"exists": False}},
        {"data.no_such_field": {"exists": True}},
        {"data.bid_id": {"not_equals": "b1"}},
    ],
)
def test_a_wrong_field_value_fails(where: dict[str, Any]) -> None:
    [result] = judge({"required_events": [{"type": "economy.credits_burned", "where": where}]})
    assert result.status == "failed", where


def test_max_gap_bounds_the_time_between_steps() -> None:
    late = [{"type": "economy.credits_burned"}, {"type": "execution.terminated", "max_gap_seconds": 5}]
    [result] = judge({"required_event_sequence": late})
    assert result.status == "failed" and "within 5.0 s" in result.reason
    in_time = [{"type": "economy.credits_burned"}, {"type": "market.price_discovered", "max_gap_seconds": 5}]
    assert judge({"required_event_sequence": in_time})[0].status == "passed"


def test_the_sequence_backtracks_past_a_first_match_that_leads_nowhere() -> None:
    stream = [
        event(0, "market.bid_placed", "a", bid_id="b1"),
        event(1, "market.bid_placed", "a", bid_id="b2"),
        event(2, "economy.credits_burned", "a", bid_id="b2"),
    ]
    steps = [
        {"type": "market.bid_placed", "as": "bid"},
        {"type": "economy.credits_burned", "where": {"data.bid_id": "$bid.data.bid_id"}},
    ]
    assert judge({"required_event_sequence": steps}, stream)[0].status == "passed"


def test_constraints_compare_numbers_exactly() -> None:
    assert satisfies("30.000000", "30") and satisfies("30.000000", 30)
    assert not satisfies("30.000001", "30")
    assert satisfies("0.001", {">=": "0.001", "<": "0.002"})
    assert not satisfies("abc", {">": 1})
    assert satisfies("won", {"in": ["won", "carried"]})


def observed(**agents: dict[str, Any]) -> FinalObservation:
    total = sum((Decimal(a["available"]) + Decimal(a["locked"]) for a in agents.values()), Decimal(0))
    return FinalObservation(agents=agents, prices={"cpu": "27.27"}, total_credits=total)


def test_final_state_checks_pass_and_a_wrong_balance_fails() -> None:
    final = FinalState.model_validate(
        {
            "agents": {"alice": {"available": "70", "locked": "0", "status": "dormant"}},
            "prices": {"cpu": {">": 27}},
            "total_credits": "70",
        }
    )
    good = observed(alice={"status": "dormant", "available": "70.000000", "locked": "0"})
    assert all(r.passed for r in check_final_state(final, good))
    wrong = observed(alice={"status": "dormant", "available": "71", "locked": "0"})
    failed = [r for r in check_final_state(final, wrong) if not r.passed]
    assert [(r.check, r.reason) for r in failed] == [
        ("final_state: alice.available", 'expected "70", got 71'),
        ("final_state: total credits", 'expected "70", got 71'),
    ]
    missing = [r for r in check_final_state(final, observed()) if not r.passed]
    assert missing[0].reason == "no agent alice in the final state"


def test_bad_scenarios_are_refused_naming_the_field() -> None:
    base = {"scenario_id": "x", "name": "x", "domain": "d", "validation": {}}
    with pytest.raises(ScenarioError, match=r"unknown event type 'market\.bid_place'"):
        parse_scenario({**base, "validation": {"required_events": [{"type": "market.bid_place"}]}})
    with pytest.raises(ScenarioError, match="operators must be among"):
        parse_scenario({**base, "validation": {"forbidden_events": [{"type": "agent.*", "where": {"x": {"~": 1}}}]}})
    with pytest.raises(ScenarioError, match=r"refers to \['nope'\] before capturing"):
        parse_scenario(
            {**base, "validation": {"required_event_sequence": [{"type": "agent.died", "where": {"a": "$nope.b"}}]}}
        )
    with pytest.raises(ScenarioError, match=r"steps\.0\.cycles\.count"):
        parse_scenario({**base, "steps": [{"do": "cycles", "count": 0}]})
    with pytest.raises(ScenarioError, match="Extra inputs are not permitted"):
        parse_scenario({**base, "surprise": 1})


def test_the_older_form_is_mapped_and_the_rest_reported() -> None:
    loaded = parse_scenario(
        {
            "scenario_id": "old1",
            "name": "older",
            "domain": "economic_reasoning",
            "initial_state": {"agent_balance": 100, "resource_prices": {"cpu": 1.5, "gpu": 9}, "market_mood": "calm"},
            "validation": {
                "required_events": [{"type": "bid_placed"}, {"type": "price_update"}, {"type": "vibes_checked"}],
                "judge_evaluation": {
                    "criteria": [{"name": "thrift", "description": "spends little"}],
                    "pass_threshold": 0.8,
                },
            },
        }
    )
    scenario = loaded.scenario
    assert scenario.initial_state.agents[0].balance == 100
    assert scenario.initial_state.prices == {"cpu": Decimal("1.5")}
    assert [e.type for e in scenario.validation.required_events] == ["market.bid_placed", "market.price_discovered"]
    assert scenario.validation.judge is not None and scenario.validation.judge.criteria == ["spends little"]
    assert scenario.validation.judge.pass_threshold == 0.8
    assert sorted(loaded.not_evaluated) == [
        "initial price of 'gpu'",
        "initial_state field 'market_mood'",
        "required_events entry 'vibes_checked': no such event in the taxonomy",
    ]


def test_every_shipped_scenario_loads_and_the_schema_file_is_current() -> None:
    paths = shipped_scenarios()
    assert len(paths) >= 11
    for path in paths:
        loaded = load_scenario(path)
        assert loaded.not_evaluated == [], path
        assert path.parent.name == loaded.scenario.domain and path.stem == loaded.scenario.scenario_id
    assert json.loads(SCHEMA_FILE.read_text()) == scenario_json_schema(), "regenerate: syntropism bench --schema"


def test_er001_is_the_full_market_cycle() -> None:
    er001 = load_scenario(Path(shipped_scenarios("economic_reasoning")[0])).scenario
    types = [step.type for step in er001.validation.required_event_sequence]
    for needed in ("economy.credits_locked", "scheduler.resources_allocated", "economy.credits_burned"):
        assert needed in types
    assert types.index("economy.credits_burned") < types.index("market.price_discovered")


# --- verdicts --------------------------------------------------------------------------------------------------


def verdict(*statuses: str, error: str | None = None) -> ScenarioResult:
    result = ScenarioResult("s1", "s1", "tests", None, "run", error=error)
    result.checks = [CheckResult(f"check {i}", status, "why") for i, status in enumerate(statuses)]  # type: ignore[arg-type]
    return result


@pytest.mark.parametrize(
    ("statuses", "status", "passes", "passes_if_partial_allowed"),
    [
        (("passed", "passed"), "passed", True, True),
        (("passed", "failed", "not_evaluated"), "failed", False, False),
        (("not_evaluated", "not_evaluated"), "not_evaluated", False, False),
        ((), "not_evaluated", False, False),
        (("passed", "not_evaluated"), "partial", False, True),
    ],
)
def test_a_scenario_passes_only_if_something_was_evaluated_and_nothing_failed(
    statuses: tuple[str, ...], status: str, passes: bool, passes_if_partial_allowed: bool
) -> None:
    result = verdict(*statuses)
    assert result.status == status
    assert result.passed is passes and result.passes() is passes
    assert result.passes(allow_partial=True) is passes_if_partial_allowed
    assert result.as_json()["checks_evaluated"] == sum(s in ("passed", "failed") for s in statuses)
    assert result.as_json()["checks_not_evaluated"] == statuses.count("not_evaluated")


def test_a_run_that_broke_is_an_error_and_an_unreadable_file_its_own_entry() -> None:
    assert verdict("passed", error="step 1 timed out").status == "error"
    unreadable = ScenarioResult.of_unreadable(
        Path("x/bad.json"), "x/bad.json: validation.judge.criteria: Field required"
    )
    assert unreadable.status == "unreadable" and not unreadable.passes(allow_partial=True)
    assert unreadable.as_json()["error"] == "x/bad.json: validation.judge.criteria: Field required"


def test_the_exit_code_a_failure_then_an_unreadable_file_then_anything_not_evaluated() -> None:
    passed, partial, nothing = verdict("passed"), verdict("passed", "not_evaluated"), verdict("not_evaluated")
    failed, broke = verdict("failed"), verdict("passed", error="broke")
    unreadable = ScenarioResult.of_unreadable(Path("bad.json"), "bad.json: a scenario is a JSON object")
    assert exit_code([passed]) == 0
    assert exit_code([passed, partial]) == 3 and exit_code([passed, partial], allow_partial=True) == 0
    assert exit_code([passed, nothing], allow_partial=True) == 3
    assert exit_code([passed, nothing, unreadable]) == 2
    assert exit_code([failed, unreadable, nothing]) == 1 and exit_code([broke, unreadable]) == 1
    line = summary_line([passed, failed, nothing, partial, unreadable])
    assert line == "1 passed, 1 failed, 1 not evaluated, 1 partial, 1 unreadable; 2 checks not evaluated"


def test_the_judges_answer_gives_each_criterions_score_and_rationale() -> None:
    answer = {"scores": [{"criterion": 2, "score": 0.25, "why": "it overpaid"}, {"criterion": 1, "score": 1}]}
    scores = parse_judgement(f"```json\n{json.dumps(answer)}\n```", 2)
    assert [(s.criterion, s.score, s.rationale) for s in scores] == [(1, 1.0, ""), (2, 0.25, "it overpaid")]
    with pytest.raises(ValueError, match=r"1 scores in 0\.\.1 for 2 criteria"):
        parse_judgement(json.dumps({"scores": [{"score": 1}]}), 2)


def test_pass_hat_k_is_the_chance_that_k_runs_all_pass() -> None:
    def run(scenario: str, passed: bool, seed: int) -> ScenarioResult:
        check = CheckResult("required x", "passed" if passed else "failed", "")
        return ScenarioResult(scenario, scenario, "d", f"{scenario}.json", "r", checks=[check], seed=seed)

    results = [run("a", p, s) for s, p in enumerate([True, True, False, True])]
    results += [run("b", True, s) for s in range(4)]
    assert reliability(results[:1]) is None, "one run of each scenario: nothing to say about reliability"
    report = reliability(results)
    assert report is not None and report["k"] == 4
    assert report["scenarios"]["a"]["pass_at_1"] == 0.75 and report["scenarios"]["a"]["pass_hat_k"] == 0.0
    assert report["scenarios"]["b"]["pass_hat_k"] == 1.0
    assert report["pass_at_1"] == (0.75 + 1) / 2 and report["pass_hat_k"] == 0.5
    # k below the runs: C(3, 2) / C(4, 2) = 3 / 6 of the pairs of a's runs both passed
    uneven = reliability([*results, run("c", True, 0), run("c", False, 1)])
    assert uneven is not None and uneven["k"] == 2 and uneven["scenarios"]["a"]["pass_hat_k"] == 0.5
