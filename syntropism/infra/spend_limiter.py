"""LLM_SPEND_LIMIT across the whole system: a token bucket kept in the database, so every runtime process that
shares the database shares the limit.

The bucket refills at ``rate`` tokens per second up to ``rate × window`` (the burst). Taking and giving back
are each a single ``UPDATE … RETURNING`` on a connection of the limiter's own: the refill, the check and the
change happen in one statement, atomic across processes with no lock held between statements. These writes
need no fsync — after a power cut the bucket only forgets some spending for one window — so they commit
without one (SQLite WAL ``synchronous=NORMAL``, PostgreSQL ``synchronous_commit = off``), and cost a fraction
of a durable commit. On SQLite the bucket lives in a small file of its own beside the database
(``<database>.limiter``): every process on the host that shares the database shares it, and it never waits
behind the economy's durable commits, which hold SQLite's single write lock while they fsync.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import PoolProxiedConnection, make_url

from syntropism.infra.database import Database
from syntropism.infra.tables import SpendBucket, table_of

BUCKET = "llm"
BUCKETS = table_of(SpendBucket)
TABLE = BUCKETS.name


class SpendLimiter:
    def __init__(
        self, database: Database, *, rate: float, window: float, clock: Callable[[], float] = time.time
    ) -> None:
        self._economy = database
        self.database = _bucket_database(database)
        self.rate = rate
        self.capacity = rate * window
        self.clock = clock
        self._connection: PoolProxiedConnection | None = None
        self._lock = threading.Lock()  # one user of the limiter's connection at a time, in this process

    def try_take(self, tokens: int) -> float | None:
        """Take ``tokens`` if the bucket holds them: None when taken, else the seconds until it will."""
        if tokens > self.capacity:
            return float("inf")
        refilled = self._refilled("level")
        taken = self._execute(
            f"UPDATE {TABLE} SET level = {refilled} - :tokens, refreshed_at = :now, version = version + 1 "
            f"WHERE name = :name AND {refilled} >= :tokens RETURNING level",
            tokens=tokens,
        )
        if taken is not None:
            return None
        level = self._execute(f"SELECT {refilled} FROM {TABLE} WHERE name = :name")
        return (tokens - (level or 0.0)) / self.rate

    def give_back(self, tokens: int) -> None:
        """Return tokens taken but not spent (the upstream used fewer than reserved, or failed)."""
        if tokens > 0:
            refilled = self._refilled("level + :tokens")
            self._execute(
                f"UPDATE {TABLE} SET level = {refilled}, refreshed_at = :now, version = version + 1 "
                "WHERE name = :name RETURNING level",
                tokens=tokens,
            )

    def level(self) -> float:
        return self._execute(f"SELECT {self._refilled('level')} FROM {TABLE} WHERE name = :name") or 0.0

    def _refilled(self, level: str) -> str:
        """SQL for the level after refilling since the last change, capped at the capacity."""
        smaller = "min" if self.database.backend == "sqlite" else "least"
        return f"{smaller}(:capacity, {level} + :rate * (:now - refreshed_at))"

    def _execute(self, sql: str, **values: float) -> float | None:
        """One statement in its own transaction (the bucket row is changed by one statement: atomic)."""
        with self._lock:
            raw = _driver(self._writer())  # first: creating the bucket row stamps it with the clock
            parameters = {"name": BUCKET, "capacity": self.capacity, "rate": self.rate, "now": self.clock(), **values}
            if self.database.backend == "sqlite":
                row = raw.execute(sql, parameters).fetchone()
            else:
                with raw.cursor() as cursor:
                    cursor.execute(re.sub(r":(\w+)", r"%(\1)s", sql), parameters)
                    row = cursor.fetchone()
            raw.commit()
            return None if row is None else float(row[0])

    def close(self) -> None:
        if self._connection is not None:
            self.database.release(self._connection)
            self._connection = None
        if self.database is not self._economy:  # the bucket's own file: its engine is ours to close
            self.database.dispose()

    def _writer(self) -> PoolProxiedConnection:
        if self._connection is None:
            self._connection = self.database.dedicated_connection()
            raw = _driver(self._connection)
            if self.database.backend == "sqlite":
                raw.execute("PRAGMA synchronous=NORMAL")  # this connection's commits only: no fsync
                raw.execute(
                    f"INSERT OR IGNORE INTO {TABLE} (name, level, refreshed_at, version) VALUES (?, ?, ?, 0)",
                    (BUCKET, self.capacity, self.clock()),
                )
            else:
                with raw.cursor() as cursor:
                    cursor.execute("SET synchronous_commit TO off")
                    cursor.execute(
                        f"INSERT INTO {TABLE} (name, level, refreshed_at, version) VALUES (%s, %s, %s, 0) "
                        "ON CONFLICT (name) DO NOTHING",
                        (BUCKET, self.capacity, self.clock()),
                    )
            raw.commit()
        return self._connection


def _driver(connection: PoolProxiedConnection) -> Any:
    """The DBAPI connection under the pool's proxy (gone only once the proxy is closed)."""
    raw = connection.driver_connection
    if raw is None:
        raise RuntimeError("the spend limiter's connection was closed")
    return raw


def _bucket_database(database: Database) -> Database:
    """Where the bucket lives: the database itself on a server; on SQLite, a file of its own beside it."""
    url = make_url(database.url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return database
    bucket = Database(str(url.set(database=f"{url.database}.limiter")), sqlite_synchronous="NORMAL")
    with bucket.engine.begin() as connection:
        BUCKETS.create(connection, checkfirst=True)  # the schema's own definition of the table, alone in its file
    return bucket
