"""Database engine, sessions and migrations.

SQLite (the default) runs in WAL mode with ``BEGIN IMMEDIATE`` write transactions, so concurrent writers queue
on the busy timeout instead of failing on a lock upgrade. PostgreSQL is used as is, by URL. One
:meth:`Database.transaction` is one state change: its rows and its outbox events commit together or not at all.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, PoolProxiedConnection, create_engine, event, make_url, text
from sqlalchemy.orm import Session as Session  # re-exported: the services name the unit of work by it
from sqlalchemy.orm import sessionmaker

log = logging.getLogger(__name__)
T = TypeVar("T")

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_CACHE_KIB = 65_536  # per connection; SQLite's default 2 MiB spills a large transaction to the log early
READ_ONLY = "syntropism_read_only"
# Alembic keeps its running environment in module globals, so two migrations at once in one process (two runtimes,
# as a benchmark runs them) would trample each other: they take turns.
_MIGRATING = threading.Lock()
EVENTS_STAGED = "syntropism.events_staged"  # in Session.info / Connection.info: this transaction wrote events


class DatabaseUnavailable(RuntimeError):
    """The configured database cannot be reached or opened; the message says which and how to fix it."""


def _configure_sqlite(engine: Engine, synchronous: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event own transaction start (pysqlite otherwise defers it).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")  # a cycle's 10^4 rows stay in memory until commit
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        read_only = connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def create_database_engine(url: str, *, sqlite_synchronous: str = "FULL", echo: bool = False) -> Engine:
    """An engine for ``url``; for a SQLite file the parent folder is created."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, echo=echo, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        _configure_sqlite(engine, sqlite_synchronous)
        return engine
    return create_engine(url, echo=echo, pool_pre_ping=True)


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return config


class Database:
    """The engine plus the unit-of-work and migration entry points the services use."""

    def __init__(self, url: str, *, sqlite_synchronous: str = "FULL") -> None:
        self.url = url
        self.engine = create_database_engine(url, sqlite_synchronous=sqlite_synchronous)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._read_engine = self.engine.execution_options(**{READ_ONLY: True})
        self._read_sessions = sessionmaker(self._read_engine, expire_on_commit=False)
        self._commit_listeners: list[Callable[[], None]] = []
        self._dedicated: list[PoolProxiedConnection] = []
        self._write_turn = threading.RLock() if self.backend == "sqlite" else None

    def on_commit(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after each commit of a transaction that staged outbox events."""
        self._commit_listeners.append(listener)

    def _committed(self, info: dict[Any, Any]) -> None:
        if info.pop(EVENTS_STAGED, False):
            self.events_committed()

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold this process's SQLite write turn. Writers of one process queue here and are woken at once;
        left to SQLite's busy handler they would sleep and retry with growing pauses (up to 100 ms each),
        which is where a write's long tail under concurrency comes from. Other processes still meet the
        busy timeout. A no-op on PostgreSQL, whose row locks let writers proceed side by side."""
        if self._write_turn is None:
            yield
            return
        with self._write_turn:
            yield

    def events_committed(self) -> None:
        """Tell the :meth:`on_commit` listeners that a transaction which wrote outbox events committed."""
        for listener in self._commit_listeners:
            listener()

    def dedicated_connection(self) -> PoolProxiedConnection:
        """A DBAPI connection kept by one writer for its lifetime (configured like any other: WAL, busy
        timeout, …), so a hot path pays no pool checkout or SQLAlchemy transaction per commit. Closed by
        :meth:`dispose`. On SQLite the caller starts write transactions itself with :meth:`begin_write`."""
        connection = self.engine.raw_connection()
        self._dedicated.append(connection)
        return connection

    def begin_write(self, dbapi_connection: Any) -> None:
        """Open a write transaction on a dedicated connection (PostgreSQL's driver opens one implicitly)."""
        if self.backend == "sqlite":
            dbapi_connection.execute("BEGIN IMMEDIATE")

    def release(self, connection: PoolProxiedConnection, *, broken: bool = False) -> None:
        """Give a dedicated connection back; a ``broken`` one is discarded instead of pooled."""
        self._dedicated.remove(connection)
        if broken:
            connection.invalidate()
        connection.close()

    @property
    def backend(self) -> str:
        return self.engine.url.get_backend_name()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One state change: commits on success, rolls back everything on any exception."""
        with self.writing(), self._sessions.begin() as session:
            yield session
        self._committed(session.info)

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """One state change on a Core connection, for hot paths that need no ORM session."""
        with self.writing(), self.engine.begin() as connection:
            info = connection.info  # the DBAPI connection's dict: it outlives this checkout
            try:
                yield connection
            except BaseException:
                info.pop(EVENTS_STAGED, None)
                raise
        self._committed(info)

    @contextmanager
    def reader(self) -> Iterator[Session]:
        """A read-only snapshot that does not take SQLite's write lock."""
        with self._read_sessions() as session, session.begin():
            yield session

    async def short(self, work: Callable[..., T], *args: Any) -> T:
        """Run ``work(*args)``, a call of well under a millisecond, from the event loop. On SQLite it runs right
        here — a WAL read never waits for a writer, and a hop to a worker thread costs more than the call;
        on a database server, whose round trip can stall, it runs in a worker thread."""
        if self.backend == "sqlite":
            return work(*args)
        return await asyncio.to_thread(work, *args)

    @contextmanager
    def read_connection(self) -> Iterator[Connection]:
        """A read-only Core connection: for hot reads (a request's auth, a balance) that need no ORM session."""
        with self._read_engine.connect() as connection:
            yield connection

    def check(self) -> None:
        """Fail loudly when the database cannot be reached."""
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception as exc:
            raise DatabaseUnavailable(
                f"cannot open database {self.engine.url.render_as_string(hide_password=True)}: {exc}. "
                "Check SYNTROPISM_DATABASE_URL and that the server is running."
            ) from exc

    def migrate(self, revision: str = "head") -> None:
        """Bring the schema to ``revision`` (Alembic); safe to call on every start."""
        self.check()
        config = alembic_config(self.engine)
        with _MIGRATING, self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)

    def current_revision(self) -> str | None:
        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def head_revision(self) -> str | None:
        return ScriptDirectory.from_config(alembic_config(self.engine)).get_current_head()

    def dispose(self) -> None:
        for connection in list(self._dedicated):
            self.release(connection)
        self.engine.dispose()
