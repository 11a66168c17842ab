"""a trusted buyer message's buyer name, folded, indexed: Amazon's copy of a reply is linked by it

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 00:00:00
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a plain ADD COLUMN (no batch copy of the table, which would drop the expression index on lower(sender))
    op.add_column("messages", sa.Column("buyer_key", sa.String(length=200), nullable=True))
    op.create_index("ix_messages_buyer_key", "messages", ["buyer_key"], unique=False)
    # the messages stored before: their facts name the buyer
    connection = op.get_bind()
    rows = connection.execute(sa.text("SELECT id, facts FROM messages WHERE kind = 'buyer_message'")).all()
    for message_id, facts in rows:
        data = json.loads(facts) if isinstance(facts, str) else (facts or {})
        name = str(data.get("buyer_name") or "").strip().casefold()
        if name and data.get("trusted"):
            connection.execute(
                sa.text("UPDATE messages SET buyer_key = :key WHERE id = :id"), {"key": name[:200], "id": message_id}
            )


def downgrade() -> None:
    op.drop_index("ix_messages_buyer_key", table_name="messages")
    op.drop_column("messages", "buyer_key")
