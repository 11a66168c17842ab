"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-26 13:49:53.296269
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import pipeline.schema

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "claims",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("strategy", sa.String(length=32), nullable=True),
        sa.Column("complaint_type", sa.String(length=32), nullable=True),
        sa.Column("marketplace", sa.String(length=32), nullable=True),
        sa.Column("language", sa.String(length=8), nullable=True),
        sa.Column("opened_at", pipeline.schema.UTCDateTime(), nullable=True),
        sa.Column("deadline_at", pipeline.schema.UTCDateTime(), nullable=True),
        sa.Column("buyer_address", sa.String(length=320), nullable=True),
        sa.Column("buyer_name", sa.String(length=200), nullable=True),
        sa.Column("amazon_reply_to", sa.String(length=320), nullable=True),
        sa.Column("tracking_number", sa.String(length=64), nullable=True),
        sa.Column("carrier", sa.String(length=64), nullable=True),
        sa.Column("delivered_on", sa.Date(), nullable=True),
        sa.Column("amount", sa.String(length=32), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("flagged", sa.Boolean(), nullable=False),
        sa.Column("flag_reason", sa.Text(), nullable=True),
        sa.Column("updated_at", pipeline.schema.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_claims")),
        sa.UniqueConstraint("order_id", name=op.f("uq_claims_order_id")),
    )
    with op.batch_alter_table("claims", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_claims_deadline_at"), ["deadline_at"], unique=False)

    op.create_table(
        "mailbox_cursors",
        sa.Column("account", sa.String(length=320), nullable=False),
        sa.Column("folder", sa.String(length=500), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("last_uid", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", pipeline.schema.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("account", "folder", name=op.f("pk_mailbox_cursors")),
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message_key", sa.String(length=998), nullable=False),
        sa.Column("account", sa.String(length=320), nullable=False),
        sa.Column("folder", sa.String(length=500), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.Column("sent_at", pipeline.schema.UTCDateTime(), nullable=True),
        sa.Column("received_at", pipeline.schema.UTCDateTime(), nullable=False),
        sa.Column("sender", sa.String(length=320), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=True),
        sa.Column("order_id", sa.String(length=32), nullable=True),
        sa.Column("facts", sa.JSON(), nullable=True),
        sa.Column("processed_at", pipeline.schema.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
        sa.UniqueConstraint("message_key", name=op.f("uq_messages_message_key")),
    )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_messages_order_id"), ["order_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_messages_sent_at"), ["sent_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_messages_status"), ["status"], unique=False)

    op.create_table(
        "shipments",
        sa.Column("order_id", sa.String(length=32), nullable=False),
        sa.Column("carrier", sa.String(length=64), nullable=True),
        sa.Column("tracking_number", sa.String(length=64), nullable=True),
        sa.Column("ship_date", sa.Date(), nullable=True),
        sa.Column("delivered_date", sa.Date(), nullable=True),
        sa.Column("updated_at", pipeline.schema.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_shipments")),
    )
    op.create_table(
        "claim_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("claim_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("at", pipeline.schema.UTCDateTime(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("from_state", sa.String(length=32), nullable=True),
        sa.Column("to_state", sa.String(length=32), nullable=True),
        sa.Column("strategy", sa.String(length=32), nullable=True),
        sa.Column("rule", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["claim_id"], ["claims.id"], name=op.f("fk_claim_events_claim_id_claims"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name=op.f("fk_claim_events_message_id_messages"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_claim_events")),
    )
    with op.batch_alter_table("claim_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_claim_events_claim_id"), ["claim_id"], unique=False)

    op.create_table(
        "drafts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("claim_id", sa.Integer(), nullable=False),
        sa.Column("step", sa.String(length=120), nullable=False),
        sa.Column("strategy", sa.String(length=32), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=True),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("parent_message_id", sa.Integer(), nullable=True),
        sa.Column("header_message_id", sa.String(length=998), nullable=True),
        sa.Column("folder", sa.String(length=500), nullable=True),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=True),
        sa.Column("uid", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("body_sha256", sa.String(length=64), nullable=True),
        sa.Column("created_at", pipeline.schema.UTCDateTime(), nullable=False),
        sa.Column("written_at", pipeline.schema.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["claim_id"], ["claims.id"], name=op.f("fk_drafts_claim_id_claims"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["parent_message_id"],
            ["messages.id"],
            name=op.f("fk_drafts_parent_message_id_messages"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_drafts")),
        sa.UniqueConstraint("claim_id", "step", name="uq_drafts_claim_step"),
    )
    with op.batch_alter_table("drafts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_drafts_claim_id"), ["claim_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_drafts_header_message_id"), ["header_message_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_drafts_status"), ["status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("drafts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_drafts_status"))
        batch_op.drop_index(batch_op.f("ix_drafts_header_message_id"))
        batch_op.drop_index(batch_op.f("ix_drafts_claim_id"))

    op.drop_table("drafts")
    with op.batch_alter_table("claim_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_claim_events_claim_id"))

    op.drop_table("claim_events")
    op.drop_table("shipments")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_messages_status"))
        batch_op.drop_index(batch_op.f("ix_messages_sent_at"))
        batch_op.drop_index(batch_op.f("ix_messages_order_id"))

    op.drop_table("messages")
    op.drop_table("mailbox_cursors")
    with op.batch_alter_table("claims", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_claims_deadline_at"))

    op.drop_table("claims")
