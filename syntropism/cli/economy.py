"""The economy at a glance: ``agents`` (every agent, its credits and executions) and ``status`` (the market,
the agents, what is running, and whether the ledger invariant holds)."""

from __future__ import annotations

import typer
from rich.table import Table

from syntropism.cli.common import console, open_database
from syntropism.core.market import MarketManager
from syntropism.domain.models import credits_text, from_micros
from syntropism.infra import read_models
from syntropism.infra.database import Database
from syntropism.infra.ledger import Ledger


def list_agents(ctx: typer.Context) -> None:
    """Every agent: status, credits, how many times it ran and how its last execution ended."""
    with open_database(ctx) as (_, database):
        console.print(agents_table(database))


def status(ctx: typer.Context) -> None:
    """The economy at a glance: market prices and utilization, agents, and whether the ledger invariant holds."""
    with open_database(ctx) as (settings, database):
        ledger = Ledger(database)
        market = MarketManager(database, settings).market_state()
        table = Table("resource", "price", "utilization", "last cycle", title="market")
        for state in market:
            table.add_row(
                state.resource.value,
                f"{state.current_market_price:.4f}",
                f"{state.current_utilization:.0%}",
                str(state.cycle),
            )
        console.print(table)
        console.print(agents_table(ledger.database))
        now = read_models.workload(ledger.database)
        report = ledger.verify()
    inv = report.invariant
    console.print(f"executions running: {now.executions_running}; prompts waiting for the human: {now.prompts_waiting}")
    verdict = "[bold green]holds[/]" if report.ok else "[bold red]BROKEN[/] (syntropism ledger verify says where)"
    console.print(
        f"ledger: available {from_micros(inv.available)} + locked {from_micros(inv.locked)} + burned "
        f"{from_micros(inv.burned)} = minted {from_micros(inv.minted)} — invariant {verdict}"
    )
    if not report.ok:
        raise typer.Exit(1)


def agents_table(database: Database) -> Table:
    table = Table("agent", "status", "available", "locked", "executions", "last ended", title="agents")
    for row in read_models.agent_activity(database):
        table.add_row(
            row.agent.agent_id,
            row.agent.status,
            credits_text(row.agent.available),
            credits_text(row.agent.locked),
            str(row.executions),
            row.last_end_reason or "",
        )
    return table
