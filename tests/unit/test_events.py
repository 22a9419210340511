"""The event taxonomy: complete, JSON round-trips exactly, and rejects unknown fields and wrong types."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from syntropism.domain.events import EVENT_TYPES, InvalidEvent, parse_event, subject_for
from tests.samples import PAYLOADS, sample_event

# DESIGN §4, the minimum taxonomy table.
TAXONOMY = {
    "economy": ["credits_locked", "credits_unlocked", "credits_burned", "credits_transferred", "reward_issued"],
    "market": ["bid_placed", "bid_rejected", "bid_cancelled", "bid_processed", "price_discovered"],
    "scheduler": ["resources_allocated", "cycle_completed"],
    "execution": ["started", "terminated"],
    "intelligence": ["tokens_consumed", "request_denied"],
    "attention": ["prompt_submitted", "prompt_scored"],
    "agent": ["spawned", "dormant", "awake", "died"],
    "social": ["message_sent"],
}
DESIGN_TYPES = {f"{service}.{name}" for service, names in TAXONOMY.items() for name in names}
ADDED_TYPES = {  # what the system needs beyond the design's minimum
    "economy.credits_granted",
    "attention.prompt_expired",
    "social.messages_delivered",
}
ALL_TYPES = sorted(DESIGN_TYPES | ADDED_TYPES)


def test_every_design_event_has_a_model_and_a_sample() -> None:
    assert sorted(EVENT_TYPES) == ALL_TYPES
    assert sorted(PAYLOADS) == ALL_TYPES


@pytest.mark.parametrize("event_type", ALL_TYPES)
def test_round_trips_through_json(event_type: str) -> None:
    event = sample_event(event_type, correlation_id="run-1")
    assert event.subject == f"system.{event_type}" == subject_for(event_type)
    decoded = parse_event(event.to_json())
    assert decoded == event
    assert type(decoded) is type(event)
    # An external consumer sees plain JSON; re-encoding it by hand decodes to the same event.
    assert parse_event(json.dumps(json.loads(event.to_json()))) == event


def test_money_stays_exact_on_the_wire() -> None:
    event = sample_event("economy.credits_transferred")
    wire = json.loads(event.to_json())
    assert wire["data"]["amount"] == "0.000001"  # a string, never a binary float
    assert parse_event(event.to_json()).data.amount == Decimal("0.000001")


def _mutated(event_type: str, mutate) -> bytes:  # type: ignore[no-untyped-def]
    doc = json.loads(sample_event(event_type).to_json())
    mutate(doc)
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("event_type", "mutate", "where", "why"),
    [
        ("market.bid_placed", lambda d: d.update(surprise=1), "surprise", "Extra inputs are not permitted"),
        ("market.bid_placed", lambda d: d["data"].update(extra="x"), "data.extra", "Extra inputs are not permitted"),
        ("market.bid_placed", lambda d: d["data"].update(lifetime_cycles="3"), "lifetime_cycles", "valid integer"),
        ("market.bid_placed", lambda d: d["data"].update(amount="NaN"), "data.amount", "finite"),
        ("market.bid_placed", lambda d: d["data"].update(amount="1.0000001"), "data.amount", "decimal places"),
        ("market.bid_placed", lambda d: d["data"]["bundle"].update(cpu_percent="1.5"), "cpu_percent", "less than"),
        ("economy.credits_transferred", lambda d: d["data"].update(to_agent=7), "to_agent", "valid string"),
        ("economy.reward_issued", lambda d: d["data"].update(useful=11), "useful", "less than or equal to 10"),
        ("execution.terminated", lambda d: d["data"].update(reason="bored"), "reason", "Input should be"),
        ("agent.dormant", lambda d: d.update(event_id="not-a-uuid"), "event_id", "UUID"),
        ("agent.dormant", lambda d: d.update(timestamp="2026-01-01T00:00:00"), "timestamp", "timezone"),
        ("agent.dormant", lambda d: d.update(source="martian"), "source", "Input should be"),
        ("agent.dormant", lambda d: d.update(type="agent.teleported"), "<root>", "tag"),
        ("agent.dormant", lambda d: d.pop("data"), "data", "Field required"),
    ],
)
def test_rejects_unknown_fields_and_wrong_types(event_type: str, mutate, where: str, why: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidEvent) as caught:
        parse_event(_mutated(event_type, mutate))
    message = str(caught.value)
    assert where in message or where == "<root>", message
    assert why in message, message


def test_not_json_is_rejected_clearly() -> None:
    with pytest.raises(InvalidEvent, match="invalid event"):
        parse_event(b"{not json")


def test_events_are_immutable() -> None:
    event = sample_event("agent.dormant")
    with pytest.raises(ValueError, match="frozen"):
        event.agent_id = "someone-else"  # type: ignore[misc]
