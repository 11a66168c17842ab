"""Read-only questions the commands ask the database: the claims by urgency, one order's timeline, failures."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pipeline.config import Settings
from pipeline.errors import PipelineError
from pipeline.schema import Claim, ClaimEvent, Draft, SellerStatement, StoredMessage
from pipeline.store import opened_store
from pipeline.understanding.facts import iso
from pipeline.understanding.text import ORDER_ID
from pipeline.vocabulary import CLOSED_STATES

MENTION_SCAN = 200_000  # bytes of a failed message searched for the order IDs it mentions
# the facts of each message that `claims show` lists
TIMELINE_FACTS = (
    "marketplace",
    "complaint_type",
    "buyer_intent",
    "tracking_number",
    "carrier",
    "delivered",
    "deadline_hours",
    "amount",
    "currency",
    "return_reason",
    "return_carrier",
    "return_tracking_number",
    "buyer_name",
    "reply_channel",
)


def claim_rows(settings: Settings, state: str | None = None) -> list[dict[str, Any]]:
    """Every claim as a JSON-ready dict, most urgent first (open claims by deadline, then closed ones)."""
    with opened_store(settings.database.url) as store, store.session() as session:
        query = select(Claim)
        if state:
            query = query.where(Claim.state == state)
        claims = list(session.scalars(query))
        rows = [claim_dict(c) for c in claims]
    return sorted(rows, key=urgency)


def urgency(row: dict[str, Any]) -> tuple[bool, datetime, str]:
    """Sort key of a claim row: open claims first, then by deadline (none last), then by order ID."""
    deadline = row["deadline_at"]
    when = datetime.fromisoformat(deadline.replace("Z", "+00:00")) if deadline else datetime.max.replace(tzinfo=UTC)
    return row["state"] in CLOSED_STATES, when, row["order_id"]


def claim_dict(claim: Claim) -> dict[str, Any]:
    """One claim as `pipeline claims --json` shows it (the words of pipeline/vocabulary.py)."""
    return {
        "order_id": claim.order_id,
        "state": claim.state,
        "complaint_type": claim.complaint_type,
        "strategy": claim.strategy,
        "marketplace": claim.marketplace,
        "language": claim.language,
        "opened_at": iso(claim.opened_at),
        "deadline_at": iso(claim.deadline_at),
        "buyer_address": claim.buyer_address,
        "buyer_name": claim.buyer_name,
        "tracking_number": claim.tracking_number,
        "carrier": claim.carrier,
        "delivered_on": claim.delivered_on.isoformat() if claim.delivered_on else None,
        "amount": claim.amount,
        "currency": claim.currency,
        "flagged": claim.flagged,
        "flag_reason": claim.flag_reason,
    }


def claim_timeline(settings: Settings, order_id: str) -> dict[str, Any]:
    """One claim with its messages (and their facts), transitions with reasons, and drafts."""
    with opened_store(settings.database.url) as store, store.session() as session:
        claim = session.scalar(select(Claim).where(Claim.order_id == order_id))
        messages = _order_messages(session, order_id)
        statements = _standing_statements(session, order_id)
        if claim is None and not messages and not statements:
            raise PipelineError(f"no claim and no message for order {order_id}")
        events = [] if claim is None else _claim_events(session, claim.id)
        drafts = [] if claim is None else _claim_drafts(session, claim.id)
        return {
            "claim": claim_dict(claim) if claim else None,
            "messages": [_message_entry(m) for m in messages],
            "stated": [{"at": iso(st.stated_at), "field": st.field, "value": st.value} for st in statements],
            "events": [_event_entry(e) for e in events],
            "drafts": [_draft_entry(d) for d in drafts],
        }


def _order_messages(session: Session, order_id: str) -> list[StoredMessage]:
    """The order's stored messages by date."""
    query = (
        select(StoredMessage)
        .where(StoredMessage.order_id == order_id)
        .order_by(StoredMessage.sent_at, StoredMessage.id)
    )
    return list(session.scalars(query))


def _standing_statements(session: Session, order_id: str) -> list[SellerStatement]:
    """What the seller stated about the order and did not clear, in the order it was stated."""
    query = (
        select(SellerStatement)
        .where(SellerStatement.order_id == order_id, SellerStatement.cleared_at.is_(None))
        .order_by(SellerStatement.stated_at, SellerStatement.id)
    )
    return list(session.scalars(query))


def _claim_events(session: Session, claim_id: int) -> list[ClaimEvent]:
    """The claim's history in order."""
    query = select(ClaimEvent).where(ClaimEvent.claim_id == claim_id).order_by(ClaimEvent.at, ClaimEvent.seq)
    return list(session.scalars(query))


def _claim_drafts(session: Session, claim_id: int) -> list[Draft]:
    """The claim's drafts, oldest first."""
    return list(session.scalars(select(Draft).where(Draft.claim_id == claim_id).order_by(Draft.id)))


def _message_entry(message: StoredMessage) -> dict[str, Any]:
    """A message as the timeline lists it, with the facts of TIMELINE_FACTS."""
    return {
        "at": iso(message.sent_at),
        "kind": message.kind,
        "sender": message.sender,
        "subject": message.subject,
        "status": message.status,
        "error": message.error,
        "facts": {k: (message.facts or {}).get(k) for k in TIMELINE_FACTS},
    }


def _event_entry(event: ClaimEvent) -> dict[str, Any]:
    """A step of the claim's history as the timeline lists it."""
    return {
        "at": iso(event.at),
        "kind": event.kind,
        "from": event.from_state,
        "to": event.to_state,
        "strategy": event.strategy,
        "rule": event.rule,
        "reason": event.reason,
    }


def _draft_entry(draft: Draft) -> dict[str, Any]:
    """A draft as the timeline lists it."""
    return {
        "strategy": draft.strategy,
        "step": draft.step,
        "status": draft.status,
        "to": draft.recipient,
        "audience": draft.audience,
        "language": draft.language,
        "written_at": iso(draft.written_at),
        "error": draft.error,
    }


def failed_messages(settings: Settings) -> list[dict[str, Any]]:
    """Messages that could not be read, oldest first: id, date, sender, subject, error, and the order IDs
    their raw bytes mention (they were never linked to an order)."""
    with opened_store(settings.database.url) as store, store.session() as session:
        rows = session.execute(
            select(
                StoredMessage.id,
                StoredMessage.sent_at,
                StoredMessage.sender,
                StoredMessage.subject,
                StoredMessage.error,
                StoredMessage.raw,
            )
            .where(StoredMessage.status == "failed")
            .order_by(StoredMessage.id)
        )
        return [
            {
                "id": row.id,
                "at": iso(row.sent_at),
                "sender": row.sender,
                "subject": row.subject,
                "error": row.error,
                "order_ids": mentioned_orders(row.subject, row.raw),
            }
            for row in rows
        ]


def failed_count(settings: Settings) -> int:
    """How many stored messages could not be read."""
    with opened_store(settings.database.url) as store, store.session() as session:
        return int(
            session.scalar(select(func.count()).select_from(StoredMessage).where(StoredMessage.status == "failed")) or 0
        )


def mentioned_orders(subject: str, raw: bytes | None) -> list[str]:
    """The order IDs written in a subject or the first part of raw bytes, in order, once each."""
    text = subject + "\n" + (raw or b"")[:MENTION_SCAN].decode("utf-8", "replace")
    return list(dict.fromkeys(ORDER_ID.findall(text)))
