"""The older forms of the user's scenario files, read in full (issue 18): flat dotted-path constraints, 1–5
judge scales, ``threshold``, ``task_id`` and the oldest form (``id``, ``category``, ``validation_criteria``).

Each file is written for the test and loaded from disk; what cannot be mapped must be named, never dropped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from syntropism.benchmarks.checks import check_events
from syntropism.benchmarks.legacy import upgrade_legacy
from syntropism.benchmarks.loader import load_scenario, parse_scenario, shipped_scenarios
from syntropism.benchmarks.scenario import Judge, LoadedScenario, Scenario, ScenarioError

BASE = {"scenario_id": "old", "name": "older", "domain": "economic_reasoning"}


def write(tmp_path: Path, raw: dict[str, Any], name: str = "scenario.json") -> LoadedScenario:
    path = tmp_path / name
    path.write_text(json.dumps(raw))
    return load_scenario(path)


def event(event_type: str, agent_id: str = "alice", timestamp: str = "2026-01-01T00:00:00+00:00", **data: Any):
    return {"type": event_type, "agent_id": agent_id, "timestamp": timestamp, "data": data}


def statuses(loaded: LoadedScenario, events: list[dict[str, Any]]) -> list[str]:
    return [result.status for result in check_events(loaded.scenario.validation, events)]


# --- 1. flat dotted-path constraints ---------------------------------------------------------------------------


def test_a_flat_dotted_constraint_is_kept_and_enforced(tmp_path: Path) -> None:
    loaded = write(
        tmp_path, {**BASE, "validation": {"required_events": [{"type": "bid_placed", "data.amount": "999"}]}}
    )
    assert loaded.not_evaluated == []
    (required,) = loaded.scenario.validation.required_events
    assert required.type == "market.bid_placed" and required.where == {"data.amount": "999"}
    right = [event("market.bid_placed", amount="999.000000", bid_id="b1")]  # numbers compare exactly
    wrong = [event("market.bid_placed", amount="1", bid_id="b1")]
    assert statuses(loaded, right) == ["passed"]
    assert statuses(loaded, wrong) == ["failed"]  # the constraint used to be dropped: any amount passed
    assert statuses(loaded, []) == ["failed"]


def test_flat_constraints_in_forbidden_and_sequence_entries(tmp_path: Path) -> None:
    raw = {
        **BASE,
        "validation": {
            "required_event_sequence": [
                {"type": "bid_placed", "agent_id": "bob", "as": "bid"},
                {"type": "credits_unlocked", "data.bid_id": "$bid.data.bid_id", "reason": "outbid"},
            ],
            "forbidden_events": [{"type": "resources_allocated", "agent_id": "bob", "description": "bob loses"}],
        },
    }
    loaded = write(tmp_path, raw)
    assert loaded.not_evaluated == []
    validation = loaded.scenario.validation
    assert [(s.type, s.where) for s in validation.required_event_sequence] == [
        ("market.bid_placed", {"agent_id": "bob"}),
        ("economy.credits_unlocked", {"data.bid_id": "$bid.data.bid_id", "data.reason": "outbid"}),  # by name
    ]
    assert validation.forbidden_events[0].where == {"agent_id": "bob"}  # the description constrains nothing
    placed = event("market.bid_placed", "bob", bid_id="b1", amount="5")
    outbid = event("economy.credits_unlocked", "bob", bid_id="b1", reason="outbid", amount="5")
    expired = event("economy.credits_unlocked", "bob", bid_id="b1", reason="expired", amount="5")
    other = event("economy.credits_unlocked", "bob", bid_id="b2", reason="outbid", amount="5")
    assert statuses(loaded, [placed, outbid]) == ["passed", "passed"]
    assert statuses(loaded, [placed, expired]) == ["failed", "passed"]
    assert statuses(loaded, [placed, other]) == ["failed", "passed"]
    allocated_alice = event("scheduler.resources_allocated", "alice")
    allocated_bob = event("scheduler.resources_allocated", "bob")
    assert statuses(loaded, [placed, outbid, allocated_alice]) == ["passed", "passed"]
    assert statuses(loaded, [placed, outbid, allocated_bob]) == ["passed", "failed"]


def test_a_flat_key_that_cannot_be_mapped_makes_its_check_not_evaluated(tmp_path: Path) -> None:
    raw = {
        **BASE,
        "validation": {
            "required_event_sequence": [{"type": "bid_placed", "as": "b"}, {"type": "credits_locked", "shade": 1}],
            "required_events": [
                {"type": "bid_placed", "data.amount": {"~": 3}},
                {"type": "credits_burned", "data.bid_id": "$b.data.bid_id"},
                {"type": "bid_placed", "min_count": 2, "agent_id": "bob"},
            ],
            "forbidden_events": [{"type": "bid_placed", "min_count": 2}],
        },
    }
    loaded = write(tmp_path, raw)
    validation = loaded.scenario.validation
    assert validation.required_event_sequence == []  # a sequence missing a step would match too easily
    assert [(r.type, r.where, r.min_count) for r in validation.required_events] == [
        ("market.bid_placed", {"agent_id": "bob"}, 2)
    ]
    assert validation.forbidden_events == []
    assert loaded.not_evaluated == [
        "required_event_sequence economy.credits_locked field 'shade' (neither an event field nor one of its data);"
        " the whole sequence is not evaluated",
        "required_events market.bid_placed constraint data.amount: operators must be among equals, not_equals, <,"
        " <=, >, >=, in, exists; got ['~']",
        "forbidden_events market.bid_placed field 'min_count' (not an option of forbidden_events)",
        "required_events economy.credits_burned: refers to ['b'], which no mapped step captures",
    ]


def test_the_current_form_still_refuses_what_it_always_refused() -> None:
    with pytest.raises(ScenarioError, match="Extra inputs are not permitted"):
        parse_scenario({**BASE, "validation": {"required_events": [{"type": "market.bid_placed", "min_cont": 1}]}})
    with pytest.raises(ScenarioError, match="operators must be among"):
        parse_scenario({**BASE, "validation": {"forbidden_events": [{"type": "agent.*", "where": {"x": {"~": 1}}}]}})


# --- 2. judges on a 1–5 scale, ``threshold`` ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("judge", "pass_threshold", "scale", "on_scale"),
    [
        ({"criteria": ["thrifty"], "pass_threshold": 3.5}, 0.625, "1-5", 3.5),
        ({"criteria": ["thrifty"], "threshold": 3.0}, 0.5, "1-5", 3.0),
        ({"criteria": ["thrifty"], "threshold": "5"}, 1.0, "1-5", 5.0),
        ({"criteria": ["thrifty"], "threshold": 0.9}, 0.9, "0-1", None),  # read, never replaced by 0.7
        ({"criteria": ["thrifty"], "threshold": 1, "scale": "1-5"}, 0.0, "1-5", 1.0),
        ({"criteria": ["thrifty"], "scale": "1–5"}, 0.7, "1-5", 3.8),
        ({"criteria": ["thrifty"]}, 0.7, "0-1", None),
    ],
)
def test_judge_thresholds_load_and_scale(
    tmp_path: Path, judge: dict[str, Any], pass_threshold: float, scale: str, on_scale: float | None
) -> None:
    loaded = write(tmp_path, {**BASE, "validation": {"judge_evaluation": judge}})
    assert loaded.not_evaluated == []
    loaded_judge = loaded.scenario.validation.judge
    assert loaded_judge is not None
    assert loaded_judge.pass_threshold == pytest.approx(pass_threshold)
    assert (loaded_judge.scale, loaded_judge.threshold_on_scale) == (scale, on_scale)


def test_a_1_to_5_judge_under_validation_judge_and_its_label(tmp_path: Path) -> None:
    raw = {**BASE, "validation": {"judge": {"criteria": [{"name": "thrift", "score_1_to_5": "spends little"}]}}}
    raw["validation"]["judge"] |= {"criteria": ["spends little", "lets prices emerge"], "threshold": 3.5}
    judge = write(tmp_path, raw).scenario.validation.judge
    assert judge is not None and judge.criteria == ["spends little", "lets prices emerge"]
    assert judge.threshold_label() == "3.5 on 1-5 (0.625)"
    assert Judge(criteria=["x"]).threshold_label() == "0.7"


def test_a_threshold_on_no_known_scale_is_not_evaluated(tmp_path: Path) -> None:
    raw = {**BASE, "validation": {"judge_evaluation": {"criteria": ["a"], "threshold": 7, "rubric": "x"}}}
    loaded = write(tmp_path, raw)
    assert loaded.scenario.validation.judge is None
    assert loaded.not_evaluated == [
        "judge_evaluation field 'rubric'",
        "judge threshold 7 (judge_evaluation.threshold: on neither the 0-1 nor the 1-5 scale)",
    ]
    both = {"criteria": ["a"], "pass_threshold": 4, "threshold": 3}
    loaded = write(tmp_path, {**BASE, "validation": {"judge_evaluation": both}})
    assert loaded.scenario.validation.judge is not None and loaded.scenario.validation.judge.pass_threshold == 0.75
    assert loaded.not_evaluated == [
        "judge_evaluation.threshold (another threshold than judge_evaluation.pass_threshold)"
    ]


def test_the_current_form_can_state_a_1_to_5_judge_consistently() -> None:
    judge = {"criteria": ["a"], "scale": "1-5", "threshold_on_scale": 3.5, "pass_threshold": 0.625}
    loaded = parse_scenario({**BASE, "validation": {"judge": judge}})
    assert loaded.not_evaluated == [] and loaded.scenario.validation.judge == Judge.model_validate(judge)
    with pytest.raises(ScenarioError, match=r"pass_threshold must be \(threshold_on_scale - 1\) / 4"):
        parse_scenario({**BASE, "validation": {"judge": {**judge, "pass_threshold": 0.9}}})
    with pytest.raises(ScenarioError, match="threshold_on_scale is for the 1-5 scale"):
        parse_scenario({**BASE, "validation": {"judge": {**judge, "scale": "0-1"}}})


# --- 3. ``task_id`` and the oldest form ------------------------------------------------------------------------


def test_task_id_is_the_scenario_id_and_name(tmp_path: Path) -> None:
    loaded = write(tmp_path, {"task_id": "er042", "validation": {"required_events": [{"type": "bid_placed"}]}})
    assert (loaded.scenario.scenario_id, loaded.scenario.name, loaded.scenario.domain) == ("er042", "er042", "legacy")
    assert loaded.not_evaluated == []
    titled = write(tmp_path, {"task_id": "er 43", "title": "Bids in budget", "domain": "economic_reasoning"})
    assert (titled.scenario.scenario_id, titled.scenario.name) == ("er_43", "Bids in budget")
    assert titled.scenario.domain == "economic_reasoning" and titled.not_evaluated == []


def test_the_oldest_form_is_mapped_and_every_unmappable_field_named(tmp_path: Path) -> None:
    raw = {
        "id": 7,
        "category": "Economic Reasoning",
        "description": "the agent keeps within its means",
        "difficulty": "easy",
        "expected_outcome": "no overdraft",
        "initial_state": {"agent_balance": 40, "resource_prices": {"cpu": 2, "gpu": 3}, "weather": "fine"},
        "steps": ["the agent bids", {"do": "cycles", "count": 1}],
        "validation_criteria": [
            "the agent never bids more than it has",
            {"name": "thrift", "description": "it bids little", "weight": 2},
            {"type": "bid_placed", "data.amount": "4"},
            {"points": 3},
        ],
    }
    loaded = write(tmp_path, raw)
    scenario = loaded.scenario
    assert (scenario.scenario_id, scenario.name, scenario.domain) == ("7", "7", "economic_reasoning")
    assert scenario.description == "the agent keeps within its means"
    assert scenario.initial_state.agents[0].balance == 40 and list(scenario.initial_state.prices) == ["cpu"]
    assert [step.do for step in scenario.steps] == ["cycles"]
    assert scenario.validation.judge is not None
    assert scenario.validation.judge.criteria == ["the agent never bids more than it has", "it bids little"]
    assert scenario.validation.judge.pass_threshold == 0.7
    assert [(r.type, r.where) for r in scenario.validation.required_events] == [
        ("market.bid_placed", {"data.amount": "4"})
    ]
    assert statuses(loaded, [event("market.bid_placed", amount="4")]) == ["passed"]
    assert statuses(loaded, [event("market.bid_placed", amount="40")]) == ["failed"]
    assert loaded.not_evaluated == [
        "top-level field 'difficulty'",
        "top-level field 'expected_outcome'",
        "step 1 ('the agent bids') cannot be done: <value>: Input should be a valid dictionary or object to"
        " extract fields from",
        "initial price of 'gpu'",
        "initial_state field 'weather'",
        "validation_criteria[3] (neither a criterion nor an event)",
        "validation_criteria criterion 'thrift' field 'weight'",
    ]


def test_the_oldest_form_with_a_block_of_criteria(tmp_path: Path) -> None:
    raw = {
        "id": "rl9",
        "category": "resource_limits",
        "validation_criteria": {
            "criteria": ["stays in its envelope"],
            "threshold": 4,
            "no_overdraft": "never bids past its balance",
            "forbidden_events": [{"type": "terminated", "data.reason": "memory_exceeded"}],
            "scoring": {"max": 5},
        },
        "validation": {"final_state": {"total_credits": "bogus", "agents": "nobody"}},
        "initial_state": "two agents",
    }
    loaded = write(tmp_path, raw)
    validation = loaded.scenario.validation
    assert validation.judge is not None
    assert validation.judge.criteria == ["stays in its envelope", "never bids past its balance"]
    assert (validation.judge.pass_threshold, validation.judge.scale) == (0.75, "1-5")
    assert [(f.type, f.where) for f in validation.forbidden_events] == [
        ("execution.terminated", {"data.reason": "memory_exceeded"})
    ]
    assert validation.final_state is None
    assert loaded.not_evaluated == [
        "top-level field 'initial_state' (not an object)",
        "validation_criteria field 'scoring'",
        "validation field 'final_state': agents: Input should be a valid dictionary",
    ]


@pytest.mark.parametrize(
    "raw",
    [
        {"id": "x"},
        {"id": "x", "validation_criteria": 3},
        {"id": "x", "validation_criteria": None, "validation": "none", "steps": "bid"},
        {"task_id": "", "category": "!!!", "validation": {"required_events": ["bid_placed", 3, {"type": None}]}},
        {"task_id": "x", "validation": {"judge_evaluation": "be good", "judge": {"criteria": [{"weight": 1}]}}},
        {"task_id": "x", "initial_state": {"agents": [{"agent_id": "a:b"}, "bob"], "resource_prices": [1]}},
    ],
)
def test_odd_older_files_load_and_name_what_they_lose(tmp_path: Path, raw: dict[str, Any]) -> None:
    loaded = write(tmp_path, raw)
    assert loaded.scenario.scenario_id
    assert loaded.not_evaluated or raw == {"id": "x"}


def test_every_shipped_scenario_loads_unchanged() -> None:
    for path in shipped_scenarios():
        raw = json.loads(path.read_text())
        assert upgrade_legacy(raw) == (raw, []), path  # the current form: no mapping at all
        loaded = load_scenario(path)
        assert loaded.not_evaluated == [] and loaded.scenario == Scenario.model_validate(raw), path


def test_one_subject_with_a_default_program_per_scenario() -> None:
    def with_agents(*agents: dict[str, Any]) -> dict[str, Any]:
        return {**BASE, "initial_state": {"agents": list(agents)}, "validation": {}}

    loaded = parse_scenario(with_agents({"agent_id": "a", "program": "agents/conservative", "subject": True}))
    subject = loaded.scenario.initial_state.subject
    assert subject is not None and (subject.agent_id, subject.program) == ("a", "agents/conservative")
    assert parse_scenario(with_agents({"agent_id": "a", "actions": []})).scenario.initial_state.subject is None
    with pytest.raises(ScenarioError, match="only one agent may be the subject; marked: \\['a', 'b'\\]"):
        parse_scenario(
            with_agents(
                {"agent_id": "a", "program": "agents/conservative", "subject": True},
                {"agent_id": "b", "program": "agents/poet", "subject": True},
            )
        )
    with pytest.raises(ScenarioError, match="the subject needs a program"):
        parse_scenario(with_agents({"agent_id": "a", "actions": [], "subject": True}))
