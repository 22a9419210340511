"""The System Service over real HTTP: every endpoint's success path and its refusals, and that a refusal
changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from syntropism.infra.tables import Agent
from syntropism.sdk import ServiceError, SystemService
from tests.support.api import Api, running_api

BUNDLE = {"cpu_percent": "0.1", "memory_percent": "0.05", "duration_seconds": 5}


def refused(response: httpx.Response, status: int, reason: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["reason"] == reason, body
    assert body["error"] and body["detail"]


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with running_api(tmp_path / "state") as built:
        yield built


# --- auth ----------------------------------------------------------------------------------------------------


def test_the_token_alone_says_who_calls_and_only_while_its_execution_runs(api: Api) -> None:
    response = api.call("GET", "/economic/balance", "alice")
    assert response.status_code == 200
    assert response.json() == {"agent_id": "alice", "available": "100", "locked": "0"}
    assert api.call("GET", "/economic/balance", "bob").json()["agent_id"] == "bob"
    refused(api.call("GET", "/economic/balance"), 401, "missing_token")
    refused(api.call("GET", "/economic/balance", headers={"Authorization": "Bearer nonsense"}), 401, "invalid_token")
    ended = api.start_execution("alice", status="terminated")
    refused(api.call("GET", "/economic/balance", headers={"Authorization": f"Bearer {ended}"}), 401, "token_expired")
    assert "WWW-Authenticate" in api.call("GET", "/economic/balance").headers


# --- economic ------------------------------------------------------------------------------------------------


def test_transfer_moves_exact_credits_once_per_key(api: Api) -> None:
    first = api.call("POST", "/economic/transfer", "alice", "pay-1", json={"to_agent": "bob", "amount": "12.5"})
    assert first.status_code == 200, first.text
    receipt = first.json()
    assert (receipt["kind"], receipt["amount"], receipt["replayed"]) == ("transfer", "12.5", False)
    again = api.call("POST", "/economic/transfer", "alice", "pay-1", json={"to_agent": "bob", "amount": "12.5"})
    assert again.json()["transfer_id"] == receipt["transfer_id"] and again.json()["replayed"] is True
    assert api.services.ledger.balance("alice").available == Decimal("87.5")
    assert api.services.ledger.balance("bob").available == Decimal("112.5")


@pytest.mark.parametrize(
    ("body", "key", "status", "reason"),
    [
        ({"to_agent": "bob", "amount": "1000"}, "k-over", 402, "insufficient_funds"),
        ({"to_agent": "nobody", "amount": "1"}, "k-unknown", 404, "unknown_agent"),
        ({"to_agent": "bob", "amount": 1.5}, "k-float", 422, "invalid_input"),
        ({"to_agent": "bob", "amount": "-3"}, "k-negative", 422, "invalid_amount"),
        ({"to_agent": "bob", "amount": "NaN"}, "k-nan", 422, "invalid_amount"),
        ({"to_agent": "alice", "amount": "1"}, "k-self", 422, "invalid_input"),
        ({"to_agent": "bob"}, "k-missing", 422, "invalid_input"),
        ({"to_agent": "bob", "amount": "1"}, None, 422, "invalid_input"),  # no Idempotency-Key
    ],
)
def test_a_refused_transfer_says_why_and_changes_nothing(
    api: Api, body: dict[str, object], key: str | None, status: int, reason: str
) -> None:
    before = api.snapshot()
    refused(api.call("POST", "/economic/transfer", "alice", key, json=body), status, reason)
    assert api.snapshot() == before


def test_a_reused_key_for_another_transfer_is_a_conflict(api: Api) -> None:
    api.call("POST", "/economic/transfer", "alice", "same", json={"to_agent": "bob", "amount": "1"})
    before = api.snapshot()
    refused(
        api.call("POST", "/economic/transfer", "alice", "same", json={"to_agent": "bob", "amount": "2"}),
        409,
        "idempotency_conflict",
    )
    assert api.snapshot() == before
    # Keys are per agent: bob may use the same key for his own transfer.
    assert api.call("POST", "/economic/transfer", "bob", "same", json={"to_agent": "alice", "amount": "2"}).is_success


def test_history_pages_newest_first(api: Api) -> None:
    for i in range(3):
        api.call("POST", "/economic/transfer", "alice", f"h-{i}", json={"to_agent": "bob", "amount": str(i + 1)})
    page = api.call("GET", "/economic/history", "alice", params={"limit": 2}).json()
    assert [e["amount"] for e in page["entries"]] == ["3", "2"]
    rest = api.call("GET", "/economic/history", "alice", params={"limit": 2, "before": page["next_before"]}).json()
    assert [e["amount"] for e in rest["entries"]] == ["1", "100"] and rest["next_before"] is None
    refused(api.call("GET", "/economic/history", "alice", params={"limit": 0}), 422, "invalid_input")


# --- market --------------------------------------------------------------------------------------------------


def test_a_bid_locks_its_amount_shows_in_the_market_state_and_can_be_withdrawn(api: Api) -> None:
    placed = api.call("POST", "/market/bid", "alice", "bid-1", json={"bundle": BUNDLE, "amount": "7"})
    assert placed.status_code == 200, placed.text
    bid = placed.json()
    assert (bid["status"], bid["amount"]) == ("pending", "7")
    assert api.call("GET", "/economic/balance", "alice").json() == {
        "agent_id": "alice",
        "available": "93",
        "locked": "7",
    }
    state = api.call("GET", "/market/state", "alice").json()
    assert {r["resource"] for r in state["resources"]} == {"cpu", "memory", "tokens", "attention"}
    assert [b["bid_id"] for b in state["own_bids"]] == [bid["bid_id"]]
    assert state["own_bids"][0]["bundle"]["cpu_percent"] == "0.1"
    assert api.call("GET", "/market/state", "bob").json()["own_bids"] == [], "bob does not see alice's bids"
    replay = api.call("POST", "/market/bid", "alice", "bid-1", json={"bundle": BUNDLE, "amount": "7"}).json()
    assert replay["bid_id"] == bid["bid_id"] and replay["replayed"] is True

    refused(api.call("DELETE", f"/market/bid/{bid['bid_id']}", "bob"), 404, "not_found")  # not bob's to withdraw
    cancelled = api.call("DELETE", f"/market/bid/{bid['bid_id']}", "alice").json()
    assert cancelled["status"] == "cancelled"
    assert api.call("GET", "/economic/balance", "alice").json()["available"] == "100"
    refused(api.call("DELETE", f"/market/bid/{bid['bid_id']}", "alice"), 409, "not_pending")
    refused(api.call("DELETE", "/market/bid/no-such-bid", "alice"), 404, "not_found")


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        ({"bundle": BUNDLE, "amount": "500"}, 402, "insufficient_funds"),
        ({"bundle": {**BUNDLE, "cpu_percent": "2"}, "amount": "1"}, 422, "invalid_input"),
        ({"bundle": {"duration_seconds": 5}, "amount": "1"}, 422, "empty_bundle"),
        ({"bundle": {**BUNDLE, "duration_seconds": -1}, "amount": "1"}, 422, "invalid_input"),
        ({"bundle": {**BUNDLE, "gpus": 1}, "amount": "1"}, 422, "invalid_input"),
        ({"bundle": BUNDLE, "amount": "0"}, 422, "invalid_amount"),
        ({"bundle": BUNDLE, "amount": "1", "on_behalf_of": "nobody"}, 404, "unknown_agent"),
        ({"bundle": BUNDLE, "amount": "1", "lifetime_cycles": 0}, 422, "invalid_input"),
    ],
)
def test_a_refused_bid_says_why_and_changes_nothing(
    api: Api, body: dict[str, object], status: int, reason: str
) -> None:
    before = api.snapshot()
    refused(api.call("POST", "/market/bid", "alice", "bad-bid", json=body), status, reason)
    assert api.snapshot() == before


def test_a_bid_on_behalf_of_another_agent_is_paid_by_the_bidder(api: Api) -> None:
    bid = api.call(
        "POST", "/market/bid", "alice", "wake-bob", json={"bundle": BUNDLE, "amount": "3", "on_behalf_of": "bob"}
    ).json()
    assert bid["status"] == "pending"
    assert api.services.ledger.balance("alice").locked == Decimal(3)
    assert api.services.ledger.balance("bob").locked == Decimal(0)
    refused(
        api.call("POST", "/market/bid", "alice", "wake-bob", json={"bundle": BUNDLE, "amount": "4"}),
        409,
        "idempotency_conflict",
    )


# --- social --------------------------------------------------------------------------------------------------


def test_a_message_reaches_the_next_execution_of_its_recipient_once(api: Api) -> None:
    sent = api.call("POST", "/social/message", "alice", "m-1", json={"to_agent": "bob", "body": "hello bob"})
    assert sent.status_code == 200, sent.text
    again = api.call("POST", "/social/message", "alice", "m-1", json={"to_agent": "bob", "body": "hello bob"}).json()
    assert again["message_id"] == sent.json()["message_id"] and again["replayed"] is True
    inbox = api.call("GET", "/social/inbox", "bob").json()["messages"]
    assert [(m["from_agent"], m["body"]) for m in inbox] == [("alice", "hello bob")]
    assert api.call("GET", "/social/inbox", "bob").json()["messages"] == inbox, "the same execution reads it again"
    next_execution = {"Authorization": f"Bearer {api.start_execution('bob')}"}
    assert api.call("GET", "/social/inbox", headers=next_execution).json()["messages"] == [], "delivered already"
    before = api.snapshot()
    refused(
        api.call("POST", "/social/message", "alice", "m-2", json={"to_agent": "nobody", "body": "x"}),
        404,
        "unknown_agent",
    )
    refused(
        api.call("POST", "/social/message", "alice", "m-3", json={"to_agent": "bob", "body": ""}), 422, "invalid_input"
    )
    refused(
        api.call("POST", "/social/message", "alice", "m-1", json={"to_agent": "bob", "body": "changed"}),
        409,
        "idempotency_conflict",
    )
    assert api.snapshot() == before


def test_spawn_creates_a_funded_child_from_the_parents_workspace(api: Api) -> None:
    workspace = api.services.social.workspace_of("alice")
    (workspace / "child").mkdir(parents=True)
    (workspace / "child" / "main.py").write_text("print('child')\n")
    (workspace / "child" / "notes.txt").write_text("inherited")
    body = {"agent_id": "kid", "source": "child", "funds": "10"}
    spawned = api.call("POST", "/social/spawn", "alice", "spawn-1", json=body)
    assert spawned.status_code == 200, spawned.text
    assert spawned.json()["parent_id"] == "alice" and spawned.json()["funds"] == "10"
    assert api.call("POST", "/social/spawn", "alice", "spawn-1", json=body).json()["replayed"] is True
    assert api.services.ledger.balance("kid").available == Decimal(10)
    assert api.services.ledger.balance("alice").available == Decimal(90)
    kid = api.services.social.workspace_of("kid")
    assert (kid / "main.py").read_text() == "print('child')\n" and (kid / "notes.txt").read_text() == "inherited"
    with api.services.database.reader() as session:
        assert session.get_one(Agent, "kid").status == "dormant"

    before = api.snapshot()
    for request, status, reason in [
        ({"agent_id": "rich-kid", "source": "child", "funds": "1000"}, 402, "insufficient_funds"),
        ({"agent_id": "lost-kid", "source": "../bob", "funds": "1"}, 422, "invalid_spawn"),
        ({"agent_id": "no-code", "source": "child", "entry_point": "run.py"}, 422, "invalid_spawn"),
        ({"agent_id": "bob", "source": "child"}, 409, "agent_exists"),
        ({"agent_id": "kid", "source": "child", "funds": "10"}, 409, "agent_exists"),  # another key, same child
    ]:
        refused(api.call("POST", "/social/spawn", "alice", f"k-{request['agent_id']}", json=request), status, reason)
    assert api.snapshot() == before
    assert not api.services.social.workspace_of("rich-kid").exists()


# --- operator ------------------------------------------------------------------------------------------------


def test_the_operator_creates_funds_inspects_and_bids_for_agents(api: Api) -> None:
    refused(api.http.get("/admin/agents"), 401, "missing_token")
    refused(api.http.get("/admin/agents", headers={"Authorization": "Bearer wrong"}), 403, "forbidden")
    refused(api.http.get("/admin/agents", headers=api.as_agent("alice")), 403, "forbidden")
    created = api.admin(
        "POST",
        "/admin/agents",
        json={
            "agent_id": "carol",
            "files": {"main.py": "print('carol')\n", "run.sh": "echo hi\n"},
            "initial_grant": "25",
        },
    )
    assert created.status_code == 201, created.text
    assert (created.json()["status"], created.json()["available"]) == ("dormant", "25")
    workspace = api.services.social.workspace_of("carol")
    assert (workspace / "main.py").read_text() == "print('carol')\n" and (workspace / "run.sh").stat().st_mode & 0o100
    refused(api.admin("POST", "/admin/agents", json={"agent_id": "carol"}), 409, "agent_exists")
    refused(api.admin("POST", "/admin/agents", json={"agent_id": "eve", "files": {"../x": "y"}}), 422, "invalid_path")
    assert [a["agent_id"] for a in api.admin("GET", "/admin/agents").json()] == ["alice", "bob", "carol"]

    assert api.admin("POST", "/admin/grant", "g-1", json={"agent_id": "carol", "amount": "5"}).json()["amount"] == "5"
    reward = api.admin(
        "POST", "/admin/reward", "r-1", json={"agent_id": "carol", "interesting": 7, "useful": 8, "understandable": 6}
    )
    assert reward.json()["amount"] == "21"  # weights 1/1/1
    refused(
        api.admin(
            "POST",
            "/admin/reward",
            "r-2",
            json={"agent_id": "carol", "interesting": 11, "useful": 0, "understandable": 0},
        ),
        422,
        "invalid_input",
    )
    bid = api.admin("POST", "/admin/bids", "b-1", json={"agent_id": "carol", "bundle": BUNDLE, "amount": "2"}).json()
    detail = api.admin("GET", "/admin/agents/carol").json()
    assert detail["agent"]["available"] == "49" and [b["bid_id"] for b in detail["pending_bids"]] == [bid["bid_id"]]
    cancel = api.admin("DELETE", f"/admin/bids/{bid['bid_id']}")
    assert cancel.json()["status"] == "cancelled", cancel.text
    refused(api.admin("GET", "/admin/agents/nobody"), 404, "unknown_agent")
    refused(api.admin("POST", "/admin/executions/nope/kill"), 404, "not_found")


def test_openapi_is_served_with_every_endpoint(api: Api) -> None:
    schema = api.http.get("/openapi.json").json()
    paths = set(schema["paths"])
    assert {
        "/economic/balance",
        "/economic/transfer",
        "/economic/history",
        "/market/state",
        "/market/bid",
        "/market/bid/{bid_id}",
        "/social/message",
        "/social/inbox",
        "/social/spawn",
        "/attention/prompt",
        "/intelligence/inference",
    } <= paths
    assert api.http.get("/docs").status_code == 200


# --- the SDK -------------------------------------------------------------------------------------------------


def test_the_sdk_speaks_for_its_agent(api: Api, tmp_path: Path) -> None:
    token = api.start_execution("alice")
    with SystemService(api.url, token) as service:
        assert service.balance().available == Decimal(100)
        bid = service.bid(BUNDLE, "4", lifetime_cycles=2)
        assert service.market_state().own_bids[0].bid_id == bid.bid_id
        assert service.cancel(bid.bid_id).status == "cancelled"
        receipt = service.transfer("bob", Decimal("1.25"), purpose="thanks", key="sdk-pay")
        assert (
            service.transfer("bob", Decimal("1.25"), purpose="thanks", key="sdk-pay").transfer_id == receipt.transfer_id
        )
        assert service.send("bob", "hi").to_agent == "bob"
        assert [e.amount for e in service.history(limit=1).entries] == [Decimal("1.25")]
        with pytest.raises(ServiceError) as refusal:
            service.transfer("bob", 1_000)
        assert (refusal.value.status, refusal.value.reason) == (402, "insufficient_funds")
        with pytest.raises(TypeError):
            service.transfer("bob", 1.5)  # type: ignore[arg-type]
    with SystemService(api.url, "not-a-token") as stranger, pytest.raises(ServiceError) as refusal:
        stranger.balance()
    assert refusal.value.reason == "invalid_token"
