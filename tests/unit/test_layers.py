"""The layers hold (CONTRIBUTING.md), and the check that says so would notice if they did not.

``lint-imports`` reads the contracts in pyproject.toml. A check that passes is only worth something if it can fail,
so a copy of the package gets deliberate violations and the same contracts must name each one, at the line it was
put — which also proves the copy, not the installed tree, was analysed. The wire words of the API's status fields
and the refusal vocabulary are pinned here too: they are the other half of what the layers share.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import get_args

import pytest
from pydantic import BaseModel

from syntropism.domain.errors import STATUS_OF_REASON, Reason, Refused
from syntropism.domain.status import AgentStatus, PromptStatus
from syntropism.schemas import AgentOut, PromptOut

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` over the ``syntropism`` package found first from ``cwd``, with ``cwd``'s pyproject.toml."""
    if not LINT_IMPORTS.exists():
        pytest.fail(f"{LINT_IMPORTS} is missing: install the dev extra (make test-fast does)")
    env = {**os.environ, "PYTHONPATH": str(cwd)}  # ahead of the editable install's path to the real tree
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", str(cwd / "pyproject.toml")],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_tree_keeps_every_layer_contract() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


@dataclass(frozen=True)
class Violation:
    module: str  # dotted, in the copy
    line: str  # appended to that module
    contract: str  # the start of the contract's name in pyproject.toml
    imported: str  # what the report says it imports

    @property
    def path(self) -> str:
        return self.module.replace(".", "/") + ".py"


VIOLATIONS = (
    Violation("syntropism.domain.economy", "import sqlalchemy", "domain:", "sqlalchemy"),
    Violation("syntropism.infra.ledger", "from syntropism.core import market", "infra:", "syntropism.core"),
    Violation("syntropism.core.market", "from syntropism.api import app", "core:", "syntropism.api"),
)


@dataclass(frozen=True)
class Reports:
    before: str
    after: str
    after_returncode: int
    lines: dict[str, int]  # module → the line number of its injected import


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Reports:
    """The contracts' report on a pristine copy of the package, then on the copy with every violation added."""
    copy = tmp_path_factory.mktemp("layers")
    shutil.copytree(ROOT / "syntropism", copy / "syntropism", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    before = lint_imports(copy)
    lines = {}
    for violation in VIOLATIONS:
        module = copy / violation.path
        source = module.read_text()
        module.write_text(f"{source.rstrip()}\n{violation.line}  # a deliberate layer violation\n")
        lines[violation.module] = source.rstrip().count("\n") + 2
    after = lint_imports(copy)
    return Reports(before.stdout + before.stderr, after.stdout + after.stderr, after.returncode, lines)


def _edge(violation: Violation, line: int | None = None) -> re.Pattern[str]:
    """``module -> imported… (l.N, …)`` as lint-imports lists a direct import; any line unless ``line`` given."""
    at = rf"(?:l\.\d+, )*l\.{line}\b" if line is not None else r"l\."
    return re.compile(rf"{re.escape(violation.module)} -> {re.escape(violation.imported)}[\w.]* \({at}")


@pytest.mark.parametrize("violation", VIOLATIONS, ids=lambda v: f"{v.module}->{v.imported}")
def test_a_violation_is_caught_and_named(reports: Reports, violation: Violation) -> None:
    assert not _edge(violation).search(reports.before), f"the pristine copy already imports it:\n{reports.before}"
    assert reports.after_returncode != 0, reports.after
    assert re.search(rf"^{re.escape(violation.contract)}.* BROKEN$", reports.after, re.MULTILINE), reports.after
    assert _edge(violation, reports.lines[violation.module]).search(reports.after), reports.after


# --- the vocabulary the layers share ---------------------------------------------------------------------------


def test_every_reason_has_an_http_status() -> None:
    assert set(STATUS_OF_REASON) == set(Reason)
    for reason in Reason:
        assert 400 <= reason.status <= 599, reason
        assert reason == reason.value  # a StrEnum: equal to its wire code


def test_a_refusal_takes_only_a_reason() -> None:
    refused = Refused(Reason.INSUFFICIENT_FUNDS, "holds 1, needs 2")
    assert (refused.reason, refused.reason.status, str(refused)) == (Reason.INSUFFICIENT_FUNDS, 402, "holds 1, needs 2")
    assert Refused("not_found", "a known code as a string is still that Reason").reason is Reason.NOT_FOUND  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no_such_reason"):
        Refused("no_such_reason", "a mistyped code fails at the raise, not as a silent 422")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("schema", "enum"), [(PromptOut, PromptStatus), (AgentOut, AgentStatus)], ids=["prompt", "agent"]
)
def test_the_wire_status_words_are_the_status_enums(schema: type[BaseModel], enum: type[StrEnum]) -> None:
    """The API spells a status as a literal (its OpenAPI lists the words); they are the database's, the enum's."""
    assert set(get_args(schema.model_fields["status"].annotation)) == {member.value for member in enum}
