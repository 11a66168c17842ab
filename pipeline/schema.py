"""The database schema: messages, claims and their events, drafts, statements, shipments, cursors.

Stored messages keep their raw bytes; claims their current state and the events that led there; the seller's
statements and shipment facts what the mail does not say; mailbox cursors how far each folder was read."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no zone, so we store naive UTC)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base with stable constraint names, so migrations work on SQLite and PostgreSQL alike."""

    metadata = MetaData(naming_convention=NAMING)


class StoredMessage(Base):
    """One Amazon message as received: raw bytes kept for reprocessing, idempotent by `message_key`."""

    __tablename__ = "messages"
    __table_args__ = (
        # an order's messages by status (replay, linking), and relay addresses whatever their case
        Index("ix_messages_order_id_status", "order_id", "status"),
        Index("ix_messages_lower_sender", func.lower(text("sender"))),
        Index("ix_messages_location", "account", "folder", "uidvalidity", "uid"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # the Message-ID, or "sha256:<hex>" of the raw bytes when the message has none
    message_key: Mapped[str] = mapped_column(String(998), unique=True)
    account: Mapped[str] = mapped_column(String(320))
    folder: Mapped[str] = mapped_column(String(500))
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uid: Mapped[int] = mapped_column(BigInteger)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sender: Mapped[str] = mapped_column(String(320), default="")
    subject: Mapped[str] = mapped_column(Text, default="")
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    # with message_key, the message's identity: two different messages may share a Message-ID
    raw_sha256: Mapped[str | None] = mapped_column(String(64))
    # a trusted buyer message's buyer name, case-folded: Amazon's copy of the seller's reply is linked by it
    buyer_key: Mapped[str | None] = mapped_column(String(200), index=True)
    # processing outcome
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)  # pending | done | failed
    error: Mapped[str | None] = mapped_column(Text)
    kind: Mapped[str | None] = mapped_column(String(32))
    order_id: Mapped[str | None] = mapped_column(String(32), index=True)  # as linked, not only as written
    facts: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Claim(Base):
    """One A-to-z claim, keyed by order ID; its fields are the result of replaying its messages."""

    __tablename__ = "claims"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[str] = mapped_column(String(32), unique=True)
    state: Mapped[str] = mapped_column(String(32))
    strategy: Mapped[str | None] = mapped_column(String(32))
    complaint_type: Mapped[str | None] = mapped_column(String(32))
    marketplace: Mapped[str | None] = mapped_column(String(32))
    language: Mapped[str | None] = mapped_column(String(8))
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deadline_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    buyer_address: Mapped[str | None] = mapped_column(String(320))
    buyer_name: Mapped[str | None] = mapped_column(String(200))
    amazon_reply_to: Mapped[str | None] = mapped_column(String(320))
    tracking_number: Mapped[str | None] = mapped_column(String(64))
    carrier: Mapped[str | None] = mapped_column(String(64))
    delivered_on: Mapped[date | None] = mapped_column(Date)
    amount: Mapped[str | None] = mapped_column(String(32))
    currency: Mapped[str | None] = mapped_column(String(3))
    flagged: Mapped[bool] = mapped_column(Boolean, default=False)
    flag_reason: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # the response clock (the buyer's oldest unanswered contact + 24 h, + 48 h), answers and appeals
    reply_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    may_file_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    complained_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    first_answer_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    appeal_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    state_since: Mapped[datetime | None] = mapped_column(UTCDateTime)  # when the claim reached its state

    events: Mapped[list[ClaimEvent]] = relationship(
        back_populates="claim", cascade="all, delete-orphan", order_by="ClaimEvent.seq"
    )
    drafts: Mapped[list[Draft]] = relationship(back_populates="claim", cascade="all, delete-orphan")


class ClaimEvent(Base):
    """A step in a claim's timeline: a state change with the rule and the message behind it, or a draft event."""

    __tablename__ = "claim_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    claim_id: Mapped[int] = mapped_column(ForeignKey("claims.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    # transition | escalation | flag | draft_written | draft_replaced | draft_edited | reply_sent
    kind: Mapped[str] = mapped_column(String(32))
    from_state: Mapped[str | None] = mapped_column(String(32))
    to_state: Mapped[str | None] = mapped_column(String(32))
    strategy: Mapped[str | None] = mapped_column(String(32))
    rule: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text, default="")
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="SET NULL"))

    claim: Mapped[Claim] = relationship(back_populates="events")
    message: Mapped[StoredMessage | None] = relationship()


class Draft(Base):
    """A reply draft for one claim and step, and where it sits in the Drafts folder once written."""

    __tablename__ = "drafts"
    __table_args__ = (UniqueConstraint("claim_id", "step", name="uq_drafts_claim_step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    claim_id: Mapped[int] = mapped_column(ForeignKey("claims.id", ondelete="CASCADE"), index=True)
    step: Mapped[str] = mapped_column(String(120))  # strategy, plus the info-request round
    strategy: Mapped[str] = mapped_column(String(32))
    recipient: Mapped[str | None] = mapped_column(String(320))
    # amazon (Seller Central, or an Amazon address that reaches a person) | buyer | amazon_cs
    audience: Mapped[str | None] = mapped_column(String(16))
    language: Mapped[str] = mapped_column(String(8))
    parent_message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="SET NULL"))
    header_message_id: Mapped[str | None] = mapped_column(String(998), index=True)
    folder: Mapped[str | None] = mapped_column(String(500))
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger)
    uid: Mapped[int | None] = mapped_column(BigInteger)
    # wanted (to be written) | written | retiring (to be taken out) | deleting (being taken out) | replaced |
    # edited | sent | failed | superseded
    status: Mapped[str] = mapped_column(String(16), default="wanted", index=True)
    error: Mapped[str | None] = mapped_column(Text)
    body_sha256: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    written_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # when it was found sent (its Date in Sent)

    claim: Mapped[Claim] = relationship(back_populates="drafts")


class SellerStatement(Base):
    """A fact the seller stated with `pipeline claims set`: replayed like a message, winning over mail."""

    __tablename__ = "seller_statements"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[str] = mapped_column(String(32), index=True)
    field: Mapped[str] = mapped_column(String(16))  # complaint | carrier | tracking | delivered | note
    value: Mapped[str] = mapped_column(Text)
    stated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    cleared_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # undone with `claims set --clear`


class Shipment(Base):
    """Shipment facts for an order, imported from the seller's CSV/TSV or Amazon's shipment report."""

    __tablename__ = "shipments"

    order_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    carrier: Mapped[str | None] = mapped_column(String(64))
    tracking_number: Mapped[str | None] = mapped_column(String(64))
    ship_date: Mapped[date | None] = mapped_column(Date)
    delivered_date: Mapped[date | None] = mapped_column(Date)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class MailboxCursor(Base):
    """How far the poller got in one folder of one account: UIDVALIDITY and the highest UID done."""

    __tablename__ = "mailbox_cursors"

    account: Mapped[str] = mapped_column(String(320), primary_key=True)
    folder: Mapped[str] = mapped_column(String(500), primary_key=True)
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
