"""The claim desk: each stored message is understood, linked to its claim, and the claim replayed.

Stages run one message per transaction (a failure is kept on the message with its error and never blocks
the rest); drafts are written to the mailbox afterwards, from what the claims want.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy import delete, func, or_, select
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from pipeline import trust
from pipeline.config import Settings
from pipeline.drafts import DraftSync
from pipeline.errors import PipelineError, StoreError
from pipeline.mailbox import Mailbox
from pipeline.message import parse_message
from pipeline.playbook import ClaimView, DraftPlan, Replayed, Rules, Shipment, Statement, replay
from pipeline.schema import Claim, ClaimEvent, Draft, SellerStatement, StoredMessage
from pipeline.schema import Shipment as ShipmentRow
from pipeline.store import Store, utcnow
from pipeline.timing import stage
from pipeline.understanding.facts import Facts
from pipeline.understanding.understander import Understander
from pipeline.vocabulary import AMAZON_STRATEGIES

log = logging.getLogger(__name__)

UNDERSTAND_BATCH = 128  # messages understood together (see ClaimDesk.understand_ids)

DERIVED_EVENTS = ("transition", "escalation", "flag", "note")


def rules_from(settings: Settings) -> Rules:
    """The playbook's numbers from the config."""
    seller = settings.seller
    return Rules(
        seller.response_days,
        seller.refund_margin_hours,
        tuple(seller.recognized_carriers),
        require_proof=settings.trust.mode == "strict",
    )


class ClaimDesk:
    """Runs understand → link → playbook for stored messages, and escalation and drafts each cycle."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        understander: Understander | None = None,
        drafts: DraftSync | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.rules = rules_from(settings)
        self.understander = understander or Understander.shared(
            settings.models.models_dir or None, response_days=settings.seller.response_days
        )
        self.drafts = drafts

    # --- the Stages protocol of the poller ------------------------------------------------------

    def process_pending(self, now: datetime, *, stop: Callable[[], bool] | None = None) -> tuple[int, int]:
        """Process every message still pending, oldest first; return (done, failed).

        `stop` is asked before each message: once it is true the rest stay pending for the next run.
        """
        with self.store.session() as session:
            ids = list(
                session.scalars(
                    select(StoredMessage.id).where(StoredMessage.status == "pending").order_by(StoredMessage.id)
                )
            )
        done = failed = 0
        for batch, understood in self.understood_batches(ids, stop):
            counts = self.process_ids(batch, now, stop=stop, understood=understood)
            done, failed = done + counts[0], failed + counts[1]
        return done, failed

    def after_poll(self, mailbox: Mailbox, now: datetime) -> None:
        """Deadline escalation, then the drafts the claims want (written, replaced, sent detection)."""
        with stage("replay", 0):
            self.escalate_due(now)
        if self.drafts is not None and self.settings.drafts.enabled:
            with stage("drafts"):
                self.drafts.sync(mailbox, now)
            if self.drafts.sent_orders:  # a reply found sent answers the buyer: the clock moves
                with stage("replay", 0), self.store.session() as session:
                    self.replay_all(session, now, sorted(self.drafts.sent_orders))
                self.drafts.sent_orders.clear()

    # --- processing -------------------------------------------------------------------------------

    def process_ids(
        self,
        ids: Iterable[int],
        now: datetime,
        *,
        stop: Callable[[], bool] | None = None,
        understood: dict[int, Facts] | None = None,
    ) -> tuple[int, int]:
        """Process the given messages, each in its own transaction (until `stop` says so). `understood`: facts
        already worked out for some of them (see understand_ids)."""
        done = failed = 0
        for message_id in ids:
            if stop is not None and stop():
                break
            try:
                self._process_one(message_id, now, (understood or {}).get(message_id))
                done += 1
            except (OperationalError, InterfaceError) as exc:
                # the database went away (restart, network): the message stays pending for the next cycle,
                # never marked failed for a fault that is not its own
                raise StoreError(
                    f"database unavailable while processing message {message_id}: {getattr(exc, 'orig', exc)}"
                ) from None
            except Exception as exc:  # one bad message must never stop the desk; it is kept with its error
                failed += 1
                error = str(exc) if isinstance(exc, PipelineError) else f"{type(exc).__name__}: {exc}"
                if not isinstance(exc, PipelineError):
                    log.exception("message %s failed", message_id)
                else:
                    log.warning("message %s failed: %s", message_id, error)
                with self.store.session() as session:
                    row = session.get_one(StoredMessage, message_id)
                    row.status, row.error, row.processed_at = "failed", error[:4000], utcnow()
        return done, failed

    def _process_one(self, message_id: int, now: datetime, facts: Facts | None = None) -> None:
        """One message in its own transaction; a write race with another process is retried once."""
        for attempt in (1, 2):
            try:
                with self.store.session() as session:
                    self.process_message(session, session.get_one(StoredMessage, message_id), now, facts)
                return
            except IntegrityError:
                if attempt == 2:
                    raise

    def understand(self, row: StoredMessage) -> Facts:
        """The facts of a stored message (parsing its raw bytes again), with what the trust checks say."""
        with stage("parse"):
            message = parse_message(row.raw)
        with stage("understand"):
            facts = self.understander.understand(message)
        return self.checked(facts, row.raw)

    def checked(self, facts: Facts, raw: bytes) -> Facts:
        """The facts with the trust checks' word (pipeline.trust): Amazon's proven signature, or a failure."""
        with stage("trust"):
            return trust.apply(facts, raw, self.settings.trust.authserv_ids)

    def understood_batches(
        self,
        ids: list[int],
        stop: Callable[[], bool] | None = None,
    ) -> Iterator[tuple[list[int], dict[int, Facts]]]:
        """The ids in batches of UNDERSTAND_BATCH, each with the facts of its messages (until `stop` says so).

        When a batch cannot be understood at once, its facts are left out: then each message is understood on
        its own, in its own transaction, where a failure is its own and is kept with its error.
        """
        for first in range(0, len(ids), UNDERSTAND_BATCH):
            if stop is not None and stop():
                return
            batch = ids[first : first + UNDERSTAND_BATCH]
            try:
                understood = self.understand_ids(batch)
            except (OperationalError, InterfaceError) as exc:  # the database is away: the messages stay pending
                raise StoreError(
                    f"database unavailable while reading messages {batch[0]}-{batch[-1]}: {getattr(exc, 'orig', exc)}"
                ) from None
            except Exception:  # one message's surprise must not stop the batch
                log.warning("batch understanding failed; understanding these %d messages one by one", len(batch))
                understood = {}
            yield batch, understood

    def understand_ids(self, ids: list[int]) -> dict[int, Facts]:
        """The facts of many stored messages, understood as one batch (Understander.understand_many: faster
        than one by one). A message that cannot be parsed is left out: process_message reports it."""
        parsed = []
        raws = {}
        with self.store.session() as session:
            rows = session.execute(select(StoredMessage.id, StoredMessage.raw).where(StoredMessage.id.in_(ids)))
            for message_id, raw in rows:
                try:
                    with stage("parse"):
                        parsed.append((message_id, parse_message(raw)))
                    raws[message_id] = raw
                except PipelineError:
                    continue
        with stage("understand", len(parsed)):
            facts = list(self.understander.understand_many(message for _, message in parsed))
        return {
            message_id: self.checked(found, raws[message_id])
            for (message_id, _), found in zip(parsed, facts, strict=True)
        }

    def process_message(self, session: Session, row: StoredMessage, now: datetime, facts: Facts | None = None) -> None:
        """Understand one message (unless its `facts` are given), link it to its order, and replay that claim."""
        if facts is None:
            facts = self.understand(row)
        before = row.order_id if row.status == "done" else None
        row.facts = facts.to_json()
        row.kind = facts.kind
        row.sent_at = row.sent_at or facts.sent_at
        with stage("link"):
            row.order_id = self._link(session, row, facts)
            row.status, row.error, row.processed_at = "done", None, utcnow()
            session.flush()
            if row.order_id:
                self._link_earlier(session, row, facts)
        with stage("replay"):
            if row.order_id:
                self.replay_claim(session, row.order_id, now)
            if before and before != row.order_id:
                # reprocessed with better rules, the message belongs elsewhere now: its old claim forgets it
                self.replay_claim(session, before, now)

    def _link(self, session: Session, row: StoredMessage, facts: Facts) -> str | None:
        if facts.order_id:
            return facts.order_id
        if facts.kind == "buyer_message" and facts.buyer_address and facts.trusted:
            linked = session.scalar(
                select(StoredMessage.order_id)
                .where(
                    func.lower(StoredMessage.sender) == facts.buyer_address.lower(),
                    StoredMessage.order_id.is_not(None),
                    StoredMessage.id != row.id,
                )
                .order_by(StoredMessage.id.desc())
                .limit(1)
            )
            if linked:
                return linked
        if facts.kind == "seller_reply_copy" and facts.buyer_name and facts.trusted:
            linked = self._order_of_buyer_named(session, facts.buyer_name)
            if linked:
                return linked
        refs = [r for r in (facts.in_reply_to, *facts.references) if r]
        if refs:
            linked = session.scalar(
                select(StoredMessage.order_id)
                .where(StoredMessage.message_key.in_(refs), StoredMessage.order_id.is_not(None))
                .limit(1)
            )
            if linked:
                return linked
            claim_id = session.scalar(select(Draft.claim_id).where(Draft.header_message_id.in_(refs)).limit(1))
            if claim_id:
                return session.get_one(Claim, claim_id).order_id
        return None

    @staticmethod
    def _order_of_buyer_named(session: Session, name: str) -> str | None:
        """The order of the buyer messages signed with this name, when exactly one order has such a buyer
        (Amazon's copy of the seller's reply names the buyer and often no order)."""
        wanted = name.strip().casefold()
        orders = {
            order
            for order, facts in session.execute(
                select(StoredMessage.order_id, StoredMessage.facts).where(
                    StoredMessage.kind == "buyer_message", StoredMessage.order_id.is_not(None)
                )
            )
            if str((facts or {}).get("buyer_name") or "").strip().casefold() == wanted and (facts or {}).get("trusted")
        }
        return orders.pop() if len(orders) == 1 else None

    def _link_earlier(self, session: Session, row: StoredMessage, facts: Facts) -> None:
        """Messages processed before this one that could not be linked then, but belong to its order now.

        A buyer message without an order ID is linked by its relay address or by what it answers; when it
        is processed before the message that names the order, it is linked here, so the processing order
        never changes which claim a message belongs to.
        """
        unlinked = select(StoredMessage).where(
            StoredMessage.order_id.is_(None), StoredMessage.status == "done", StoredMessage.id != row.id
        )
        if facts.kind == "buyer_message" and facts.buyer_address and facts.trusted:
            relay = facts.buyer_address.lower()
            for other in session.scalars(
                unlinked.where(StoredMessage.kind == "buyer_message", func.lower(StoredMessage.sender) == relay)
            ):
                if (other.facts or {}).get("trusted"):
                    other.order_id = row.order_id
        if facts.kind == "buyer_message" and facts.buyer_name and facts.trusted:
            for copy in session.scalars(unlinked.where(StoredMessage.kind == "seller_reply_copy")):
                copied = copy.facts or {}
                if copied.get("trusted") and copied.get("buyer_name"):
                    copy.order_id = self._order_of_buyer_named(session, str(copied["buyer_name"]))
        # a reply is written after what it answers (messages without a date are checked too)
        answers = unlinked.where(StoredMessage.kind != "other")
        if row.sent_at is not None:
            answers = answers.where(or_(StoredMessage.sent_at.is_(None), StoredMessage.sent_at >= row.sent_at))
        candidates = [m for m in session.scalars(answers) if m.order_id is None]
        keys = {row.message_key}
        while keys and candidates:  # replies to replies follow their thread
            linked = [
                m
                for m in candidates
                if keys & {(m.facts or {}).get("in_reply_to"), *((m.facts or {}).get("references") or ())}
            ]
            for other in linked:
                other.order_id = row.order_id
            keys = {m.message_key for m in linked}
            candidates = [m for m in candidates if m.order_id is None]
        session.flush()

    # --- claims ---------------------------------------------------------------------------------

    def replay_claim(self, session: Session, order_id: str, now: datetime) -> Claim | None:
        """Rebuild one claim from its messages and shipment facts; store its derived events and wanted draft."""
        rows = list(
            session.scalars(
                select(StoredMessage).where(StoredMessage.order_id == order_id, StoredMessage.status == "done")
            )
        )
        messages = [(r.message_key, Facts.from_json(r.facts)) for r in rows if r.facts]
        by_key = {r.message_key: r for r in rows}
        result = replay(
            order_id, messages, self.shipment(session, order_id), now, self.rules, statements(session, order_id)
        )
        claim = session.scalar(select(Claim).where(Claim.order_id == order_id))
        if not result.claim.listed:
            return claim  # no claim and no case yet: the messages are kept on the order
        if claim is None:
            claim = Claim(order_id=order_id, state="new", updated_at=now)
            session.add(claim)
            session.flush()
        view = result.claim
        failed = self._failed_draft(session, claim, view)
        if failed is not None:  # a draft that could not be written keeps the claim flagged
            view = replace(view, flagged=True, flag_reason=f"draft {failed.strategy} not written: {failed.error}")
        changed = _copy_view(claim, view, now)
        self._write_events(session, claim, result, by_key)
        self._want_draft(session, claim, view, by_key, now, changed=changed)
        return claim

    def replay_all(self, session: Session, now: datetime, order_ids: Iterable[str] | None = None) -> int:
        """Replay every claim (or the given ones); return how many."""
        if order_ids is None:
            order_ids = session.scalars(
                select(StoredMessage.order_id).where(StoredMessage.order_id.is_not(None)).distinct()
            )
        count = 0
        for order_id in list(order_ids):
            self.replay_claim(session, order_id, now)
            count += 1
        return count

    def escalate_due(self, now: datetime) -> int:
        """Replay the claims whose refund margin has been reached while they wait for the buyer."""
        margin = timedelta(hours=self.rules.refund_margin_hours)
        with self.store.session() as session:
            due = list(
                session.scalars(
                    select(Claim.order_id).where(
                        Claim.state == "awaiting_buyer",
                        Claim.deadline_at.is_not(None),
                        Claim.deadline_at <= now + margin,
                    )
                )
            )
            for order_id in due:
                self.replay_claim(session, order_id, now)
        if due:
            log.info("deadline check: %d claim(s) re-evaluated", len(due))
        return len(due)

    @staticmethod
    def _failed_draft(session: Session, claim: Claim | None, view: ClaimView) -> Draft | None:
        if claim is None or claim.id is None or not view.drafts:
            return None
        return session.scalar(
            select(Draft)
            .where(
                Draft.claim_id == claim.id,
                Draft.step.in_([plan.step for plan in view.drafts]),
                Draft.status == "failed",
            )
            .limit(1)
        )

    @staticmethod
    def shipment(session: Session, order_id: str) -> Shipment | None:
        """The imported shipment facts of an order, if any."""
        row = session.get(ShipmentRow, order_id)
        if row is None:
            return None
        return Shipment(row.carrier, row.tracking_number, row.ship_date, row.delivered_date)

    def _write_events(self, session: Session, claim: Claim, result: Replayed, by_key: dict[str, StoredMessage]) -> None:
        session.execute(delete(ClaimEvent).where(ClaimEvent.claim_id == claim.id, ClaimEvent.kind.in_(DERIVED_EVENTS)))
        for seq, step in enumerate(result.transitions):
            message = by_key.get(step.message_key) if step.message_key else None
            session.add(
                ClaimEvent(
                    claim_id=claim.id,
                    seq=seq,
                    at=step.at,
                    kind=step.kind,
                    from_state=_state(step.before),
                    to_state=_state(step.after),
                    strategy=step.after.strategy,
                    rule=step.rule,
                    reason=step.reason,
                    message_id=message.id if message else None,
                )
            )

    def _want_draft(
        self,
        session: Session,
        claim: Claim,
        view: ClaimView,
        by_key: dict[str, StoredMessage],
        now: datetime,
        *,
        changed: bool = False,
    ) -> None:
        """Record the drafts the claim's plans call for (one per claim and step; DraftSync writes them)."""
        steps = {plan.step for plan in view.drafts}
        # a draft for a step the claim has left is no longer wanted: not written yet, it never will be; written,
        # it is taken out of Drafts (DraftSync deletes it if untouched)
        for stale in session.scalars(
            select(Draft).where(Draft.claim_id == claim.id, Draft.status.in_(("wanted", "written")))
        ):
            if stale.step not in steps:
                stale.status = "superseded" if stale.status == "wanted" else "retiring"
        for plan in view.drafts:
            self._want(session, claim, view, plan, by_key, now, changed=changed)

    def _too_late(self, view: ClaimView, now: datetime) -> str | None:
        """Why it is too late to draft for this claim or case, or None."""
        if view.strategy == "appeal_granted":  # an appeal has its own last day
            if view.appeal_due_at is not None and view.appeal_due_at < now:
                return f"the appeal was due on {view.appeal_due_at:%Y-%m-%d} UTC"
            return None
        if view.deadline_at is not None and view.deadline_at < now:
            return f"deadline passed on {view.deadline_at:%Y-%m-%d %H:%M} UTC (check the claim in Seller Central)"
        if (
            not view.opened
            and view.state_since is not None
            and view.state_since + timedelta(days=self.rules.response_days) < now
        ):
            return f"the buyer wrote on {view.state_since:%Y-%m-%d}, too long ago to answer now"
        return None

    def _want(
        self,
        session: Session,
        claim: Claim,
        view: ClaimView,
        plan: DraftPlan,
        by_key: dict[str, StoredMessage],
        now: datetime,
        *,
        changed: bool,
    ) -> None:
        existing = session.scalar(select(Draft).where(Draft.claim_id == claim.id, Draft.step == plan.step))
        too_late = self._too_late(view, now)
        if too_late and (existing is None or existing.status == "wanted"):
            # a backfill of old mail must not fill Drafts with replies to claims Amazon has long decided, nor
            # with answers to buyers who wrote long ago
            if existing is not None:
                existing.status = "superseded"
            claim.flagged, claim.flag_reason = True, f"{too_late}: no {plan.strategy} draft written"
            return
        if existing is not None:
            # one draft per claim and step: a re-run adds nothing; a failed one is tried again once the
            # claim has learned something new (e.g. the delivery date from a shipments import)
            if existing.status == "failed" and changed:
                existing.status = "wanted"
            return
        parent = by_key.get(plan.parent_key) if plan.parent_key else None
        recipient = {"amazon": view.amazon_reply_to, "amazon_cs": view.inquiry_address}.get(
            plan.audience, view.buyer_address
        )
        language = view.language or self.settings.seller.language
        session.add(
            Draft(
                claim_id=claim.id,
                step=plan.step,
                strategy=plan.strategy,
                recipient=recipient,
                audience=plan.audience,
                language=language,
                parent_message_id=parent.id if parent else None,
                status="wanted",
                created_at=now,
            )
        )


def statements(session: Session, order_id: str) -> list[Statement]:
    """The seller's statements on an order that are in force (not cleared), oldest first."""
    rows = session.scalars(
        select(SellerStatement)
        .where(SellerStatement.order_id == order_id, SellerStatement.cleared_at.is_(None))
        .order_by(SellerStatement.stated_at, SellerStatement.id)
    )
    stated = [Statement(f"seller:{row.id}", row.stated_at, row.field, row.value) for row in rows]
    # a draft to the buyer (or to customer service asking for them) found sent answers the buyer
    sent = session.execute(
        select(Draft.id, Draft.strategy, Draft.sent_at, Draft.written_at)
        .join(Draft.claim)
        .where(
            Claim.order_id == order_id,
            Draft.status == "sent",
            or_(Draft.audience.is_(None), Draft.audience != "amazon"),
            Draft.strategy.not_in(AMAZON_STRATEGIES),
        )
    )
    replies = [
        Statement(f"sent:{row.id}", row.sent_at or row.written_at, "answered", f"the {row.strategy} draft was sent")
        for row in sent
        if row.sent_at or row.written_at
    ]
    return stated + replies


def _state(view: ClaimView) -> str | None:
    return view.state if view.listed else None


FACT_FIELDS = (
    "state",
    "strategy",
    "complaint_type",
    "marketplace",
    "language",
    "opened_at",
    "deadline_at",
    "buyer_address",
    "buyer_name",
    "amazon_reply_to",
    "tracking_number",
    "carrier",
    "delivered_on",
    "amount",
    "currency",
    "reply_due_at",
    "may_file_at",
    "answered_at",
    "complained_at",
    "first_answer_at",
    "appeal_due_at",
    "state_since",
)


def _copy_view(claim: Claim, view: ClaimView, now: datetime) -> bool:
    """Copy the replayed view onto the row; True when a fact (not just the flag) changed."""
    changed = False
    for name in (*FACT_FIELDS, "flagged", "flag_reason"):
        value = getattr(view, name)
        if getattr(claim, name) != value:
            setattr(claim, name, value)
            claim.updated_at = now
            changed = changed or name in FACT_FIELDS
    return changed
