"""Agents' workspaces on the host: every file operation on a path an agent can influence, done safely.

An agent owns everything inside ``workspaces/<agent_id>/``: it can put symlinks there, swap a file for a link or
a FIFO between two looks, nest folders without end. So the host never follows a link there and never trusts a
check it made a moment ago:

- a path an agent names is split into plain components (no absolute paths, no ``..``, no NUL) and opened one
  component at a time from a folder descriptor with ``O_NOFOLLOW`` — a link anywhere on the way is refused, and
  what is opened is what is used (no check-then-use gap);
- copies (spawning a child) go into a staging folder outside any database transaction, skip links and special
  files, and stop at a byte, entry and depth budget; the finished copy is renamed into place in one step;
- the death archive is built beside its final name and renamed, so an archive either is complete or is not there.

Only :meth:`Workspaces.path_of` turns an agent id into a folder, and it accepts only a plain name
(:func:`syntropism.domain.identity.check_agent_id`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath

from syntropism.config import Settings
from syntropism.domain.errors import Reason, Refused
from syntropism.domain.identity import check_agent_id

STATE_FILE = "state.json"
STAGING = ".staging"  # not a valid agent id (it starts with a dot): no agent can be named so
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # NONBLOCK: a FIFO swapped in never hangs us
WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_PATH_CHARS = 1000
MAX_DEPTH = 32
MAX_ENTRIES = 10_000
CHUNK_BYTES = 1 << 20


class WorkspaceRefused(Refused):
    """A path or a copy the host will not do."""


@dataclass(frozen=True)
class Budget:
    """What one copy may take: bytes, folder entries, folder depth."""

    max_bytes: int
    max_entries: int = MAX_ENTRIES
    max_depth: int = MAX_DEPTH


@dataclass
class _Spent:
    bytes: int = 0
    entries: int = 0


def plain_parts(path: str, what: str) -> tuple[str, ...]:
    """``path`` (relative, inside a workspace) as its components; refuses absolute paths, ``..`` and NUL."""
    if not isinstance(path, str) or not path or len(path) > MAX_PATH_CHARS or "\x00" in path:
        raise WorkspaceRefused(Reason.INVALID_PATH, f"{what} must be a relative path of 1–{MAX_PATH_CHARS} characters")
    pure = PurePosixPath(path)
    if pure.is_absolute():
        raise WorkspaceRefused(
            Reason.INVALID_PATH, f"{what} {path[:200]!r} is absolute; name a path inside the workspace"
        )
    parts = tuple(part for part in pure.parts if part != ".")
    if ".." in parts:
        raise WorkspaceRefused(Reason.INVALID_PATH, f"{what} {path[:200]!r} climbs out with '..'")
    if any(len(part.encode()) > 255 for part in parts):
        raise WorkspaceRefused(Reason.INVALID_PATH, f"{what} {path[:200]!r} has a component over 255 bytes")
    return parts


@contextlib.contextmanager
def _folder(base: Path, parts: tuple[str, ...], *, create: bool = False) -> Iterator[int]:
    """A descriptor of ``base/parts…``, each component opened without following links (created if asked)."""
    try:
        fd = os.open(base, DIR_FLAGS)
    except OSError as error:
        raise _refusal(error, "workspace", str(base.name)) from None
    try:
        for part in parts:
            try:
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o755, dir_fd=fd)
                inner = os.open(part, DIR_FLAGS, dir_fd=fd)
            except OSError as error:
                raise _refusal(error, "folder", "/".join(parts)) from None
            os.close(fd)
            fd = inner
        yield fd
    finally:
        os.close(fd)


def _refusal(error: OSError, what: str, path: str) -> WorkspaceRefused:
    if error.errno in (errno.ELOOP, errno.ENOTDIR):
        return WorkspaceRefused(Reason.INVALID_PATH, f"{what} {path[:200]!r} goes through a link or a non-folder")
    if error.errno == errno.ENOENT:
        return WorkspaceRefused(Reason.NOT_FOUND, f"{what} {path[:200]!r} does not exist in the workspace")
    return WorkspaceRefused(Reason.INVALID_PATH, f"{what} {path[:200]!r}: {error.strerror}")


class Workspaces:
    """The agents' workspaces under ``root``; archives of the dead under ``archive_dir``."""

    def __init__(self, root: Path, archive_dir: Path) -> None:
        self.root = root
        self.archive_dir = archive_dir

    @classmethod
    def of(cls, settings: Settings) -> Workspaces:
        """The workspaces of ``settings``' economy: ``workspace_root``, archives under ``state/archive``."""
        return cls(settings.effective_workspace_root, settings.state_dir / "archive")

    def path_of(self, agent_id: str) -> Path:
        """The workspace folder of a validly named agent (it may not exist yet)."""
        return self.root.resolve() / check_agent_id(agent_id)

    def ensure(self, agent_id: str) -> Path:
        """The agent's workspace, created with an empty ``state.json`` on first use — never through a link."""
        workspace = self.path_of(agent_id)
        workspace.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            workspace.mkdir(mode=0o755)
        if workspace.is_symlink() or not workspace.is_dir():
            raise WorkspaceRefused(Reason.INVALID_PATH, f"the workspace of {agent_id} is not a folder")
        with _folder(workspace, ()) as fd:
            try:
                handle = os.open(STATE_FILE, WRITE_FLAGS, 0o644, dir_fd=fd)
            except FileExistsError:
                pass  # there already: a file, or a link the agent made (left alone, never followed)
            else:
                with os.fdopen(handle, "w") as state:
                    state.write("{}\n")
        return workspace

    # --- reading what an agent names ------------------------------------------------------------------------

    def is_file(self, agent_id: str, path: str) -> bool:
        """Whether ``path`` names a regular file in the workspace, reached without a link."""
        parts = plain_parts(path, "path")
        if not parts:
            return False
        try:
            with _folder(self.path_of(agent_id), parts[:-1]) as fd:
                return stat.S_ISREG(os.stat(parts[-1], dir_fd=fd, follow_symlinks=False).st_mode)
        except OSError:
            return False

    def read(self, agent_id: str, path: str, *, max_bytes: int, what: str = "file") -> bytes:
        """The content of a regular file in the workspace (no links), at most ``max_bytes``."""
        parts = plain_parts(path, what)
        if not parts:
            raise WorkspaceRefused(Reason.INVALID_PATH, f"{what} {path!r} names the workspace itself, not a file")
        try:
            with _folder(self.path_of(agent_id), parts[:-1]) as folder:
                fd = os.open(parts[-1], READ_FLAGS, dir_fd=folder)
        except OSError as error:
            raise _refusal(error, what, path) from None
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise WorkspaceRefused(Reason.INVALID_PATH, f"{what} {path[:200]!r} is not a regular file")
            content = handle.read(max_bytes + 1)
        if len(content) > max_bytes:
            raise WorkspaceRefused(Reason.TOO_LARGE, f"{what} {path[:200]!r} is over {max_bytes} bytes")
        return content

    def usage(self, agent_id: str, *, limit_entries: int) -> tuple[int, int]:
        """(bytes of its regular files, entries) of the workspace, links not followed; the count stops a little
        past ``limit_entries``, so a workspace of a million files costs no more to measure than one over the
        limit."""
        total = entries = 0
        for folder, dirs, files in os.walk(self.path_of(agent_id)):
            entries += len(dirs) + len(files)
            for name in files:
                with contextlib.suppress(OSError):
                    info = os.lstat(os.path.join(folder, name))
                    total += info.st_size if stat.S_ISREG(info.st_mode) else 0
            if entries > limit_entries:
                break
        return total, entries

    # --- new workspaces: staged, then installed in one rename -----------------------------------------------

    def stage_copy(self, agent_id: str, source: str, entry_point: str, budget: Budget) -> Path:
        """A copy of ``source`` (a file or folder in the agent's workspace) in a staging folder, without links
        or special files, within ``budget``; the child's ``entry_point`` must be a file in it. A file source
        lands at ``entry_point``. The child starts with its own, empty ``state.json``."""
        source_parts = plain_parts(source, "source")
        entry_parts = plain_parts(entry_point, "entry point")
        if not entry_parts:
            raise WorkspaceRefused(Reason.INVALID_PATH, "the entry point must name a file")
        staged = self._new_staging()
        try:
            spent = _Spent()
            with _folder(self.path_of(agent_id), source_parts[:-1]) as parent:
                name = source_parts[-1] if source_parts else "."
                try:
                    info = os.stat(name, dir_fd=parent, follow_symlinks=False)
                except OSError as error:
                    raise _refusal(error, "source", source) from None
                if stat.S_ISDIR(info.st_mode):
                    with _folder(staged, ()) as target, self._open_dir_at(parent, name, source) as origin:
                        _copy_folder(origin, target, budget, spent, depth=0)
                elif stat.S_ISREG(info.st_mode):
                    with _folder(staged, entry_parts[:-1], create=True) as target:
                        _copy_file(parent, name, target, entry_parts[-1], budget, spent)
                else:
                    raise WorkspaceRefused(
                        Reason.INVALID_PATH, f"source {source[:200]!r} is neither a file nor a folder"
                    )
            with _folder(staged, ()) as fd:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(STATE_FILE, dir_fd=fd)
                with os.fdopen(os.open(STATE_FILE, WRITE_FLAGS, 0o644, dir_fd=fd), "w") as state:
                    state.write("{}\n")
            if not self._is_regular(staged, entry_parts):
                raise WorkspaceRefused(Reason.INVALID_SPAWN, f"entry point {entry_point!r} is not a file in {source!r}")
        except BaseException:
            self.discard(staged)
            raise
        return staged

    def stage_files(self, files: dict[str, bytes], *, executable_suffixes: tuple[str, ...] = (".sh",)) -> Path:
        """A staging folder holding ``files`` (relative path → content)."""
        staged = self._new_staging()
        try:
            for path, content in files.items():
                parts = plain_parts(path, "file")
                if not parts:
                    raise WorkspaceRefused(Reason.INVALID_PATH, f"file {path!r} names the workspace itself")
                mode = 0o755 if PurePosixPath(path).suffix in executable_suffixes else 0o644
                with _folder(staged, parts[:-1], create=True) as folder:
                    try:
                        handle = os.open(parts[-1], WRITE_FLAGS, mode, dir_fd=folder)
                    except FileExistsError:
                        raise WorkspaceRefused(Reason.INVALID_PATH, f"file {path!r} is given twice") from None
                    with os.fdopen(handle, "wb") as out:
                        out.write(content)
                    os.chmod(parts[-1], mode, dir_fd=folder)  # the umask may have narrowed it
        except BaseException:
            self.discard(staged)
            raise
        return staged

    def install(self, staged: Path, agent_id: str) -> Path:
        """Move a staged folder into place as ``agent_id``'s workspace, in one rename; refused when a workspace
        is already there."""
        target = self.path_of(agent_id)
        try:
            os.rename(staged, target)  # replaces only an empty folder; a non-empty one raises
        except OSError as error:
            raise WorkspaceRefused(Reason.WORKSPACE_EXISTS, f"a workspace for {agent_id} already exists") from error
        return target

    def remove(self, agent_id: str) -> None:
        """Remove a workspace installed by a registration that then failed."""
        shutil.rmtree(self.path_of(agent_id), ignore_errors=True)

    def discard(self, staged: Path) -> None:
        shutil.rmtree(staged, ignore_errors=True)

    def _new_staging(self) -> Path:
        staging = self.root.resolve() / STAGING
        staging.mkdir(parents=True, exist_ok=True)
        staged = staging / uuid.uuid4().hex
        staged.mkdir(mode=0o755)
        return staged

    @staticmethod
    @contextlib.contextmanager
    def _open_dir_at(parent: int, name: str, shown: str) -> Iterator[int]:
        try:
            fd = os.open(name, DIR_FLAGS, dir_fd=parent)
        except OSError as error:
            raise _refusal(error, "source", shown) from None
        try:
            yield fd
        finally:
            os.close(fd)

    @staticmethod
    def _is_regular(base: Path, parts: tuple[str, ...]) -> bool:
        try:
            with _folder(base, parts[:-1]) as fd:
                return stat.S_ISREG(os.stat(parts[-1], dir_fd=fd, follow_symlinks=False).st_mode)
        except OSError:
            return False

    # --- the archive of a dead agent ------------------------------------------------------------------------

    def archive(self, agent_id: str, now: datetime) -> Path | None:
        """A tar.gz of the workspace under ``archive_dir`` (links stored as links, never followed); the
        workspace itself is kept. None when the agent never had one."""
        workspace = self.path_of(agent_id)
        if not workspace.is_dir() or workspace.is_symlink():
            return None
        self.archive_dir.mkdir(parents=True, exist_ok=True)
        archive = self.archive_dir / f"{agent_id}-{now:%Y%m%dT%H%M%S}.tar.gz"
        partial = archive.with_name(f".{archive.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            with tarfile.open(partial, "w:gz") as tar:
                tar.add(workspace, arcname=agent_id, filter=_regular_or_link)
            os.replace(partial, archive)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
            raise
        return archive.resolve()

    def discard_archive(self, archive: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            archive.unlink()


def _regular_or_link(member: tarfile.TarInfo) -> tarfile.TarInfo | None:
    """Files, folders and links (as links) go into an archive; FIFOs and devices do not."""
    return member if member.isfile() or member.isdir() or member.issym() or member.islnk() else None


def _copy_folder(origin: int, target: int, budget: Budget, spent: _Spent, *, depth: int) -> None:
    if depth > budget.max_depth:
        raise WorkspaceRefused(Reason.TOO_LARGE, f"the source nests folders deeper than {budget.max_depth}")
    listed = []
    with os.scandir(origin) as entries:
        for entry in entries:  # counted while listed: a folder of a million names is refused, not held in memory
            spent.entries += 1
            if spent.entries > budget.max_entries:
                raise WorkspaceRefused(Reason.TOO_LARGE, f"the source holds more than {budget.max_entries} entries")
            listed.append(entry)
    for entry in listed:
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue  # gone meanwhile
        if stat.S_ISDIR(info.st_mode):
            os.mkdir(entry.name, 0o755, dir_fd=target)
            try:
                inner_origin = os.open(entry.name, DIR_FLAGS, dir_fd=origin)
            except OSError:
                continue  # swapped for a link or removed meanwhile: not copied
            try:
                inner_target = os.open(entry.name, DIR_FLAGS, dir_fd=target)
                try:
                    _copy_folder(inner_origin, inner_target, budget, spent, depth=depth + 1)
                finally:
                    os.close(inner_target)
            finally:
                os.close(inner_origin)
        elif stat.S_ISREG(info.st_mode):
            _copy_file(origin, entry.name, target, entry.name, budget, spent)
        # links, FIFOs, sockets and devices are not copied


def _copy_file(origin: int, name: str, target: int, target_name: str, budget: Budget, spent: _Spent) -> None:
    try:
        source = os.open(name, READ_FLAGS, dir_fd=origin)
    except OSError:
        return  # a link (ELOOP) or gone meanwhile: not copied
    try:
        info = os.fstat(source)
        if not stat.S_ISREG(info.st_mode):
            return
        mode = 0o755 if info.st_mode & stat.S_IXUSR else 0o644
        out = os.open(target_name, WRITE_FLAGS, mode, dir_fd=target)
        try:
            while chunk := os.read(source, CHUNK_BYTES):
                spent.bytes += len(chunk)
                if spent.bytes > budget.max_bytes:
                    raise WorkspaceRefused(Reason.TOO_LARGE, f"the source holds more than {budget.max_bytes} bytes")
                view = memoryview(chunk)
                while view:
                    view = view[os.write(out, view) :]
        finally:
            os.close(out)
    finally:
        os.close(source)
