"""messages count against the execution that sent them; an agent's pending bids are counted by index

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 02:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sent_execution_id", sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f("ix_messages_sent_execution_id"), ["sent_execution_id"], unique=False)
    with op.batch_alter_table("bids", schema=None) as batch_op:
        batch_op.create_index("ix_bids_agent_status", ["agent_id", "status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("bids", schema=None) as batch_op:
        batch_op.drop_index("ix_bids_agent_status")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_messages_sent_execution_id"))
        batch_op.drop_column("sent_execution_id")
