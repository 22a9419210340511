"""The scenario file format (DESIGN §7): what a benchmark sets up, what it does, and what the stream must show.

A scenario is JSON. Its models are closed (an unknown field is an error naming it), and ``scenario.schema.json``
beside this module is generated from them (``syntropism bench --schema``). :func:`load_scenario` also reads the
older form of the user's earlier files and says what of it could not be mapped, so that those parts are
reported as not evaluated rather than silently dropped.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from syntropism.domain.events import EVENT_TYPES, Event
from syntropism.domain.models import Resource, ResourceBundle

SCHEMA_FILE = Path(__file__).with_name("scenario.schema.json")
DATA_DIR = Path(__file__).with_name("data")
OPERATORS = ("equals", "not_equals", "<", "<=", ">", ">=", "in", "exists")
Name = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")]
AgentId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^:]+$")]
Amount = Annotated[Decimal, Field(allow_inf_nan=False)]
Seconds = Annotated[float, Field(gt=0, le=600)]
REFERENCE = re.compile(r"^\$([A-Za-z0-9_-]+)\.(.+)$")  # "$placed.data.bid_id": a field of a captured event


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# --- checks ----------------------------------------------------------------------------------------------------


def _check_constraint(path: str, constraint: Any) -> None:
    if isinstance(constraint, dict):
        unknown = sorted(set(constraint) - set(OPERATORS))
        if unknown or not constraint:
            raise ValueError(f"{path}: operators must be among {', '.join(OPERATORS)}; got {sorted(constraint)}")
        if "in" in constraint and not isinstance(constraint["in"], list):
            raise ValueError(f"{path}: 'in' takes a list")
        if "exists" in constraint and not isinstance(constraint["exists"], bool):
            raise ValueError(f"{path}: 'exists' takes true or false")


def references(where: dict[str, Any]) -> set[str]:
    """The captured events a ``where`` clause refers to (``"$name.field"`` values)."""
    found: set[str] = set()
    for constraint in where.values():
        values = constraint.values() if isinstance(constraint, dict) else [constraint]
        for value in values:
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, str) and (match := REFERENCE.match(item)):
                    found.add(match.group(1))
    return found


class EventMatch(Model):
    """Events of ``type`` (``market.bid_placed``, or ``market.*`` for a whole service) whose fields satisfy
    ``where``: dotted paths (``data.outcome``, ``agent_id``) → a value (equals) or ``{operator: value}``."""

    type: Annotated[str, Field(pattern=r"^[a-z_]+\.([a-z_]+|\*)$")]
    where: dict[str, Any] = Field(default_factory=dict)

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        service, _, name = value.partition(".")
        known = EVENT_TYPES if name != "*" else {t.partition(".")[0] for t in EVENT_TYPES}
        if (value if name != "*" else service) not in known:
            raise ValueError(f"unknown event type {value!r}; known: {', '.join(sorted(EVENT_TYPES))}")
        return value

    @field_validator("where")
    @classmethod
    def _valid_constraints(cls, where: dict[str, Any]) -> dict[str, Any]:
        for path, constraint in where.items():
            _check_constraint(path, constraint)
        return where

    def describe(self) -> str:
        if not self.where:
            return self.type
        return f"{self.type} where {', '.join(f'{k}={json.dumps(v, default=str)}' for k, v in self.where.items())}"


class SequenceStep(EventMatch):
    capture: Name | None = Field(None, alias="as", description="Name the matched event for later $name.field values")
    max_gap_seconds: Seconds | None = Field(None, description="At most this long after the previous step's event")


class RequiredEvent(EventMatch):
    min_count: Annotated[int, Field(ge=1)] = 1


class AgentExpectation(Model):
    status: Literal["active", "dormant", "died"] | None = None
    available: Any = None
    locked: Any = None

    @model_validator(mode="after")
    def _constraints(self) -> AgentExpectation:
        for name in ("available", "locked"):
            _check_constraint(name, getattr(self, name))
        return self


class FinalState(Model):
    """Read at the end through the operator's public API, never from the database."""

    agents: dict[AgentId, AgentExpectation] = Field(default_factory=dict)
    prices: dict[Resource, Any] = Field(default_factory=dict)
    total_credits: Any = Field(None, description="Σ available + locked over all agents")


class Judge(Model):
    """LLM-as-judge criteria: scored by the configured model; without one, reported as not evaluated.

    The judge scores each criterion 0–1 and the run passes at a mean ≥ ``pass_threshold``. A file whose criteria
    were written for a 1–5 scale (the user's older files) keeps that scale and its threshold ``t`` as written in
    ``threshold_on_scale``; ``pass_threshold`` is then its image on 0–1, (t − 1) / 4."""

    criteria: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    pass_threshold: Annotated[float, Field(ge=0, le=1)] = 0.7
    model: str | None = None
    scale: Literal["0-1", "1-5"] = Field("0-1", description="The scale the criteria and threshold were written for")
    threshold_on_scale: Annotated[float, Field(ge=1, le=5)] | None = Field(
        None, description="On the 1-5 scale: the threshold as written; pass_threshold must be (t - 1) / 4"
    )

    @model_validator(mode="after")
    def _scaled_threshold(self) -> Judge:
        t = self.threshold_on_scale
        if t is None:
            return self
        if self.scale != "1-5":
            raise ValueError("threshold_on_scale is for the 1-5 scale")
        if not math.isclose(self.pass_threshold, (t - 1) / 4, abs_tol=1e-9):
            raise ValueError(f"pass_threshold must be (threshold_on_scale - 1) / 4 = {(t - 1) / 4}")
        return self

    def threshold_label(self) -> str:
        """The threshold as the file wrote it: ``0.7``, or ``3.5 on 1-5 (0.625)``."""
        if self.threshold_on_scale is None:
            return f"{self.pass_threshold:g}"
        return f"{self.threshold_on_scale:g} on {self.scale} ({self.pass_threshold:g})"


class Validation(Model):
    required_event_sequence: list[SequenceStep] = Field(default_factory=list)
    required_events: list[RequiredEvent] = Field(default_factory=list)
    forbidden_events: list[EventMatch] = Field(default_factory=list)
    final_state: FinalState | None = None
    judge: Judge | None = None

    @model_validator(mode="after")
    def _references_bound(self) -> Validation:
        bound: set[str] = set()
        for index, step in enumerate(self.required_event_sequence):
            unbound = references(step.where) - bound
            if unbound:
                raise ValueError(f"required_event_sequence[{index}] refers to {sorted(unbound)} before capturing them")
            if step.capture:
                bound.add(step.capture)
        for name, matches in (("required_events", self.required_events), ("forbidden_events", self.forbidden_events)):
            for index, match in enumerate(matches):
                unbound = references(match.where) - bound
                if unbound:
                    raise ValueError(f"{name}[{index}] refers to {sorted(unbound)}, never captured by the sequence")
        return self


# --- what scripted agents do -----------------------------------------------------------------------------------


class BidAction(Model):
    do: Literal["bid"]
    bundle: ResourceBundle
    amount: Amount
    lifetime_cycles: Annotated[int, Field(ge=1)] | None = None
    on_behalf_of: AgentId | None = None


class TransferAction(Model):
    do: Literal["transfer"]
    to_agent: AgentId
    amount: Amount


class MessageAction(Model):
    do: Literal["message"]
    to_agent: AgentId
    body: Annotated[str, Field(min_length=1)]


class InferAction(Model):
    do: Literal["infer"]
    prompt: Annotated[str, Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1)] = 16


class PromptAction(Model):
    do: Literal["prompt_human"]
    text: Annotated[str, Field(min_length=1)]


class HoldMemoryAction(Model):
    do: Literal["hold_memory"]
    megabytes: Annotated[int, Field(ge=1, le=65536)]
    seconds: Annotated[float, Field(ge=0, le=600)] = 1.0


class SpinAction(Model):
    do: Literal["spin"]
    seconds: Seconds


class SleepAction(Model):
    do: Literal["sleep"]
    seconds: Seconds


Action = Annotated[
    BidAction
    | TransferAction
    | MessageAction
    | InferAction
    | PromptAction
    | HoldMemoryAction
    | SpinAction
    | SleepAction,
    Field(discriminator="do"),
]


# --- initial state ---------------------------------------------------------------------------------------------


class AgentSpec(Model):
    """An agent: its credits and either a program (a file or folder, relative to the scenario file or the
    repository) or a scripted list of actions, run on each of its executions."""

    agent_id: AgentId
    balance: Annotated[Decimal, Field(ge=0, allow_inf_nan=False)] = Decimal(0)
    program: str | None = None
    entry_point: str | None = Field(None, description="The program folder's file to run; default main.py/main.sh")
    actions: list[Action] | None = None
    subject: bool = Field(
        False,
        description="The agent under test: `syntropism bench --agent PATH` runs PATH in its place; its program "
        "is the default (at most one per scenario)",
    )

    @model_validator(mode="after")
    def _one_behaviour(self) -> AgentSpec:
        if self.program is not None and self.actions is not None:
            raise ValueError(f"agent {self.agent_id}: give a program or actions, not both")
        if self.subject and self.program is None:
            raise ValueError(f"agent {self.agent_id}: the subject needs a program, run when no --agent is given")
        return self


class Capacity(Model):
    cpu_cores: Annotated[float, Field(gt=0)] | None = None
    memory_bytes: Annotated[int, Field(gt=0)] | None = None
    llm_spend_limit: Annotated[int, Field(gt=0)] | None = None


class MarketRules(Model):
    mechanism: Literal["first_price", "critical_value"] | None = None
    price_decay: Annotated[Decimal, Field(gt=0, le=1)] | None = None
    price_floor: Annotated[Decimal, Field(gt=0)] | None = None
    default_bid_lifetime_cycles: Annotated[int, Field(ge=1)] | None = None


class InitialState(Model):
    capacity: Capacity = Capacity()
    prices: dict[Resource, Annotated[Decimal, Field(gt=0, allow_inf_nan=False)]] = Field(default_factory=dict)
    market: MarketRules = MarketRules()
    llm: Literal["none", "echo"] = Field(
        "none", description="echo: the runner serves a deterministic OpenAI-compatible stand-in as the upstream"
    )
    settings: dict[str, Any] = Field(default_factory=dict, description="Any other runtime knob, by name")
    agents: list[AgentSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_agents(self) -> InitialState:
        ids = [agent.agent_id for agent in self.agents]
        if len(ids) != len(set(ids)):
            raise ValueError(f"agent ids repeat: {sorted({i for i in ids if ids.count(i) > 1})}")
        subjects = [agent.agent_id for agent in self.agents if agent.subject]
        if len(subjects) > 1:
            raise ValueError(f"only one agent may be the subject; marked: {subjects}")
        return self

    @property
    def subject(self) -> AgentSpec | None:
        """The agent under test (``"subject": true``), if the scenario has that slot."""
        return next((agent for agent in self.agents if agent.subject), None)


# --- steps -----------------------------------------------------------------------------------------------------


class BidStep(Model):
    do: Literal["bid"]
    agent: AgentId
    bundle: dict[str, Any] = Field(description="A ResourceBundle; validated by the market, which may refuse it")
    amount: Amount
    lifetime_cycles: Annotated[int, Field(ge=1)] | None = None
    on_behalf_of: AgentId | None = None


class CyclesStep(Model):
    do: Literal["cycles"]
    count: Annotated[int, Field(ge=1, le=1000)] = 1
    settle: bool = Field(True, description="After each cycle, wait until its winners' executions have ended")
    timeout_seconds: Seconds = 30.0


class RewardStep(Model):
    do: Literal["reward"]
    agent: AgentId
    interesting: Annotated[int, Field(ge=0, le=10)]
    useful: Annotated[int, Field(ge=0, le=10)]
    understandable: Annotated[int, Field(ge=0, le=10)]


class GrantStep(Model):
    do: Literal["grant"]
    agent: AgentId
    amount: Amount


class TransferStep(Model):
    do: Literal["transfer"]
    from_agent: AgentId
    to_agent: AgentId
    amount: Amount


class WaitForStep(Model):
    do: Literal["wait_for"]
    event: EventMatch
    timeout_seconds: Seconds = 30.0


class SettleStep(Model):
    do: Literal["settle"]
    timeout_seconds: Seconds = 30.0


Step = Annotated[
    BidStep | CyclesStep | RewardStep | GrantStep | TransferStep | WaitForStep | SettleStep,
    Field(discriminator="do"),
]


class Scenario(Model):
    scenario_id: Name
    name: Annotated[str, Field(min_length=1)]
    domain: Name
    description: str = ""
    initial_state: InitialState = InitialState()
    steps: list[Step] = Field(default_factory=list)
    validation: Validation


def scenario_json_schema() -> dict[str, Any]:
    schema = Scenario.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Syntropism benchmark scenario"
    return schema


# --- loading ---------------------------------------------------------------------------------------------------


class ScenarioError(ValueError):
    """A scenario file cannot be used; the message names the file and every offending field."""


@dataclass(frozen=True)
class LoadedScenario:
    scenario: Scenario
    path: Path | None = None
    not_evaluated: list[str] = field(default_factory=list)  # parts of an older file that could not be mapped


# --- the older forms of the user's earlier files ---------------------------------------------------------------
#
# Three generations are read: the older form (``agent_balance``, ``resource_prices``, unqualified event names,
# ``judge_evaluation``, event constraints as flat dotted keys, ``threshold``, judges on a 1–5 scale), the task
# form (``task_id``, ``title``) and the oldest form (``id``, ``category``, ``validation_criteria``). Whatever
# cannot be mapped is named in ``LoadedScenario.not_evaluated``: never silently dropped, never a crash.

LEGACY_KEYS = ("agent_balance", "resource_prices", "judge_evaluation")
LEGACY_TOP_KEYS = ("task_id", "title", "category", "validation_criteria")
LEGACY_EVENT_NAMES = {"price_update": "market.price_discovered", "allocation": "scheduler.resources_allocated"}
ENTRY_FIELDS = {  # what an event entry of each list may carry besides flat constraints
    "required_event_sequence": ("type", "where", "as", "max_gap_seconds"),
    "required_events": ("type", "where", "min_count"),
    "forbidden_events": ("type", "where"),
}
ENTRY_OPTIONS = {"where", "as", "max_gap_seconds", "min_count"}
ANNOTATIONS = ("description", "comment", "note")  # explain an entry; constrain nothing
ENVELOPE_FIELDS = tuple(Event.model_fields)
JUDGE_BLOCKS = ("judge_evaluation", "judge")
JUDGE_TEXT_KEYS = ("description", "criterion", "text", "name")
LEGACY_SCALES = {"0-1": "0-1", "1-5": "1-5"}
_STEP = TypeAdapter(Step)
_AGENT = TypeAdapter(AgentSpec)


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


def _is_legacy(raw: dict[str, Any]) -> bool:
    if any(key in raw for key in LEGACY_TOP_KEYS) or ("id" in raw and "scenario_id" not in raw):
        return True
    state = raw.get("initial_state") if isinstance(raw.get("initial_state"), dict) else {}
    validation = raw.get("validation") if isinstance(raw.get("validation"), dict) else {}
    if any(key in state for key in LEGACY_KEYS) or "judge_evaluation" in validation:
        return True
    judge = validation.get("judge")
    if isinstance(judge, dict):
        threshold = _number(judge.get("pass_threshold"))
        criteria = judge.get("criteria")
        if (
            "threshold" in judge
            or (threshold is not None and threshold > 1)
            or (isinstance(criteria, list) and not all(isinstance(c, str) for c in criteria))
        ):
            return True
    for key, fields in ENTRY_FIELDS.items():
        entries = validation.get(key)
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, dict) or "." not in str(entry.get("type", ".")):
                return True
            if any(k not in fields and _is_flat_key(k, entry.get("type")) for k in entry):
                return True
    return False


def _is_flat_key(key: str, event_type: Any) -> bool:
    """Is ``key`` of an older event entry a field constraint (``data.amount``, ``agent_id``, ``reason``)?"""
    if key in ENTRY_OPTIONS:
        return False
    head = key.partition(".")[0]
    return "." in key or head in ENVELOPE_FIELDS or key in _data_fields(event_type)


def _data_fields(event_type: Any) -> set[str]:
    name = _legacy_event_type(str(event_type)) if event_type is not None else None
    cls = EVENT_TYPES.get(name or "")
    payload = cls.model_fields["data"].annotation if cls is not None else None
    return set(payload.model_fields) if isinstance(payload, type) and issubclass(payload, BaseModel) else set()


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        return None
    try:
        number = float(Decimal(str(value)))
    except ArithmeticError:
        return None
    return number if math.isfinite(number) else None


def _slug(value: Any, lower: bool = False) -> str:
    text = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(value).strip()).strip("_")[:128]
    return text.lower() if lower else text


def _error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    return f"{'.'.join(map(str, first['loc'])) or '<value>'}: {first['msg']}"


def upgrade_legacy(raw: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Map an older form onto the current one; returns it and what could not be mapped."""
    if not _is_legacy(raw):
        return raw, []
    skipped: list[str] = []
    used: set[str] = set()
    scenario: dict[str, Any] = {}

    ids = [(key, _slug(raw[key])) for key in ("scenario_id", "task_id", "id") if key in raw and _slug(raw[key])]
    scenario["scenario_id"] = ids[0][1] if ids else "legacy"
    used |= {key for key, value in ids if value == scenario["scenario_id"]}
    names = [key for key in ("name", "title") if isinstance(raw.get(key), str) and raw[key].strip()]
    scenario["name"] = raw[names[0]] if names else scenario["scenario_id"]
    used |= set(names[:1])
    domains = [(key, _slug(raw[key], lower=key == "category")) for key in ("domain", "category") if key in raw]
    domains = [(key, value) for key, value in domains if value]
    scenario["domain"] = domains[0][1] if domains else "legacy"
    used |= {key for key, value in domains if value == scenario["domain"]}
    if isinstance(raw.get("description"), str):
        scenario["description"] = raw["description"]
        used.add("description")

    if "steps" in raw:
        used.add("steps")
        scenario["steps"] = _legacy_steps(raw["steps"], skipped)
    state = raw.get("initial_state", {})
    used.add("initial_state")
    if not isinstance(state, dict):
        skipped.append("top-level field 'initial_state' (not an object)")
        state = {}
    scenario["initial_state"] = _legacy_state(dict(state), skipped)
    validation = raw.get("validation", {})
    used.add("validation")
    if not isinstance(validation, dict):
        skipped.append("top-level field 'validation' (not an object)")
        validation = {}
    criteria_judge = None
    if "validation_criteria" in raw:
        used.add("validation_criteria")
        validation = dict(validation)
        criteria_judge = _validation_criteria(raw["validation_criteria"], validation, skipped)
    scenario["validation"] = _legacy_validation(dict(validation), skipped, criteria_judge)
    skipped[:0] = [f"top-level field {key!r}" for key in raw if key not in used]
    return scenario, skipped


def _legacy_steps(steps: Any, skipped: list[str]) -> list[Any]:
    if not isinstance(steps, list):
        skipped.append("top-level field 'steps' (not a list)")
        return []
    return _valid_items(
        steps,
        _STEP,
        lambda index, step: f"step {index} ({(step.get('do') if isinstance(step, dict) else step)!r}) cannot be done",
        skipped,
    )


def _valid_items(
    items: list[Any], adapter: TypeAdapter[Any], name: Callable[[int, Any], str], skipped: list[str]
) -> list[Any]:
    """The items ``adapter`` accepts; each other one is listed in ``skipped`` by ``name`` with why."""
    kept = []
    for index, item in enumerate(items, start=1):
        try:
            adapter.validate_python(item)
        except ValidationError as exc:
            skipped.append(f"{name(index, item)}: {_error(exc)}")
            continue
        kept.append(item)
    return kept


def _legacy_state(state: dict[str, Any], skipped: list[str]) -> dict[str, Any]:
    balance = state.pop("agent_balance", None)
    if balance is not None and not state.get("agents"):
        state["agents"] = [{"agent_id": "agent", "balance": str(balance), "actions": []}]
    prices = state.pop("resource_prices", None) or {}
    mapped = {}
    for resource, price in prices.items() if isinstance(prices, dict) else []:
        number = _number(price)
        if resource in Resource._value2member_map_ and number is not None and number > 0:
            mapped[resource] = str(price)
        else:
            skipped.append(f"initial price of {resource!r}")
    if not isinstance(prices, dict):
        skipped.append("initial_state field 'resource_prices' (not an object)")
    if mapped or "prices" in state:
        state["prices"] = {**mapped, **(state.get("prices") if isinstance(state.get("prices"), dict) else {})}
    if isinstance(state.get("agents"), list):
        state["agents"] = _valid_items(
            state["agents"],
            _AGENT,
            lambda _, agent: f"initial agent {(agent.get('agent_id') if isinstance(agent, dict) else agent)!r}",
            skipped,
        )
    for key in list(state):
        if key not in InitialState.model_fields:
            skipped.append(f"initial_state field {key!r}")
            del state[key]
            continue
        try:
            InitialState.model_validate({key: state[key]})
        except ValidationError as exc:
            skipped.append(f"initial_state field {key!r}: {_error(exc)}")
            del state[key]
    return state


def _legacy_event_type(name: str) -> str | None:
    if name in EVENT_TYPES:
        return name
    if name in LEGACY_EVENT_NAMES:
        return LEGACY_EVENT_NAMES[name]
    service, _, rest = name.partition(".")
    if rest == "*" and any(t.partition(".")[0] == service for t in EVENT_TYPES):
        return name
    matches = [event_type for event_type in EVENT_TYPES if event_type.partition(".")[2] == name]
    return matches[0] if len(matches) == 1 else None


def _legacy_entry(key: str, entry: Any) -> tuple[dict[str, Any] | None, list[str]]:
    """One older event entry as the current one, its flat field constraints (``"data.amount": "999"``,
    ``"agent_id": "bob"``, or a field of the event's data by name, ``"reason": "outbid"``) moved into
    ``where``; or None and why it cannot be mapped."""
    entry = dict(entry) if isinstance(entry, dict) else {"type": str(entry)}
    event_type = _legacy_event_type(str(entry.get("type", "")))
    if event_type is None:
        return None, [f"{key} entry {entry.get('type')!r}: no such event in the taxonomy"]
    where = entry.get("where", {})
    if not isinstance(where, dict):
        return None, [f"{key} {event_type} field 'where' (not an object)"]
    mapped: dict[str, Any] = {k: v for k, v in entry.items() if k in ENTRY_FIELDS[key] and k != "where"}
    mapped["type"] = event_type
    constraints: dict[str, Any] = {}
    problems = []
    data_fields = _data_fields(event_type)
    for name, value in entry.items():
        if name in ENTRY_FIELDS[key] or name in ANNOTATIONS:
            continue
        if name in ENTRY_OPTIONS:
            problems.append(f"{key} {event_type} field {name!r} (not an option of {key})")
            continue
        head = name.partition(".")[0]
        path = name if "." in name or head in ENVELOPE_FIELDS else f"data.{name}" if name in data_fields else None
        if path is None:
            problems.append(f"{key} {event_type} field {name!r} (neither an event field nor one of its data)")
        elif path in where and where[path] != value:
            problems.append(f"{key} {event_type} field {name!r} (contradicts where.{path})")
        else:
            constraints[path] = value
    constraints.update(where)
    for path, constraint in constraints.items():
        try:
            _check_constraint(path, constraint)
        except ValueError as exc:
            problems.append(f"{key} {event_type} constraint {exc}")
    if problems:
        return None, problems
    if constraints:
        mapped["where"] = constraints
    return mapped, []


def _legacy_events(key: str, entries: Any, skipped: list[str]) -> list[dict[str, Any]]:
    if not isinstance(entries, list):
        skipped.append(f"validation field {key!r} (not a list)")
        return []
    mapped, problems = [], []
    for entry in entries:
        one, why = _legacy_entry(key, entry)
        problems += why
        if one is not None:
            mapped.append(one)
    if key == "required_event_sequence" and problems:  # one check: without a step, the rest would match too easily
        skipped += [f"{problem}; the whole sequence is not evaluated" for problem in problems]
        return []
    skipped += problems
    return mapped


def _unbound_dropped(out: dict[str, Any], skipped: list[str]) -> None:
    """Drop entries that refer to events no kept sequence step captures (their step could not be mapped)."""
    bound: set[str] = set()
    for step in out.get("required_event_sequence", []):
        if step.get("as"):
            bound.add(step["as"])
    for key in ENTRY_FIELDS:
        kept = []
        for entry in out.get(key, []):
            unbound = references(entry.get("where", {})) - bound
            if unbound:
                skipped.append(f"{key} {entry['type']}: refers to {sorted(unbound)}, which no mapped step captures")
            else:
                kept.append(entry)
        if key in out:
            out[key] = kept


def _validation_criteria(criteria: Any, validation: dict[str, Any], skipped: list[str]) -> dict[str, Any] | None:
    """The oldest form's ``validation_criteria``: texts become judge criteria, event entries required events,
    a block of validation fields is merged into ``validation``; returns the judge block it makes, if any."""
    judge: dict[str, Any] = {"criteria": []}

    def add_events(key: str, entries: Any) -> None:
        existing = validation.get(key, [])
        validation[key] = [*(existing if isinstance(existing, list) else []), *entries]

    def one(item: Any, label: str) -> None:
        if isinstance(item, str):
            judge["criteria"].append(item)
        elif isinstance(item, dict) and "type" in item:
            add_events("required_events", [item])
        elif isinstance(item, dict) and any(isinstance(item.get(k), str) for k in JUDGE_TEXT_KEYS):
            judge["criteria"].append(item)
        else:
            skipped.append(f"{label} (neither a criterion nor an event)")

    if isinstance(criteria, list):
        for index, item in enumerate(criteria):
            one(item, f"validation_criteria[{index}]")
    elif isinstance(criteria, dict):
        for key, value in criteria.items():
            if key in ENTRY_FIELDS:
                add_events(key, value if isinstance(value, list) else [value])
            elif key in ("final_state", *JUDGE_BLOCKS) and key not in validation:
                validation[key] = value
            elif key == "criteria" and isinstance(value, list):
                judge["criteria"] += value
            elif key in ("pass_threshold", "threshold", "scale", "model"):
                judge[key] = value
            elif isinstance(value, str):
                judge["criteria"].append(value)
            else:
                skipped.append(f"validation_criteria field {key!r}")
    else:
        one(criteria, "validation_criteria")
    return judge if judge["criteria"] or len(judge) > 1 else None


def _legacy_criteria(block: str, criteria: Any, skipped: list[str]) -> list[str]:
    texts = []
    for index, criterion in enumerate(criteria if isinstance(criteria, list) else [criteria]):
        if isinstance(criterion, str) and criterion.strip():
            texts.append(criterion)
            continue
        text = next(
            (criterion[k] for k in JUDGE_TEXT_KEYS if isinstance(criterion, dict) and _text(criterion, k)), None
        )
        if text is None:
            skipped.append(f"{block} criterion {index + 1} (no text)")
            continue
        texts.append(text)
        label = criterion.get("name") or text
        skipped += [f"{block} criterion {label!r} field {k!r}" for k in criterion if k not in JUDGE_TEXT_KEYS]
    return texts


def _text(item: dict[str, Any], key: str) -> bool:
    return isinstance(item.get(key), str) and bool(item[key].strip())


def _legacy_judge(blocks: list[tuple[str, Any]], skipped: list[str]) -> dict[str, Any] | None:
    """The older judges as one: ``criteria`` (texts, or objects with a description or a name), ``pass_threshold``
    or ``threshold``, and a scale — 0–1, or 1–5 when the threshold is above 1 (or ``scale`` says so), whose
    threshold t becomes (t − 1) / 4."""
    criteria: list[str] = []
    thresholds: list[tuple[str, Any]] = []
    scale: Any = None
    model: str | None = None
    for name, block in blocks:
        if not isinstance(block, dict):
            skipped.append(f"{name} (not an object)")
            continue
        for key, value in block.items():
            if key == "criteria":
                criteria += _legacy_criteria(name, value, skipped)
            elif key in ("threshold_on_scale", "pass_threshold", "threshold"):
                thresholds.append((f"{name}.{key}", value))
            elif key == "scale":
                scale = value
            elif key == "model" and isinstance(value, str):
                model = value
            else:
                skipped.append(f"{name} field {key!r}")
    if not criteria:
        skipped += [f"{name} without criteria" for name, _ in blocks[:1]]
        return None
    if any(label.endswith(".threshold_on_scale") for label, _ in thresholds):  # the current form's own 1–5 judge
        thresholds = [(label, value) for label, value in thresholds if not label.endswith(".pass_threshold")]
    thresholds.sort(key=lambda item: not item[0].endswith((".threshold_on_scale", ".pass_threshold")))
    threshold_label, raw_threshold = thresholds[0] if thresholds else ("default", 0.7)
    skipped += [f"{label} (another threshold than {threshold_label})" for label, value in thresholds[1:]]
    threshold = _number(raw_threshold)
    written_scale = scale is not None
    if scale is not None:
        written, scale = scale, LEGACY_SCALES.get(str(scale).replace("–", "-").replace(" ", ""))
        if scale is None:
            skipped.append(f"judge scale {written!r} (only 0-1 and 1-5 are known)")
            return None
    else:
        scale = "1-5" if threshold is not None and threshold > 1 else "0-1"
    if scale == "1-5" and not thresholds:
        threshold = 3.8  # the default 0.7, as the 1–5 scale writes it
    low, high = (1, 5) if scale == "1-5" else (0, 1)
    if threshold is None or not low <= threshold <= high:
        on = f"not on the {scale} scale" if written_scale else "on neither the 0-1 nor the 1-5 scale"
        skipped.append(f"judge threshold {raw_threshold!r} ({threshold_label}: {on})")
        return None
    judge: dict[str, Any] = {"criteria": criteria, "pass_threshold": threshold, "scale": scale}
    if scale == "1-5":
        judge |= {"pass_threshold": round((threshold - 1) / 4, 9), "threshold_on_scale": threshold}
    if model is not None:
        judge["model"] = model
    return judge


def _legacy_validation(
    validation: dict[str, Any], skipped: list[str], criteria_judge: dict[str, Any] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ENTRY_FIELDS:
        if key in validation:
            mapped = _legacy_events(key, validation.pop(key), skipped)
            if mapped:
                out[key] = mapped
    _unbound_dropped(out, skipped)
    blocks = [(name, validation.pop(name)) for name in JUDGE_BLOCKS if name in validation]
    if criteria_judge is not None:
        blocks.append(("validation_criteria", criteria_judge))
    if blocks and (judge := _legacy_judge(blocks, skipped)) is not None:
        out["judge"] = judge
    if "final_state" in validation:
        final = validation.pop("final_state")
        try:
            FinalState.model_validate(final)
            out["final_state"] = final
        except ValidationError as exc:
            skipped.append(f"validation field 'final_state': {_error(exc)}")
    skipped += [f"validation field {key!r}" for key in validation]
    return out


def shipped_scenarios(domain: str | None = None) -> list[Path]:
    """The scenarios that ship with Syntropism, ``data/<domain>/<id>.json``, in id order."""
    folders = [DATA_DIR / domain] if domain else sorted(p for p in DATA_DIR.iterdir() if p.is_dir())
    return sorted((p for folder in folders for p in folder.glob("*.json")), key=lambda p: (p.parent.name, p.name))
