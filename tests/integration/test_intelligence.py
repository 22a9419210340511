"""The LLM proxy against a fake OpenAI-compatible upstream over real HTTP: exact quotas, streaming, concurrency,
the system-wide limit (also across processes), and upstream failures that charge nothing."""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from syntropism.core.intelligence import DEFAULT_MAX_TOKENS, prompt_token_bound
from syntropism.infra.database import Database
from syntropism.infra.spend_limiter import SpendLimiter
from syntropism.infra.tables import Execution, OutboxEvent
from syntropism.sdk import ServiceError, SystemService
from tests.support.api import Api, running_api
from tests.support.fake_llm import Calls, prompt_tokens

HELLO = [{"role": "user", "content": "say hello"}]
BOUND = prompt_token_bound({"messages": HELLO})
LIMIT = 1000  # LLM_SPEND_LIMIT, tokens/s


@pytest.fixture
def api(tmp_path: Path, upstream: tuple[str, Calls]) -> Iterator[Api]:
    with running_api(
        tmp_path / "state", llm_base_url=upstream[0], llm_spend_limit=LIMIT, llm_timeout_seconds=1
    ) as built:
        yield built


def execution(api: Api, agent: str, quota: int) -> dict[str, str]:
    """A running execution whose bundle buys exactly ``quota`` tokens (tokens_percent × LIMIT × 1 s, or all of
    LIMIT for as many seconds as a quota of a multiple of LIMIT needs)."""
    seconds = max(1, -(-quota // LIMIT))
    assert seconds == 1 or quota % LIMIT == 0, "a quota over LIMIT is a multiple of it"
    token = api.start_execution(agent, tokens_ppm=quota * 1_000_000 // (LIMIT * seconds), duration_ms=1000 * seconds)
    return {"Authorization": f"Bearer {token}"}


def infer(api: Api, auth: dict[str, str], key: str, **body: Any) -> httpx.Response:
    return api.http.post(
        "/intelligence/inference", headers=auth | {"Idempotency-Key": key}, json={"messages": HELLO, **body}
    )


def consumed(api: Api) -> dict[str, int]:
    """Tokens charged per agent, over all its executions."""
    with api.services.database.reader() as session:
        rows = session.execute(
            select(Execution.agent_id, func.sum(Execution.tokens_consumed)).group_by(Execution.agent_id)
        ).all()
    return {agent: int(total) for agent, total in rows}


def events(api: Api, event_type: str) -> list[dict[str, Any]]:
    with api.services.database.reader() as session:
        payloads = session.scalars(select(OutboxEvent.payload).where(OutboxEvent.event_type == event_type)).all()
    return [json.loads(p)["data"] for p in payloads]


def test_the_quota_is_enforced_exactly_at_its_boundary(api: Api, upstream: tuple[str, list[Any]]) -> None:
    bound = BOUND
    auth = execution(api, "alice", quota=bound + 40)
    refused = infer(api, auth, "too-much", max_tokens=41)  # one token past the quota
    assert refused.status_code == 402 and refused.json()["reason"] == "quota_exceeded", refused.text
    assert upstream[1] == [], "a refused request never reaches the upstream"

    fits = infer(api, auth, "exactly", max_tokens=40)  # reservation == quota
    assert fits.status_code == 200, fits.text
    charged = prompt_tokens(HELLO) + 40
    assert fits.json()["usage"]["total_tokens"] == charged
    assert int(fits.headers["X-Tokens-Remaining"]) == bound + 40 - charged
    again = infer(api, auth, "exactly", max_tokens=40)  # a repeat is replayed, not charged again
    assert again.headers["X-Replayed"] == "true" and again.json() == fits.json()

    remaining = bound + 40 - charged
    assert remaining < bound + 1
    refused = infer(api, auth, "no-room", max_tokens=1)
    assert refused.status_code == 402
    # The durable record is written just after the answer: wait for it.
    asyncio.run(_eventually(lambda: consumed(api).get("alice") == charged))
    [record] = events(api, "intelligence.tokens_consumed")
    assert (record["prompt_tokens"], record["completion_tokens"], record["remaining_quota"]) == (
        prompt_tokens(HELLO),
        40,
        remaining,
    )
    denied = events(api, "intelligence.request_denied")
    assert [d["reason"] for d in denied] == ["quota_exceeded", "quota_exceeded"]
    assert denied[0]["requested_tokens"] == bound + 41 and denied[0]["remaining_quota"] == bound + 40


def test_without_max_tokens_the_request_gets_what_is_left_and_no_more(api: Api, upstream: tuple[str, Calls]) -> None:
    auth = execution(api, "alice", quota=BOUND + 25)
    answer = infer(api, auth, "all-of-it")
    assert answer.status_code == 200
    assert upstream[1][-1]["max_tokens"] == 25, "the upstream was told the most it may write"


def test_without_max_tokens_a_large_quota_reserves_the_default_not_all_of_it(
    api: Api, upstream: tuple[str, Calls]
) -> None:
    auth = execution(api, "alice", quota=50_000)
    answer = infer(api, auth, "default")
    assert answer.status_code == 200, answer.text
    assert upstream[1][-1]["max_tokens"] == DEFAULT_MAX_TOKENS
    assert int(answer.headers["X-Tokens-Remaining"]) == 50_000 - prompt_tokens(HELLO) - DEFAULT_MAX_TOKENS
    two = infer(api, auth, "two-choices", n=2)
    assert two.status_code == 200 and upstream[1][-1]["max_tokens"] == DEFAULT_MAX_TOKENS, "per choice"
    assert two.json()["usage"]["completion_tokens"] == 2 * DEFAULT_MAX_TOKENS


def test_a_streamed_answer_is_relayed_and_metered(api: Api) -> None:
    auth = execution(api, "alice", quota=500)
    with api.http.stream(
        "POST",
        "/intelligence/inference",
        headers=auth | {"Idempotency-Key": "stream-1"},
        json={"messages": HELLO, "max_tokens": 7, "stream": True},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        data = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks if c["choices"]) == "tok " * 7
    charged = prompt_tokens(HELLO) + 7
    asyncio.run(_eventually(lambda: consumed(api).get("alice") == charged))
    assert infer(api, auth, "stream-1", stream=True, max_tokens=7).json()["reason"] == "idempotency_conflict"


def test_concurrent_requests_of_one_execution_cannot_overspend(api: Api, upstream: tuple[str, Calls]) -> None:
    per_request = BOUND + 30
    quota = 3 * per_request + 10  # room for three at once, not four
    auth = execution(api, "alice", quota=quota)

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        "/intelligence/inference",
                        headers=auth | {"Idempotency-Key": f"burst-{i}"},
                        json={"messages": HELLO, "max_tokens": 30, "model": "sleep-0.05"},
                    )
                    for i in range(10)
                )
            )

    # A request that ends returns what it did not use, so a later one may fit again: how many succeed depends on
    # timing. What may not: more reserved upstream at once than the quota, or a charge past it.
    answers = asyncio.run(burst())
    ok = [a for a in answers if a.status_code == 200]
    assert ok and {a.status_code for a in answers} <= {200, 402}, [a.text for a in answers]
    assert all(a.json()["reason"] == "quota_exceeded" for a in answers if a.status_code == 402)
    assert len(upstream[1]) == len(ok), "only the admitted requests went upstream"
    assert upstream[1].peak(lambda body: prompt_token_bound(body) + body["max_tokens"]) <= quota
    charged = len(ok) * (prompt_tokens(HELLO) + 30)  # each 200 charged exactly its usage
    asyncio.run(_eventually(lambda: consumed(api).get("alice") == charged))
    assert charged <= quota
    assert len(events(api, "intelligence.tokens_consumed")) == len(ok)
    assert all(0 <= int(a.headers["X-Tokens-Remaining"]) <= quota for a in ok)


def test_the_system_wide_limit_holds_across_agents(tmp_path: Path, upstream: tuple[str, list[Any]]) -> None:
    # 30 tokens/s over a 10 s window: at most 300 tokens in flight or spent at once, whoever asks.
    with running_api(tmp_path / "state", llm_base_url=upstream[0], llm_spend_limit=30, llm_window_seconds=10) as api:
        reservation = BOUND + 90
        answers = []
        for agent in ("alice", "bob", "alice"):  # each execution's own quota (30 × 100 s) is far from the limit
            token = api.start_execution(agent, tokens_ppm=1_000_000, duration_ms=100_000)
            answers.append(infer(api, {"Authorization": f"Bearer {token}"}, f"{agent}-big", max_tokens=90))
        statuses = [a.status_code for a in answers]
        assert statuses == [200, 200, 429], [a.text for a in answers]
        assert answers[2].json()["reason"] == "system_limit" and int(answers[2].headers["Retry-After"]) >= 1
        assert len(upstream[1]) == 2, "the third never reached the upstream"
        spent = 2 * (prompt_tokens(HELLO) + 90)
        assert 2 * reservation > 300 - reservation, "the scenario: two fit, a third does not"
        asyncio.run(_eventually(lambda: sum(consumed(api).values()) == spent))
        assert sum(consumed(api).values()) <= 300


def test_the_system_wide_bucket_is_shared_by_processes_on_one_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    database = Database(url)
    database.migrate()
    try:
        limiter = SpendLimiter(database, rate=1, window=100)  # 100 tokens, refilling 1 per second
        context = multiprocessing.get_context("spawn")
        with context.Pool(1) as pool:
            assert pool.apply(_take_in_another_process, (url, 70)) is None, "the other process took 70"
        wait = limiter.try_take(70)
        assert wait is not None and wait > 30, "this process sees what the other one spent"
        assert limiter.try_take(25) is None
    finally:
        database.dispose()


def _take_in_another_process(url: str, tokens: int) -> float | None:
    database = Database(url)
    try:
        return SpendLimiter(database, rate=1, window=100).try_take(tokens)
    finally:
        database.dispose()


@pytest.mark.parametrize(
    ("model", "status", "reason"), [("broken", 502, "upstream_error"), ("slow", 504, "upstream_timeout")]
)
def test_upstream_failures_are_clear_and_charge_nothing(api: Api, model: str, status: int, reason: str) -> None:
    auth = execution(api, "alice", quota=500)
    level_before = api.services.intelligence.limiter.level()
    failed = infer(api, auth, f"fail-{model}", model=model, max_tokens=10)
    assert failed.status_code == status and failed.json()["reason"] == reason, failed.text
    assert consumed(api)["alice"] == 0
    assert api.services.intelligence.limiter.level() >= level_before, "the reservation went back to the bucket"
    ok = infer(api, auth, "after", max_tokens=10)
    assert int(ok.headers["X-Tokens-Remaining"]) == 500 - prompt_tokens(HELLO) - 10, "the whole quota was still there"


def test_no_upstream_is_a_503_that_says_how_to_configure_one(tmp_path: Path) -> None:
    with running_api(tmp_path / "state") as api:
        answer = infer(api, execution(api, "alice", quota=100), "none")
        assert answer.status_code == 503 and answer.json()["reason"] == "no_upstream"
        assert "SYNTROPISM_LLM_BASE_URL" in answer.json()["detail"]


def test_the_sdk_infers(api: Api) -> None:
    token = api.start_execution("alice", tokens_ppm=500_000, duration_ms=1000)
    with SystemService(api.url, token) as service:
        answer = service.infer(HELLO, max_tokens=5)
        assert answer["choices"][0]["message"]["content"] == "tok " * 5
        with pytest.raises(ServiceError) as refusal:
            service.infer(HELLO, max_tokens=10_000)
        assert (refusal.value.status, refusal.value.reason) == (402, "quota_exceeded")


async def _eventually(condition: Any) -> None:
    from tests.support.waiting import eventually

    await eventually(condition, within=10, what="the consumption record")


def test_the_bucket_refills_and_is_shared_on_sqlite_and_postgresql(any_database_url: str) -> None:
    clock = [1000.0]
    first, second = Database(any_database_url), Database(any_database_url)
    first.migrate()
    try:
        a = SpendLimiter(first, rate=10, window=10, clock=lambda: clock[0])  # 100 tokens, 10 more per second
        b = SpendLimiter(second, rate=10, window=10, clock=lambda: clock[0])
        assert a.try_take(80) is None
        assert b.try_take(30) == pytest.approx(1.0), "b sees a's spending: 20 left, 30 wanted → 1 s"
        clock[0] += 2
        assert b.try_take(30) is None, "two seconds refilled 20"
        a.give_back(50)
        assert b.level() == pytest.approx(60)
        clock[0] += 100
        assert a.level() == pytest.approx(100), "never more than the burst"
        assert a.try_take(101) == float("inf")
        a.close()
        b.close()
    finally:
        first.dispose()
        second.dispose()


def test_a_failing_record_is_kept_logged_and_retried(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    service = api.services.intelligence
    record, give_back = service._record_consumption, service.limiter.give_back
    failures: list[int] = []
    returned: list[int] = []

    def busy(settled: Any, *args: Any) -> int:
        if len(failures) < 2:  # the database is busy twice
            failures.append(len(settled))
            raise OperationalError("UPDATE executions …", {}, Exception("database is locked"))
        return record(settled, *args)

    monkeypatch.setattr(service, "_record_consumption", busy)
    monkeypatch.setattr(service.limiter, "give_back", lambda tokens: (returned.append(tokens), give_back(tokens)))
    auth = execution(api, "alice", quota=500)
    with caplog.at_level(logging.ERROR, logger="syntropism.core.intelligence"):
        assert infer(api, auth, "one", max_tokens=10).status_code == 200
        asyncio.run(_eventually(lambda: failures))
        assert infer(api, auth, "two", max_tokens=10).status_code == 200
        each = prompt_tokens(HELLO) + 10
        asyncio.run(_eventually(lambda: consumed(api).get("alice") == 2 * each))
        # The reservations go back to the bucket just after the record commits: wait for that too.
        asyncio.run(_eventually(lambda: sum(returned) >= 2 * (BOUND + 10 - each)))
    assert len(failures) == 2 and failures[-1] >= 1
    assert len(events(api, "intelligence.tokens_consumed")) == 2, "no event lost, none recorded twice"
    assert sum(returned) == 2 * (BOUND + 10 - each), "the unused reservations went back to the bucket once"
    assert any("failed: kept, retrying" in r.getMessage() and r.exc_info for r in caplog.records), caplog.text


def test_the_prompt_bound_counts_everything_rendered_into_the_prompt() -> None:
    tool = {"type": "function", "function": {"name": "f", "description": "é" * 1000, "parameters": {}}}
    with_tools = prompt_token_bound({"messages": HELLO, "tools": [tool]})
    assert with_tools >= BOUND + 2000, "UTF-8 bytes, not characters"
    assert prompt_token_bound({"messages": HELLO, "stop": ["x" * 500]}) >= BOUND + 500
    schema = {"type": "json_schema", "json_schema": {"name": "s", "schema": {"description": "y" * 700}}}
    assert prompt_token_bound({"messages": HELLO, "response_format": schema}) >= BOUND + 700
    assert prompt_token_bound({"messages": HELLO, "functions": [tool["function"]]}) >= BOUND + 2000
