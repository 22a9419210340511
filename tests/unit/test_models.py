from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import TypeAdapter, ValidationError

from syntropism.domain.models import (
    MAX_CREDITS_TEXT,
    AmountTooLarge,
    CreditsInput,
    HardEnvelope,
    Resource,
    ResourceBundle,
    from_micros,
    micros_of_digits,
    to_micros,
)


def test_micros_are_exact() -> None:
    assert to_micros(Decimal("30.000001")) == 30_000_001
    assert from_micros(30_000_001) == Decimal("30.000001")
    assert to_micros(from_micros(123_456_789)) == 123_456_789


@pytest.mark.parametrize("amount", [Decimal("0.0000001"), Decimal("NaN"), Decimal("Infinity")])
def test_micros_refuse_what_they_cannot_hold(amount: Decimal) -> None:
    with pytest.raises(ValueError, match="micro-credits"):
        to_micros(amount)


@pytest.mark.parametrize(
    "amount",
    [
        Decimal("0." + "9" * 29),  # 29 digits: a 28-digit context rounds it to exactly 1
        Decimal("1." + "0" * 27 + "1"),
        Decimal("1e-1000000000"),  # underflows to 0 in a multiplication
    ],
)
def test_micros_are_computed_exactly_never_rounded(amount: Decimal) -> None:
    with pytest.raises(ValueError, match="micro-credits"):
        to_micros(amount)


def test_micros_have_a_limit_however_large_the_exponent() -> None:
    assert to_micros(Decimal("9223372036854.775807")) == 2**63 - 1  # the most a 64-bit column holds
    huge = (Decimal("9223372036854.775808"), Decimal("9e999999"), Decimal("-9e999999"), Decimal("1e999999999999999999"))
    for amount in (*huge, 10**40):
        with pytest.raises(AmountTooLarge):
            to_micros(amount)
    assert to_micros(Decimal(5), limit=5_000_000) == 5_000_000
    with pytest.raises(AmountTooLarge):
        to_micros(Decimal("5.000001"), limit=5_000_000)
    assert to_micros(Decimal("-1.5")) == -1_500_000 and to_micros(Decimal("0E+999999")) == 0
    assert issubclass(AmountTooLarge, ValueError)  # callers that catch ValueError still do


@pytest.mark.parametrize(
    ("negative", "digits", "exponent", "micros"),
    [(False, "1", -6, 1), (False, "000120", -7, 12), (True, "5", 0, -5_000_000), (False, "0", 10**9, 0)],
)
def test_micros_of_digits(negative: bool, digits: str, exponent: int, micros: int) -> None:
    assert micros_of_digits(negative, digits, exponent) == micros


def test_from_micros_is_exact_for_any_integer() -> None:
    assert from_micros(1) == Decimal("0.000001") and str(from_micros(0)) == "0.000000"
    assert str(from_micros(-5)) == "-0.000005"
    assert from_micros(2**63 - 1) == Decimal("9223372036854.775807")
    big = 10**40 + 1  # 41 digits: past a 28-digit context, which rounded it (then failed to quantize)
    assert to_micros(from_micros(big), limit=big) == big


CREDITS = TypeAdapter(CreditsInput)


@pytest.mark.parametrize("value", ["12.5", "1e3", 5, 10**30, "x", "1" * MAX_CREDITS_TEXT])
def test_credits_on_the_wire_are_a_string_or_an_integer(value: object) -> None:
    assert CREDITS.validate_python(value) == value  # passed on as sent: the ledger judges the amount


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (True, "not a boolean"),
        (False, "not a boolean"),
        (2.0, "not a float"),
        (1.5, "not a float"),
        (float("nan"), "not a float"),
        (None, "not null"),
        ([1], "not an array"),
        ({"a": 1}, "not an object"),
        (Decimal("1"), "not Decimal"),
        ("1" * (MAX_CREDITS_TEXT + 1), "at most 64 characters"),
    ],
)
def test_credits_on_the_wire_refuse_lax_coercion_and_long_text(value: object, why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        CREDITS.validate_python(value)


@pytest.mark.parametrize(("text", "why"), [("true", "not a boolean"), ("2.0", "not a float"), ("1e400", "not a float")])
def test_credits_in_json_refuse_booleans_and_floats(text: str, why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        CREDITS.validate_json(text)
    assert CREDITS.validate_json('"2.0"') == "2.0" and CREDITS.validate_json("2") == 2


def test_bundle_fractions() -> None:
    bundle = ResourceBundle(cpu_percent=Decimal("0.5"), tokens_percent=Decimal("0.25"), duration_seconds=10)
    assert bundle.fraction(Resource.CPU) == Decimal("0.5")
    assert bundle.fractions()[Resource.MEMORY] == 0


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"cpu_percent": "1.01", "duration_seconds": 1}, "less than or equal to 1"),
        ({"memory_percent": "-0.1", "duration_seconds": 1}, "greater than or equal to 0"),
        ({"duration_seconds": 0}, "greater than 0"),
        ({"duration_seconds": "inf"}, "finite"),
        ({"gpu_percent": "0.1", "duration_seconds": 1}, "Extra inputs"),
    ],
)
def test_bundle_rejects_bad_input(fields: dict[str, object], why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        ResourceBundle(**fields)  # type: ignore[arg-type]


def test_a_bundle_converts_to_its_hard_envelope() -> None:
    bundle = ResourceBundle(
        cpu_percent=Decimal("0.25"),
        memory_percent=Decimal("0.5"),
        tokens_percent=Decimal("0.1"),
        attention_percent=Decimal("0.2"),
        duration_seconds=30,
    )
    envelope = HardEnvelope.of(bundle, cpu_cores=Decimal(8), memory_bytes=16 * 2**30, llm_spend_limit=1000)
    assert envelope.memory_bytes == 8 * 2**30
    assert envelope.cpu_cores == 2
    assert envelope.token_quota == 3000  # 10 % of LLM_SPEND_LIMIT tokens/s for 30 s
    assert (envelope.attention_share, envelope.wall_seconds) == (Decimal("0.2"), 30)
