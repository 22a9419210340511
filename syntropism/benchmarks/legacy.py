"""The older forms of the user's scenario files, mapped onto the current format (:mod:`.scenario`).

Three generations are read: the older form (``agent_balance``, ``resource_prices``, unqualified event names,
``judge_evaluation``, event constraints as flat dotted keys, ``threshold``, judges on a 1–5 scale), the task
form (``task_id``, ``title``) and the oldest form (``id``, ``category``, ``validation_criteria``). Whatever
cannot be mapped is named in ``LoadedScenario.not_evaluated``: never silently dropped, never a crash. Kept apart
from the format so that the format reads as what it is, and this mapping can be retired as a whole.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from syntropism.benchmarks.scenario import AgentSpec, FinalState, InitialState, Step, check_constraint, references
from syntropism.domain.events import EVENT_TYPES, Event
from syntropism.domain.models import Resource

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


def _is_legacy(raw: dict[str, Any]) -> bool:
    if any(key in raw for key in LEGACY_TOP_KEYS) or ("id" in raw and "scenario_id" not in raw):
        return True
    state = _object(raw, "initial_state")
    validation = _object(raw, "validation")
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


def _object(raw: dict[str, Any], key: str) -> dict[str, Any]:
    """``raw[key]`` when it is an object, else an empty one: an older file's shape is never trusted."""
    value = raw.get(key)
    return value if isinstance(value, dict) else {}


def _is_flat_key(key: str, event_type: Any) -> bool:
    """Is ``key`` of an older event entry a field constraint (``data.amount``, ``agent_id``, ``reason``)?"""
    if key in ENTRY_OPTIONS:
        return False
    head = key.partition(".")[0]
    return "." in key or head in ENVELOPE_FIELDS or key in _data_fields(event_type)


def _data_fields(event_type: Any) -> set[str]:
    name = _legacy_event_type(str(event_type)) if event_type is not None else None
    cls = EVENT_TYPES.get(name or "")
    if cls is None:
        return set()
    payload = cls.model_fields["data"].annotation
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
        state["prices"] = {**mapped, **_object(state, "prices")}
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
            check_constraint(path, constraint)
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
