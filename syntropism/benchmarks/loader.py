"""Finding and reading scenario files: the shipped ones, and any file in the current or an older form.

An older file is first mapped onto the current format (:mod:`.legacy`); what could not be mapped travels with
the loaded scenario, to be reported as not evaluated.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from syntropism.benchmarks.legacy import upgrade_legacy
from syntropism.benchmarks.scenario import LoadedScenario, Scenario, ScenarioError

DATA_DIR = Path(__file__).with_name("data")


def load_scenario(path: Path) -> LoadedScenario:
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ScenarioError(f"{path}: {exc}") from exc
    return parse_scenario(raw, path)


def parse_scenario(raw: Any, path: Path | None = None) -> LoadedScenario:
    where = path or "<scenario>"
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where}: a scenario is a JSON object")
    raw, not_evaluated = upgrade_legacy(raw)
    try:
        return LoadedScenario(Scenario.model_validate(raw), path, not_evaluated)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors())
        raise ScenarioError(f"{where}: {problems}") from exc


def shipped_scenarios(domain: str | None = None) -> list[Path]:
    """The scenarios that ship with Syntropism, ``data/<domain>/<id>.json``, in id order."""
    folders = [DATA_DIR / domain] if domain else sorted(p for p in DATA_DIR.iterdir() if p.is_dir())
    return sorted((p for folder in folders for p in folder.glob("*.json")), key=lambda p: (p.parent.name, p.name))
