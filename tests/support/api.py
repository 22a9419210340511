"""The System Service over real HTTP for tests: served by uvicorn in a thread of its own, on any free port."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi import FastAPI

from syntropism.api.server import ApiServer


@contextmanager
def serving(app: FastAPI, socket_path: Path | None = None) -> Iterator[ApiServer]:
    """Serve ``app`` until the block ends; yields the started server (its ``url``, its ``socket_path``)."""
    server = ApiServer(app, "127.0.0.1", 0, socket_path)
    ready, failed = threading.Event(), []
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def run() -> None:
        try:
            await server.start()
        except BaseException as exc:
            failed.append(exc)
            ready.set()
            raise
        ready.set()
        await stop.wait()
        await server.stop()

    thread = threading.Thread(target=loop.run_until_complete, args=(run(),), daemon=True)
    thread.start()
    ready.wait(30)
    if failed:
        raise failed[0]
    try:
        yield server
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()
