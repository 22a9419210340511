"""``syntropism ledger``: the credit ledger — verify the invariant, an agent's balance and history, grants."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import uuid
from collections.abc import Iterator

import typer
from rich.table import Table

from syntropism.cli.common import console, err_console, open_database, run_user_facing
from syntropism.domain import economy
from syntropism.domain.identity import operator_key
from syntropism.domain.models import from_micros
from syntropism.infra.ledger import Ledger

ledger_app = typer.Typer(
    help="The credit ledger: verify the invariant, balances, history, grants.", no_args_is_help=True
)


@contextlib.contextmanager
def open_ledger(ctx: typer.Context) -> Iterator[Ledger]:
    with open_database(ctx) as (_, database):
        yield Ledger(database)


@ledger_app.command("verify")
def ledger_verify(ctx: typer.Context) -> None:
    """Check Σ available + Σ locked + burned = minted and that every account matches its journal entries."""
    with open_ledger(ctx) as ledger:
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
    with open_ledger(ctx) as ledger:
        balance = run_user_facing(lambda: ledger.balance(agent_id))
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
    with open_ledger(ctx) as ledger:
        page = run_user_facing(lambda: ledger.history(agent_id, limit=limit, before=before))
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
    with open_ledger(ctx) as ledger:
        operation = run_user_facing(
            lambda: economy.grant(
                agent_id, amount, idempotency_key=operator_key("grant", key or str(uuid.uuid4())), reason=reason
            )
        )
        receipt = run_user_facing(lambda: ledger.execute(operation))
    note = " (already applied; nothing moved)" if receipt.replayed else ""
    console.print(f"granted {receipt.amount} to {agent_id}: available {receipt.credit_balance_after}{note}")
