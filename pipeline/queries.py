"""Read-only questions the commands ask the database: the claims by urgency, one order's timeline, failures."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from pipeline.config import Settings
from pipeline.errors import PipelineError
from pipeline.schema import Claim, ClaimEvent, Draft, SellerStatement, StoredMessage
from pipeline.store import opened_store
from pipeline.understanding.facts import iso
from pipeline.vocabulary import CLOSED_STATES

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
        messages = list(
            session.scalars(
                select(StoredMessage)
                .where(StoredMessage.order_id == order_id)
                .order_by(StoredMessage.sent_at, StoredMessage.id)
            )
        )
        statements = list(
            session.scalars(
                select(SellerStatement)
                .where(SellerStatement.order_id == order_id, SellerStatement.cleared_at.is_(None))
                .order_by(SellerStatement.stated_at, SellerStatement.id)
            )
        )
        if claim is None and not messages and not statements:
            raise PipelineError(f"no claim and no message for order {order_id}")
        events = (
            []
            if claim is None
            else list(
                session.scalars(
                    select(ClaimEvent).where(ClaimEvent.claim_id == claim.id).order_by(ClaimEvent.at, ClaimEvent.seq)
                )
            )
        )
        drafts = (
            []
            if claim is None
            else list(session.scalars(select(Draft).where(Draft.claim_id == claim.id).order_by(Draft.id)))
        )
        return {
            "claim": claim_dict(claim) if claim else None,
            "messages": [
                {
                    "at": iso(m.sent_at),
                    "kind": m.kind,
                    "sender": m.sender,
                    "subject": m.subject,
                    "status": m.status,
                    "error": m.error,
                    "facts": {k: (m.facts or {}).get(k) for k in TIMELINE_FACTS},
                }
                for m in messages
            ],
            "stated": [{"at": iso(st.stated_at), "field": st.field, "value": st.value} for st in statements],
            "events": [
                {
                    "at": iso(e.at),
                    "kind": e.kind,
                    "from": e.from_state,
                    "to": e.to_state,
                    "strategy": e.strategy,
                    "rule": e.rule,
                    "reason": e.reason,
                }
                for e in events
            ],
            "drafts": [
                {
                    "strategy": d.strategy,
                    "step": d.step,
                    "status": d.status,
                    "to": d.recipient,
                    "audience": d.audience,
                    "language": d.language,
                    "written_at": iso(d.written_at),
                    "error": d.error,
                }
                for d in drafts
            ],
        }


def failed_messages(settings: Settings) -> list[dict[str, Any]]:
    """Messages whose processing failed, with their error."""
    with opened_store(settings.database.url) as store, store.session() as session:
        rows = session.scalars(select(StoredMessage).where(StoredMessage.status == "failed"))
        return [{"id": r.id, "subject": r.subject, "sender": r.sender, "error": r.error} for r in rows]
