"""The human's side of the attention market: ``inbox`` (read and score the pending prompts) and ``reward``
(score one prompt without the inbox)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import typer
from rich.panel import Panel
from rich.prompt import IntPrompt
from rich.prompt import Prompt as RichPrompt
from rich.table import Table

from syntropism.cli.common import console, open_database, run_user_facing
from syntropism.core.attention import AttentionService
from syntropism.domain.models import credits_text


@contextlib.contextmanager
def open_attention(ctx: typer.Context) -> Iterator[AttentionService]:
    with open_database(ctx) as (settings, database):
        yield AttentionService(database, settings)


def inbox(
    ctx: typer.Context,
    list_only: bool = typer.Option(False, "--list", help="Show the pending prompts and exit."),
) -> None:
    """The human's inbox: read each pending prompt and score it — Interesting, Useful, Understandable (0–10).
    Scoring mints I·W_i + U·W_u + Un·W_un credits to the agent."""
    with open_attention(ctx) as attention:
        pending = run_user_facing(attention.pending)
        if not pending:
            console.print("No prompts are waiting for you.")
            return
        table = Table("prompt", "agent", "age", "text", title=f"{len(pending)} prompts waiting for you")
        for prompt in pending:
            table.add_row(prompt.prompt_id, prompt.agent_id, age(prompt.created_at), prompt.text[:60])
        console.print(table)
        if list_only:
            return
        for prompt in pending:
            title = f"{prompt.agent_id} asks ({age(prompt.created_at)})"
            console.print(Panel(prompt.text, title=title, subtitle=prompt.prompt_id))
            for attachment in prompt.attachments:
                console.print(f"  attachment: {attachment}")
            choice = RichPrompt.ask("Score it, skip it, or quit?", choices=["score", "skip", "quit"], default="score")
            if choice == "quit":
                break
            if choice == "skip":
                continue
            scores = {name: _ask_score(name) for name in ("interesting", "useful", "understandable")}
            scored = run_user_facing(functools.partial(attention.score, prompt.prompt_id, **scores))
            minted = credits_text(scored.credits or Decimal(0))
            console.print(f"[bold green]scored[/]: {minted} credits minted to {scored.agent_id}")


def reward(
    ctx: typer.Context,
    prompt_id: str,
    interesting: int = typer.Option(..., "--interesting", help="0–10"),
    useful: int = typer.Option(..., "--useful", help="0–10"),
    understandable: int = typer.Option(..., "--understandable", help="0–10"),
) -> None:
    """Score one prompt without the interactive inbox; mints the reward to its agent, once."""
    with open_attention(ctx) as attention:
        scored = run_user_facing(
            lambda: attention.score(prompt_id, interesting=interesting, useful=useful, understandable=understandable)
        )
    console.print(
        f"scored {prompt_id}: {credits_text(scored.credits or Decimal(0))} credits minted to {scored.agent_id}"
    )


def age(moment: datetime) -> str:
    """How long ago ``moment`` was, as a person reads it: ``4m 12s ago``, ``2h 5m ago``."""
    seconds = int((datetime.now(UTC) - moment).total_seconds())
    return (
        f"{seconds // 3600}h {seconds % 3600 // 60}m ago"
        if seconds >= 3600
        else f"{seconds // 60}m {seconds % 60}s ago"
    )


def _ask_score(name: str) -> int:
    while True:
        value = IntPrompt.ask(f"  {name.capitalize()} (0–10)")
        if 0 <= value <= 10:
            return value
        console.print("[red]a score is a whole number from 0 to 10[/]")
