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
