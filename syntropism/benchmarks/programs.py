"""The programs a scenario's agents run: a scripted agent's actions, a program file or folder, or the agent
under test put in the subject's place."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from syntropism.benchmarks.errors import StepFailed
from syntropism.benchmarks.scenario import AgentSpec, LoadedScenario

SCRIPTED_AGENT = Path(__file__).with_name("scripted_agent.py")
REPOSITORY = Path(__file__).resolve().parents[2]


def program_files(spec: AgentSpec, scenario_path: Path | None) -> tuple[dict[str, str], str]:
    """The files an agent is created with, and its entry point."""
    if spec.program is None:
        actions = [action.model_dump(mode="json") for action in spec.actions or []]
        return {"main.py": SCRIPTED_AGENT.read_text(), "script.json": json.dumps({"actions": actions})}, "main.py"
    bases = [scenario_path.parent] if scenario_path else []
    candidates = [base / spec.program for base in [*bases, Path.cwd(), REPOSITORY]]
    source = next((c for c in candidates if c.exists()), None)
    if source is None:
        raise StepFailed(f"agent {spec.agent_id}: program {spec.program} not found (looked in {candidates})")
    paths = [source] if source.is_file() else [p for p in sorted(source.rglob("*")) if p.is_file()]
    try:
        files = {
            (path.name if path == source else str(path.relative_to(source))): path.read_text()
            for path in paths
            if "__pycache__" not in path.parts
        }
    except UnicodeDecodeError as exc:
        raise StepFailed(f"agent {spec.agent_id}: its program files must be text: {exc}") from exc
    if source.is_file():
        return files, spec.entry_point or source.name
    entry = spec.entry_point or next((name for name in ("main.py", "main.sh") if name in files), None)
    if entry is None:
        raise StepFailed(f"agent {spec.agent_id}: {source} has no main.py or main.sh; set entry_point")
    return files, entry


def subject_of(loaded: LoadedScenario, agent: str | None) -> dict[str, Any] | None:
    """What the result records of the agent under test: which agent was the subject and which program ran as
    it (``agent_under_test``: the ``--agent`` one, or the scenario's default); or, with ``--agent`` given to a
    scenario without a subject slot, that it was not used. None when neither applies."""
    spec = loaded.scenario.initial_state.subject
    if spec is None:
        if agent is None:
            return None
        note = f"the scenario has no subject slot: the agent under test ({agent}) was not used"
        return {"agent_id": None, "program": None, "agent_under_test": False, "note": note}
    return {"agent_id": spec.agent_id, "program": agent or spec.program, "agent_under_test": agent is not None}


def with_agent_under_test(spec: AgentSpec, agent: str | None) -> AgentSpec:
    """``spec``, or, for the subject when an agent under test is given, that agent's program in its place."""
    if spec.subject and agent is not None:
        return spec.model_copy(update={"program": agent, "entry_point": None})
    return spec
