"""Attacks on the System Service's own rules, over real HTTP: ids with NUL bytes, keys that collide across
callers, a replay that changes the beneficiary, an operator reward that would score a prompt twice."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from syntropism.infra.tables import Message
from tests.support.api import Api, running_api

BUNDLE = {"cpu_percent": "0.1", "duration_seconds": 1}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with running_api(tmp_path / "state") as built:
        yield built


def reason(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json().get("reason", "")


@pytest.mark.parametrize("agent_id", ["a\x00b", "..", ".", "x/y", "admin", "starter", "é"])
def test_hostile_ids_are_refused_on_create_and_spawn(api: Api, agent_id: str) -> None:
    before = api.snapshot()
    created = api.admin("POST", "/admin/agents", json={"agent_id": agent_id})
    assert created.status_code == 422 and created.json()["reason"] in ("invalid_agent_id", "invalid_input"), created
    spawned = api.call("POST", "/social/spawn", "alice", "k", json={"agent_id": agent_id, "source": "."})
    assert spawned.status_code == 422 and spawned.json()["reason"] in ("invalid_agent_id", "invalid_input"), spawned
    assert api.snapshot() == before


def test_the_same_key_from_two_callers_is_two_requests(api: Api) -> None:
    """Keys are scoped by caller: alice's key "k" is not bob's, nor the operator's."""
    alice = api.call("POST", "/market/bid", "alice", "k", json={"bundle": BUNDLE, "amount": "1"})
    bob = api.call("POST", "/market/bid", "bob", "k", json={"bundle": BUNDLE, "amount": "2"})
    operator = api.admin("POST", "/admin/bids", "k", json={"agent_id": "alice", "bundle": BUNDLE, "amount": "3"})
    assert [r.status_code for r in (alice, bob, operator)] == [200, 200, 200]
    assert len({r.json()["bid_id"] for r in (alice, bob, operator)}) == 3
    assert not any(r.json()["replayed"] for r in (alice, bob, operator))


def test_a_replay_that_changes_the_beneficiary_is_a_conflict(api: Api) -> None:
    first = api.call("POST", "/market/bid", "alice", "wake", json={"bundle": BUNDLE, "amount": "1"})
    assert first.status_code == 200 and first.json()["bundle"] is not None and first.json()["on_behalf_of"] is None
    before = api.snapshot()
    changed = api.call(
        "POST", "/market/bid", "alice", "wake", json={"bundle": BUNDLE, "amount": "1", "on_behalf_of": "bob"}
    )
    assert reason(changed) == (409, "idempotency_conflict"), changed.text
    assert api.snapshot() == before
    same = api.call("POST", "/market/bid", "alice", "wake", json={"bundle": BUNDLE, "amount": "1"})
    assert same.json()["replayed"] is True and same.json()["bid_id"] == first.json()["bid_id"]


def test_an_operator_reward_for_a_prompt_scores_it_once(api: Api) -> None:
    token = api.start_execution("alice", attention_ppm=500_000, duration_ms=30_000)
    auth = {"Authorization": f"Bearer {token}", "Idempotency-Key": "p"}
    prompt_id = api.http.post("/attention/prompt", headers=auth, json={"text": "rate me"}).json()["prompt_id"]
    scores = {"interesting": 5, "useful": 5, "understandable": 5}
    first = api.admin("POST", "/admin/reward", "r1", json={"agent_id": "alice", "prompt_id": prompt_id, **scores})
    assert first.status_code == 200, first.text
    minted_once = api.services.ledger.balance("alice").available
    again = api.admin("POST", "/admin/reward", "r2", json={"agent_id": "alice", "prompt_id": prompt_id, **scores})
    assert reason(again) == (409, "already_scored"), again.text
    scored = api.admin("POST", f"/admin/prompts/{prompt_id}/score", json=scores)
    assert reason(scored) == (409, "already_scored"), scored.text
    other = api.admin("POST", "/admin/reward", "r3", json={"agent_id": "bob", "prompt_id": prompt_id, **scores})
    assert reason(other) == (404, "not_found"), "a prompt of alice's cannot mint for bob"
    assert api.services.ledger.balance("alice").available == minted_once


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 10**6}, {"limit": "many"}, {"after": "x" * 65}],
    ids=["zero", "huge", "text", "long"],
)
def test_hostile_inbox_pages_are_refused_and_deliver_nothing(api: Api, params: dict[str, object]) -> None:
    assert api.call("POST", "/social/message", "bob", "m", json={"to_agent": "alice", "body": "hi"}).status_code == 200
    before = api.snapshot()
    refused = api.call("GET", "/social/inbox", "alice", params=params)
    assert reason(refused) == (422, "invalid_input"), refused.text
    assert api.snapshot() == before
    with api.services.database.reader() as session:
        assert session.scalar(select(Message.delivered_execution_id)) is None, "nothing was handed over"


def test_one_execution_cannot_crowd_the_service(tmp_path: Path) -> None:
    """Far more requests at once than an execution may have waiting: the surplus is refused with 429 at once
    (before any work), the rest are served, and another agent is served meanwhile."""
    with running_api(tmp_path / "crowd", requests_queued_per_execution=4, requests_per_second_per_execution=5) as api:
        crowd = api.as_agent("alice")

        async def flood() -> tuple[list[int], int]:
            async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
                answers = asyncio.gather(*(client.get("/economic/balance", headers=crowd) for _ in range(40)))
                other = await client.get("/economic/balance", headers=api.as_agent("bob"))
                return [r.status_code for r in await answers], other.status_code

        statuses, other = asyncio.run(flood())
        assert other == 200
        assert set(statuses) == {200, 429} and statuses.count(200) >= 6, statuses  # served: in flight + queued
