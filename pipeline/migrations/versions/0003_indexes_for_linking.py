"""indexes for linking and replay: an order's messages by status, relay addresses whatever their case

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05 21:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_messages_order_id_status", "messages", ["order_id", "status"], unique=False)
    op.create_index("ix_messages_lower_sender", "messages", [sa.text("lower(sender)")], unique=False)


def downgrade() -> None:
    op.drop_index("ix_messages_lower_sender", table_name="messages")
    op.drop_index("ix_messages_order_id_status", table_name="messages")
