"""The market_state table: one row per resource, holding its last discovered price and the cycle it came from.

A cycle reads these rows first, locked on PostgreSQL: runtimes sharing a database then clear one cycle at a
time, and no cycle number is used twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from syntropism.infra.tables import MarketState

ALL_ROWS = select(MarketState)
ALL_ROWS_IN_ORDER = select(MarketState).order_by(MarketState.resource)


def lock_rows(session: Session) -> dict[str, MarketState]:
    """Every resource's row by resource name, locked until the transaction ends (on PostgreSQL)."""
    statement = ALL_ROWS_IN_ORDER  # one lock order
    if session.get_bind().dialect.name != "sqlite":
        statement = statement.with_for_update()
    return {row.resource: row for row in session.scalars(statement)}


def rows(session: Session) -> dict[str, MarketState]:
    """Every resource's row by resource name, as last stored."""
    return {row.resource: row for row in session.scalars(ALL_ROWS)}


def open_rows(session: Session, initial_prices: Mapping[str, Decimal]) -> dict[str, MarketState]:
    """Rows for resources that have none yet, at their initial prices; flushed with whatever else is pending."""
    opened = {
        resource: MarketState(resource=resource, current_market_price=price)
        for resource, price in initial_prices.items()
    }
    session.add_all(opened.values())
    session.flush()
    return opened
