"""The human's attention: prompts within an execution's share, scores that mint exactly once, expiry, and the
inbox as a person uses it in a terminal."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from syntropism.infra.tables import OutboxEvent, Prompt
from syntropism.sdk import ServiceError, SystemService
from tests.support.api import Api, running_api
from tests.support.terminal import Terminal

WEIGHTS = {"reward_weight_interesting": "1", "reward_weight_useful": "2", "reward_weight_understandable": "0.5"}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with running_api(tmp_path / "state", **WEIGHTS) as built:
        yield built


def execution(api: Api, agent: str = "alice", attention: str = "0.5", seconds: int = 30) -> dict[str, str]:
    """A running execution that bought attention × seconds attention-seconds."""
    ppm = int(Decimal(attention) * 1_000_000)
    return {"Authorization": f"Bearer {api.start_execution(agent, attention_ppm=ppm, duration_ms=seconds * 1000)}"}


def prompt(api: Api, auth: dict[str, str], key: str, text: str = "hello", **extra: Any) -> Any:
    return api.http.post("/attention/prompt", headers=auth | {"Idempotency-Key": key}, json={"text": text, **extra})


def minted(api: Api) -> Decimal:
    return Decimal(api.services.ledger.verify().invariant.minted) / 1_000_000


def count(api: Api, event_type: str) -> int:
    with api.services.database.reader() as session:
        return session.scalar(select(func.count()).select_from(OutboxEvent).where(OutboxEvent.event_type == event_type))


def test_prompts_are_accepted_within_the_attention_share_and_refused_past_it(api: Api) -> None:
    auth = execution(api)  # 0.5 × 30 s = 15 attention-seconds; "hello" costs 5 + 5/20 = 5.25
    first = prompt(api, auth, "p1")
    assert first.status_code == 200, first.text
    assert (first.json()["status"], first.json()["attention_seconds"]) == ("pending", 5.25)
    assert prompt(api, auth, "p1").json()["replayed"] is True
    assert prompt(api, auth, "p2").status_code == 200
    third = prompt(api, auth, "p3")
    assert third.status_code == 402 and third.json()["reason"] == "quota_exceeded", third.text
    assert "4.5" in third.json()["detail"], "it says what is left"
    assert count(api, "attention.prompt_submitted") == 2
    no_attention = execution(api, attention="0")
    assert prompt(api, no_attention, "none").json()["reason"] == "quota_exceeded"


def test_attachments_must_be_files_in_the_agents_workspace(api: Api) -> None:
    workspace = api.services.social.workspace_of("alice")
    workspace.mkdir(parents=True, exist_ok=True)
    (workspace / "chart.txt").write_text("up and to the right")
    auth = execution(api)
    good = prompt(api, auth, "with-file", attachments=["chart.txt"])
    [copy] = good.json()["attachments"]  # a copy the host keeps: the agent cannot change it after the check
    assert Path(copy).read_text() == "up and to the right" and not Path(copy).is_relative_to(workspace)
    for bad in (["../bob/secret"], ["missing.txt"], ["/etc/passwd"], ["a" * 300]):  # the last: too long a name
        refused = prompt(api, auth, f"bad-{bad[0][:20]}", attachments=bad)
        assert (refused.status_code, refused.json()["reason"]) == (422, "invalid_attachment"), refused.text


def test_a_score_mints_the_formulas_credits_exactly_once(api: Api) -> None:
    auth = execution(api)
    prompt_id = prompt(api, auth, "p").json()["prompt_id"]
    before_minted, before_available = minted(api), api.services.ledger.balance("alice").available
    scores = {"interesting": 7, "useful": 8, "understandable": 6}
    scored = api.admin("POST", f"/admin/prompts/{prompt_id}/score", json=scores)
    assert scored.status_code == 200, scored.text
    assert scored.json()["credits"] == "26"  # 7·1 + 8·2 + 6·0.5
    assert minted(api) == before_minted + 26
    assert api.services.ledger.balance("alice").available == before_available + 26
    assert count(api, "attention.prompt_scored") == 1 and count(api, "economy.reward_issued") == 1

    again = api.admin("POST", f"/admin/prompts/{prompt_id}/score", json=scores)
    assert (again.status_code, again.json()["reason"]) == (409, "already_scored")
    assert minted(api) == before_minted + 26, "a second scoring mints nothing"
    assert api.admin("GET", "/admin/prompts").json() == []

    history = api.http.get("/economic/history", headers=auth).json()["entries"]
    assert (history[0]["kind"], history[0]["amount"], history[0]["reference"]) == ("reward", "26", prompt_id)
    rewards = api.http.get("/social/inbox", headers=auth).json()["rewards"]
    assert rewards == [{"prompt_id": prompt_id, "interesting": 7, "useful": 8, "understandable": 6, "credits": "26"}]
    later = execution(api)
    assert api.http.get("/social/inbox", headers=later).json()["rewards"] == [], "seen by the earlier execution"


@pytest.mark.parametrize(
    "scores",
    [
        {"interesting": -1, "useful": 5, "understandable": 5},
        {"interesting": 11, "useful": 5, "understandable": 5},
        {"interesting": "seven", "useful": 5, "understandable": 5},
        {"interesting": 5.5, "useful": 5, "understandable": 5},
        {"useful": 5, "understandable": 5},
    ],
)
def test_invalid_scores_are_refused_with_a_reason_and_change_nothing(api: Api, scores: dict[str, Any]) -> None:
    prompt_id = prompt(api, execution(api), "p").json()["prompt_id"]
    before = (minted(api), api.snapshot())
    refused = api.admin("POST", f"/admin/prompts/{prompt_id}/score", json=scores)
    assert refused.status_code == 422 and refused.json()["reason"] == "invalid_input", refused.text
    assert refused.json()["detail"]
    assert (minted(api), api.snapshot()) == before
    assert [p["prompt_id"] for p in api.admin("GET", "/admin/prompts").json()] == [prompt_id], "still pending"


def test_unscored_prompts_expire(tmp_path: Path) -> None:
    with running_api(tmp_path / "state", prompt_ttl_seconds=0.001) as api:
        prompt_id = prompt(api, execution(api), "p").json()["prompt_id"]
        assert api.admin("GET", "/admin/prompts").json() == []
        late = api.admin(
            "POST", f"/admin/prompts/{prompt_id}/score", json={"interesting": 9, "useful": 9, "understandable": 9}
        )
        assert (late.status_code, late.json()["reason"]) == (409, "expired")
        with api.services.database.reader() as session:
            assert session.get_one(Prompt, prompt_id).status == "expired"
        assert count(api, "attention.prompt_expired") == 1, "the expiry is a state change: it has its event"


def cli(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syntropism", "--state-dir", str(state_dir), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "160"},
    )


def test_syntropism_reward_scores_by_flags_and_refuses_bad_scores(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with running_api(state) as api:
        prompt_id = prompt(api, execution(api), "p").json()["prompt_id"]
        before = minted(api)
        for flags, message in (
            (
                ["--interesting", "-1", "--useful", "5", "--understandable", "5"],
                "interesting must be an integer from 0 to 10",
            ),
            (["--interesting", "12", "--useful", "5", "--understandable", "5"], "from 0 to 10"),
            (["--interesting", "x", "--useful", "5", "--understandable", "5"], "should be a valid integer"),
        ):
            refused = cli(state, "reward", prompt_id, *flags)
            assert refused.returncode == 2 and message in refused.stdout + refused.stderr, refused
        assert minted(api) == before
        done = cli(state, "reward", prompt_id, "--interesting", "7", "--useful", "8", "--understandable", "6")
        assert done.returncode == 0, done.stderr
        assert "21" in done.stdout and minted(api) == before + 21
        again = cli(state, "reward", prompt_id, "--interesting", "7", "--useful", "8", "--understandable", "6")
        assert again.returncode == 2 and "was scored" in again.stderr
        assert minted(api) == before + 21


def test_a_person_reads_and_scores_a_prompt_in_the_inbox(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with running_api(state) as api:
        text = "Should the market price memory higher at night?"
        prompt_id = prompt(api, execution(api, attention="1"), "p", text=text).json()["prompt_id"]
        before = minted(api)
        terminal = Terminal(
            [sys.executable, "-m", "syntropism", "--state-dir", str(state), "inbox"],
            env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "120"},
        )
        terminal.expect("1 prompts waiting for you")
        terminal.expect("Should the market price memory higher at night")
        terminal.expect(r"Score it, skip it, or quit\?")
        terminal.type("score\n")
        terminal.expect(r"Interesting \(0–10\)")
        terminal.type("12\n")  # a slip of the finger: refused, asked again
        terminal.expect("a score is a whole number from 0 to 10")
        terminal.expect(r"Interesting \(0–10\)")
        terminal.type("7\n")
        terminal.expect(r"Useful \(0–10\)")
        terminal.type("8\n")
        terminal.expect(r"Understandable \(0–10\)")
        terminal.type("6\n")
        terminal.expect("scored.*21 credits minted to alice")
        assert terminal.close() == 0
        assert minted(api) == before + 21
        assert api.services.attention.get(prompt_id).status == "scored"


def test_the_sdk_puts_a_prompt_before_the_human(api: Api) -> None:
    token = api.start_execution("alice", attention_ppm=500_000, duration_ms=30_000)
    with SystemService(api.url, token) as service:
        submitted = service.prompt_human("Is this useful?", key="sdk-prompt")
        assert submitted["status"] == "pending" and submitted["agent_id"] == "alice"
        assert service.prompt_human("Is this useful?", key="sdk-prompt")["replayed"] is True
        with pytest.raises(ServiceError) as refusal:
            service.prompt_human("x" * 1000)  # 55 attention-seconds: more than the 15 bought
        assert (refusal.value.status, refusal.value.reason) == (402, "quota_exceeded")
