"""What every command shares: the consoles, the global options, the effective settings, and how a failure the
user can fix is reported (its message, exit code 2, no traceback)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.logging import RichHandler

from syntropism.benchmarks.scenario import ScenarioError
from syntropism.config import ConfigError, Settings, load_settings, parse_overrides
from syntropism.domain.errors import Refused
from syntropism.infra.database import Database, DatabaseUnavailable
from syntropism.infra.embedded_nats import NatsServerFailed, NatsServerNotFound
from syntropism.infra.nats_bus import BusUnavailable
from syntropism.infra.state_dir import StateDirBusy
from syntropism.runtime import build_database

console = Console()
err_console = Console(stderr=True)

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


def main(
    ctx: typer.Context,
    config: Path | None = typer.Option(None, "--config", "-c", help="TOML config file (or SYNTROPISM_CONFIG)."),
    state_dir: Path | None = typer.Option(None, "--state-dir", help="State folder (SYNTROPISM_STATE_DIR)."),
    set_: list[str] = typer.Option([], "--set", help="Override any setting: --set clearing_interval_seconds=2."),
) -> None:
    ctx.obj = {"config": config, "overrides": {**({"state_dir": state_dir} if state_dir else {})}, "set": set_}


def settings_for(ctx: typer.Context, **flags: Any) -> Settings:
    """Effective settings: command flags over --set over env over the config file over defaults."""
    try:
        overrides = {**ctx.obj["overrides"], **parse_overrides(ctx.obj["set"])}
        overrides.update({key: value for key, value in flags.items() if value is not None})
        settings = load_settings(ctx.obj["config"], overrides)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e['input']!r})" for e in exc.errors())
        raise ConfigError(f"invalid configuration: {problems}") from exc
    setup_logging(settings.log_level)
    return settings


def setup_logging(level: str) -> None:
    root = logging.getLogger()
    if not any(isinstance(handler, RichHandler) for handler in root.handlers):
        root.addHandler(RichHandler(console=err_console, show_path=False, rich_tracebacks=True))
    root.setLevel(level)
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))


def run_user_facing(work: Callable[[], T]) -> T:
    try:
        return work()
    except USER_ERRORS as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from exc


def run_async(coroutine_factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return run_user_facing(lambda: asyncio.run(coroutine_factory()))


@contextlib.contextmanager
def open_database(ctx: typer.Context) -> Iterator[tuple[Settings, Database]]:
    """The configured database, migrated, for a command that works on the economy without a runtime."""
    settings = run_user_facing(lambda: settings_for(ctx))
    database = build_database(settings)
    try:
        run_user_facing(database.migrate)
        yield settings, database
    finally:
        database.dispose()
