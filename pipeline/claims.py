"""The claim desk: each stored message is understood, linked to its claim, and the claim replayed.

Stages run one message per transaction (a failure is kept on the message with its error and never blocks
the rest); drafts are written to the mailbox afterwards, from what the claims want.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, defer

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
from pipeline.workers import UnderstandingPool, worker_count

log = logging.getLogger(__name__)

UNDERSTAND_BATCH = 128  # messages understood together (see ClaimDesk.understand_ids)
POOL_MIN = 2 * UNDERSTAND_BATCH  # fewer pending messages are understood in place (no worker processes)

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
        # whether any statement exists (None: not known, so look): asked once per processing pass
        self.any_statement: bool | None = None
        self._workers: UnderstandingPool | bool | None = None  # None: not started yet; False: none wanted

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
            self.any_statement = session.scalar(select(SellerStatement.id).limit(1)) is not None
        done = failed = 0
        try:
            for batch, understood in self.understood_batches(ids, stop):
                counts = self.process_ids(batch, now, stop=stop, understood=understood)
                done, failed = done + counts[0], failed + counts[1]
        finally:
            self.any_statement = None  # a statement may come any time after this pass
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
        """Process the given messages (until `stop` says so); return (done, failed). `understood`: facts already
        worked out for some of them (see understand_ids).

        Several messages are processed in one transaction, each claim they touch replayed once at its end: a
        crash keeps them all pending. When any of them fails, that transaction is undone and each message is
        processed in its own, so that a bad message fails alone and is kept with its error.
        """
        ids = list(ids)
        understood = understood or {}
        if len(ids) > 1:
            try:
                done = self._process_together(ids, now, understood, stop)
                return done, 0
            except (OperationalError, InterfaceError) as exc:
                raise StoreError(
                    f"database unavailable while processing messages {ids[0]}-{ids[-1]}: {getattr(exc, 'orig', exc)}"
                ) from None
            except Exception as exc:  # somebody's fault: find whose, one message at a time
                log.info("messages %s-%s: one failed (%s); processing them one by one", ids[0], ids[-1], exc)
        done = failed = 0
        for message_id in ids:
            if stop is not None and stop():
                break
            try:
                self._process_one(message_id, now, understood.get(message_id))
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

    def _process_together(
        self, ids: list[int], now: datetime, understood: dict[int, Facts], stop: Callable[[], bool] | None
    ) -> int:
        """The messages in one transaction, every claim they touch replayed once at the end (see process_ids)."""
        done = 0
        with self.store.session() as session:
            found = session.scalars(
                select(StoredMessage).where(StoredMessage.id.in_(ids)).options(defer(StoredMessage.raw))
            )  # the bytes are loaded only for a message not understood yet
            rows = {row.id: row for row in found}
            touched: dict[str, None] = {}  # in the order first touched
            for message_id in ids:
                if stop is not None and stop():
                    break
                row = rows.get(message_id)
                if row is None:
                    raise StoreError(f"message {message_id} is not stored")
                touched.update(dict.fromkeys(self.link_message(session, row, understood.get(message_id))))
                done += 1
            with stage("replay", 0):
                for order_id in touched:
                    self.replay_claim(session, order_id, now)
        return done

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
        batches = [ids[first : first + UNDERSTAND_BATCH] for first in range(0, len(ids), UNDERSTAND_BATCH)]
        pool = self._pool() if len(ids) >= POOL_MIN else None
        if pool is not None:
            yield from self._pooled_batches(pool, batches, stop)
            return
        for batch in batches:
            if stop is not None and stop():
                return
            yield batch, self._understood_here(batch)

    def _understood_here(self, batch: list[int]) -> dict[int, Facts]:
        """A batch understood in this process (see understood_batches)."""
        try:
            return self.understand_ids(batch)
        except (OperationalError, InterfaceError) as exc:  # the database is away: the messages stay pending
            raise StoreError(
                f"database unavailable while reading messages {batch[0]}-{batch[-1]}: {getattr(exc, 'orig', exc)}"
            ) from None
        except Exception:  # one message's surprise must not stop the batch
            log.warning("batch understanding failed; understanding these %d messages one by one", len(batch))
            return {}

    def _pooled_batches(
        self, pool: UnderstandingPool, batches: list[list[int]], stop: Callable[[], bool] | None
    ) -> Iterator[tuple[list[int], dict[int, Facts]]]:
        """The batches understood in the workers while this process stores what the previous ones gave: a few
        batches ahead are always in the workers' hands."""
        ahead: deque[tuple[list[int], Future[list[tuple[int, Facts | None]]]]] = deque()
        upcoming = iter(batches)
        while True:
            while len(ahead) <= pool.workers and not pool.broken:
                batch = next(upcoming, None)
                if batch is None:
                    break
                ahead.append((batch, pool.submit(self._raws(batch))))
            if not ahead:
                break
            if stop is not None and stop():
                return
            batch, future = ahead.popleft()
            try:
                with stage("understand", 0):
                    understood = {mid: facts for mid, facts in future.result() if facts is not None}
            except Exception as exc:  # a worker died or failed: this process understands the batch itself
                log.warning("a worker could not understand %d messages (%s); understanding them here", len(batch), exc)
                understood = self._understood_here(batch)
            yield batch, understood
        for batch in upcoming:  # the workers are gone (one was killed): the rest is understood here
            if stop is not None and stop():
                return
            yield batch, self._understood_here(batch)

    def _raws(self, ids: list[int]) -> list[tuple[int, bytes]]:
        try:
            with self.store.session() as session:
                rows = session.execute(select(StoredMessage.id, StoredMessage.raw).where(StoredMessage.id.in_(ids)))
                return [(message_id, raw) for message_id, raw in rows]
        except (OperationalError, InterfaceError) as exc:
            raise StoreError(f"database unavailable while reading messages: {getattr(exc, 'orig', exc)}") from None

    def _pool(self) -> UnderstandingPool | None:
        """The worker processes, started on first need; None when there is only one core or they are off."""
        if self._workers is None:
            count = worker_count() if self.settings.processing.parallel else 0
            self._workers = (
                UnderstandingPool(
                    self.settings.models.models_dir or None,
                    self.settings.seller.response_days,
                    self.settings.trust.authserv_ids,
                    count,
                )
                if count
                else False
            )
        if isinstance(self._workers, UnderstandingPool) and self._workers.broken:
            self._workers.close()  # a worker was killed: the next pass starts fresh ones
            self._workers = None
            return self._pool()
        return self._workers if isinstance(self._workers, UnderstandingPool) else None

    def close(self) -> None:
        """Stop the worker processes, if any were started."""
        if isinstance(self._workers, UnderstandingPool):
            self._workers.close()
        self._workers = None

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
        orders = self.link_message(session, row, facts)
        with stage("replay", 0):
            for order_id in orders:
                self.replay_claim(session, order_id, now)

    def link_message(self, session: Session, row: StoredMessage, facts: Facts | None = None) -> list[str]:
        """Understand one message (unless its `facts` are given) and link it to its order; return the orders whose
        claims must be replayed for it (its order, and the one it belonged to before when reprocessing moved it)."""
        if facts is None:
            facts = self.understand(row)
        before = row.order_id if row.status == "done" else None
        row.facts = facts.to_json()
        row.kind = facts.kind
        row.buyer_key = _buyer_key(facts.buyer_name) if facts.kind == "buyer_message" and facts.trusted else None
        row.sent_at = row.sent_at or facts.sent_at
        with stage("link"):
            row.order_id = self._link(session, row, facts)
            row.status, row.error, row.processed_at = "done", None, utcnow()
            session.flush()
            if row.order_id:
                self._link_earlier(session, row, facts)
        # reprocessed with better rules, the message may belong elsewhere now: its old claim forgets it
        return [order for order in dict.fromkeys((row.order_id, before)) if order]

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
        """The order of the trusted buyer messages signed with this name, when exactly one order has such a buyer
        (Amazon's copy of the seller's reply names the buyer and often no order)."""
        key = _buyer_key(name)
        if not key:
            return None
        orders = list(
            session.scalars(
                select(StoredMessage.order_id)
                .where(StoredMessage.buyer_key == key, StoredMessage.order_id.is_not(None))
                .distinct()
                .limit(2)
            )
        )
        return orders[0] if len(orders) == 1 else None

    def _link_earlier(self, session: Session, row: StoredMessage, facts: Facts) -> None:
        """Messages processed before this one that could not be linked then, but belong to its order now.

        A buyer message without an order ID is linked by its relay address or by what it answers; when it
        is processed before the message that names the order, it is linked here, so the processing order
        never changes which claim a message belongs to. Only the columns needed are read (never the raw bytes).
        """
        unlinked = (StoredMessage.order_id.is_(None), StoredMessage.status == "done", StoredMessage.id != row.id)
        found: set[int] = set()
        if facts.kind == "buyer_message" and facts.buyer_address and facts.trusted:
            relay = facts.buyer_address.lower()
            same_relay = select(StoredMessage.id, StoredMessage.facts).where(
                *unlinked, StoredMessage.kind == "buyer_message", func.lower(StoredMessage.sender) == relay
            )
            found |= {mid for mid, other in session.execute(same_relay) if (other or {}).get("trusted")}
        if facts.kind == "buyer_message" and facts.buyer_name and facts.trusted:
            copies = select(StoredMessage.id, StoredMessage.facts).where(
                *unlinked, StoredMessage.kind == "seller_reply_copy"
            )
            for mid, copied in session.execute(copies):
                named = (copied or {}).get("buyer_name")
                if (copied or {}).get("trusted") and named and self._order_of_buyer_named(session, str(named)):
                    found.add(mid)
        # a reply is written after what it answers (messages without a date are checked too)
        answers = select(StoredMessage.id, StoredMessage.message_key, StoredMessage.facts).where(
            *unlinked, StoredMessage.kind != "other"
        )
        if row.sent_at is not None:
            answers = answers.where(or_(StoredMessage.sent_at.is_(None), StoredMessage.sent_at >= row.sent_at))
        candidates = [(mid, key, facts or {}) for mid, key, facts in session.execute(answers) if mid not in found]
        keys = {row.message_key}
        while keys and candidates:  # replies to replies follow their thread
            linked = [c for c in candidates if keys & {c[2].get("in_reply_to"), *(c[2].get("references") or ())}]
            found |= {mid for mid, _key, _facts in linked}
            keys = {key for _mid, key, _facts in linked}
            candidates = [c for c in candidates if c[0] not in found]
        if found:
            session.execute(
                update(StoredMessage).where(StoredMessage.id.in_(sorted(found))).values(order_id=row.order_id)
            )
        session.flush()

    # --- claims ---------------------------------------------------------------------------------

    def replay_claim(self, session: Session, order_id: str, now: datetime) -> Claim | None:
        """Rebuild one claim from its messages and shipment facts; store its derived events and wanted draft."""
        rows = session.execute(
            select(StoredMessage.id, StoredMessage.message_key, StoredMessage.facts).where(
                StoredMessage.order_id == order_id, StoredMessage.status == "done"
            )
        ).all()
        messages = [(r.message_key, Facts.from_json(r.facts)) for r in rows if r.facts]
        by_key = {r.message_key: r.id for r in rows}
        claim = session.scalar(select(Claim).where(Claim.order_id == order_id))
        drafts = list(session.scalars(select(Draft).where(Draft.claim_id == claim.id))) if claim is not None else []
        said = statements(session, order_id, drafts) if self._statements_possible(drafts) else []
        result = replay(order_id, messages, self.shipment(session, order_id), now, self.rules, said)
        if not result.claim.listed:
            return claim  # no claim and no case yet: the messages are kept on the order
        if claim is None:
            claim = Claim(order_id=order_id, state="new", updated_at=now)
            session.add(claim)
            session.flush()
        view = result.claim
        steps = {plan.step for plan in view.drafts}
        failed = next((d for d in drafts if d.step in steps and d.status == "failed"), None)
        if failed is not None:  # a draft that could not be written keeps the claim flagged
            view = replace(view, flagged=True, flag_reason=f"draft {failed.strategy} not written: {failed.error}")
        changed = _copy_view(claim, view, now)
        self._write_events(session, claim, result, by_key)
        self._want_draft(session, claim, view, by_key, drafts, now, changed=changed)
        return claim

    def _statements_possible(self, drafts: list[Draft]) -> bool:
        """Whether the order may have statements: the seller stated something somewhere (known for a whole
        processing pass), or one of its drafts was sent."""
        if any(d.status == "sent" for d in drafts):
            return True
        return self.any_statement is not False

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
    def shipment(session: Session, order_id: str) -> Shipment | None:
        """The imported shipment facts of an order, if any."""
        row = session.get(ShipmentRow, order_id)
        if row is None:
            return None
        return Shipment(row.carrier, row.tracking_number, row.ship_date, row.delivered_date)

    def _write_events(self, session: Session, claim: Claim, result: Replayed, by_key: dict[str, int]) -> None:
        """The derived events as the replay gives them: those already stored as given stay, the rest is
        rewritten (a new message usually adds one event at the end)."""
        wanted = [
            (
                seq,
                step.at,
                step.kind,
                _state(step.before),
                _state(step.after),
                step.after.strategy,
                step.rule,
                step.reason,
                by_key.get(step.message_key) if step.message_key else None,
            )
            for seq, step in enumerate(result.transitions)
        ]
        stored = session.execute(
            select(
                ClaimEvent.id,
                ClaimEvent.seq,
                ClaimEvent.at,
                ClaimEvent.kind,
                ClaimEvent.from_state,
                ClaimEvent.to_state,
                ClaimEvent.strategy,
                ClaimEvent.rule,
                ClaimEvent.reason,
                ClaimEvent.message_id,
            )
            .where(ClaimEvent.claim_id == claim.id, ClaimEvent.kind.in_(DERIVED_EVENTS))
            .order_by(ClaimEvent.seq)
        ).all()
        same = 0
        while same < min(len(stored), len(wanted)) and tuple(stored[same][1:]) == wanted[same]:
            same += 1
        if same < len(stored):
            session.execute(delete(ClaimEvent).where(ClaimEvent.id.in_([row.id for row in stored[same:]])))
        for seq, at, kind, before, after, strategy, rule, reason, message_id in wanted[same:]:
            session.add(
                ClaimEvent(
                    claim_id=claim.id,
                    seq=seq,
                    at=at,
                    kind=kind,
                    from_state=before,
                    to_state=after,
                    strategy=strategy,
                    rule=rule,
                    reason=reason,
                    message_id=message_id,
                )
            )

    def _want_draft(
        self,
        session: Session,
        claim: Claim,
        view: ClaimView,
        by_key: dict[str, int],
        drafts: list[Draft],
        now: datetime,
        *,
        changed: bool = False,
    ) -> None:
        """Record the drafts the claim's plans call for (one per claim and step; DraftSync writes them)."""
        steps = {plan.step for plan in view.drafts}
        # a draft for a step the claim has left is no longer wanted: not written yet, it never will be; written,
        # it is taken out of Drafts (DraftSync deletes it if untouched)
        for stale in drafts:
            if stale.status in ("wanted", "written") and stale.step not in steps:
                stale.status = "superseded" if stale.status == "wanted" else "retiring"
        by_step = {draft.step: draft for draft in drafts}
        for plan in view.drafts:
            self._want(session, claim, view, plan, by_key, by_step.get(plan.step), now, changed=changed)

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
        by_key: dict[str, int],
        existing: Draft | None,
        now: datetime,
        *,
        changed: bool,
    ) -> None:
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
                parent_message_id=parent,
                status="wanted",
                created_at=now,
            )
        )


def statements(session: Session, order_id: str, drafts: Iterable[Draft]) -> list[Statement]:
    """The seller's statements on an order that are in force (not cleared), oldest first; and each of the claim's
    drafts to the buyer (or to customer service asking for them) found sent, which answered the buyer."""
    rows = session.scalars(
        select(SellerStatement)
        .where(SellerStatement.order_id == order_id, SellerStatement.cleared_at.is_(None))
        .order_by(SellerStatement.stated_at, SellerStatement.id)
    )
    stated = [Statement(f"seller:{row.id}", row.stated_at, row.field, row.value) for row in rows]
    replies = [
        Statement(f"sent:{d.id}", when, "answered", f"the {d.strategy} draft was sent")
        for d in drafts
        if d.status == "sent"
        and d.audience != "amazon"
        and d.strategy not in AMAZON_STRATEGIES
        and (when := d.sent_at or d.written_at) is not None
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


def _buyer_key(name: str | None) -> str | None:
    """A buyer's name as the messages are looked up by (case-folded, at most 200 characters)."""
    folded = (name or "").strip().casefold()[:200]
    return folded or None
