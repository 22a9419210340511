"""The one rule for agent ids and the one way idempotency keys are scoped (domain/identity.py)."""

from __future__ import annotations

import pytest

from syntropism.domain.errors import Reason
from syntropism.domain.identity import (
    MAX_SCOPED_KEY_LENGTH,
    RESERVED_AGENT_IDS,
    InvalidAgentId,
    agent_key,
    check_agent_id,
    operator_key,
    scoped_key,
    system_key,
)


@pytest.mark.parametrize("name", sorted(RESERVED_AGENT_IDS | {"Admin", "SYSTEM", "Bench"}))
def test_the_systems_own_names_are_refused_at_creation(name: str) -> None:
    with pytest.raises(InvalidAgentId) as refused:
        check_agent_id(name)
    assert refused.value.reason is Reason.INVALID_AGENT_ID and "reserved" in refused.value.detail


def test_the_names_the_system_uses_are_among_the_reserved() -> None:
    # the operator's routes (admin), the runtime (system, starter), the benchmark runner's keys (bench)
    assert {"admin", "operator", "system", "starter", "bench"} <= RESERVED_AGENT_IDS


def test_a_plain_name_passes() -> None:
    assert check_agent_id("poet-2.v1_b") == "poet-2.v1_b"


def test_keys_are_scoped_by_caller_and_action_and_never_meet() -> None:
    keys = {agent_key("a", "bid", "k"), agent_key("b", "bid", "k"), agent_key("a", "transfer", "k")}
    keys |= {operator_key("bid", "k"), system_key("bid", "k"), scoped_key("bench", "bid", "k")}
    assert len(keys) == 6
    assert operator_key("grant", "k") == scoped_key("operator", "grant", "k") == "operator:grant:k"
    # an agent cannot pose as the operator: its id cannot contain ':' and "operator" is reserved
    with pytest.raises(InvalidAgentId):
        check_agent_id("operator:grant")


def test_a_long_key_is_hashed_within_the_column_and_stays_distinct() -> None:
    first, second = agent_key("a", "bid", "x" * 500), agent_key("a", "bid", "x" * 499 + "y")
    assert len(first) <= MAX_SCOPED_KEY_LENGTH and len(second) <= MAX_SCOPED_KEY_LENGTH
    assert first != second and first.startswith("agent:a:bid:sha256:")
