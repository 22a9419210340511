"""``syntropism events``: the event stream read back from JetStream, as lines for a person or JSON."""

from __future__ import annotations

import contextlib
import json
import sys

import typer

from syntropism.cli.common import console, run_async, run_user_facing, settings_for
from syntropism.infra.nats_bus import ReceivedEvent
from syntropism.runtime import open_bus


def events(
    ctx: typer.Context,
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new events."),
    event_type: list[str] = typer.Option([], "--type", "-t", help="market.bid_placed, market.* or market."),
    agent: str | None = typer.Option(None, "--agent", "-a", help="Only events about this agent."),
    as_json: bool = typer.Option(False, "--json", help="One JSON event per line."),
) -> None:
    """Print the event stream from JetStream, oldest first."""
    settings = run_user_facing(lambda: settings_for(ctx))

    async def _read() -> None:
        async with open_bus(settings) as bus:
            async for received in bus.read(event_type, follow=follow):
                if agent is not None and received.event.agent_id != agent:
                    continue
                if as_json:
                    sys.stdout.write(received.event.model_dump_json() + "\n")
                    sys.stdout.flush()
                else:
                    console.print(format_event(received), highlight=False, soft_wrap=True)

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends --follow
        run_async(_read)


def format_event(received: ReceivedEvent) -> str:
    event = received.event
    data = json.dumps(event.data.model_dump(mode="json"), separators=(",", ":"))
    agent = f" agent={event.agent_id}" if event.agent_id else ""
    return f"[dim]{received.stream_seq:>6} {event.timestamp:%H:%M:%S.%f}[/] [bold cyan]{event.type}[/]{agent} {data}"
