from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from syntropism.domain.models import HardEnvelope, Resource, ResourceBundle, from_micros, to_micros


def test_micros_are_exact() -> None:
    assert to_micros(Decimal("30.000001")) == 30_000_001
    assert from_micros(30_000_001) == Decimal("30.000001")
    assert to_micros(from_micros(123_456_789)) == 123_456_789


@pytest.mark.parametrize("amount", [Decimal("0.0000001"), Decimal("NaN"), Decimal("Infinity")])
def test_micros_refuse_what_they_cannot_hold(amount: Decimal) -> None:
    with pytest.raises(ValueError, match="micro-credits"):
        to_micros(amount)


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
