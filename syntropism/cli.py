"""The ``syntropism`` command line."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import signal
import sys
import uuid
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.live import Live
from rich.logging import RichHandler
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.prompt import IntPrompt
from rich.prompt import Prompt as RichPrompt
from rich.table import Table
from sqlalchemy import func, select

from syntropism.benchmarks.report import exit_code, summary_line, write_json, write_junit
from syntropism.benchmarks.runner import REPOSITORY, BenchmarkRunner, ScenarioResult
from syntropism.benchmarks.scenario import (
    LoadedScenario,
    ScenarioError,
    load_scenario,
    scenario_json_schema,
    shipped_scenarios,
)
from syntropism.config import ENV_PREFIX, ConfigError, Settings, load_settings, parse_overrides
from syntropism.core.allocation import CycleReport
from syntropism.core.attention import AttentionService
from syntropism.core.market import MarketManager
from syntropism.core.population import seed_population
from syntropism.domain import economy
from syntropism.domain.errors import Refused
from syntropism.domain.models import credits_text, from_micros
from syntropism.infra.agents import standings
from syntropism.infra.database import Database, DatabaseUnavailable
from syntropism.infra.embedded_nats import NatsServerFailed, NatsServerNotFound
from syntropism.infra.host import host_checks
from syntropism.infra.ledger import Ledger
from syntropism.infra.nats_bus import BusUnavailable, EventBus, ReceivedEvent
from syntropism.infra.outbox import OutboxRelay
from syntropism.infra.state_dir import OPERATOR_TOKEN_FILE, StateDirBusy
from syntropism.infra.tables import Execution, Prompt
from syntropism.infra.telemetry import setup_tracing
from syntropism.live import LiveView
from syntropism.runtime import Runtime, open_bus

app = typer.Typer(
    help="Syntropism: a market-governed runtime for autonomous agents.", no_args_is_help=True, add_completion=False
)
ledger_app = typer.Typer(
    help="The credit ledger: verify the invariant, balances, history, grants.", no_args_is_help=True
)
app.add_typer(ledger_app, name="ledger")
console = Console()
err_console = Console(stderr=True)
log = logging.getLogger("syntropism")

# Failures the user can fix: print the message (which says how) and exit 2, without a traceback.
USER_ERRORS = (
    ConfigError,
    ScenarioError,
    Refused,
    StateDirBusy,
    NatsServerNotFound,
    NatsServerFailed,
    BusUnavailable,
    DatabaseUnavailable,
)
T = TypeVar("T")


@app.callback()
def main(
    ctx: typer.Context,
    config: Path | None = typer.Option(None, "--config", "-c", help="TOML config file (or SYNTROPISM_CONFIG)."),
    state_dir: Path | None = typer.Option(None, "--state-dir", help="State folder (SYNTROPISM_STATE_DIR)."),
    set_: list[str] = typer.Option([], "--set", help="Override any setting: --set clearing_interval_seconds=2."),
) -> None:
    ctx.obj = {"config": config, "overrides": {**({"state_dir": state_dir} if state_dir else {})}, "set": set_}


def _settings(ctx: typer.Context, **flags: Any) -> Settings:
    """Effective settings: command flags over --set over env over the config file over defaults."""
    try:
        overrides = {**ctx.obj["overrides"], **parse_overrides(ctx.obj["set"])}
        overrides.update({key: value for key, value in flags.items() if value is not None})
        settings = load_settings(ctx.obj["config"], overrides)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e['input']!r})" for e in exc.errors())
        raise ConfigError(f"invalid configuration: {problems}") from exc
    _setup_logging(settings.log_level)
    return settings


def _setup_logging(level: str) -> None:
    root = logging.getLogger()
    if not any(isinstance(handler, RichHandler) for handler in root.handlers):
        root.addHandler(RichHandler(console=err_console, show_path=False, rich_tracebacks=True))
    root.setLevel(level)
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))


def _run_user_facing(work: Callable[[], T]) -> T:
    try:
        return work()
    except USER_ERRORS as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from exc


def _run_async(coroutine_factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return _run_user_facing(lambda: asyncio.run(coroutine_factory()))


@app.command()
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
    settings = _run_user_facing(
        lambda: _settings(ctx, database_url=database_url, nats_url=nats_url, clearing_interval_seconds=interval)
    )
    starters = settings.starter_agents if agents is None else agents
    starter_grant = (
        settings.starter_grant
        if grant is None
        else _run_user_facing(lambda: from_micros(economy.parse_amount(grant, "--grant")))
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

    _run_async(_run)


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


@app.command()
def relay(
    ctx: typer.Context,
    once: bool = typer.Option(False, "--once", help="Publish what is committed now, then exit."),
) -> None:
    """Run only the outbox relay against the configured database and NATS (for split deployments)."""
    settings = _run_user_facing(lambda: _settings(ctx))
    if not settings.nats_url:
        raise typer.BadParameter("the standalone relay needs SYNTROPISM_NATS_URL (or --set nats_url=…)")

    async def _relay() -> None:
        setup_tracing(settings)
        database = Database(settings.effective_database_url, sqlite_synchronous=settings.sqlite_synchronous)
        await asyncio.to_thread(database.migrate)
        bus = await EventBus.connect(settings.nats_url or "", settings)
        try:
            await bus.ensure_stream()
            outbox_relay = OutboxRelay(
                database, bus, batch_size=settings.relay_batch_size, poll_seconds=settings.relay_poll_seconds
            )
            if once:
                await outbox_relay.drain()
            else:
                stop = asyncio.Event()
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, stop.set)
                await outbox_relay.run(stop)
            console.print(f"relayed {outbox_relay.stats.published} events")
        finally:
            await bus.close()
            database.dispose()

    _run_async(_relay)


@app.command()
def config(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Print the effective configuration, and the environment variable for each knob."""
    settings = _run_user_facing(lambda: _settings(ctx))
    values = settings.model_dump(mode="json")
    if as_json:
        sys.stdout.write(json.dumps(values, indent=2) + "\n")
        return
    caption = f"Each knob is also the environment variable {ENV_PREFIX}<KNOB>."
    table = Table(title="Effective configuration", caption=caption)
    table.add_column("knob", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_column("meaning", ratio=1)
    for name, field in Settings.model_fields.items():
        table.add_row(name, json.dumps(values[name]), field.description or "")
    console.print(table)
    console.print(f"database: {settings.effective_database_url}")


def _format_event(received: ReceivedEvent) -> str:
    event = received.event
    data = json.dumps(event.data.model_dump(mode="json"), separators=(",", ":"))
    agent = f" agent={event.agent_id}" if event.agent_id else ""
    return f"[dim]{received.stream_seq:>6} {event.timestamp:%H:%M:%S.%f}[/] [bold cyan]{event.type}[/]{agent} {data}"


@app.command()
def events(
    ctx: typer.Context,
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new events."),
    event_type: list[str] = typer.Option([], "--type", "-t", help="market.bid_placed, market.* or market."),
    agent: str | None = typer.Option(None, "--agent", "-a", help="Only events about this agent."),
    as_json: bool = typer.Option(False, "--json", help="One JSON event per line."),
) -> None:
    """Print the event stream from JetStream, oldest first."""
    settings = _run_user_facing(lambda: _settings(ctx))

    async def _read() -> None:
        async with open_bus(settings) as bus:
            async for received in bus.read(event_type, follow=follow):
                if agent is not None and received.event.agent_id != agent:
                    continue
                if as_json:
                    sys.stdout.write(received.event.model_dump_json() + "\n")
                    sys.stdout.flush()
                else:
                    console.print(_format_event(received), highlight=False, soft_wrap=True)

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends --follow
        _run_async(_read)


@app.command()
def doctor(ctx: typer.Context) -> None:
    """What this host offers: nats-server, database, cgroups, namespaces, bubblewrap — and how to fix gaps."""
    settings = _run_user_facing(lambda: _settings(ctx))
    checks = host_checks(settings)
    table = Table("check", "status", "found", "how to fix", title="syntropism doctor")
    for check in checks:
        status = "[green]ok[/]" if check.ok else "[red]MISSING[/]" if check.required else "[yellow]missing[/]"
        table.add_row(check.name, status, check.detail, check.fix)
    console.print(table)
    if any(check.required and not check.ok for check in checks):
        raise typer.Exit(1)


@contextlib.contextmanager
def _database(ctx: typer.Context) -> Iterator[tuple[Settings, Database]]:
    """The configured database, migrated, for a command that works on the economy without a runtime."""
    settings = _run_user_facing(lambda: _settings(ctx))
    database = Database(settings.effective_database_url, sqlite_synchronous=settings.sqlite_synchronous)
    try:
        _run_user_facing(database.migrate)
        yield settings, database
    finally:
        database.dispose()


@app.command()
def migrate(ctx: typer.Context) -> None:
    """Bring the database schema to the newest migration (``run`` does this on every start)."""
    with _database(ctx) as (_, database):
        console.print(f"schema at revision {database.current_revision()}")


@contextlib.contextmanager
def _ledger(ctx: typer.Context) -> Iterator[Ledger]:
    with _database(ctx) as (_, database):
        yield Ledger(database)


@ledger_app.command("verify")
def ledger_verify(ctx: typer.Context) -> None:
    """Check Σ available + Σ locked + burned = minted and that every account matches its journal entries."""
    with _ledger(ctx) as ledger:
        report = ledger.verify()
    inv = report.invariant
    console.print(
        f"available {from_micros(inv.available)} + locked {from_micros(inv.locked)} + burned "
        f"{from_micros(inv.burned)} = {from_micros(inv.available + inv.locked + inv.burned)}; "
        f"minted {from_micros(inv.minted)}"
    )
    if report.ok:
        console.print("[bold green]ledger verified[/]: the invariant holds and every account matches its journal")
        return
    for problem in (*inv.problems, *report.problems):
        err_console.print(f"[red]✗[/] {problem}")
    raise typer.Exit(1)


@ledger_app.command("balance")
def ledger_balance(ctx: typer.Context, agent_id: str) -> None:
    """An agent's available and locked credits."""
    with _ledger(ctx) as ledger:
        balance = _run_user_facing(lambda: ledger.balance(agent_id))
    console.print(f"{agent_id}: available {balance.available}, locked {balance.locked}")


@ledger_app.command("history")
def ledger_history(
    ctx: typer.Context,
    agent_id: str,
    limit: int = typer.Option(20, "--limit", min=1, max=500),
    before: int | None = typer.Option(None, "--before", help="Page: entries older than this journal sequence."),
    as_json: bool = typer.Option(False, "--json", help="One JSON entry per line."),
) -> None:
    """An agent's journal entries, newest first."""
    with _ledger(ctx) as ledger:
        page = _run_user_facing(lambda: ledger.history(agent_id, limit=limit, before=before))
    if as_json:
        for entry in page.entries:
            sys.stdout.write(json.dumps(dataclasses.asdict(entry), default=str) + "\n")
        return
    table = Table("when", "kind", "amount", "from", "to", "reference", title=f"history of {agent_id}")
    for entry in page.entries:
        table.add_row(
            f"{entry.created_at:%Y-%m-%d %H:%M:%S}",
            entry.kind.value,
            str(entry.amount),
            entry.debit_account,
            entry.credit_account,
            entry.reference or entry.memo or "",
        )
    console.print(table)
    if page.next_before is not None:
        console.print(f"older entries: --before {page.next_before}")


@ledger_app.command("grant")
def ledger_grant(
    ctx: typer.Context,
    agent_id: str,
    amount: str,
    key: str | None = typer.Option(None, "--key", help="Idempotency key (default: a new one each call)."),
    reason: str = typer.Option("operator grant", "--reason"),
) -> None:
    """Mint credits to an agent (the operator's grant)."""
    with _ledger(ctx) as ledger:
        operation = _run_user_facing(
            lambda: economy.grant(agent_id, amount, idempotency_key=key or f"cli-grant-{uuid.uuid4()}", reason=reason)
        )
        receipt = _run_user_facing(lambda: ledger.execute(operation))
    note = " (already applied; nothing moved)" if receipt.replayed else ""
    console.print(f"granted {receipt.amount} to {agent_id}: available {receipt.credit_balance_after}{note}")


@contextlib.contextmanager
def _attention(ctx: typer.Context) -> Iterator[AttentionService]:
    with _database(ctx) as (settings, database):
        yield AttentionService(database, settings)


def _age(moment: datetime) -> str:
    seconds = int((datetime.now(UTC) - moment).total_seconds())
    return (
        f"{seconds // 3600}h {seconds % 3600 // 60}m ago"
        if seconds >= 3600
        else f"{seconds // 60}m {seconds % 60}s ago"
    )


@app.command()
def inbox(
    ctx: typer.Context,
    list_only: bool = typer.Option(False, "--list", help="Show the pending prompts and exit."),
) -> None:
    """The human's inbox: read each pending prompt and score it — Interesting, Useful, Understandable (0–10).
    Scoring mints I·W_i + U·W_u + Un·W_un credits to the agent."""
    with _attention(ctx) as attention:
        pending = _run_user_facing(attention.pending)
        if not pending:
            console.print("No prompts are waiting for you.")
            return
        table = Table("prompt", "agent", "age", "text", title=f"{len(pending)} prompts waiting for you")
        for prompt in pending:
            table.add_row(prompt.prompt_id, prompt.agent_id, _age(prompt.created_at), prompt.text[:60])
        console.print(table)
        if list_only:
            return
        for prompt in pending:
            console.print(
                Panel(
                    prompt.text, title=f"{prompt.agent_id} asks ({_age(prompt.created_at)})", subtitle=prompt.prompt_id
                )
            )
            for attachment in prompt.attachments:
                console.print(f"  attachment: {attachment}")
            choice = RichPrompt.ask("Score it, skip it, or quit?", choices=["score", "skip", "quit"], default="score")
            if choice == "quit":
                break
            if choice == "skip":
                continue
            scores = {name: _ask_score(name) for name in ("interesting", "useful", "understandable")}
            scored = _run_user_facing(lambda p=prompt, s=scores: attention.score(p.prompt_id, **s))
            console.print(
                f"[bold green]scored[/]: {credits_text(scored.credits or 0)} credits minted to {scored.agent_id}"
            )


def _ask_score(name: str) -> int:
    while True:
        value = IntPrompt.ask(f"  {name.capitalize()} (0–10)")
        if 0 <= value <= 10:
            return value
        console.print("[red]a score is a whole number from 0 to 10[/]")


@app.command()
def reward(
    ctx: typer.Context,
    prompt_id: str,
    interesting: int = typer.Option(..., "--interesting", help="0–10"),
    useful: int = typer.Option(..., "--useful", help="0–10"),
    understandable: int = typer.Option(..., "--understandable", help="0–10"),
) -> None:
    """Score one prompt without the interactive inbox; mints the reward to its agent, once."""
    with _attention(ctx) as attention:
        scored = _run_user_facing(
            lambda: attention.score(prompt_id, interesting=interesting, useful=useful, understandable=understandable)
        )
    console.print(
        f"scored {prompt_id}: {credits_text(scored.credits or Decimal(0))} credits minted to {scored.agent_id}"
    )


def _agents_table(database: Database) -> Table:
    table = Table("agent", "status", "available", "locked", "executions", "last ended", title="agents")
    with database.reader() as session:
        agents = standings(session)
        runs = dict(session.execute(select(Execution.agent_id, func.count()).group_by(Execution.agent_id)).all())
        ended = select(Execution.agent_id, Execution.reason).where(Execution.status == "terminated")
        last = dict(session.execute(ended.order_by(Execution.ended_at)).all())  # the latest per agent wins
    for agent in agents:
        table.add_row(
            agent.agent_id,
            agent.status,
            credits_text(agent.available),
            credits_text(agent.locked),
            str(runs.get(agent.agent_id, 0)),
            last.get(agent.agent_id) or "",
        )
    return table


@app.command("agents")
def list_agents(ctx: typer.Context) -> None:
    """Every agent: status, credits, how many times it ran and how its last execution ended."""
    with _database(ctx) as (_, database):
        console.print(_agents_table(database))


@app.command()
def status(ctx: typer.Context) -> None:
    """The economy at a glance: market prices and utilization, agents, and whether the ledger invariant holds."""
    with _database(ctx) as (settings, database):
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
        console.print(_agents_table(ledger.database))
        with ledger.database.reader() as session:
            running = session.scalar(select(func.count()).select_from(Execution).where(Execution.status == "running"))
            pending = session.scalar(select(func.count()).select_from(Prompt).where(Prompt.status == "pending"))
        report = ledger.verify()
    inv = report.invariant
    console.print(f"executions running: {running}; prompts waiting for the human: {pending}")
    verdict = "[bold green]holds[/]" if report.ok else "[bold red]BROKEN[/] (syntropism ledger verify says where)"
    console.print(
        f"ledger: available {from_micros(inv.available)} + locked {from_micros(inv.locked)} + burned "
        f"{from_micros(inv.burned)} = minted {from_micros(inv.minted)} — invariant {verdict}"
    )
    if not report.ok:
        raise typer.Exit(1)


# --- benchmarks ----------------------------------------------------------------------------------------------

STATUS_STYLE = {
    "passed": "[green]passed[/]",
    "failed": "[red]FAILED[/]",
    "error": "[red]ERROR[/]",
    "unreadable": "[red]UNREADABLE[/]",
    "not_evaluated": "[yellow]NOT EVALUATED[/]",
    "partial": "[yellow]partial[/]",
}


def _scenario_files(paths: list[Path], domain: str | None) -> tuple[list[Path], list[ScenarioResult]]:
    """The scenario files to load, and an unreadable entry for each given path that does not exist."""
    if not paths:
        return shipped_scenarios(domain), []
    files: list[Path] = []
    missing: list[ScenarioResult] = []
    for path in paths:
        if path.is_dir():
            files += sorted(path.rglob("*.json"))
        elif path.is_file():
            files.append(path)
        else:
            missing.append(ScenarioResult.of_unreadable(path, f"{path}: no such scenario file or folder"))
    return [p for p in files if p.name != "scenario.schema.json"], missing


def _load_all(files: list[Path], domain: str | None) -> list[LoadedScenario | ScenarioResult]:
    """Each file loaded, or an unreadable entry naming the file, the field and the reason; one bad file does
    not stop the others."""
    loaded: list[LoadedScenario | ScenarioResult] = []
    for path in files:
        try:
            scenario = load_scenario(path)
        except ScenarioError as exc:
            loaded.append(ScenarioResult.of_unreadable(path, str(exc)))
            continue
        if domain is None or scenario.scenario.domain == domain:
            loaded.append(scenario)
    return loaded


def _bench_summary(results: list[ScenarioResult], allow_partial: bool) -> Table:
    table = Table("scenario", "name", "status", "checks", "not evaluated", "events", "seconds")
    for r in results:
        checks = f"{r.count('passed')}/{r.evaluated}"
        status = STATUS_STYLE[r.status]
        if r.status == "partial" and allow_partial:
            status = "[green]partial[/] (allowed)"
        scenario = r.scenario_id if r.seed is None else f"{r.scenario_id} (seed {r.seed})"
        table.add_row(
            scenario, r.name, status, checks, str(r.count("not_evaluated")),
            str(len(r.events)), f"{r.seconds:.1f}",
        )  # fmt: skip
    return table


def _agent_program(agent: Path) -> str:
    """The agent under test's program, found as a scenario's is (the working folder, then the repository)."""
    found = next((p for p in (agent, REPOSITORY / agent) if p.exists()), None)
    if found is None:
        err_console.print(f"--agent {agent}: no such file or folder (nor in {REPOSITORY})")
        raise typer.Exit(2)
    return str(found.resolve())


def _print_problems(result: ScenarioResult) -> None:
    if result.subject and result.subject.get("note"):
        console.print(f"[yellow]{result.scenario_id}[/]: {result.subject['note']}", soft_wrap=True)
    if result.unreadable:
        console.print(f"[red]{result.path}[/]: unreadable, not run: {result.error}", soft_wrap=True)
    elif result.error:
        console.print(f"[red]{result.scenario_id}[/]: the run broke: {result.error}", soft_wrap=True)
    if not result.checks and result.status == "not_evaluated":
        console.print(f"[yellow]{result.scenario_id} not_evaluated[/]: the scenario has no checks", soft_wrap=True)
    for check in result.checks:
        if check.status != "passed":
            colour = "red" if check.status == "failed" else "yellow"
            console.print(
                f"[{colour}]{result.scenario_id} {check.status}[/] {check.check}: {check.reason}", soft_wrap=True
            )


@app.command()
def bench(
    ctx: typer.Context,
    paths: list[Path] = typer.Argument(None, help="Scenario files or folders; default: every shipped scenario."),
    domain: str | None = typer.Option(None, "--domain", help="Only scenarios of this domain."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the results as JSON here."),
    junit_out: Path | None = typer.Option(None, "--junit", help="Write the results as JUnit XML here."),
    allow_partial: bool = typer.Option(
        False, "--allow-partial", help="Count a partial scenario (none failed, some not evaluated) as passed."
    ),
    repeat: int = typer.Option(
        1, "--repeat", min=1, help="Run each scenario this many times (seeds --seed, --seed + 1, …): pass@1, pass^k."
    ),
    seed: int | None = typer.Option(
        None, "--seed", help="Every agent's SYNTROPISM_SEED for the first run (default 0 when repeating)."
    ),
    agent: Path | None = typer.Option(
        None, "--agent", help="The agent under test (a file or folder, any language): run as each scenario's subject."
    ),
    keep_state: bool = typer.Option(False, "--keep-state", help="Keep each run's state folder (and say where)."),
    schema: bool = typer.Option(False, "--schema", help="Print the scenario JSON Schema and exit."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show the logs of each scenario's system."),
) -> None:
    """Run benchmark scenarios on the real system and judge them from the event stream.

    A scenario passes only if at least one check was evaluated and none failed. Nothing evaluated: "not evaluated". Some checks not evaluated, none failed: "partial", passed only with --allow-partial.

    Exit codes: 0 every scenario passed; 1 a scenario failed or its run broke; 2 a scenario file unreadable or invalid (the others still run) or nothing to run; 3 nothing failed, but something was not evaluated. The lowest that applies wins.
    """  # noqa: E501 (one line per paragraph, so that the help wraps it to the terminal)
    if schema:
        print(json.dumps(scenario_json_schema(), indent=2))
        return
    judge_settings = _run_user_facing(lambda: _settings(ctx))
    if not verbose:  # every scenario starts and stops a system: its routine logs would bury the progress bar
        logging.getLogger().setLevel(max(logging.WARNING, logging.getLogger().level))
    agent_program = _agent_program(agent) if agent is not None else None
    files, missing = _scenario_files(paths or [], domain)
    entries: list[LoadedScenario | ScenarioResult] = [*missing, *_load_all(files, domain)]
    if not entries:
        err_console.print("no scenarios to run")
        raise typer.Exit(2)
    runnable = [entry for entry in entries if isinstance(entry, LoadedScenario)]
    bench_all = functools.partial(_bench, runnable, judge_settings, keep_state, repeat, seed, agent_program)
    ran = iter(_run_async(bench_all) if runnable else [])
    results = [run for entry in entries for run in ([entry] if isinstance(entry, ScenarioResult) else next(ran))]
    console.print(_bench_summary(results, allow_partial))
    for result in results:
        _print_problems(result)
    if agent_program is not None:
        used = sum(bool(r.subject and r.subject["agent_under_test"]) for r in results)
        console.print(f"agent under test {agent_program}: the subject of {used} of {len(results)} scenario run(s)")
    console.print(summary_line(results, allow_partial))
    if json_out:
        write_json(results, json_out, allow_partial)
    if junit_out:
        write_junit(results, junit_out, allow_partial)
    code = exit_code(results, allow_partial)
    if code:
        raise typer.Exit(code)


async def _bench(
    loaded: list[LoadedScenario],
    judge_settings: Settings,
    keep_state: bool,
    repeat: int,
    seed: int | None,
    agent: str | None = None,
) -> list[list[ScenarioResult]]:
    """Each scenario's runs (``repeat`` of them), in order."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task("scenarios", total=len(loaded) * repeat)
        async with BenchmarkRunner(keep_state=keep_state, judge_settings=judge_settings, agent=agent) as runner:
            results = []
            for scenario in loaded:
                progress.update(task, description=f"{scenario.scenario.scenario_id}: {scenario.scenario.name}")
                runs = await runner.run_many([scenario], lambda _: progress.advance(task), repeat=repeat, seed=seed)
                results.append(runs)
            if keep_state:
                err_console.print(f"state kept in {runner.work_dir}")
    return results
