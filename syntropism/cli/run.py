"""``syntropism run``: the whole economy in one process, watched live, a line per cycle, or JSON per cycle."""

from __future__ import annotations

import asyncio
import json
import sys

import typer
from rich.console import Console
from rich.live import Live

from syntropism.cli.common import console, err_console, run_async, run_user_facing, settings_for
from syntropism.config import Settings
from syntropism.core.allocation import CycleReport
from syntropism.core.population import seed_population
from syntropism.domain import economy
from syntropism.domain.models import credits_text, from_micros
from syntropism.infra.state_dir import OPERATOR_TOKEN_FILE
from syntropism.live import LiveView
from syntropism.runtime import Runtime


def run(
    ctx: typer.Context,
    seconds: float | None = typer.Option(None, "--seconds", min=0, help="Stop after this many seconds."),
    cycles: int | None = typer.Option(None, "--cycles", min=1, help="Stop after this many market cycles."),
    interval: float | None = typer.Option(None, "--interval", min=0.01, help="Seconds between market cycles."),
    agents: int | None = typer.Option(None, "--agents", min=0, help="Reference agents a fresh economy starts with."),
    grant: str | None = typer.Option(None, "--grant", help="Credits each starter agent is granted."),
    seed: int = typer.Option(0, "--seed", help="Seed for the starter population's first bids."),
    quiet: bool = typer.Option(False, "--quiet", help="Logs and a line per cycle, no live view."),
    as_json: bool = typer.Option(False, "--json", help="One JSON summary per cycle on stdout."),
    database_url: str | None = typer.Option(None, "--database-url", help="SQLAlchemy URL (default: SQLite)."),
    nats_url: str | None = typer.Option(None, "--nats-url", help="External NATS; default: embedded server."),
) -> None:
    """Start the economy — database, NATS JetStream, outbox relay, System Service, market clearing, execution
    manager — with a starter population on fresh state, and watch it live. Ctrl-C stops it cleanly."""
    settings = run_user_facing(
        lambda: settings_for(ctx, database_url=database_url, nats_url=nats_url, clearing_interval_seconds=interval)
    )
    starters = settings.starter_agents if agents is None else agents
    starter_grant = (
        settings.starter_grant
        if grant is None
        else run_user_facing(lambda: from_micros(economy.parse_amount(grant, "--grant")))
    )
    live = not (quiet or as_json) and console.is_terminal
    status_console = err_console if as_json else console  # with --json, stdout carries only the summaries

    async def _run() -> None:
        async with Runtime(settings) as runtime:
            runtime.install_signal_handlers()
            runtime.freeze_startup_heap()
            started = await asyncio.to_thread(
                seed_population, runtime.database, settings, agents=starters, grant=starter_grant, seed=seed
            )
            _announce(status_console, runtime, settings, seconds, cycles, started)
            view = LiveView(runtime) if live else None
            on_cycle = view.on_cycle if view else (_print_json if as_json else _print_cycle)
            runtime.start_clearing(cycles=cycles, on_cycle=on_cycle)
            if view is not None:
                with Live(view, console=console, refresh_per_second=4, screen=False):
                    await runtime.wait(seconds)
            else:
                await runtime.wait(seconds)
            status_console.print("Stopping: running agents get a moment to finish; draining the outbox …")
        assert runtime.relay is not None
        relayed = runtime.relay.stats.published
        status_console.print(
            f"[bold]Stopped cleanly.[/] Cycles this run: {runtime.cycles_done}; events relayed: {relayed}."
        )

    run_async(_run)


def _announce(
    out: Console, runtime: Runtime, settings: Settings, seconds: float | None, cycles: int | None, started: list[str]
) -> None:
    limits = [f"{seconds:g}s" if seconds is not None else "", f"{cycles} cycles" if cycles else ""]
    until = " or ".join(limit for limit in limits if limit)
    out.print(
        f"[bold green]Syntropism running[/] — state in {settings.state_dir.resolve()}; market clears every "
        f"{settings.clearing_interval_seconds:g}s; "
        + (f"stopping after {until} (or Ctrl-C)." if until else "Ctrl-C to stop.")
    )
    out.print(
        f"starter agents: {', '.join(started)}" if started else "resuming: the agents of this state folder carry on"
    )
    if runtime.api is not None:
        token = "operator_token setting" if settings.operator_token else str(settings.state_dir / OPERATOR_TOKEN_FILE)
        out.print(f"System Service at {runtime.api.url} (OpenAPI: {runtime.api.url}/docs); operator token in {token}")


def _print_json(report: CycleReport) -> None:
    summary = {
        "cycle": report.cycle,
        "bids": report.bids_considered,
        "won": report.winning_agents,
        "carried": report.carried,
        "outbid": report.outbid,
        "burned": credits_text(report.burned),
        "prices": {r.value: str(p) for r, p in report.prices.items()},
        "utilization": {r.value: str(u) for r, u in report.utilization.items()},
    }
    sys.stdout.write(json.dumps(summary) + "\n")
    sys.stdout.flush()


def _print_cycle(report: CycleReport) -> None:
    prices = "  ".join(f"{r.value} {p:.4f}" for r, p in report.prices.items())
    console.print(
        f"[cyan]cycle {report.cycle}[/]: {report.bids_considered} bids, {len(report.winners)} won, "
        f"{report.carried} carried, {report.outbid} outbid, {report.burned} burned │ {prices}",
        highlight=False,
    )
