"""a message's identity is its Message-ID and its bytes: the digest of the raw bytes, and where it was read

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 22:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("raw_sha256", sa.String(length=64), nullable=True))
    op.create_index("ix_messages_location", "messages", ["account", "folder", "uidvalidity", "uid"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_messages_location", table_name="messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("raw_sha256")
