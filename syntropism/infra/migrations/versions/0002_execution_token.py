"""executions: the token's hash and the termination detail

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 08:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("token_hash", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("detail", sa.Text(), nullable=True))
        batch.create_unique_constraint(batch.f("uq_executions_token_hash"), ["token_hash"])


def downgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.drop_constraint(batch.f("uq_executions_token_hash"), type_="unique")
        batch.drop_column("detail")
        batch.drop_column("token_hash")
