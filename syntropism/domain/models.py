"""Value objects of the economy: exact credits, capacity fractions and the resource bundle an agent bids for."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

MICROS_PER_CREDIT = 1_000_000

Credits = Annotated[
    Decimal,
    Field(allow_inf_nan=False, decimal_places=6, max_digits=24, description="Exact credits, at most 6 decimals."),
]
"""Money on the wire: a finite Decimal with micro-credit precision, serialised as a JSON string."""

Fraction = Annotated[
    Decimal, Field(ge=0, le=1, allow_inf_nan=False, decimal_places=6, description="Share of capacity, 0.0–1.0.")
]
"""A share of one resource's system capacity, exact to one part per million."""

Price = Annotated[Decimal, Field(ge=0, allow_inf_nan=False, description="Credits per 100 %-capacity-second.")]


class Resource(StrEnum):
    CPU = "cpu"
    MEMORY = "memory"
    TOKENS = "tokens"
    ATTENTION = "attention"


class ResourceBundle(BaseModel):
    """A time-bound share of system capacity: what a bid buys and an execution is held to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu_percent: Fraction = Decimal(0)
    memory_percent: Fraction = Decimal(0)
    tokens_percent: Fraction = Decimal(0)
    attention_percent: Fraction = Decimal(0)
    duration_seconds: Annotated[Decimal, Field(gt=0, allow_inf_nan=False, decimal_places=3)]

    def fraction(self, resource: Resource) -> Decimal:
        return getattr(self, f"{resource.value}_percent")

    def fractions(self) -> dict[Resource, Decimal]:
        return {resource: self.fraction(resource) for resource in Resource}


@dataclass(frozen=True)
class HardEnvelope:
    """What a won bundle entitles an execution to, in absolute units (DESIGN §1): the limits it is held to."""

    memory_bytes: int  # memory_percent × memory capacity
    cpu_cores: Decimal  # cpu_percent × cores given to agents
    token_quota: int  # tokens_percent × LLM_SPEND_LIMIT (tokens/s, the 100 % of tokens) × duration
    attention_share: Decimal  # of the human's attention, supply 1.0
    wall_seconds: Decimal

    @classmethod
    def of(cls, bundle: ResourceBundle, *, cpu_cores: Decimal, memory_bytes: int, llm_spend_limit: int) -> HardEnvelope:
        return cls(
            memory_bytes=int(bundle.memory_percent * memory_bytes),
            cpu_cores=bundle.cpu_percent * cpu_cores,
            token_quota=int(bundle.tokens_percent * llm_spend_limit * bundle.duration_seconds),
            attention_share=bundle.attention_percent,
            wall_seconds=bundle.duration_seconds,
        )


def time_ordered_id() -> str:
    """A 32-hex-digit unique id that sorts by creation time (UUIDv7 layout: 48-bit ms clock, then random).

    Ids that grow at one end keep a database index append-only, which matters at thousands of writes/s.
    """
    return f"{time.time_ns() // 1_000_000:012x}{secrets.randbits(80):020x}"


def to_micros(amount: Decimal) -> int:
    """Credits to integer micro-credits, the ledger's storage unit; refuses anything not exactly representable."""
    micros = amount * MICROS_PER_CREDIT
    if not micros.is_finite() or micros != micros.to_integral_value():
        raise ValueError(f"{amount} is not a whole number of micro-credits")
    return int(micros)


def credits_text(amount: Decimal) -> str:
    """Credits as people read them: ``Decimal("21.000000")`` → ``"21"``, never in exponent notation."""
    return format(amount.normalize(), "f")


def from_micros(micros: int) -> Decimal:
    return (Decimal(micros) / MICROS_PER_CREDIT).quantize(Decimal("0.000001"))
