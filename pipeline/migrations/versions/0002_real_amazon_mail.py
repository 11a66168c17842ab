"""the seller's statements; the audience of each draft

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05 20:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import pipeline.schema

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "seller_statements",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.String(length=32), nullable=False),
        sa.Column("field", sa.String(length=16), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("stated_at", pipeline.schema.UTCDateTime(), nullable=False),
        sa.Column("cleared_at", pipeline.schema.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_seller_statements")),
    )
    op.create_index(op.f("ix_seller_statements_order_id"), "seller_statements", ["order_id"], unique=False)
    with op.batch_alter_table("drafts") as batch:
        batch.add_column(sa.Column("audience", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("drafts") as batch:
        batch.drop_column("audience")
    op.drop_index(op.f("ix_seller_statements_order_id"), table_name="seller_statements")
    op.drop_table("seller_statements")
