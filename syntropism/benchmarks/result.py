"""What a scenario's run comes to: its checks, the steps it took, the events it saw, and its verdict.

Plain records, built by the runner and read by the command line and the report writers; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from syntropism.benchmarks.checks import CheckResult, EventJson

# A scenario's verdict. ``passed``: at least one check evaluated, none failed. ``partial``: none failed, some not
# evaluated (passed only with ``allow_partial``). ``not_evaluated``: no check evaluated at all. ``failed``: a check
# failed. ``error``: the run itself broke. ``unreadable``: the scenario file could not be loaded, nothing ran.
Verdict = Literal["passed", "failed", "partial", "not_evaluated", "error", "unreadable"]
STATUSES: tuple[Verdict, ...] = get_args(Verdict)


@dataclass(frozen=True)
class StepLog:
    index: int
    step: str
    outcome: str


@dataclass
class ScenarioResult:
    scenario_id: str
    name: str
    domain: str
    path: str | None
    run_id: str
    checks: list[CheckResult] = field(default_factory=list)
    steps: list[StepLog] = field(default_factory=list)
    events: list[EventJson] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None  # the run itself broke (not a check): set up, a step, the runtime
    unreadable: bool = False  # the file could not be loaded (``error`` says which field and why); nothing ran
    seed: int | None = None  # the run's SYNTROPISM_SEED, when seeded (``--seed``, ``--repeat``)
    attempt: int = 1  # which of the scenario's repeated runs this is
    subject: dict[str, Any] | None = None  # the agent under test: its id, the program run, and whence it came

    @classmethod
    def of_unreadable(cls, path: Path, reason: str) -> ScenarioResult:
        """An errored entry for a scenario file that could not be read or is not a valid scenario."""
        return cls(path.stem, "(unreadable)", "unreadable", str(path), "", error=reason, unreadable=True)

    @property
    def evaluated(self) -> int:
        """Checks that were judged (passed or failed)."""
        return self.count("passed") + self.count("failed")

    @property
    def status(self) -> Verdict:
        if self.unreadable:
            return "unreadable"
        if self.error:
            return "error"
        if self.count("failed"):
            return "failed"
        if not self.evaluated:
            return "not_evaluated"
        return "partial" if self.count("not_evaluated") else "passed"

    @property
    def passed(self) -> bool:
        """Passed outright: something was evaluated, nothing failed, nothing left unevaluated."""
        return self.status == "passed"

    def passes(self, allow_partial: bool = False) -> bool:
        """Counts as passed: ``passed``, or ``partial`` when partial verdicts are allowed."""
        return self.status == "passed" or (allow_partial and self.status == "partial")

    def unjudged(self, allow_partial: bool = False) -> bool:
        """Nothing failed, yet it does not count as passed because something was not evaluated."""
        return self.status == "not_evaluated" or (not allow_partial and self.status == "partial")

    @property
    def execution_seconds(self) -> float:
        """How long the run's agents ran, by the stream: the sum of wall_seconds over execution.terminated."""
        total: float = sum(e["data"]["wall_seconds"] for e in self.events if e["type"] == "execution.terminated")
        return total

    def count(self, status: str) -> int:
        return sum(check.status == status for check in self.checks)

    def not_evaluated_reasons(self) -> list[str]:
        if not self.checks:
            return ["the scenario has no checks"]
        return [f"{c.check}: {c.reason}" for c in self.checks if c.status == "not_evaluated"]

    def as_json(self, allow_partial: bool = False) -> dict[str, Any]:
        return {
            "scenario_id": self.scenario_id,
            "name": self.name,
            "domain": self.domain,
            "path": self.path,
            "run_id": self.run_id,
            "seed": self.seed,
            "attempt": self.attempt,
            "subject": self.subject,
            "status": self.status,
            "counted_as_passed": self.passes(allow_partial),
            "error": self.error,
            "seconds": round(self.seconds, 3),
            "events": len(self.events),
            "execution_seconds": round(self.execution_seconds, 3),
            "checks_evaluated": self.evaluated,
            "checks_not_evaluated": self.count("not_evaluated"),
            "checks": [
                {
                    "check": c.check,
                    "status": c.status,
                    "reason": c.reason,
                    "event_id": (c.event or {}).get("event_id"),
                    **({"details": c.details} if c.details is not None else {}),
                }
                for c in self.checks
            ],
            "steps": [{"index": s.index, "step": s.step, "outcome": s.outcome} for s in self.steps],
        }
