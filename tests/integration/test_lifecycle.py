"""Death by poverty: a dormant agent with no credits past the grace period dies, its workspace archived."""

from __future__ import annotations

import tarfile
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from syntropism.config import Settings
from syntropism.core.market import MarketManager
from syntropism.core.social import SocialService
from syntropism.domain import economy as E
from syntropism.domain.events import parse_event
from syntropism.domain.market import BidRefused
from syntropism.infra.agents import register_agent
from syntropism.infra.database import Database
from syntropism.infra.ledger import Ledger
from syntropism.infra.tables import Agent, OutboxEvent, utcnow

BUNDLE = {"cpu_percent": "0.1", "duration_seconds": 2}


def test_a_dormant_agent_without_credits_dies_after_the_grace_period(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state", dormant_grace_seconds=60)
    database = Database(settings.effective_database_url)
    database.migrate()
    try:
        with database.transaction() as session:
            for agent_id in ("pauper", "saver", "newcomer"):
                register_agent(session, agent_id)
        Ledger(database).execute(E.grant("saver", 1, idempotency_key="grant"))
        social = SocialService(database, settings)
        workspace = social.workspace_of("pauper")
        workspace.mkdir(parents=True)
        (workspace / "main.py").write_text("print('last words')\n")
        an_hour_ago = utcnow() - timedelta(hours=1)
        with database.transaction() as session:
            for agent_id in ("pauper", "saver"):
                session.get_one(Agent, agent_id).status_changed_at = an_hour_ago

        assert social.bury_the_destitute() == ["pauper"], "credits keep the saver alive; the newcomer is in grace"
        assert social.bury_the_destitute() == [], "an agent dies once"

        with database.reader() as session:
            statuses = dict(session.execute(select(Agent.id, Agent.status)).all())
            [payload] = session.scalars(select(OutboxEvent.payload).where(OutboxEvent.event_type == "agent.died"))
        assert statuses == {"pauper": "died", "saver": "dormant", "newcomer": "dormant"}
        died = parse_event(payload)
        archive = Path(died.data.workspace_archive)  # type: ignore[attr-defined]
        with tarfile.open(archive) as tar:
            assert tar.extractfile("pauper/main.py").read() == b"print('last words')\n"  # type: ignore[union-attr]
        assert (workspace / "main.py").exists(), "the workspace is kept"

        market = MarketManager(database, settings)
        Ledger(database).execute(E.grant("saver", 5, idempotency_key="more"))
        with pytest.raises(BidRefused) as rejection:
            market.place_bid("saver", BUNDLE, 1, idempotency_key="wake-the-dead", on_behalf_of="pauper")
        assert rejection.value.reason == "agent_dead"
    finally:
        database.dispose()
