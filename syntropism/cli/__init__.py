"""The ``syntropism`` command line: one module per command group, assembled here into :data:`app`.

Commands are registered in the order ``syntropism --help`` lists them.
"""

from __future__ import annotations

import typer

from syntropism.cli import attention, bench, common, economy, events, host, relay, run
from syntropism.cli.ledger import ledger_app

app = typer.Typer(
    help="Syntropism: a market-governed runtime for autonomous agents.", no_args_is_help=True, add_completion=False
)
app.add_typer(ledger_app, name="ledger")
app.callback()(common.main)
app.command()(run.run)
app.command()(relay.relay)
app.command()(host.config)
app.command()(events.events)
app.command()(host.doctor)
app.command()(host.migrate)
app.command()(attention.inbox)
app.command()(attention.reward)
app.command("agents")(economy.list_agents)
app.command()(economy.status)
app.command()(bench.bench)

__all__ = ["app"]
