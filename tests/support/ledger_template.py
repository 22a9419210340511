"""A migrated SQLite ledger with three agents, built once per test session and copied for every example: the
property and differential ledger tests start each example from it instead of migrating again."""

from __future__ import annotations

import functools
import shutil
import tempfile
from pathlib import Path

from syntropism.infra.agents import register_agent
from syntropism.infra.database import Database

AGENTS = ("a", "b", "c")


@functools.cache
def template_database() -> Path:
    path = Path(tempfile.mkdtemp(prefix="ledger-template-")) / "ledger.db"
    database = Database(f"sqlite:///{path}", sqlite_synchronous="NORMAL")
    database.migrate()
    with database.transaction() as session:
        for agent_id in AGENTS:
            register_agent(session, agent_id)
    database.dispose()  # checkpoints the WAL into the file
    return path


def copy_of_template(folder: Path) -> Database:
    """A fresh database in ``folder``, a copy of the template."""
    shutil.copy(template_database(), folder / "ledger.db")
    return Database(f"sqlite:///{folder / 'ledger.db'}", sqlite_synchronous="NORMAL")
