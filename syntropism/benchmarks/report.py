"""Benchmark results as files for other tools: one JSON document, or JUnit XML for CI dashboards."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from xml.etree import ElementTree

from syntropism.benchmarks.runner import ScenarioResult


def write_json(results: Sequence[ScenarioResult], path: Path) -> None:
    summary = {
        "scenarios": len(results),
        "passed": sum(r.passed for r in results),
        "failed": sum(not r.passed for r in results),
        "results": [r.as_json() for r in results],
    }
    path.write_text(json.dumps(summary, indent=2) + "\n")


def write_junit(results: Sequence[ScenarioResult], path: Path) -> None:
    """One test suite per scenario, one test case per check; a run that broke is an error of its suite."""
    root = ElementTree.Element("testsuites", name="syntropism bench")
    for result in results:
        suite = ElementTree.SubElement(
            root,
            "testsuite",
            name=f"{result.domain}.{result.scenario_id}",
            tests=str(len(result.checks) + (1 if result.error else 0)),
            failures=str(result.count("failed")),
            errors=str(1 if result.error else 0),
            skipped=str(result.count("not_evaluated")),
            time=f"{result.seconds:.3f}",
        )
        if result.error:
            case = ElementTree.SubElement(suite, "testcase", classname=suite.get("name", ""), name="run")
            ElementTree.SubElement(case, "error", message=result.error)
        for check in result.checks:
            case = ElementTree.SubElement(suite, "testcase", classname=suite.get("name", ""), name=check.check)
            if check.status == "failed":
                ElementTree.SubElement(case, "failure", message=check.reason)
            elif check.status == "not_evaluated":
                ElementTree.SubElement(case, "skipped", message=check.reason)
    ElementTree.indent(root)
    ElementTree.ElementTree(root).write(path, encoding="unicode", xml_declaration=True)
