"""``syntropism bench`` as a user runs it: exit codes, the summary, the JSON and JUnit reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest

from syntropism.benchmarks import shipped_scenarios

pytestmark = pytest.mark.timeout(180)
ER001 = shipped_scenarios("economic_reasoning")[0]


def bench(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNTROPISM_")} | {"COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "syntropism", "bench", *args],
        capture_output=True,
        text=True,
        timeout=170,
        env=env,
        cwd=cwd,
    )


def test_a_passing_scenario_exits_0_and_writes_both_reports(tmp_path: Path) -> None:
    result = bench(str(ER001), "--json", "out.json", "--junit", "out.xml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 0 failed" in result.stdout
    assert "runtime ready" not in result.stderr, "a system's routine logs stay out of the way without --verbose"
    report = json.loads((tmp_path / "out.json").read_text())
    assert report["passed"] == 1 and report["results"][0]["status"] == "passed"
    assert all(check["event_id"] for check in report["results"][0]["checks"] if check["check"].startswith("required"))
    suite = ElementTree.parse(tmp_path / "out.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("name") == "economic_reasoning.er001"
    assert (suite.get("failures"), suite.get("errors")) == ("0", "0") and int(suite.get("tests", 0)) >= 10


def test_a_failing_scenario_exits_1_and_names_the_check(tmp_path: Path) -> None:
    raw = json.loads(ER001.read_text())
    raw["validation"]["final_state"]["agents"]["alice"]["available"] = "71"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(raw))
    result = bench(str(broken), "--junit", "out.xml", "--verbose", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "0 passed, 1 failed" in result.stdout
    assert "runtime ready" in result.stderr, "--verbose shows the system's logs"
    assert 'er001 failed final_state: alice.available: expected "71", got 70' in result.stdout
    failure = ElementTree.parse(tmp_path / "out.xml").getroot().find("testsuite/testcase/failure")
    assert failure is not None and failure.get("message") == 'expected "71", got 70'


def test_an_invalid_scenario_file_is_refused_with_the_reason(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"scenario_id": "bad", "name": "b", "domain": "d", "validation": {"judge": {}}}))
    result = bench(str(bad), cwd=tmp_path)
    assert result.returncode == 2
    assert "validation.judge.criteria: Field required" in result.stdout + result.stderr


def test_domain_selects_the_shipped_scenarios_of_one_domain(tmp_path: Path) -> None:
    result = bench("--domain", "resource_limits", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rl001" in result.stdout and "rl002" in result.stdout and "er001" not in result.stdout
    assert "2 passed, 0 failed" in result.stdout


def scenario_file(folder: Path, scenario_id: str, validation: dict, steps: list | None = None) -> Path:
    """A scenario in the current format, with no agents: the market clears, nothing else happens."""
    path = folder / f"{scenario_id}.json"
    scenario = {"scenario_id": scenario_id, "name": f"{scenario_id} scenario", "domain": "tests"}
    path.write_text(json.dumps({**scenario, "steps": steps or [], "validation": validation}))
    return path


JUDGE_ONLY = {"judge": {"criteria": ["the market stayed calm"]}}  # not evaluated: no model is configured
CYCLE_SEEN = {"required_events": [{"type": "scheduler.cycle_completed"}]}
ONE_CYCLE = [{"do": "cycles", "count": 1}]


def test_a_scenario_with_nothing_evaluated_is_not_passed_and_exits_3(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, "ne1", JUDGE_ONLY)
    result = bench(str(path), "--json", "out.json", "--junit", "out.xml", "--allow-partial", cwd=tmp_path)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "0 passed, 0 failed, 1 not evaluated, 0 partial; 1 checks not evaluated" in result.stdout
    assert "NOT EVALUATED" in result.stdout
    report = json.loads((tmp_path / "out.json").read_text())
    assert (report["passed"], report["not_evaluated"], report["counted_as_passed"], report["exit_code"]) == (0, 1, 0, 3)
    [entry] = report["results"]
    assert entry["status"] == "not_evaluated" and not entry["counted_as_passed"]
    assert (entry["checks_evaluated"], entry["checks_not_evaluated"]) == (0, 1)
    suite = ElementTree.parse(tmp_path / "out.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("skipped") == "2" and suite.get("failures") == "0"
    verdict = suite.find("testcase[@name='verdict']/skipped")
    assert verdict is not None, ElementTree.tostring(suite)
    message = verdict.get("message", "")
    assert message.startswith("not evaluated: judge (1 criteria") and "no model configured" in message


def test_a_partial_scenario_passes_only_with_allow_partial(tmp_path: Path) -> None:
    path = scenario_file(tmp_path, "pa1", {**CYCLE_SEEN, **JUDGE_ONLY}, ONE_CYCLE)
    strict = bench(str(path), "--json", "strict.json", "--junit", "strict.xml", cwd=tmp_path)
    assert strict.returncode == 3, strict.stdout + strict.stderr
    assert "0 passed, 0 failed, 0 not evaluated, 1 partial; 1 checks not evaluated" in strict.stdout
    entry = json.loads((tmp_path / "strict.json").read_text())["results"][0]
    assert (entry["status"], entry["counted_as_passed"]) == ("partial", False)
    assert (entry["checks_evaluated"], entry["checks_not_evaluated"]) == (1, 1)
    verdict = ElementTree.parse(tmp_path / "strict.xml").getroot().find("testsuite/testcase[@name='verdict']/skipped")
    assert verdict is not None and verdict.get("message", "").startswith("partial")

    allowed = bench(str(path), "--allow-partial", "--json", "allowed.json", "--junit", "allowed.xml", cwd=tmp_path)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "1 partial (counted as passed); 1 checks not evaluated" in allowed.stdout
    report = json.loads((tmp_path / "allowed.json").read_text())
    assert (report["counted_as_passed"], report["checks_not_evaluated"], report["exit_code"]) == (1, 1, 0)
    assert report["results"][0]["status"] == "partial" and report["results"][0]["counted_as_passed"]
    suite = ElementTree.parse(tmp_path / "allowed.xml").getroot().find("testsuite")
    assert suite is not None and suite.find("testcase[@name='verdict']") is None and suite.get("skipped") == "1"


def test_a_folder_with_a_broken_file_runs_the_rest_and_reports_it(tmp_path: Path) -> None:
    folder = tmp_path / "scenarios"
    folder.mkdir()
    scenario_file(folder, "a_good", CYCLE_SEEN, ONE_CYCLE)
    broken = scenario_file(folder, "b_broken", {"judge": {}})
    (folder / "c_garbage.json").write_text("{ not json")
    scenario_file(folder, "d_good", CYCLE_SEEN, ONE_CYCLE)
    result = bench(
        str(folder), str(tmp_path / "nowhere.json"), "--json", "out.json", "--junit", "out.xml", cwd=tmp_path
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "2 passed, 0 failed, 0 not evaluated, 0 partial, 3 unreadable" in result.stdout
    assert f"{broken}: unreadable, not run: {broken}: validation.judge.criteria: Field required" in result.stdout
    report = json.loads((tmp_path / "out.json").read_text())
    statuses = {Path(r["path"]).name: r["status"] for r in report["results"]}
    assert statuses == {
        "nowhere.json": "unreadable",
        "a_good.json": "passed",
        "b_broken.json": "unreadable",
        "c_garbage.json": "unreadable",
        "d_good.json": "passed",
    }
    bad = next(r for r in report["results"] if r["path"] == str(broken))
    assert bad["error"] == f"{broken}: validation.judge.criteria: Field required"
    suites = {s.get("name"): s for s in ElementTree.parse(tmp_path / "out.xml").getroot().iter("testsuite")}
    error = suites[str(broken)].find("testcase[@name='load']/error")
    assert error is not None and "validation.judge.criteria: Field required" in error.get("message", "")
    assert suites["tests.a_good"].get("errors") == "0"


SEED_PROGRAM = """import os
from syntropism.sdk import SystemService

with SystemService() as service:
    service.send(service.agent_id, f"seed {os.environ.get('SYNTROPISM_SEED')}")
"""
SEEDED_SCENARIO = {
    "scenario_id": "seeded",
    "name": "The run's seed reaches the agent",
    "domain": "test",
    "description": "passes only when the agent was given seed 7",
    "initial_state": {"agents": [{"agent_id": "seeded", "balance": "10", "program": "seed.py"}]},
    "steps": [
        {
            "do": "bid",
            "agent": "seeded",
            "bundle": {"cpu_percent": "0.5", "memory_percent": "0.05", "duration_seconds": 5},
            "amount": "1",
        },
        {"do": "cycles", "count": 1},
    ],
    "validation": {"required_events": [{"type": "social.message_sent", "where": {"data.body": "seed 7"}}]},
}


def test_repeats_run_with_successive_seeds_and_report_pass_at_1_and_pass_hat_k(tmp_path: Path) -> None:
    (tmp_path / "seed.py").write_text(SEED_PROGRAM)
    (tmp_path / "seeded.json").write_text(json.dumps(SEEDED_SCENARIO))
    result = bench(
        "seeded.json", "--repeat", "2", "--seed", "7", "--json", "out.json", "--junit", "out.xml", cwd=tmp_path
    )
    assert result.returncode == 1, result.stdout + result.stderr  # the run with seed 8 fails
    assert "pass@1 0.50, pass^2 0.00" in result.stdout, result.stdout
    report = json.loads((tmp_path / "out.json").read_text())
    assert [(r["seed"], r["attempt"], r["status"]) for r in report["results"]] == [(7, 1, "passed"), (8, 2, "failed")]
    assert report["reliability"]["k"] == 2
    assert report["reliability"]["scenarios"]["seeded"] == {
        "runs": 2, "passed": 1, "seeds": [7, 8], "pass_at_1": 0.5, "pass_hat_k": 0.0,
    }  # fmt: skip
    suites = [s.get("name") for s in ElementTree.parse(tmp_path / "out.xml").getroot().iter("testsuite")]
    assert suites == ["test.seeded#seed7", "test.seeded#seed8"]


def test_agent_runs_the_agent_under_test_as_each_scenarios_subject(tmp_path: Path) -> None:
    [ab001] = [p for p in shipped_scenarios("agent_benchmark") if p.stem == "ab001"]
    er008 = shipped_scenarios("economic_reasoning")[-1]
    result = bench("--agent", "agents/curl_bidder", str(ab001), str(er008), "--json", "out.json", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 passed, 1 failed" in result.stdout
    assert (
        'ab001 failed forbidden_events: market.bid_rejected where agent_id="trader", '
        'data.reason="insufficient_funds": forbidden event present: market.bid_rejected agent=trader '
        "(reason=insufficient_funds, amount=0.500000)"
    ) in result.stdout
    program = str((Path(__file__).parents[2] / "agents" / "curl_bidder").resolve())
    assert f"er008: the scenario has no subject slot: the agent under test ({program}) was not used" in result.stdout
    subjects = {r["scenario_id"]: r["subject"] for r in json.loads((tmp_path / "out.json").read_text())["results"]}
    assert subjects["ab001"] == {"agent_id": "trader", "program": program, "agent_under_test": True}
    assert subjects["er008"]["agent_under_test"] is False and subjects["er008"]["program"] is None

    missing = bench("--agent", "no/such/agent", str(er008), cwd=tmp_path)
    assert missing.returncode == 2 and "--agent no/such/agent: no such file or folder" in missing.stderr
