"""The market's rules without I/O: what a valid bid is, and what the market looks like per resource.

A bid is rejected at placement with a stable reason code and a sentence saying why (DESIGN §3): fractions
outside 0–1, a bundle that asks for nothing or for more than the whole system, a non-positive or too long
duration, an amount that is not a positive finite number of micro-credits, a bad lifetime. Funds and agents
are checked by the ledger and the registry when the bid is placed.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import ValidationError

from syntropism.domain.economy import LedgerError, parse_amount
from syntropism.domain.errors import Reason, Refused
from syntropism.domain.models import Resource, ResourceBundle

MAX_LIFETIME_CYCLES = 1000


class BidRefused(Refused):
    """A refused bid."""


@dataclass(frozen=True)
class BidRequest:
    """A bid that passed validation: the bundle, the amount in micro-credits and its lifetime in cycles."""

    bundle: ResourceBundle
    amount_micros: int
    lifetime_cycles: int


def validate_bid(
    bundle: ResourceBundle | dict[str, Any],
    amount: Any,
    lifetime_cycles: Any,
    *,
    max_duration_seconds: float,
) -> BidRequest:
    """Check a bid's own content; raises :class:`BidRefused` with the reason."""
    if not isinstance(bundle, ResourceBundle):
        try:
            bundle = ResourceBundle.model_validate(bundle)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise BidRefused(Reason.INVALID_BUNDLE, f"bundle is invalid: {problems}") from None
    if all(bundle.fraction(r) == 0 for r in Resource):
        raise BidRefused(Reason.EMPTY_BUNDLE, "the bundle asks for no resource; ask for at least one fraction")
    if bundle.duration_seconds > Decimal(str(max_duration_seconds)):
        raise BidRefused(
            Reason.BUNDLE_TOO_LARGE,
            f"duration {bundle.duration_seconds} s exceeds the longest bundle, {max_duration_seconds:g} s",
        )
    try:
        amount_micros = parse_amount(amount)
    except LedgerError as error:
        raise BidRefused(Reason.INVALID_AMOUNT, str(error)) from None
    try:
        lifetime = int(lifetime_cycles)
        valid_lifetime = not isinstance(lifetime_cycles, bool) and lifetime == Decimal(str(lifetime_cycles))
    except (TypeError, ValueError, InvalidOperation):
        valid_lifetime = False
    if not valid_lifetime or not 1 <= lifetime <= MAX_LIFETIME_CYCLES:
        raise BidRefused(
            Reason.INVALID_LIFETIME, f"lifetime must be a whole number of cycles from 1 to {MAX_LIFETIME_CYCLES}"
        )
    return BidRequest(bundle, amount_micros, lifetime)


@dataclass(frozen=True)
class MarketState:
    """One resource's market: supply (the capacity measure, 1.0), what is in use, the last discovered price."""

    resource: Resource
    available_supply: Decimal
    current_utilization: Decimal
    current_market_price: Decimal
    cycle: int
