"""the response clock, appeals and when a claim reached its state; when a draft was sent

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 23:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import pipeline.schema

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

CLAIM_TIMES = (
    "reply_due_at",
    "may_file_at",
    "answered_at",
    "complained_at",
    "first_answer_at",
    "appeal_due_at",
    "state_since",
)


def upgrade() -> None:
    with op.batch_alter_table("claims") as batch:
        for name in CLAIM_TIMES:
            batch.add_column(sa.Column(name, pipeline.schema.UTCDateTime(), nullable=True))
    op.create_index("ix_claims_reply_due_at", "claims", ["reply_due_at"], unique=False)
    with op.batch_alter_table("drafts") as batch:
        batch.add_column(sa.Column("sent_at", pipeline.schema.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("drafts") as batch:
        batch.drop_column("sent_at")
    op.drop_index("ix_claims_reply_due_at", table_name="claims")
    with op.batch_alter_table("claims") as batch:
        for name in CLAIM_TIMES:
            batch.drop_column(name)
