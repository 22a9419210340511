"""``syntropism relay``: only the outbox relay, for a deployment that runs it apart from the runtime."""

from __future__ import annotations

import asyncio
import signal

import typer

from syntropism.cli.common import console, run_async, run_user_facing, settings_for
from syntropism.config import Settings
from syntropism.runtime import open_relay


def relay(
    ctx: typer.Context,
    once: bool = typer.Option(False, "--once", help="Publish what is committed now, then exit."),
) -> None:
    """Run only the outbox relay against the configured database and NATS (for split deployments)."""
    settings = run_user_facing(lambda: settings_for(ctx))
    if not settings.nats_url:
        raise typer.BadParameter("the standalone relay needs SYNTROPISM_NATS_URL (or --set nats_url=…)")

    async def _relay() -> None:
        published = await relay_outbox(settings, once=once)
        console.print(f"relayed {published} events")

    run_async(_relay)


async def relay_outbox(settings: Settings, *, once: bool, stop: asyncio.Event | None = None) -> int:
    """Publish the committed outbox rows — ``once``: what is committed now; else until ``stop`` is set (by
    default, by Ctrl-C or SIGTERM) — and return how many events were published."""
    async with open_relay(settings) as outbox_relay:
        if once:
            await outbox_relay.drain()
        else:
            await outbox_relay.run(stop or _stop_on_signal())
        return outbox_relay.stats.published


def _stop_on_signal() -> asyncio.Event:
    """An event Ctrl-C or SIGTERM sets: the relay then drains what is committed and exits."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop
