"""Read-only questions the commands ask the database: the claims by urgency, one order's timeline, failures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pipeline.config import Settings
from pipeline.errors import PipelineError
from pipeline.schema import Claim, ClaimEvent, Draft, SellerStatement, Shipment, StoredMessage
from pipeline.store import opened_store
from pipeline.understanding.facts import iso
from pipeline.understanding.text import ORDER_ID
from pipeline.vocabulary import CLOSED_STATES, REPLY_HOURS

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
    """Sort key of a claim row: open claims first, by whatever comes first of the answer owed to the buyer and
    Amazon's deadline (none last); then closed ones (an appeal by its last day); then by order ID."""
    closed = row["state"] in CLOSED_STATES
    keys = ("appeal_due_at",) if closed else ("reply_due_at", "deadline_at")
    times = [_when(row.get(key)) for key in keys]
    closed = closed and not row.get("appeal_due_at")
    return closed, min(t for t in (*times, datetime.max.replace(tzinfo=UTC)) if t is not None), row["order_id"]


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


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
        "reply_due_at": iso(claim.reply_due_at),
        "may_file_at": iso(claim.may_file_at),
        "answered_at": iso(claim.answered_at),
        "appeal_due_at": iso(claim.appeal_due_at),
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


# --- pipeline stats -------------------------------------------------------------------------------------------

PREVENTED_AFTER = timedelta(days=30)  # a complaint that did not become a claim in this time was one prevented


def stats(settings: Settings, now: datetime, weeks: int = 8) -> list[dict[str, Any]]:
    """Per ISO week (Monday to Sunday, UTC), the last `weeks` up to now's: buyer complaints, those answered
    within REPLY_HOURS, claims filed, complaints that never became a claim (counted once PREVENTED_AFTER has
    passed), claims won (withdrawn or decided for the seller), refunded and granted, orders shipped (imported
    shipments) and the claim rate (claims filed per order shipped)."""
    first = _monday(now) - timedelta(weeks=weeks - 1)
    rows = {_monday(first + timedelta(weeks=i)): _empty_week(first + timedelta(weeks=i)) for i in range(weeks)}
    with opened_store(settings.database.url) as store, store.session() as session:
        for claim in session.scalars(select(Claim)):
            _count_claim(rows, claim, now)
        for shipped in session.scalars(select(Shipment.ship_date).where(Shipment.ship_date >= first.date())):
            week = rows.get(_monday(datetime.combine(shipped, datetime.min.time(), UTC))) if shipped else None
            if week is not None:
                week["orders"] += 1
    for week in rows.values():
        week["claim_rate"] = round(week["claims_filed"] / week["orders"], 4) if week["orders"] else None
    return list(rows.values())


def _count_claim(rows: dict[datetime, dict[str, Any]], claim: Claim, now: datetime) -> None:
    """Add one claim (or case) to the weeks its events fall in."""

    def week_of(when: datetime | None) -> dict[str, Any] | None:
        return rows.get(_monday(when)) if when is not None else None

    complained = week_of(claim.complained_at)
    if complained is not None and claim.complained_at is not None:
        complained["complaints"] += 1
        answer = claim.first_answer_at
        if answer is not None and answer - claim.complained_at <= timedelta(hours=REPLY_HOURS):
            complained["answered_in_24h"] += 1
        if claim.opened_at is None and claim.complained_at + PREVENTED_AFTER <= now:
            complained["prevented"] += 1
    filed = week_of(claim.opened_at)
    if filed is not None:
        filed["claims_filed"] += 1
    decided = week_of(claim.state_since) if claim.opened_at is not None else None
    outcome = {"resolved": "won", "refunded": "refunded", "granted": "granted"}.get(claim.state)
    if decided is not None and outcome:
        decided[outcome] += 1


def _monday(when: datetime) -> datetime:
    day = when.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(days=day.weekday())


def _empty_week(start: datetime) -> dict[str, Any]:
    year, week, _ = start.isocalendar()
    counts = ("complaints", "answered_in_24h", "claims_filed", "prevented", "won", "refunded", "granted", "orders")
    return {"week": f"{year}-W{week:02d}", "from": start.date().isoformat(), **dict.fromkeys(counts, 0)}
