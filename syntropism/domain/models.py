"""Value objects of the economy: exact credits, capacity fractions and the resource bundle an agent bids for."""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    StringConstraints,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)
from pydantic_core import PydanticCustomError

MICROS_PER_CREDIT = 1_000_000
MICRO_PLACES = 6  # a micro-credit is 10⁻⁶ credits
MAX_MICROS = 2**63 - 1  # micro-credits are stored as 64-bit integers
MAX_CREDITS_TEXT = 64
"""The longest credit amount accepted as text: ample for any amount the ledger holds (at most 19 digits of
micro-credits), short enough that nobody can make the service parse a megabyte-long number."""

Credits = Annotated[
    Decimal,
    Field(allow_inf_nan=False, decimal_places=6, max_digits=24, description="Exact credits, at most 6 decimals."),
]
"""Money on the wire: a finite Decimal with micro-credit precision, serialised as a JSON string."""


_JSON_KINDS = {bool: "a boolean", float: "a float", type(None): "null", list: "an array", dict: "an object"}


def _credits_input(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise PydanticCustomError(
            "invalid_amount",
            'credits must be a decimal string such as "12.5" or a JSON integer, not {kind}',
            {"kind": _JSON_KINDS.get(type(value), type(value).__name__)},
        )
    if isinstance(value, str) and len(value) > MAX_CREDITS_TEXT:
        raise PydanticCustomError(
            "invalid_amount", "credits as text must be at most {limit} characters long", {"limit": MAX_CREDITS_TEXT}
        )
    return handler(value)


CreditsInput = Annotated[
    Annotated[StrictStr, StringConstraints(max_length=MAX_CREDITS_TEXT)] | StrictInt, WrapValidator(_credits_input)
]
"""Credits as a client sends them: a decimal string (at most :data:`MAX_CREDITS_TEXT` characters) or an integer,
never a float nor a boolean (no lax coercion: ``2.0`` and ``true`` are refused). Whether it is a valid amount is
the ledger's to say (:func:`syntropism.domain.economy.parse_amount`)."""

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
        share: Decimal = getattr(self, f"{resource.value}_percent")
        return share

    def fractions(self) -> dict[Resource, Decimal]:
        return {resource: self.fraction(resource) for resource in Resource}


PPM = 1_000_000
"""Capacity fractions are stored and cleared as whole parts per million: a :data:`Fraction` has at most six
decimal places, so the conversion is exact and every capacity check is integer arithmetic."""
MS_PER_SECOND = 1000
"""Durations are stored as whole milliseconds: a bundle's duration has at most three decimal places."""


def fraction_to_ppm(fraction: Decimal) -> int:
    """A share of capacity in parts per million (truncated: exact for a valid :data:`Fraction`)."""
    return int(fraction * PPM)


def ppm_to_fraction(ppm: int) -> Decimal:
    """Parts per million back to the share of capacity they stand for."""
    return Decimal(ppm) / PPM


def seconds_to_ms(seconds: Decimal) -> int:
    """Seconds in whole milliseconds (truncated: exact for a bundle's duration)."""
    return int(seconds * MS_PER_SECOND)


def ms_to_seconds(ms: int) -> Decimal:
    return Decimal(ms) / MS_PER_SECOND


def bundle_to_ppm(bundle: ResourceBundle) -> dict[Resource, int]:
    """Each resource's share of a bundle in parts per million, as the bids and executions store it."""
    return {resource: fraction_to_ppm(bundle.fraction(resource)) for resource in Resource}


def bundle_from_ppm(ppm: Mapping[Resource, int], duration_ms: int) -> ResourceBundle:
    """The bundle stored as shares in parts per million and a duration in milliseconds (the inverse of
    :func:`bundle_to_ppm` and :func:`seconds_to_ms`)."""
    return ResourceBundle(
        **{f"{resource.value}_percent": ppm_to_fraction(ppm[resource]) for resource in Resource},
        duration_seconds=ms_to_seconds(duration_ms),
    )


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


class AmountTooLarge(ValueError):
    """An amount beyond what the caller allows (by default beyond a 64-bit count of micro-credits)."""


def micros_of_digits(negative: bool, digits: str, exponent: int, *, limit: int = MAX_MICROS) -> int:
    """The exact micro-credits of ±``digits`` × 10^``exponent`` (``digits`` ASCII 0–9), with no rounding and no
    decimal context: ValueError if it is not a whole number of micro-credits, :class:`AmountTooLarge` if its
    magnitude exceeds ``limit``. The work is bounded by the number of digits, whatever the exponent."""
    significant = digits.lstrip("0")
    if not significant:
        return 0
    trimmed = significant.rstrip("0")
    shift = exponent + len(significant) - len(trimmed) + MICRO_PLACES  # micros = trimmed × 10^shift
    if shift < 0:
        raise ValueError(f"more than {MICRO_PLACES} decimal places: not a whole number of micro-credits")
    if len(trimmed) + shift > len(str(limit)):  # more digits than the limit has: larger, whatever they are
        raise AmountTooLarge(f"larger than {limit} micro-credits")
    micros: int = int(trimmed) * 10**shift
    if micros > limit:
        raise AmountTooLarge(f"larger than {limit} micro-credits")
    return -micros if negative else micros


_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN, traps=[])
"""Arithmetic that never rounds: scaling by 10⁶ in it is exact whatever the digits (an exponent past the
largest representable one gives Infinity, which is then refused as too large)."""


def to_micros(amount: Decimal | int, *, limit: int = MAX_MICROS) -> int:
    """Credits to integer micro-credits, the ledger's storage unit, computed exactly (never in the 28-digit
    default context, which would round ``0.99999999999999999999999999999`` to 1): ValueError unless ``amount``
    is a finite whole number of micro-credits, and :class:`AmountTooLarge` (a ValueError) if its magnitude
    exceeds ``limit``. The work is bounded whatever the exponent (``9e999999``, ``1e-1000000000``)."""
    if isinstance(amount, int) and not isinstance(amount, bool):
        micros = amount * MICROS_PER_CREDIT
        if abs(micros) > limit:
            raise AmountTooLarge(f"larger than {limit} micro-credits")
        return micros
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise ValueError(f"{amount!r} is not a whole number of micro-credits")
    scaled = amount.scaleb(MICRO_PLACES, _EXACT)
    if not scaled.is_finite():
        raise AmountTooLarge(f"larger than {limit} micro-credits")
    if scaled.copy_abs() > limit:  # checked before any int is built from it; a fraction is still a fraction
        if scaled != scaled.to_integral_value(context=_EXACT):
            raise ValueError(f"{amount} is not a whole number of micro-credits")
        raise AmountTooLarge(f"larger than {limit} micro-credits")
    micros = int(scaled)  # truncates, exactly
    if micros != scaled:
        raise ValueError(f"{amount} is not a whole number of micro-credits")
    return micros


def credits_text(amount: Decimal) -> str:
    """Credits as people read them: ``Decimal("21.000000")`` → ``"21"``, never in exponent notation."""
    return format(amount.normalize(), "f")


def from_micros(micros: int) -> Decimal:
    """Micro-credits to credits with exactly 6 decimal places (``1`` → ``Decimal("0.000001")``), for any int."""
    return Decimal(f"{int(micros)}e-{MICRO_PLACES}")  # exact: a Decimal built from text is never rounded
