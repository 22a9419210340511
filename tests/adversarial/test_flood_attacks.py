"""Free floods: every write that costs the system something is paid for or bounded — messages per execution and
per waiting inbox, pending bids per agent and a minimum bid, request bodies before anyone is authenticated, and a
market cycle whatever the size of the book."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from syntropism.config import Settings
from syntropism.core.allocation import AllocationScheduler
from syntropism.domain import economy as E
from syntropism.domain.models import ResourceBundle, time_ordered_id
from syntropism.infra.agents import register_agent
from syntropism.infra.database import Database
from syntropism.infra.ledger import Ledger, apply_batch
from syntropism.infra.tables import Bid, bundle_columns
from tests.adversarial.conftest import Economy


@pytest.fixture
def economy_overrides() -> dict[str, Any]:
    return {"messages_per_execution": 25, "inbox_max_undelivered": 20, "inbox_page_size": 8}


SPAMMER = """
big = "x" * 20000
answers = [call("POST", "/social/message", key=f"a{i}", json={"to_agent": "r1", "body": big}) for i in range(30)]
answers += [call("POST", "/social/message", key=f"b{i}", json={"to_agent": "r2", "body": "spam"}) for i in range(10)]
record("answers", [[status, body.get("reason")] for status, body in answers])
"""

READER = """
pages, after = [], None
while True:
    status, body = call("GET", "/social/inbox", params={"after": after} if after else {})
    pages.append([m["message_id"] for m in body["messages"]])
    after = body["next_after"]
    if after is None:
        break
record("pages", pages)
"""


async def test_messages_are_bounded_per_execution_and_per_waiting_inbox(economy: Economy) -> None:
    await economy.agent("r1", READER)
    await economy.agent("r2")
    await economy.agent("spammer", SPAMMER)
    outcome = await economy.run("spammer")
    assert outcome.reason.value == "completed", outcome
    answers = [tuple(a) for a in economy.results("spammer")["answers"]]
    assert answers[:20] == [(200, None)] * 20
    assert answers[20:30] == [(429, "inbox_full")] * 10, "r1 has 20 unread: the most one agent may have waiting"
    assert answers[30:35] == [(200, None)] * 5 and answers[35:] == [(402, "quota_exceeded")] * 5, answers

    reader = await economy.run("r1")
    assert reader.reason.value == "completed", reader
    pages = economy.results("r1")["pages"]
    assert [len(p) for p in pages] == [8, 8, 4], "the inbox comes a page at a time"
    assert len({m for p in pages for m in p}) == 20
    again = await economy.run("r1", key="r1-again")
    assert again.reason.value == "completed"
    assert economy.results("r1")["pages"] == [[]], "each message is delivered to one execution"


BID_FLOOD = """
answers = [call("POST", "/market/bid", key=f"tiny{i}", json={
    "bundle": {"cpu_percent": "0.1", "duration_seconds": 1}, "amount": "0.000001"}) for i in range(3)]
answers += [call("POST", "/market/bid", key=f"b{i}", json={
    "bundle": {"cpu_percent": "1", "memory_percent": "1", "duration_seconds": 1}, "amount": "0.01",
    "lifetime_cycles": 1000}) for i in range(30)]
record("answers", [[status, body.get("reason")] for status, body in answers])
"""


async def test_bids_are_bounded_per_agent_and_from_below(economy: Economy) -> None:
    await economy.agent("flooder", BID_FLOOD, grant="10")
    outcome = await economy.run("flooder")
    assert outcome.reason.value == "completed", outcome
    answers = [tuple(a) for a in economy.results("flooder")["answers"]]
    assert answers[:3] == [(422, "bid_too_small")] * 3
    cap = economy.settings.max_pending_bids_per_agent
    assert answers[3 : 3 + cap] == [(200, None)] * cap
    assert answers[3 + cap :] == [(429, "too_many_bids")] * (30 - cap), answers
    await economy.assert_market_clears()


async def test_huge_bodies_are_refused_before_authentication(economy: Economy) -> None:
    assert economy.runtime.api is not None
    limit = economy.settings.max_request_bytes
    async with httpx.AsyncClient(base_url=economy.runtime.api.url, timeout=30) as stranger:  # no token at all
        declared = await stranger.post("/economic/transfer", content=b"{" + b" " * (limit + 1) + b"}")
        assert (declared.status_code, declared.json()["reason"]) == (413, "request_too_large"), declared.text

        async def chunks() -> Any:
            for _ in range(limit // 65536 + 2):
                yield b" " * 65536

        streamed = await stranger.post("/market/bid", content=chunks())  # chunked: no Content-Length to trust
        assert (streamed.status_code, streamed.json()["reason"]) == (413, "request_too_large"), streamed.text
        assert (await stranger.get("/health")).status_code == 200


def test_a_cycle_clears_a_book_larger_than_any_parameter_list(tmp_path: Path) -> None:
    """40,000 pending bids (SQLite takes at most 32,766 parameters in one statement): the cycle still clears,
    burns the winner, unlocks every loser, and the ledger holds."""
    settings = Settings(state_dir=tmp_path / "state", max_pending_bids_per_agent=10**6)
    database = Database(settings.effective_database_url)
    database.migrate()
    count = 40_000
    bundle = ResourceBundle(cpu_percent=1, memory_percent=1, duration_seconds=1)
    try:
        with database.transaction() as session:
            register_agent(session, "whale")
        Ledger(database).execute(E.grant("whale", count, idempotency_key="grant"))
        with database.transaction() as session:
            ids = [time_ordered_id() for _ in range(count)]
            session.add_all(
                Bid(
                    id=bid_id, agent_id="whale", amount_micros=1_000_000, lifetime_cycles=1, cycles_remaining=1,
                    idempotency_key=f"k{i}", **bundle_columns(bundle),
                )
                for i, bid_id in enumerate(ids)
            )  # fmt: skip
            session.flush()
            locks = [(E.lock("whale", 1, idempotency_key=f"lock:{b}", bid_id=b), {}) for b in ids]
            results = apply_batch(session.connection(), locks)
            assert not [r for r in results if isinstance(r, E.LedgerError)]
        report = AllocationScheduler(database, settings, mechanism="first_price").run_allocation_cycle()
        assert (len(report.winners), report.outbid, report.carried) == (1, count - 1, 0)
        balance = Ledger(database).balance("whale")
        assert (balance.available, balance.locked) == (count - 1, 0)
        assert Ledger(database).verify().ok
    finally:
        database.dispose()
