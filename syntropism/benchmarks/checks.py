"""Judging a run: every check of a scenario's validation against the events its stream carried.

Pure functions over events as JSON objects (as they travelled) and over the final state as the public API
reported it; no I/O. Each check yields a :class:`CheckResult` naming the check, with the event that satisfied
it or the reason it failed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from syntropism.benchmarks.scenario import REFERENCE, EventMatch, FinalState, SequenceStep, Validation

Status = Literal["passed", "failed", "not_evaluated"]
EventJson = dict[str, Any]
Captures = dict[str, EventJson]  # a sequence step's ``as`` name → the event it matched
MISSING = object()
SEARCH_LIMIT = 200_000  # candidate events the sequence search may try before it gives up


@dataclass(frozen=True)
class CheckResult:
    check: str
    status: Status
    reason: str
    event: EventJson | None = None
    details: dict[str, Any] | None = None  # what more a check recorded (the judge: model, scores, rationales)

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass(frozen=True)
class FinalObservation:
    """The end state as the operator's public API reported it."""

    agents: dict[str, dict[str, Any]]  # agent id → {status, available, locked}
    prices: dict[str, Any]  # resource → price
    total_credits: Decimal


@dataclass
class _Search:
    budget: int = SEARCH_LIMIT
    deepest: int = 0
    deepest_after: int | None = None  # index of the last event matched on the deepest partial path
    captures: dict[str, EventJson] = field(default_factory=dict)


# --- field access and constraints ------------------------------------------------------------------------------


def field_of(event: EventJson, path: str) -> Any:
    value: Any = event
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return MISSING
    return value


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def _same(actual: Any, expected: Any) -> bool:
    a, b = _number(actual), _number(expected)
    if a is not None and b is not None:
        return a == b
    return bool(actual == expected)


def _resolve(value: Any, captures: dict[str, EventJson]) -> Any:
    if isinstance(value, list):
        return [_resolve(item, captures) for item in value]
    if isinstance(value, str) and (match := REFERENCE.match(value)):
        captured = captures.get(match.group(1))
        return MISSING if captured is None else field_of(captured, match.group(2))
    return value


def satisfies(actual: Any, constraint: Any, captures: dict[str, EventJson] | None = None) -> bool:
    """Does a field's value meet a constraint: a plain value (equals) or ``{operator: value, …}``?"""
    captures = captures or {}
    if not isinstance(constraint, dict):
        expected = _resolve(constraint, captures)
        return actual is not MISSING and expected is not MISSING and _same(actual, expected)
    for operator, raw in constraint.items():
        expected = _resolve(raw, captures)
        if operator == "exists":
            if (actual is not MISSING and actual is not None) != expected:
                return False
            continue
        if actual is MISSING or expected is MISSING:
            return False
        if operator == "equals" and not _same(actual, expected):
            return False
        if operator == "not_equals" and _same(actual, expected):
            return False
        if operator == "in" and not any(_same(actual, item) for item in expected):
            return False
        if operator in ("<", "<=", ">", ">="):
            a, b = _number(actual), _number(expected)
            if a is None or b is None:
                return False
            if not {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[operator]:
                return False
    return True


def matches(event: EventJson, match: EventMatch, captures: dict[str, EventJson] | None = None) -> bool:
    service, _, name = match.type.partition(".")
    event_type = str(event.get("type", ""))
    if event_type != match.type and not (name == "*" and event_type.partition(".")[0] == service):
        return False
    return all(satisfies(field_of(event, path), c, captures) for path, c in match.where.items())


def brief(event: EventJson) -> str:
    """One line naming an event, for messages."""
    data = event.get("data") or {}
    keys = ("outcome", "reason", "resource", "amount", "bid_id", "execution_id", "new_price", "cycle")
    shown = ", ".join(f"{k}={data[k]}" for k in keys if data.get(k) is not None)
    agent = f" agent={event['agent_id']}" if event.get("agent_id") else ""
    return f"{event.get('type')}{agent} ({shown})" if shown else f"{event.get('type')}{agent}"


# --- event checks ----------------------------------------------------------------------------------------------


def _timestamp(event: EventJson) -> datetime:
    return datetime.fromisoformat(str(event["timestamp"]))


def _sequence(
    steps: Sequence[SequenceStep], events: Sequence[EventJson], index: int, start: int, search: _Search
) -> list[int] | None:
    if index == len(steps):
        return []
    step = steps[index]
    previous = _timestamp(events[start - 1]) if index and start else None
    for position in range(start, len(events)):
        search.budget -= 1
        if search.budget < 0:
            return None
        event = events[position]
        gap = step.max_gap_seconds
        if gap is not None and previous is not None and (_timestamp(event) - previous).total_seconds() > gap:
            continue
        if not matches(event, step, search.captures):
            continue
        if index + 1 > search.deepest:
            search.deepest, search.deepest_after = index + 1, position
        if step.capture:
            search.captures[step.capture] = event
        rest = _sequence(steps, events, index + 1, position + 1, search)
        if rest is not None:
            return [position, *rest]
        if step.capture:
            del search.captures[step.capture]
    return None


def check_sequence(steps: Sequence[SequenceStep], events: Sequence[EventJson]) -> tuple[CheckResult, Captures]:
    """The steps in order (other events may come between); returns the result and the captured events."""
    name = f"required_event_sequence ({len(steps)} steps)"
    search = _Search()
    found = _sequence(steps, events, 0, 0, search)
    if found is not None:
        path = " → ".join(f"#{i} {events[i]['type']}" for i in found)
        return CheckResult(name, "passed", f"matched in order: {path}", events[found[-1]]), dict(search.captures)
    if search.budget < 0:
        return CheckResult(name, "failed", f"gave up after trying {SEARCH_LIMIT} candidate events"), {}
    failed_step = steps[search.deepest]
    after = (
        f"after step {search.deepest} matched event #{search.deepest_after} ({brief(events[search.deepest_after])})"
        if search.deepest_after is not None
        else "anywhere in the stream"
    )
    gap = f" within {failed_step.max_gap_seconds} s" if failed_step.max_gap_seconds is not None else ""
    nearest = [brief(e) for e in events if e.get("type") == failed_step.type][:3]
    seen = f"; events of that type seen: {'; '.join(nearest)}" if nearest else f"; no {failed_step.type} event at all"
    reason = f"step {search.deepest + 1} ({failed_step.describe()}) not found{gap} {after}{seen}"
    return CheckResult(f"{name}[{search.deepest + 1}]", "failed", reason), {}


def check_required(match: EventMatch, min_count: int, events: Sequence[EventJson], captures: Captures) -> CheckResult:
    name = f"required_events: {match.describe()}"
    found = [event for event in events if matches(event, match, captures)]
    if len(found) >= min_count:
        return CheckResult(name, "passed", f"{len(found)} matching event(s), first {brief(found[0])}", found[0])
    of_type = [brief(e) for e in events if matches(e, EventMatch(type=match.type))][:3]
    seen = f"; of that type: {'; '.join(of_type)}" if of_type else f"; no {match.type} event at all"
    return CheckResult(name, "failed", f"{len(found)} matching event(s), need {min_count}{seen}")


def check_forbidden(match: EventMatch, events: Sequence[EventJson], captures: Captures) -> CheckResult:
    name = f"forbidden_events: {match.describe()}"
    for event in events:
        if matches(event, match, captures):
            return CheckResult(name, "failed", f"forbidden event present: {brief(event)}", event)
    return CheckResult(name, "passed", f"none among {len(events)} events")


def check_events(validation: Validation, events: Sequence[EventJson]) -> list[CheckResult]:
    results: list[CheckResult] = []
    captures: dict[str, EventJson] = {}
    if validation.required_event_sequence:
        result, captures = check_sequence(validation.required_event_sequence, events)
        results.append(result)
    results += [check_required(m, m.min_count, events, captures) for m in validation.required_events]
    results += [check_forbidden(m, events, captures) for m in validation.forbidden_events]
    return results


# --- final state -----------------------------------------------------------------------------------------------


def _expectation(name: str, actual: Any, constraint: Any) -> CheckResult:
    shown = json.dumps(constraint, default=str)
    if satisfies(actual, constraint):
        return CheckResult(name, "passed", f"{actual} satisfies {shown}")
    return CheckResult(name, "failed", f"expected {shown}, got {'nothing' if actual is MISSING else actual}")


def _final_checks(final: FinalState, observed: FinalObservation) -> Iterator[CheckResult]:
    for agent_id, expected in final.agents.items():
        agent = observed.agents.get(agent_id)
        for key in ("status", "available", "locked"):
            constraint = getattr(expected, key)
            if constraint is None:
                continue
            name = f"final_state: {agent_id}.{key}"
            if agent is None:
                yield CheckResult(name, "failed", f"no agent {agent_id} in the final state")
            else:
                yield _expectation(name, agent.get(key, MISSING), constraint)
    for resource, constraint in final.prices.items():
        yield _expectation(
            f"final_state: price of {resource.value}", observed.prices.get(resource.value, MISSING), constraint
        )
    if final.total_credits is not None:
        yield _expectation("final_state: total credits", observed.total_credits, final.total_credits)


def check_final_state(final: FinalState, observed: FinalObservation) -> list[CheckResult]:
    return list(_final_checks(final, observed))
