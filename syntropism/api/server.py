"""The System Service served by uvicorn inside the runtime's event loop, on two doors at once:

- loopback TCP (``api_host``:``api_port``), for the operator, tools and unsandboxed agents;
- a Unix socket in the state folder, which the sandbox binds into every execution — a sandboxed agent has no
  network at all, so this socket is its only way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from fastapi import FastAPI

log = logging.getLogger(__name__)


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the runtime owns SIGINT/SIGTERM and stops the server itself


class ApiServer:
    """Serves ``app`` on loopback TCP and on ``socket_path`` until :meth:`stop`."""

    def __init__(self, app: FastAPI, host: str, port: int, socket_path: Path | None) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.socket_path = socket_path
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        tcp = socket.create_server((self.host, self.port), reuse_port=False)
        tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # accepted connections inherit it: no Nagle delay
        self.port = tcp.getsockname()[1]
        sockets = [tcp]
        if self.socket_path is not None:
            self.socket_path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()  # a stale socket from a runtime that died
            unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            unix.bind(str(self.socket_path))
            self.socket_path.chmod(0o666)  # sandboxed agents run as another uid; the token is the guard
            unix.listen(2048)
            sockets.append(unix)
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", access_log=False)
        self._server = _EmbeddedServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=sockets), name="system-service")
        while not self._server.started:
            if self._task.done():
                await self._task  # raises what failed the start
                raise RuntimeError("the System Service stopped while starting")
            await asyncio.sleep(0.005)
        log.info("System Service on %s and %s", self.url, self.socket_path or "no Unix socket")

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        await self._task
        self._server, self._task = None, None
        if self.socket_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
