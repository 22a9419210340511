"""The state folder's ownership: one runtime at a time holds its lock and advertises where its NATS listens.

The lock is an ``flock`` on ``runtime.lock``: the kernel releases it when the holder dies, even by SIGKILL, so
a restart after a crash never finds a stale lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import stat
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from syntropism.config import Settings

OPERATOR_TOKEN_FILE = "operator_token"
MAX_SOCKET_PATH = 100


class StateDirBusy(RuntimeError):
    pass


@dataclass(frozen=True)
class RuntimeInfo:
    pid: int
    nats_url: str
    database_url: str
    started_at: str


class StateDirLock:
    """Exclusive ownership of a state folder for the life of this object."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self._handle: IO[str] | None = None

    @property
    def info_file(self) -> Path:
        return self.state_dir / "runtime.json"

    def try_acquire(self) -> bool:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        handle = (self.state_dir / "runtime.lock").open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._handle = handle
        return True

    def acquire(self) -> None:
        if not self.try_acquire():
            running = read_runtime_info(self.state_dir)
            who = f" (pid {running.pid})" if running else ""
            raise StateDirBusy(
                f"another syntropism runtime{who} is using {self.state_dir}; stop it or choose another --state-dir"
            )

    def advertise(self, info: RuntimeInfo) -> None:
        tmp = self.info_file.with_suffix(".tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # the NATS URL in it carries a token
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(asdict(info)))
        os.replace(tmp, self.info_file)

    def release(self) -> None:
        if self._handle is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.info_file.unlink()
        fcntl.flock(self._handle, fcntl.LOCK_UN)
        self._handle.close()
        self._handle = None

    def __enter__(self) -> StateDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def read_runtime_info(state_dir: Path) -> RuntimeInfo | None:
    """What the running runtime advertised, or None when none advertises."""
    try:
        return RuntimeInfo(**json.loads((state_dir / "runtime.json").read_text()))
    except FileNotFoundError:
        return None


def socket_path_for(settings: Settings) -> Path:
    """``<state>/run/api.sock``; where that is longer than a Unix socket path may be (108 bytes), a short path
    in a private folder under the temporary folder, named after the state folder. That folder must be this
    user's own (mode 0700, not a link): another local user who made it first could otherwise swap the socket."""
    path = (settings.state_dir / "run" / "api.sock").resolve()
    if len(str(path)) < MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / f"syntropism-{os.getuid()}-{digest}"
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) & 0o077:
        raise PermissionError(
            f"{folder} is not a private folder of this user (a link, another owner, or open to others); remove it, "
            "or choose a shorter --state-dir so the socket lives inside it"
        )
    return folder / "api.sock"


def operator_token(settings: Settings) -> str:
    """The configured operator token, else the one kept in the state folder (made on first use, mode 0600)."""
    if settings.operator_token:
        return settings.operator_token
    path = settings.state_dir / OPERATOR_TOKEN_FILE
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token
