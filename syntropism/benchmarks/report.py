"""Benchmark results as files for other tools: one JSON document, or JUnit XML for CI dashboards; and the exit
code that sums them up."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from syntropism.benchmarks.result import STATUSES, ScenarioResult

# `syntropism bench` exit codes, most serious first: a failure (a check failed, or a run broke) wins over an
# unreadable scenario file, which wins over something left unevaluated.
EXIT_PASSED = 0
EXIT_FAILED = 1
EXIT_UNREADABLE = 2
EXIT_NOT_EVALUATED = 3


def exit_code(results: Sequence[ScenarioResult], allow_partial: bool = False) -> int:
    """1 if a scenario failed or its run broke; else 2 if a scenario file was unreadable; else 3 if something
    was not evaluated (a ``not_evaluated`` scenario, or a ``partial`` one without ``allow_partial``); else 0."""
    if any(r.status in ("failed", "error") for r in results):
        return EXIT_FAILED
    if any(r.unreadable for r in results):
        return EXIT_UNREADABLE
    if any(r.unjudged(allow_partial) for r in results):
        return EXIT_NOT_EVALUATED
    return EXIT_PASSED


def summary(results: Sequence[ScenarioResult], allow_partial: bool = False) -> dict[str, Any]:
    """How many scenarios had each status, how many count as passed, how many checks were not evaluated."""
    counts: dict[str, int] = {status: sum(r.status == status for r in results) for status in STATUSES}
    return {
        "scenarios": len(results),
        "allow_partial": allow_partial,
        "counted_as_passed": sum(r.passes(allow_partial) for r in results),
        **counts,
        "checks_evaluated": sum(r.evaluated for r in results),
        "checks_not_evaluated": sum(r.count("not_evaluated") for r in results),
        "exit_code": exit_code(results, allow_partial),
    }


def reliability(results: Sequence[ScenarioResult], allow_partial: bool = False) -> dict[str, Any] | None:
    """pass@1 and pass^k (τ-bench's reliability) of repeated (seeded) runs; None when no scenario ran more than
    once.

    Per scenario with ``n`` runs of which ``c`` passed: pass@1 = c / n, and pass^k = C(c, k) / C(n, k) — the chance
    that ``k`` runs drawn from its ``n`` all pass — with ``k`` the fewest runs any scenario had (every one, when
    all ran ``--repeat k`` times). The totals are the means over scenarios."""
    runs: dict[str, list[ScenarioResult]] = {}
    for result in results:
        if result.seed is not None and not result.unreadable:  # repeated runs are seeded runs
            runs.setdefault(result.path or result.scenario_id, []).append(result)
    if not runs or all(len(group) == 1 for group in runs.values()):
        return None
    k = min(len(group) for group in runs.values())
    scenarios: dict[str, dict[str, Any]] = {}
    for group in runs.values():
        n, c = len(group), sum(r.passes(allow_partial) for r in group)
        scenarios[group[0].scenario_id] = {
            "runs": n,
            "passed": c,
            "seeds": [r.seed for r in group],
            "pass_at_1": c / n,
            "pass_hat_k": math.comb(c, k) / math.comb(n, k),
        }
    return {
        "k": k,
        "pass_at_1": sum(s["pass_at_1"] for s in scenarios.values()) / len(scenarios),
        "pass_hat_k": sum(s["pass_hat_k"] for s in scenarios.values()) / len(scenarios),
        "scenarios": scenarios,
    }


def summary_line(results: Sequence[ScenarioResult], allow_partial: bool = False) -> str:
    """E.g. ``9 passed, 1 failed, 1 not evaluated, 0 partial; 3 checks not evaluated``."""
    s = summary(results, allow_partial)
    partial = f"{s['partial']} partial" + (" (counted as passed)" if allow_partial and s["partial"] else "")
    line = f"{s['passed']} passed, {s['failed']} failed, {s['not_evaluated']} not evaluated, {partial}"
    line += "".join(f", {s[k]} {k}" for k in ("error", "unreadable") if s[k])
    line = f"{line}; {s['checks_not_evaluated']} checks not evaluated"
    repeated = reliability(results, allow_partial)
    if repeated is not None:
        line += f"; pass@1 {repeated['pass_at_1']:.2f}, pass^{repeated['k']} {repeated['pass_hat_k']:.2f}"
    return line


def write_json(results: Sequence[ScenarioResult], path: Path, allow_partial: bool = False) -> None:
    document = {
        **summary(results, allow_partial),
        "reliability": reliability(results, allow_partial),
        "results": [r.as_json(allow_partial) for r in results],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


def write_junit(results: Sequence[ScenarioResult], path: Path, allow_partial: bool = False) -> None:
    """One test suite per scenario, one test case per check. A run that broke, or a file that could not be
    read, is an error of its suite; a scenario with nothing evaluated (and a partial one, unless partial
    verdicts are allowed) has a ``verdict`` test case, skipped, whose message gives the reasons."""
    root = ElementTree.Element("testsuites", name="syntropism bench")
    for result in results:
        verdict_skipped = result.unjudged(allow_partial)
        name = result.path or result.scenario_id if result.unreadable else f"{result.domain}.{result.scenario_id}"
        if result.seed is not None:
            name += f"#seed{result.seed}"  # each repeated run its own suite
        suite = ElementTree.SubElement(
            root,
            "testsuite",
            name=name,
            tests=str(len(result.checks) + (1 if result.error else 0) + (1 if verdict_skipped else 0)),
            failures=str(result.count("failed")),
            errors=str(1 if result.error else 0),
            skipped=str(result.count("not_evaluated") + (1 if verdict_skipped else 0)),
            time=f"{result.seconds:.3f}",
        )
        if result.error:
            case = ElementTree.SubElement(
                suite, "testcase", classname=name, name="load" if result.unreadable else "run"
            )
            ElementTree.SubElement(case, "error", message=result.error)
        if verdict_skipped:
            case = ElementTree.SubElement(suite, "testcase", classname=name, name="verdict")
            reasons = "; ".join(result.not_evaluated_reasons())
            status = (
                "not evaluated" if result.status == "not_evaluated" else "partial (not passed without --allow-partial)"
            )
            ElementTree.SubElement(case, "skipped", message=f"{status}: {reasons}")
        for check in result.checks:
            case = ElementTree.SubElement(suite, "testcase", classname=name, name=check.check)
            if check.status == "failed":
                ElementTree.SubElement(case, "failure", message=check.reason)
            elif check.status == "not_evaluated":
                ElementTree.SubElement(case, "skipped", message=check.reason)
    ElementTree.indent(root)
    ElementTree.ElementTree(root).write(path, encoding="unicode", xml_declaration=True)
