"""Hostile credit amounts, sent by an attacker over real HTTP to the real System Service.

Every amount an agent or the operator sends is hostile: 29-digit strings that a 28-digit decimal context would
round to a whole credit, exponents that overflow or underflow, JSON booleans and floats that a lax schema would
coerce, megabyte-long numbers. Each is sent as raw JSON text (so NaN, 1e400 and 5000-digit integers arrive as
an attacker would write them) to /economic/transfer, /market/bid and /admin/grant, and must be refused with a
4xx that says why — 422 for a bad amount, 402 where it is a matter of funds — and move nothing: the ledger,
the bids, the messages and the agents are as they were (``running_api`` also checks the ledger invariant when
the service stops). And a bid the ledger does accept, however extreme, cannot wedge the market.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from itertools import count
from pathlib import Path

import httpx
import pytest

from syntropism.core.allocation import AllocationScheduler
from syntropism.domain.clearing import MAX_PRICE
from syntropism.domain.economy import MAX_AMOUNT_MICROS, MAX_JOURNAL_SEQ
from syntropism.domain.models import Resource, from_micros
from tests.support.api import OPERATOR, Api, running_api

BUNDLE = '{"cpu_percent": "0.1", "memory_percent": "0.05", "duration_seconds": 5}'
JSON = {"Content-Type": "application/json"}
KEYS = count()

# (the amount as raw JSON text, the status, the reason, words the detail must contain)
SCHEMA_REFUSALS = [
    pytest.param("true", 422, "invalid_input", "not a boolean", id="json-true"),
    pytest.param("false", 422, "invalid_input", "not a boolean", id="json-false"),
    pytest.param("2.0", 422, "invalid_input", "not a float", id="float-2.0"),
    pytest.param("1.5", 422, "invalid_input", "not a float", id="float-1.5"),
    pytest.param("1e400", 422, "invalid_input", "not a float", id="float-overflowing-to-inf"),
    pytest.param("NaN", 422, "invalid_input", "not a float", id="json-NaN-literal"),
    pytest.param("-Infinity", 422, "invalid_input", "not a float", id="json-Infinity-literal"),
    pytest.param("null", 422, "invalid_input", "not null", id="null"),
    pytest.param("[1]", 422, "invalid_input", "not an array", id="array"),
    pytest.param('{"amount": 1}', 422, "invalid_input", "not an object", id="object"),
    pytest.param('"' + "1" * 65 + '"', 422, "invalid_input", "at most 64 characters", id="65-digit-string"),
    pytest.param('"' + "9" * 1_000_000 + '"', 422, "invalid_input", "at most 64 characters", id="megabyte-string"),
    pytest.param('"0.' + "0" * 70 + '1"', 422, "invalid_input", "at most 64 characters", id="long-fraction"),
]
LEDGER_REFUSALS = [
    # Rounded to exactly 1 credit in Decimal's default 28-digit context: must be refused, not rounded.
    pytest.param('"0.99999999999999999999999999999"', 422, "invalid_amount", "6 decimal places", id="29-digits"),
    pytest.param('"1.00000000000000000000000000001"', 422, "invalid_amount", "6 decimal places", id="29-digits-up"),
    pytest.param('"0.0000001"', 422, "invalid_amount", "6 decimal places", id="below-a-micro-credit"),
    pytest.param('"1e-1000000000"', 422, "invalid_amount", "6 decimal places", id="underflow-to-zero"),
    pytest.param('"-1e-1000000000"', 422, "invalid_amount", "positive", id="negative-underflow"),
    pytest.param('"0e999999999"', 422, "invalid_amount", "positive", id="zero-with-exponent"),
    pytest.param('"-0"', 422, "invalid_amount", "positive", id="negative-zero"),
    pytest.param('"-5"', 422, "invalid_amount", "positive", id="negative"),
    pytest.param("0", 422, "invalid_amount", "positive", id="int-zero"),
    pytest.param("-1", 422, "invalid_amount", "positive", id="int-negative"),
    pytest.param('"NaN"', 422, "invalid_amount", "finite", id="string-NaN"),
    pytest.param('"-Infinity"', 422, "invalid_amount", "finite", id="string-Infinity"),
    pytest.param('"sNaN"', 422, "invalid_amount", "finite", id="signalling-NaN"),
    pytest.param('"1_000"', 422, "invalid_amount", "not a number", id="underscores"),
    pytest.param('" 1"', 422, "invalid_amount", "not a number", id="whitespace"),
    pytest.param('"\\u0661"', 422, "invalid_amount", "not a number", id="arabic-indic-digit"),
    pytest.param('"0x10"', 422, "invalid_amount", "not a number", id="hex"),
    pytest.param('""', 422, "invalid_amount", "not a number", id="empty"),
    pytest.param('"1e"', 422, "invalid_amount", "not a number", id="dangling-exponent"),
    # Too large, however it is written: an Overflow in the old multiplication, a clear refusal now.
    pytest.param('"9e999999"', 422, "amount_too_large", "exceeds the limit", id="overflow-exponent"),
    pytest.param('"1e' + "9" * 61 + '"', 422, "amount_too_large", "exceeds the limit", id="64-char-exponent"),
    pytest.param('"1000000000000.000001"', 422, "amount_too_large", "exceeds the limit", id="a-micro-over-the-limit"),
    pytest.param(str(10**12 + 1), 422, "amount_too_large", "exceeds the limit", id="int-a-credit-over"),
    pytest.param("1" * 4000, 422, "amount_too_large", "exceeds the limit", id="4000-digit-int"),
]
PARSER_REFUSALS = [  # beyond what the JSON parser itself will read: refused before any amount is looked at
    pytest.param("1" * 5000, id="5000-digit-int"),
]


def send(api: Api, endpoint: str, amount: str) -> httpx.Response:
    """POST ``amount`` (raw JSON text) to ``endpoint`` as the attacker alice, or as the operator for a grant."""
    key = f"attack-{next(KEYS)}"
    if endpoint == "/economic/transfer":
        body = f'{{"to_agent": "bob", "amount": {amount}}}'
        return api.call("POST", endpoint, "alice", key, content=body, headers=JSON)
    if endpoint == "/market/bid":
        body = f'{{"bundle": {BUNDLE}, "amount": {amount}}}'
        return api.call("POST", endpoint, "alice", key, content=body, headers=JSON)
    body = f'{{"agent_id": "alice", "amount": {amount}}}'
    operator = JSON | {"Authorization": f"Bearer {OPERATOR}"}
    return api.call("POST", endpoint, key=key, content=body, headers=operator)


ENDPOINTS = ["/economic/transfer", "/market/bid", "/admin/grant"]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with running_api(tmp_path_factory.mktemp("amount-attacks") / "state") as built:
        yield built


def refused_and_nothing_moved(api: Api, call: Callable[[], httpx.Response], status: int, reason: str) -> dict[str, str]:
    before = api.snapshot()
    response = call()
    assert response.status_code == status, response.text[:1000]
    body = response.json()
    assert body["reason"] == reason, body
    assert body["error"] and body["detail"]
    assert len(response.content) < 2000, "a refusal must not echo a huge amount back"
    assert api.snapshot() == before, "a refused amount must move nothing"
    return body


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(("amount", "status", "reason", "why"), SCHEMA_REFUSALS)
def test_what_is_not_a_decimal_string_or_a_json_integer_is_refused_at_the_boundary(
    api: Api, endpoint: str, amount: str, status: int, reason: str, why: str
) -> None:
    body = refused_and_nothing_moved(api, lambda: send(api, endpoint, amount), status, reason)
    assert body["detail"].startswith("amount:") and why in body["detail"], body


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(("amount", "status", "reason", "why"), LEDGER_REFUSALS)
def test_an_amount_that_is_not_a_whole_number_of_micro_credits_within_the_limit_is_refused(
    api: Api, endpoint: str, amount: str, status: int, reason: str, why: str
) -> None:
    if endpoint == "/market/bid":
        reason = "invalid_amount"  # a bid's refusal is about the bid: its amount is invalid, the detail says how
    body = refused_and_nothing_moved(api, lambda: send(api, endpoint, amount), status, reason)
    assert why in body["detail"], body


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("amount", PARSER_REFUSALS)
def test_a_number_too_long_to_parse_is_a_bad_request(api: Api, endpoint: str, amount: str) -> None:
    refused_and_nothing_moved(api, lambda: send(api, endpoint, amount), 400, "bad_request")


@pytest.mark.parametrize("endpoint", ["/economic/transfer", "/market/bid"])
@pytest.mark.parametrize("amount", ['"100.000001"', '"1000000000000"', str(10**12)])
def test_more_than_the_attacker_holds_is_a_funds_refusal(api: Api, endpoint: str, amount: str) -> None:
    refused_and_nothing_moved(api, lambda: send(api, endpoint, amount), 402, "insufficient_funds")


@pytest.mark.parametrize("before", [2**63, 10**30, 0, -1])
def test_history_paging_out_of_the_64_bit_range_is_refused(api: Api, before: int) -> None:
    call = lambda: api.call("GET", "/economic/history", "alice", params={"before": before})  # noqa: E731
    body = refused_and_nothing_moved(api, call, 422, "invalid_input")
    assert "before" in body["detail"], body


def test_history_at_the_last_64_bit_sequence_is_the_newest_page(api: Api) -> None:
    response = api.call("GET", "/economic/history", "alice", params={"before": MAX_JOURNAL_SEQ})
    assert response.status_code == 200, response.text
    newest = api.call("GET", "/economic/history", "alice").json()
    assert response.json() == newest and newest["entries"], newest


def test_the_exact_boundaries_are_accepted(tmp_path: Path) -> None:
    """One micro-credit, written any exact way, and the largest single operation both move: the refusals above
    are not over-eager."""
    with running_api(tmp_path / "state") as api:
        for amount in ('"0.000001"', '"1e-6"', '"0.0000010000000000000000000000000000"', '"100e-8"', "1"):
            response = send(api, "/economic/transfer", amount)
            assert response.status_code == 200, response.text
        assert api.services.ledger.balance("bob").available == Decimal("101.000004")
        grant = send(api, "/admin/grant", '"1e12"')
        assert grant.status_code == 200 and grant.json()["amount"] == "1000000000000", grant.text
        grant = send(api, "/admin/grant", str(10**12))
        assert grant.status_code == 200 and grant.json()["amount"] == "1000000000000", grant.text
        bid = send(api, "/market/bid", '"1000000000000.000000"')
        assert bid.status_code == 200 and bid.json()["amount"] == "1000000000000", bid.text


def test_the_most_extreme_bid_the_ledger_accepts_cannot_wedge_the_market(tmp_path: Path) -> None:
    """The largest amount for the least capacity-seconds (1 ppm of cpu for 1 ms) discovers a price of 10²¹
    credits per capacity-second, beyond a 28-digit decimal context, which made every cycle raise from then on.
    Now each cycle clears, the price is bounded, and it decays on the idle cycles that follow."""
    with running_api(tmp_path / "state") as api:
        granted = api.admin(
            "POST", "/admin/grant", "whale", json={"agent_id": "alice", "amount": str(from_micros(MAX_AMOUNT_MICROS))}
        )
        assert granted.status_code == 200, granted.text
        tiny = {"cpu_percent": "0.000001", "duration_seconds": "0.001"}
        placed = api.call("POST", "/market/bid", "alice", "whale-bid", json={"bundle": tiny, "amount": "1e12"})
        assert placed.status_code == 200, placed.text
        scheduler = AllocationScheduler(api.services.database, api.services.settings, mechanism="first_price")
        first = scheduler.run_allocation_cycle()
        assert first.winners == [placed.json()["bid_id"]]
        assert first.prices[Resource.CPU] == MAX_PRICE
        for _ in range(3):  # the next cycles start from that price: none raises
            report = scheduler.run_allocation_cycle()
            assert all(api.services.settings.price_floor <= p <= MAX_PRICE for p in report.prices.values())
        state = api.call("GET", "/market/state", "bob")
        assert state.status_code == 200, state.text
        prices = {r["resource"]: Decimal(r["price"]) for r in state.json()["resources"]}
        assert prices["cpu"] == MAX_PRICE / 8  # halved on each of the three idle cycles since
        assert api.services.ledger.balance("alice").locked == 0
