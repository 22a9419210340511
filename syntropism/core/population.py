"""The starter population: reference agents from ``agents/`` put into a fresh economy, so ``make run`` shows a
living market at once. Each gets its code, an initial grant and a first bid (the operator's, from the agent's
own credits); from then on it bids for itself — or goes dormant, and in time dies.

A state folder that already has agents is resumed as it is: nobody is added twice.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import syntropism
from syntropism.config import Settings
from syntropism.core.market import MarketManager
from syntropism.domain import economy
from syntropism.domain.identity import system_key
from syntropism.infra.agents import count_agents, register_agent
from syntropism.infra.database import Database
from syntropism.infra.ledger import apply
from syntropism.infra.workspaces import Workspaces

log = logging.getLogger(__name__)

AGENTS_DIR = Path(syntropism.__file__).resolve().parent.parent / "agents"


@dataclass(frozen=True)
class Starter:
    kind: str  # its folder in agents/
    entry_point: str = "main.py"
    bids_first: bool = True  # the thinker waits for its broker instead
    tokens_percent: str = "0"


# The order agents are added in; past the end, more zero-intelligence bidders.
STARTERS = (
    Starter("random_bidder"),
    Starter("conservative"),
    Starter("broker"),
    Starter("thinker", bids_first=False),
    Starter("poet", tokens_percent="0.05"),
    Starter("curl_bidder", "main.sh"),
)


def seed_population(
    database: Database,
    settings: Settings,
    *,
    agents: int,
    grant: Decimal,
    seed: int,
    agents_dir: Path = AGENTS_DIR,
) -> list[str]:
    """Add ``agents`` reference agents to an economy that has none; returns their ids (none when resuming)."""
    with database.reader() as session:
        if count_agents(session):
            return []
    if agents and not agents_dir.is_dir():
        raise FileNotFoundError(f"the reference agents are not at {agents_dir}: run from a checkout of the project")
    rng = random.Random(seed)
    market = MarketManager(database, settings)
    workspaces = Workspaces.of(settings)
    chosen = [STARTERS[i] if i < len(STARTERS) else STARTERS[0] for i in range(agents)]
    names = _names(chosen)
    thinker = next((name for name, s in zip(names, chosen, strict=True) if s.kind == "thinker"), None)
    for name, starter in zip(names, chosen, strict=True):
        workspace = workspaces.ensure(name)
        code = workspace / starter.entry_point
        code.write_text((agents_dir / starter.kind / starter.entry_point).read_text())
        code.chmod(0o755)
        if starter.kind == "broker" and thinker:
            (workspace / "team.json").write_text(json.dumps({"thinker": thinker}))
        with database.transaction() as session:
            register_agent(session, name, entry_point=starter.entry_point, initial_grant=grant)
            apply(
                session, economy.grant(name, grant, idempotency_key=system_key("grant", name), reason="starter grant")
            )
        if starter.bids_first:
            bundle = {
                "cpu_percent": f"{rng.uniform(0.3, 0.5):.2f}",  # a Python agent's run costs ~0.7 CPU-s
                "memory_percent": "0.02",
                "tokens_percent": starter.tokens_percent,
                "duration_seconds": rng.choice([5, 6]),
            }
            amount = f"{rng.uniform(0.5, 3):.2f}"
            market.place_bid(name, bundle, amount, idempotency_key=system_key("bid", name), lifetime_cycles=5)
    log.info("starter population: %s", ", ".join(names))
    return names


def _names(starters: list[Starter]) -> list[str]:
    """Readable, unique ids: zi-1, zi-2, careful-1, broker-1, thinker-1, poet-1, shell-1."""
    short = {"random_bidder": "zi", "conservative": "careful", "curl_bidder": "shell"}
    counts: dict[str, int] = {}
    names = []
    for starter in starters:
        base = short.get(starter.kind, starter.kind)
        counts[base] = counts.get(base, 0) + 1
        names.append(f"{base}-{counts[base]}")
    return names
