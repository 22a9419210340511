"""One valid payload per event type, so every test can cover the whole taxonomy."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from syntropism.domain.events import EVENT_TYPES, Event
from syntropism.domain.models import ResourceBundle

BUNDLE = ResourceBundle(
    cpu_percent=Decimal("0.5"), memory_percent=Decimal("0.2"), attention_percent=Decimal("0.1"), duration_seconds=10
)
BALANCES = {"available_after": Decimal("70"), "locked_after": Decimal("30")}

PAYLOADS: dict[str, dict[str, Any]] = {
    "economy.credits_locked": {"transfer_id": "t1", "amount": Decimal("30"), "bid_id": "b1", **BALANCES},
    "economy.credits_unlocked": {"transfer_id": "t2", "amount": Decimal(30), "reason": "outbid", **BALANCES},
    "economy.credits_burned": {"transfer_id": "t3", "amount": Decimal("30"), "burned_total": Decimal("55.5")},
    "economy.credits_transferred": {
        "transfer_id": "t4",
        "from_agent": "a1",
        "to_agent": "a2",
        "amount": Decimal("0.000001"),
        "purpose": "thanks",
    },
    "economy.reward_issued": {
        "transfer_id": "t5",
        "amount": Decimal(21),
        "interesting": 7,
        "useful": 8,
        "understandable": 6,
        "prompt_id": "p1",
        "minted_total": Decimal(121),
    },
    "economy.credits_granted": {
        "transfer_id": "t6",
        "amount": Decimal(100),
        "reason": "initial grant",
        "available_after": Decimal(100),
        "minted_total": Decimal(221),
    },
    "market.bid_placed": {"bid_id": "b1", "bundle": BUNDLE, "amount": Decimal(30), "lifetime_cycles": 3},
    "market.bid_rejected": {"reason": "insufficient_funds", "detail": "amount 30 exceeds available 10"},
    "market.bid_cancelled": {"bid_id": "b1", "amount_unlocked": Decimal(30)},
    "market.bid_processed": {"bid_id": "b1", "cycle": 4, "outcome": "won", "amount": Decimal(30), "execution_id": "e1"},
    "market.price_discovered": {
        "cycle": 4,
        "resource": "cpu",
        "old_price": Decimal("1.0"),
        "new_price": Decimal("3.787878787878787878787878788"),
        "utilization": Decimal("0.8"),
        "volume": Decimal(11),
    },
    "scheduler.resources_allocated": {
        "cycle": 4,
        "bid_id": "b1",
        "execution_id": "e1",
        "bundle": BUNDLE,
        "amount": Decimal(30),
    },
    "scheduler.cycle_completed": {
        "cycle": 4,
        "bids_considered": 3,
        "winners": 2,
        "losers": 1,
        "burned": Decimal(55),
        "utilization": {"cpu": Decimal("0.8"), "memory": Decimal("0.5")},
        "prices": {"cpu": Decimal("3.788"), "memory": Decimal("1.667")},
        "duration_ms": 1.5,
    },
    "execution.started": {
        "execution_id": "e1",
        "bid_id": "b1",
        "bundle": BUNDLE,
        "pid": 4242,
        "sandbox_layers": ["rlimits"],
    },
    "execution.terminated": {
        "execution_id": "e1",
        "reason": "memory_exceeded",
        "exit_code": None,
        "signal": 9,
        "wall_seconds": 1.25,
        "cpu_seconds": 0.5,
        "peak_memory_bytes": 104857600,
    },
    "intelligence.tokens_consumed": {
        "execution_id": "e1",
        "model": "small",
        "prompt_tokens": 12,
        "completion_tokens": 30,
        "remaining_quota": 958,
    },
    "intelligence.request_denied": {"execution_id": "e1", "reason": "quota_exhausted", "detail": "needs 500, has 40"},
    "attention.prompt_submitted": {"prompt_id": "p1", "execution_id": "e1", "text": "Is this useful?"},
    "attention.prompt_scored": {
        "prompt_id": "p1",
        "interesting": 7,
        "useful": 8,
        "understandable": 6,
        "credits": Decimal(21),
    },
    "attention.prompt_expired": {"prompt_id": "p2", "expired_at": datetime(2026, 1, 2, tzinfo=UTC)},
    "agent.spawned": {"name": "child", "parent_id": "a1", "entry_point": "main.py", "initial_grant": Decimal(5)},
    "agent.dormant": {"last_execution_id": "e1"},
    "agent.awake": {"execution_id": "e2", "bid_id": "b2", "woken_by": "a2"},
    "agent.died": {"reason": "dormant without credits past the grace period"},
    "social.message_sent": {"message_id": "m1", "from_agent": "a1", "to_agent": "a2", "body": "hello"},
    "social.messages_delivered": {"execution_id": "e1", "message_ids": ["m1"]},
}


def sample_event(event_type: str, **envelope: Any) -> Event:
    cls = EVENT_TYPES[event_type]
    data_model = cls.model_fields["data"].annotation
    return cls(agent_id=envelope.pop("agent_id", "a1"), data=data_model(**PAYLOADS[event_type]), **envelope)
