"""The scenario file format (DESIGN §7): what a benchmark sets up, what it does, and what the stream must show.

A scenario is JSON. Its models are closed (an unknown field is an error naming it), and ``scenario.schema.json``
beside this module is generated from them (``syntropism bench --schema``). Files are read by :mod:`.loader`,
which maps the older forms of the user's earlier files onto this one (:mod:`.legacy`) and says what of them
could not be mapped, so that those parts are reported as not evaluated rather than silently dropped.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from syntropism.domain.events import EVENT_TYPES
from syntropism.domain.models import Resource, ResourceBundle

SCHEMA_FILE = Path(__file__).with_name("scenario.schema.json")
OPERATORS = ("equals", "not_equals", "<", "<=", ">", ">=", "in", "exists")
Name = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")]
AgentId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^:]+$")]
Amount = Annotated[Decimal, Field(allow_inf_nan=False)]
Seconds = Annotated[float, Field(gt=0, le=600)]
REFERENCE = re.compile(r"^\$([A-Za-z0-9_-]+)\.(.+)$")  # "$placed.data.bid_id": a field of a captured event


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# --- checks ----------------------------------------------------------------------------------------------------


def check_constraint(path: str, constraint: Any) -> None:
    """Refuse a malformed ``{operator: value}`` constraint at load time, not when a run is judged."""
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
            check_constraint(path, constraint)
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
            check_constraint(name, getattr(self, name))
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


# --- a loaded file ---------------------------------------------------------------------------------------------


class ScenarioError(ValueError):
    """A scenario file cannot be used; the message names the file and every offending field."""


@dataclass(frozen=True)
class LoadedScenario:
    scenario: Scenario
    path: Path | None = None
    not_evaluated: list[str] = field(default_factory=list)  # parts of an older file that could not be mapped
