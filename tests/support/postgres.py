"""A throwaway PostgreSQL server for tests and benchmarks: initdb into a temporary folder, start on a free
loopback port, stop and delete on exit. Needs the server binaries (Debian: ``apt-get install postgresql``;
``make test`` installs them where it can). As root, the server runs as the ``postgres`` user."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    pass


def find_pg_bin() -> Path:
    """The folder holding initdb/postgres: PG_BIN, PATH, or Debian's /usr/lib/postgresql/<version>/bin."""
    candidates = [os.environ.get("PG_BIN", "")]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).resolve().parent))
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for folder in filter(None, candidates):
        if all((Path(folder) / tool).exists() for tool in ("initdb", "postgres", "pg_isready", "createdb")):
            return Path(folder)
    raise PostgresUnavailable(
        "PostgreSQL server binaries not found (initdb, postgres). Install them: apt-get install postgresql "
        "(make test does this when run as root), or set PG_BIN to their folder."
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def ephemeral_postgres(*, fsync: bool = True) -> Iterator[str]:
    """Yield a SQLAlchemy URL (postgresql+psycopg) to a fresh database; the server is gone afterwards."""
    pg_bin = find_pg_bin()
    as_root = os.geteuid() == 0
    run_as: dict[str, str] = {"user": "postgres", "group": "postgres"} if as_root else {}  # it refuses root
    root = Path(tempfile.mkdtemp(prefix="syntropism-pg-"))
    data, socket_dir = root / "data", root / "socket"
    socket_dir.mkdir()
    if as_root:
        shutil.chown(root, "postgres")
        shutil.chown(socket_dir, "postgres")
    port = _free_port()
    process: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run(
            [str(pg_bin / "initdb"), "-D", str(data), "-U", "syntropism", "-A", "trust", "--no-sync"],
            check=True,
            capture_output=True,
            **run_as,
        )
        process = subprocess.Popen(
            [
                str(pg_bin / "postgres"),
                "-D",
                str(data),
                "-p",
                str(port),
                "-k",
                str(socket_dir),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"fsync={'on' if fsync else 'off'}",
                "-c",
                "max_connections=100",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(root / "postgres.log", "wb"),  # noqa: SIM115 - lives as long as the server
            **run_as,
        )
        _wait_ready(pg_bin, port, process, root / "postgres.log")
        subprocess.run(
            [str(pg_bin / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "syntropism", "syntropism"],
            check=True,
            capture_output=True,
        )
        yield f"postgresql+psycopg://syntropism@127.0.0.1:{port}/syntropism"
    finally:
        if process is not None:
            process.send_signal(signal.SIGINT)  # fast shutdown
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(root, ignore_errors=True)


def _wait_ready(pg_bin: Path, port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise PostgresUnavailable(f"postgres exited with {process.returncode}: {log.read_text()[-2000:]}")
        ready = subprocess.run([str(pg_bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True)
        if ready.returncode == 0:
            return
        time.sleep(0.05)
    raise PostgresUnavailable(f"postgres not ready after {timeout}s: {log.read_text()[-2000:]}")
