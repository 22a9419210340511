"""Attacks on /intelligence/inference: an agent trying to get more LLM tokens than its bundle bought, or to hold
the system-wide bucket that every agent shares. Each attacker is a client of the real System Service over real
HTTP, against a fake OpenAI-compatible upstream that records what reached it; each attack is refused with its
reason, the upstream never sees what it should not, and nobody is charged past their quota (``running_api``
checks the ledger on the way out)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from syntropism.core.intelligence import DEFAULT_MAX_TOKENS, prompt_token_bound
from syntropism.infra.tables import Execution, OutboxEvent
from syntropism.schemas import InferenceIn
from tests.support.api import Api, running_api
from tests.support.fake_llm import Calls, prompt_tokens
from tests.support.waiting import eventually

HELLO = [{"role": "user", "content": "say hello"}]
BOUND = prompt_token_bound({"messages": HELLO})
LIMIT = 1000  # LLM_SPEND_LIMIT, tokens/s
WINDOW = 10  # s: the system-wide bucket holds LIMIT × WINDOW = 10 000 tokens at most
BURST = LIMIT * WINDOW
FORWARDED = set(InferenceIn.model_fields)


@pytest.fixture
def api(tmp_path: Path, upstream: tuple[str, Calls]) -> Iterator[Api]:
    with running_api(
        tmp_path / "state",
        llm_base_url=upstream[0],
        llm_spend_limit=LIMIT,
        llm_window_seconds=WINDOW,
        llm_timeout_seconds=5,
    ) as built:
        yield built


class Attacker:
    """An agent's execution that bought ``quota`` tokens, and what it sends."""

    def __init__(self, api: Api, agent: str, quota: int) -> None:
        seconds = max(1, -(-quota // LIMIT))
        assert seconds == 1 or quota % LIMIT == 0
        token = api.start_execution(
            agent, tokens_ppm=quota * 1_000_000 // (LIMIT * seconds), duration_ms=seconds * 1000
        )
        self.api, self.agent, self.quota = api, agent, quota
        self.auth = {"Authorization": f"Bearer {token}"}

    def send(self, key: str, body: dict[str, Any]) -> httpx.Response:
        return self.api.http.post("/intelligence/inference", headers=self.auth | {"Idempotency-Key": key}, json=body)

    async def send_together(self, *requests: tuple[str, dict[str, Any]]) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=self.api.url, timeout=30) as client:
            return await asyncio.gather(
                *(
                    client.post("/intelligence/inference", headers=self.auth | {"Idempotency-Key": key}, json=body)
                    for key, body in requests
                )
            )

    def charged(self) -> int:
        with self.api.services.database.reader() as session:
            total = session.scalar(
                select(func.coalesce(func.sum(Execution.tokens_consumed), 0)).where(Execution.agent_id == self.agent)
            )
        assert total <= self.quota, f"{self.agent} was charged {total} tokens, past its quota of {self.quota}"
        return int(total)

    def wait_charged(self, tokens: int) -> None:
        asyncio.run(eventually(lambda: self.charged() == tokens, within=10, what=f"{tokens} tokens charged"))


def refused(answer: httpx.Response, status: int, reason: str, *words: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["reason"] == reason, body
    for word in words:
        assert word in body["detail"], body
    return body


def denials(api: Api) -> list[dict[str, Any]]:
    with api.services.database.reader() as session:
        payloads = session.scalars(
            select(OutboxEvent.payload).where(OutboxEvent.event_type == "intelligence.request_denied")
        ).all()
    return [json.loads(p)["data"] for p in payloads]


def assert_clean(calls: Calls) -> None:
    """What reached the upstream: only the fields the proxy meters, with the bound it reserved."""
    for body in calls:
        assert set(body) <= FORWARDED, set(body) - FORWARDED
        assert "max_completion_tokens" not in body and body["max_tokens"] >= 1
        assert body.get("stream") or "stream_options" not in body
        assert not body.get("stream") or body["stream_options"] == {"include_usage": True}


# --- more completions than reserved ---------------------------------------------------------------------------


def test_n_multiplies_the_reservation_and_is_bounded(api: Api, upstream: tuple[str, Calls]) -> None:
    alice = Attacker(api, "alice", quota=BOUND + 80)
    refused(alice.send("n16", {"messages": HELLO, "max_tokens": 10, "n": 16}), 422, "invalid_input", "n:", "8")
    # Eight choices of 11 tokens do not fit (reserving one choice's worth would have let them through).
    body = refused(alice.send("n8-11", {"messages": HELLO, "max_tokens": 11, "n": 8}), 402, "quota_exceeded")
    assert f"up to {BOUND + 88} tokens" in body["detail"] and "max_tokens ≤ 10 would fit" in body["detail"]
    assert upstream[1] == [], "nothing refused reached the upstream"

    answer = alice.send("n8-10", {"messages": HELLO, "max_tokens": 10, "n": 8})
    assert answer.status_code == 200, answer.text
    used = prompt_tokens(HELLO) + 8 * 10
    assert answer.json()["usage"]["total_tokens"] == used, "the fake wrote n × max_tokens"
    assert int(answer.headers["X-Tokens-Remaining"]) == alice.quota - used
    assert [(c["n"], c["max_tokens"]) for c in upstream[1]] == [(8, 10)]
    assert_clean(upstream[1])
    alice.wait_charged(used)


# --- prompt tokens the bound did not count ---------------------------------------------------------------------

BIG = "x" * 50_000  # 50 kB
BIG_SCHEMA = {"type": "object", "description": BIG}
HIDDEN = {
    "tool description": {"tools": [{"type": "function", "function": {"name": "f", "description": BIG}}]},
    "tool parameters": {"tools": [{"type": "function", "function": {"name": "f", "parameters": BIG_SCHEMA}}]},
    "multi-byte tool description": {
        "tools": [{"type": "function", "function": {"name": "f", "description": "é" * 25_000}}]
    },
    "functions": {"functions": [{"name": "f", "description": BIG}]},
    "response format": {"response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": BIG_SCHEMA}}},
}


@pytest.mark.parametrize("where", list(HIDDEN))
def test_50_kB_hidden_beside_the_messages_is_reserved(
    api: Api, upstream: tuple[str, Calls], where: str, tmp_path: Path
) -> None:
    alice = Attacker(api, "alice", quota=10_000)
    body = {"messages": HELLO, "max_tokens": 10, **HIDDEN[where]}
    denial = refused(alice.send("hidden", body), 402, "quota_exceeded", "prompt ≤", "no max_tokens would")
    [event] = denials(api)
    assert event["requested_tokens"] >= 50_000, "its 50 kB (UTF-8 bytes) were counted"
    assert f"up to {event['requested_tokens']} tokens" in denial["detail"]
    bob = Attacker(api, "bob", quota=6 * BURST)  # bob bought enough, but the bucket never holds that much
    refused(bob.send("hidden", body), 429, "exceeds_system_limit", "can never fit", "its prompt alone is too large")
    assert upstream[1] == [], "it never reached the upstream"
    assert alice.charged() == bob.charged() == 0

    # Where the bucket holds it, the same request goes through: its whole prompt reserved, its usage charged.
    with running_api(tmp_path / "big", llm_base_url=upstream[0], llm_spend_limit=LIMIT, llm_window_seconds=100) as big:
        carol = Attacker(big, "alice", quota=60_000)
        answer = carol.send("hidden", body)
        assert answer.status_code == 200, answer.text
        assert len(upstream[1]) == 1 and {k: upstream[1][0][k] for k in HIDDEN[where]} == HIDDEN[where]
        assert_clean(upstream[1])
        carol.wait_charged(prompt_tokens(HELLO) + 10)


def test_stop_sequences_are_counted_too(api: Api, upstream: tuple[str, Calls]) -> None:
    alice = Attacker(api, "alice", quota=1000)
    stop = ["y" * 1000] * 4
    refused(alice.send("stop", {"messages": HELLO, "max_tokens": 10, "stop": stop}), 402, "quota_exceeded")
    assert upstream[1] == []


# --- fetching from the network on a network-less agent's behalf ------------------------------------------------

IMAGE = {"type": "image_url", "image_url": {"url": "http://169.254.169.254/latest/meta-data/"}}


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ([{"type": "text", "text": "what is this?"}, IMAGE], ("image parts are refused", "network")),
        ([{"type": "image_url", "image_url": "http://example.com/cat.png"}], ("image parts are refused",)),
        ([{"type": "input_image", "image_url": "http://example.com/cat.png"}], ("image parts are refused",)),
        ([{"type": "text", "text": "hi", "image_url": {"url": "http://example.com"}}], ("image parts are refused",)),
        ([{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}], ("only text parts",)),
        ([{"type": "file", "file": {"file_id": "file-1"}}], ("only text parts",)),
    ],
)
def test_image_and_other_non_text_parts_are_refused(
    api: Api, upstream: tuple[str, Calls], content: list[dict[str, Any]], words: tuple[str, ...]
) -> None:
    alice = Attacker(api, "alice", quota=1000)
    body = {"messages": [{"role": "user", "content": content}], "max_tokens": 10}
    refused(alice.send("image", body), 422, "invalid_input", *words)
    assert upstream[1] == [] and alice.charged() == 0


def test_a_json_schema_that_references_a_url_is_refused(api: Api, upstream: tuple[str, Calls]) -> None:
    alice = Attacker(api, "alice", quota=1000)
    remote = {"type": "object", "properties": {"a": {"$ref": "https://example.com/schema.json"}}}
    tool = {"type": "function", "function": {"name": "f", "parameters": remote}}
    refused(alice.send("ref", {"messages": HELLO, "tools": [tool]}), 422, "invalid_input", "$ref", "network")
    local = {"type": "object", "$defs": {"a": {"type": "string"}}, "properties": {"a": {"$ref": "#/$defs/a"}}}
    tool["function"]["parameters"] = local
    assert alice.send("local-ref", {"messages": HELLO, "tools": [tool], "max_tokens": 5}).status_code == 200
    assert len(upstream[1]) == 1


# --- fields the proxy does not meter ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"web_search_options": {}}, "web_search_options"),
        ({"service_tier": "priority"}, "service_tier"),
        ({"prediction": {"type": "content", "content": "x" * 1000}}, "prediction"),
        ({"best_of": 20}, "best_of"),
        ({"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}, "audio, modalities"),
        ({"extra_body": {"max_tokens": 100_000}}, "extra_body"),
        ({"logit_bias": {"50256": 100}}, "logit_bias"),
        ({"reasoning_effort": "high"}, "reasoning_effort"),
    ],
)
def test_unknown_fields_are_refused_not_forwarded(
    api: Api, upstream: tuple[str, Calls], extra: dict[str, Any], named: str
) -> None:
    alice = Attacker(api, "alice", quota=1000)
    refused(alice.send("extra", {"messages": HELLO, "max_tokens": 5, **extra}), 422, "invalid_input", named)
    assert upstream[1] == [] and alice.charged() == 0


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"messages": [{"role": "user", "content": "hi", "audio": {"id": "a"}}]}, "messages.0.audio"),
        ({"messages": [{"role": "developer", "content": "hi"}]}, "messages.0.role"),
        ({"messages": [{"role": "user", "content": "hi"}], "stream": True, "stream_options": {"x": 1}}, "x"),
        ({"messages": HELLO, "max_tokens": 5, "max_completion_tokens": 500}, "max_completion_tokens differ"),
        ({"messages": HELLO, "temperature": 3}, "temperature"),
        ({"messages": HELLO, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"messages": [{"role": "user", "content": "x" * 500_001}]}, "messages.0.content"),
    ],
)
def test_messages_and_options_are_typed_and_bounded(
    api: Api, upstream: tuple[str, Calls], body: dict[str, Any], named: str
) -> None:
    alice = Attacker(api, "alice", quota=1000)
    refused(alice.send("typed", body), 422, "invalid_input", named)
    assert upstream[1] == []


def test_turning_off_usage_in_a_stream_does_not_turn_off_metering(api: Api, upstream: tuple[str, Calls]) -> None:
    alice = Attacker(api, "alice", quota=1000)
    body = {"messages": HELLO, "max_tokens": 7, "stream": True, "stream_options": {"include_usage": False}}
    with api.http.stream(
        "POST", "/intelligence/inference", headers=alice.auth | {"Idempotency-Key": "s"}, json=body
    ) as answer:
        assert answer.status_code == 200
        lines = list(answer.iter_lines())
    assert upstream[1][0]["stream_options"] == {"include_usage": True}
    assert any('"usage"' in line for line in lines)
    alice.wait_charged(prompt_tokens(HELLO) + 7)


# --- holding the shared bucket ----------------------------------------------------------------------------------


def test_no_max_tokens_reserves_a_default_not_the_whole_quota(api: Api, upstream: tuple[str, Calls]) -> None:
    alice = Attacker(api, "alice", quota=5 * BURST)  # far more than the bucket ever holds
    answer = alice.send("no-max", {"messages": HELLO})
    assert answer.status_code == 200, answer.text  # not "429 … never"
    assert upstream[1][0]["max_tokens"] == DEFAULT_MAX_TOKENS
    alice.wait_charged(prompt_tokens(HELLO) + DEFAULT_MAX_TOKENS)


def test_a_slow_request_without_max_tokens_does_not_hold_the_bucket(api: Api, upstream: tuple[str, Calls]) -> None:
    alice = Attacker(api, "alice", quota=BURST - 1000)  # all of it would leave others 1000 tokens
    bob = Attacker(api, "bob", quota=BURST)
    big = BURST - 2 * BOUND - DEFAULT_MAX_TOKENS - 100  # fits beside alice's default, not beside all her quota

    async def both() -> list[httpx.Response]:
        slow = asyncio.ensure_future(alice.send_together(("slow", {"messages": HELLO, "model": "sleep-1"})))
        await eventually(lambda: len(upstream[1]) == 1, within=5, what="alice's request upstream")
        [quick] = await bob.send_together(("big", {"messages": HELLO, "max_tokens": big}))
        return [*(await slow), quick]

    slow, quick = asyncio.run(both())
    assert quick.status_code == 200, f"bob was kept out while alice's slow request ran: {quick.text}"
    assert slow.status_code == 200, slow.text
    assert upstream[1].peak(lambda body: prompt_token_bound(body) + body["max_tokens"]) <= BURST
    alice.wait_charged(prompt_tokens(HELLO) + DEFAULT_MAX_TOKENS)
    bob.wait_charged(prompt_tokens(HELLO) + big)


def test_a_request_that_can_never_fit_says_so_and_what_would(api: Api, upstream: tuple[str, Calls]) -> None:
    alice = Attacker(api, "alice", quota=5 * BURST)
    fits = BURST - BOUND
    body = refused(
        alice.send("huge", {"messages": HELLO, "max_tokens": 2 * BURST}),
        429, "exceeds_system_limit", "can never fit", f"max_tokens ≤ {fits} would",
    )  # fmt: skip
    assert "Retry-After" not in body
    two = refused(alice.send("huge-n", {"messages": HELLO, "max_tokens": fits, "n": 2}), 429, "exceeds_system_limit")
    assert f"max_tokens ≤ {(BURST - BOUND) // 2} would" in two["detail"]
    assert upstream[1] == []
    # What it said fits: the whole bucket, so once the bucket is full (429 system_limit, to retry, until then).
    answers = [alice.send("fits", {"messages": HELLO, "max_tokens": fits})]
    while answers[-1].status_code == 429 and len(answers) < 50:
        assert answers[-1].json()["reason"] == "system_limit", answers[-1].text
        time.sleep(0.05)
        answers.append(alice.send("fits", {"messages": HELLO, "max_tokens": fits}))
    assert answers[-1].status_code == 200, answers[-1].text
    alice.wait_charged(prompt_tokens(HELLO) + fits)


# --- idempotency keys ---------------------------------------------------------------------------------------------


def test_a_key_reused_for_a_different_body_is_refused(api: Api, upstream: tuple[str, Calls]) -> None:
    alice = Attacker(api, "alice", quota=1000)
    first = alice.send("k", {"messages": HELLO, "max_tokens": 5})
    assert first.status_code == 200
    other = {"messages": [{"role": "user", "content": "write a long essay"}], "max_tokens": 500}
    refused(alice.send("k", other), 409, "idempotency_conflict", "different request")
    refused(alice.send("k", {"messages": HELLO, "max_tokens": 5, "n": 2}), 409, "idempotency_conflict")
    again = alice.send("k", {"max_tokens": 5, "messages": HELLO})  # the same request, its fields in another order
    assert again.headers["X-Replayed"] == "true" and again.json() == first.json()
    assert len(upstream[1]) == 1
    alice.wait_charged(prompt_tokens(HELLO) + 5)


def test_two_concurrent_requests_under_one_key_are_served_and_charged_once(
    api: Api, upstream: tuple[str, Calls]
) -> None:
    alice = Attacker(api, "alice", quota=1000)
    body = {"messages": HELLO, "max_tokens": 20, "model": "sleep-0.3"}
    answers = asyncio.run(alice.send_together(("same", body), ("same", body)))
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    assert answers[0].json() == answers[1].json()
    assert sorted(a.headers.get("X-Replayed", "false") for a in answers) == ["false", "true"]
    assert len(upstream[1]) == 1, "forwarded once"
    alice.wait_charged(prompt_tokens(HELLO) + 20)

    other = {**body, "max_tokens": 21}
    first, second = asyncio.run(alice.send_together(("k2", body), ("k2", other)))
    assert first.status_code == 200
    refused(second, 409, "idempotency_conflict", "in flight")
    assert len(upstream[1]) == 2
    alice.wait_charged(2 * (prompt_tokens(HELLO) + 20))


def test_a_request_waiting_on_a_streamed_key_is_refused(api: Api, upstream: tuple[str, Calls]) -> None:
    alice = Attacker(api, "alice", quota=1000)
    body = {"messages": HELLO, "max_tokens": 5, "model": "sleep-0.3", "stream": True}
    answers = asyncio.run(alice.send_together(("streamed", body), ("streamed", body)))
    assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]
    refused(next(a for a in answers if a.status_code == 409), 409, "idempotency_conflict", "streamed")
    assert len(upstream[1]) == 1
    alice.wait_charged(prompt_tokens(HELLO) + 5)


def test_the_replay_cache_is_bounded(api: Api, upstream: tuple[str, Calls], monkeypatch: pytest.MonkeyPatch) -> None:
    from syntropism.core import intelligence

    monkeypatch.setattr(intelligence, "REPLAY_ANSWERS", 3)
    alice = Attacker(api, "alice", quota=1000)
    for i in range(5):
        assert alice.send(f"r{i}", {"messages": HELLO, "max_tokens": 1}).status_code == 200
    quota = next(iter(api.services.intelligence._quotas.values()))
    assert list(quota.answers) == ["r2", "r3", "r4"] and len(quota.keys) == 5
    refused(alice.send("r0", {"messages": HELLO, "max_tokens": 1}), 409, "idempotency_conflict", "no longer kept")
    assert alice.send("r4", {"messages": HELLO, "max_tokens": 1}).headers["X-Replayed"] == "true"
    assert len(upstream[1]) == 5
    alice.wait_charged(5 * (prompt_tokens(HELLO) + 1))


@pytest.mark.parametrize("stream", [False, True])
def test_hanging_up_early_leaves_nothing_reserved_and_nothing_unrecorded(
    api: Api, upstream: tuple[str, Calls], stream: bool
) -> None:
    alice = Attacker(api, "alice", quota=1000)
    body = json.dumps({"messages": HELLO, "max_tokens": 50, "model": "sleep-0.3", "stream": stream}).encode()
    host, port = api.url.removeprefix("http://").split(":")

    async def hang_up() -> None:
        _reader, writer = await asyncio.open_connection(host, int(port))
        head = (
            f"POST /intelligence/inference HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Authorization: {alice.auth['Authorization']}\r\nIdempotency-Key: gone\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        writer.write(head.encode() + body)
        await writer.drain()
        await eventually(lambda: len(upstream[1]) == 1, within=5, what="the request upstream")
        writer.close()  # before the upstream answered
        await writer.wait_closed()

    asyncio.run(hang_up())
    quota = next(iter(api.services.intelligence._quotas.values()))
    asyncio.run(eventually(lambda: quota.reserved == 0, within=5, what="the reservation released"))
    reservation = BOUND + 50
    asyncio.run(eventually(lambda: alice.charged() == quota.consumed > 0, within=5, what="the charge recorded"))
    assert quota.consumed in (prompt_tokens(HELLO) + 50, reservation), "its usage, or its reservation when unseen"
