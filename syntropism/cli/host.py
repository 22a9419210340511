"""The host and its configuration: ``config`` (the effective settings), ``doctor`` (what this host offers) and
``migrate`` (the database schema)."""

from __future__ import annotations

import json
import sys

import typer
from rich.table import Table

from syntropism.cli.common import console, open_database, run_user_facing, settings_for
from syntropism.config import ENV_PREFIX, Settings
from syntropism.infra.host import host_checks


def config(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Print the effective configuration, and the environment variable for each knob."""
    settings = run_user_facing(lambda: settings_for(ctx))
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


def doctor(ctx: typer.Context) -> None:
    """What this host offers: nats-server, database, cgroups, namespaces, bubblewrap — and how to fix gaps."""
    settings = run_user_facing(lambda: settings_for(ctx))
    checks = host_checks(settings)
    table = Table("check", "status", "found", "how to fix", title="syntropism doctor")
    for check in checks:
        status = "[green]ok[/]" if check.ok else "[red]MISSING[/]" if check.required else "[yellow]missing[/]"
        table.add_row(check.name, status, check.detail, check.fix)
    console.print(table)
    if any(check.required and not check.ok for check in checks):
        raise typer.Exit(1)


def migrate(ctx: typer.Context) -> None:
    """Bring the database schema to the newest migration (``run`` does this on every start)."""
    with open_database(ctx) as (_, database):
        console.print(f"schema at revision {database.current_revision()}")
