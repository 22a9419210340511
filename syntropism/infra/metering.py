"""The token meter's rows: an execution's bought tokens and what its inference requests were charged.

The charge of every request settled together is one ``executemany``, prepared once: it runs in the transaction
that records their ``intelligence.tokens_consumed`` events, on the proxy's hot path.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from syntropism.infra.tables import Execution, table_of

EXECUTIONS = table_of(Execution)
CHARGE_TOKENS = (
    update(EXECUTIONS)
    .where(EXECUTIONS.c.id == bindparam("execution"))
    .values(tokens_consumed=EXECUTIONS.c.tokens_consumed + bindparam("spent"))
)


def metered_execution(session: Session, execution_id: str) -> Execution:
    """The execution whose tokens are metered: its bundle (what it bought) and ``tokens_consumed``."""
    return session.scalars(select(Execution).where(Execution.id == execution_id)).one()


def charge_tokens(session: Session, spent: Mapping[str, int]) -> None:
    """Add each execution's ``spent`` tokens to its ``tokens_consumed``."""
    session.connection().execute(CHARGE_TOKENS, [{"execution": e, "spent": tokens} for e, tokens in spent.items()])
