"""Token hash → its execution: the one read every agent request makes, kept as cheap as the database allows."""

from __future__ import annotations

import threading
from typing import Any, NamedTuple

from sqlalchemy import bindparam, select

from syntropism.infra.database import Database
from syntropism.infra.tables import Execution


class TokenRow(NamedTuple):
    id: str
    agent_id: str
    status: str


TOKEN_LOOKUP = select(Execution.id, Execution.agent_id, Execution.status).where(
    Execution.token_hash == bindparam("token_hash")
)


class TokenLookup:
    """On SQLite the lookup runs on a connection kept for it, in autocommit (a single SELECT reads one consistent
    snapshot), which costs a few microseconds where a pooled SQLAlchemy connection with its transaction costs a
    few hundred."""

    SQL = "SELECT id, agent_id, status FROM executions WHERE token_hash = ?"

    def __init__(self, database: Database) -> None:
        self.database = database
        self._connection: Any = None
        self._lock = threading.Lock()

    def lookup(self, token_hash: str) -> TokenRow | None:
        if self.database.backend != "sqlite":
            with self.database.read_connection() as connection:
                row = connection.execute(TOKEN_LOOKUP, {"token_hash": token_hash}).one_or_none()
            return TokenRow(*row) if row else None
        with self._lock:
            if self._connection is None:
                self._connection = self.database.dedicated_connection()
            row = self._connection.driver_connection.execute(self.SQL, (token_hash,)).fetchone()
        return TokenRow(*row) if row else None
