"""Wires the stages together for the commands: store, claim desk, drafts, poller; queries for the views."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from pipeline.claims import ClaimDesk
from pipeline.config import Settings
from pipeline.drafts import DraftSync
from pipeline.errors import ConfigError, PipelineError
from pipeline.mailbox import Mailbox, connect
from pipeline.poller import Poller, PollStats
from pipeline.schema import Claim, ClaimEvent, Draft, SellerStatement, StoredMessage
from pipeline.shipments import ImportReport, import_shipments
from pipeline.store import Store, utcnow
from pipeline.vocabulary import CLOSED_STATES

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]


def now() -> datetime:
    """The current time, UTC. PIPELINE_NOW (ISO 8601) fixes it: the playbook's one injectable clock, for tests
    and for what-if runs ("which claims need a refund on Friday?")."""
    fixed = os.environ.get("PIPELINE_NOW")
    if not fixed:
        return utcnow()
    try:
        value = datetime.fromisoformat(fixed.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"PIPELINE_NOW: {fixed!r} is not an ISO 8601 time (2026-11-26T09:00:00Z)") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@contextmanager
def opened(settings: Settings) -> Iterator[Store]:
    """The configured database, migrated, closed afterwards."""
    store = Store(settings.database.url)
    try:
        yield store
    finally:
        store.dispose()


def make_desk(settings: Settings, store: Store) -> ClaimDesk:
    """The claim desk with its draft writer."""
    return ClaimDesk(settings, store, drafts=DraftSync(settings, store))


def poll_one_pass(settings: Settings, *, clock: Clock = now) -> PollStats:
    """`pipeline poll --once`: one pass over the watched folders, processing and drafts included."""
    with opened(settings) as store:
        return Poller(settings, store, make_desk(settings, store), clock=clock).poll_once()


def poll_forever(settings: Settings, *, metrics_port: int | None = None, clock: Clock = now) -> None:
    """`pipeline poll`: the daemon, until SIGTERM/SIGINT."""
    from pipeline.metrics import Metrics

    with opened(settings) as store:
        metrics = Metrics(store, metrics_port) if metrics_port else None
        try:
            poller = Poller(settings, store, make_desk(settings, store), clock=clock, metrics=metrics)
            if metrics:
                metrics.attach(poller)
                log.info("serving metrics on http://127.0.0.1:%d/metrics", metrics.port)
            poller.run()
        finally:
            if metrics:
                metrics.close()


def import_orders(settings: Settings, path: Path, *, clock: Clock = now) -> ImportReport:
    """`pipeline orders import`: store shipment facts, then replay the claims they touch."""
    with opened(settings) as store:
        with store.session() as session:
            report = import_shipments(session, path)
        desk = ClaimDesk(settings, store)
        with store.session() as session:
            desk.replay_all(session, clock(), [o for o in report.order_ids
                                               if session.scalar(select(Claim.id).where(Claim.order_id == o))])
        return report


# --- reprocess ------------------------------------------------------------------------------------


@dataclass
class ReprocessResult:
    """What a reprocess run did (or, with --dry-run, would do)."""

    messages: int = 0
    fetched: int = 0
    failed: int = 0
    changes: list[str] = field(default_factory=list)
    failures: list[tuple[int, str]] = field(default_factory=list)  # (message id, error)


def select_messages(session: Session, *, since: datetime | None, until: datetime | None, order_id: str | None,
                    failed_only: bool) -> list[int]:
    """Stored messages matching the reprocess filters, oldest first."""
    query = select(StoredMessage.id).order_by(StoredMessage.sent_at, StoredMessage.id)
    if since:
        query = query.where(StoredMessage.sent_at >= since)
    if until:
        query = query.where(StoredMessage.sent_at < until)
    if order_id:
        query = query.where(StoredMessage.order_id == order_id)
    if failed_only:
        query = query.where(StoredMessage.status == "failed")
    return list(session.scalars(query))


def reprocess(settings: Settings, *, since: datetime | None = None, until: datetime | None = None,
              order_id: str | None = None, failed_only: bool = False, from_imap: bool = False,
              dry_run: bool = False, progress: Callable[[int], Any] | None = None,
              start: Callable[[int], Any] | None = None, clock: Clock = now) -> ReprocessResult:
    """Re-run understanding and the playbook over stored messages (optionally re-read from IMAP first).

    Each message is processed in its own transaction, so an interrupted run keeps what it did and a second
    run finishes the job: the claims come out the same as after one uninterrupted run.

    With `dry_run` nothing is written: on SQLite the run happens for real on a snapshot copy of the database
    (the daemon is never blocked by a long dry run); elsewhere it runs in one transaction that is rolled back.
    """
    now = clock()
    with opened(settings) as store:
        if dry_run and _sqlite_file(store) is not None:
            with _sqlite_snapshot(store) as copy:
                return _reprocess_in(settings, copy, since=since, until=until, order_id=order_id,
                                     failed_only=failed_only, from_imap=from_imap, progress=progress,
                                     start=start, now=now)
        if dry_run:
            return _reprocess_rolled_back(settings, store, since=since, until=until, order_id=order_id,
                                          failed_only=failed_only, from_imap=from_imap, progress=progress,
                                          start=start, now=now)
        return _reprocess_in(settings, store, since=since, until=until, order_id=order_id, failed_only=failed_only,
                             from_imap=from_imap, progress=progress, start=start, now=now)


def _reprocess_in(settings: Settings, store: Store, *, since: datetime | None, until: datetime | None,
                  order_id: str | None, failed_only: bool, from_imap: bool, progress: Callable[[int], Any] | None,
                  start: Callable[[int], Any] | None, now: datetime) -> ReprocessResult:
    """The real run: one transaction per message."""
    result = ReprocessResult()
    desk = ClaimDesk(settings, store)
    with store.session() as session:
        before = _snapshot(session)
    if from_imap:
        result.fetched = _refetch(settings, store, since, until, store.session)
    with store.session() as session:
        ids = select_messages(session, since=since, until=until, order_id=order_id, failed_only=failed_only)
    result.messages = len(ids)
    if start:
        start(len(ids))
    for batch, understood in desk.understood_batches(ids):  # the rules over many messages at once: faster
        for message_id in batch:
            _done, failed = desk.process_ids([message_id], now, understood=understood)
            result.failed += failed
            if progress:
                progress(1)
    with store.session() as session:
        if result.failed:
            result.failures = [(row.id, row.error or "") for row in session.execute(
                select(StoredMessage.id, StoredMessage.error).where(
                    StoredMessage.id.in_(ids), StoredMessage.status == "failed").order_by(StoredMessage.id))]
        result.changes = _diff(before, _snapshot(session))
    return result


def _reprocess_rolled_back(settings: Settings, store: Store, *, since: datetime | None, until: datetime | None,
                           order_id: str | None, failed_only: bool, from_imap: bool,
                           progress: Callable[[int], Any] | None, start: Callable[[int], Any] | None,
                           now: datetime) -> ReprocessResult:
    """A dry run in one transaction (a savepoint per message) that is rolled back at the end."""
    result = ReprocessResult()
    desk = ClaimDesk(settings, store)
    with store.engine.connect() as connection:
        outer = connection.begin()
        session = Session(bind=connection, join_transaction_mode="create_savepoint")

        @contextmanager
        def savepoint() -> Iterator[Session]:
            with session.begin_nested():
                yield session

        try:
            before = _snapshot(session)
            if from_imap:
                result.fetched = _refetch(settings, store, since, until, savepoint)
            ids = select_messages(session, since=since, until=until, order_id=order_id, failed_only=failed_only)
            result.messages = len(ids)
            if start:
                start(len(ids))
            for message_id in ids:
                try:
                    with session.begin_nested():
                        desk.process_message(session, session.get_one(StoredMessage, message_id), now)
                except Exception as exc:  # a dry run reports failures, it never stops on one
                    result.failed += 1
                    error = str(exc) if isinstance(exc, PipelineError) else f"{type(exc).__name__}: {exc}"
                    result.failures.append((message_id, error))
                if progress:
                    progress(1)
            session.flush()
            result.changes = _diff(before, _snapshot(session))
        finally:
            session.close()
            outer.rollback()
    return result


def _sqlite_file(store: Store) -> str | None:
    """The database file of a file-based SQLite store, else None."""
    url = store.engine.url
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return url.database


@contextmanager
def _sqlite_snapshot(store: Store) -> Iterator[Store]:
    """A consistent copy of a SQLite database in a temporary folder, removed afterwards."""
    import sqlite3
    import tempfile

    source_path = _sqlite_file(store)
    assert source_path is not None
    with tempfile.TemporaryDirectory(prefix="pipeline-dry-run-") as folder:
        target_path = str(Path(folder) / "snapshot.db")
        source = sqlite3.connect(source_path, timeout=30)
        target = sqlite3.connect(target_path)
        try:
            source.backup(target)
        finally:
            target.close()
            source.close()
        copy = Store(f"sqlite:///{target_path}", migrate=False)
        try:
            yield copy
        finally:
            copy.dispose()


def _refetch(settings: Settings, store: Store, since: datetime | None, until: datetime | None,
             session_scope: Callable[[], Any]) -> int:
    """Re-scan the watched folders (date-limited) and store any Amazon message we do not have; return how many.

    `session_scope()` gives the transaction to write in: a new one per message for a real run, a savepoint
    of the rolled-back transaction for a dry run.
    """
    from pipeline.message import candidate_from_header_bytes
    from pipeline.poller import _envelope

    added = 0
    with connect(settings.imap) as mailbox:
        for folder in settings.imap.watched_folders:
            state = mailbox.select(folder)
            # IMAP compares whole days in each message's own time zone, the database compares UTC instants:
            # a day's margin on each side (storing a few more is harmless) makes sure none in range is missed
            uids = mailbox.uids_between(since - timedelta(days=1) if since else None,
                                        until + timedelta(days=1) if until else None)
            for start in range(0, len(uids), settings.imap.batch_size):
                batch = uids[start:start + settings.imap.batch_size]
                heads = [h for h in mailbox.fetch_headers(batch) if candidate_from_header_bytes(h.header_bytes)]
                with session_scope() as session:
                    wanted = [h.uid for h in heads if not (h.message_id and store.has_message(session, h.message_id))]
                for uid, raw in mailbox.fetch_raw(wanted).items():
                    with session_scope() as session:
                        _row, created = store.add_message(session, account=mailbox.account, folder=folder,
                                                          uidvalidity=state.uidvalidity, uid=uid, raw=raw,
                                                          **_envelope(raw))
                        added += created
    if added:
        log.info("re-read %d message(s) from IMAP that the database did not have", added)
    return added


def _snapshot(session: Session) -> dict[str, tuple[Any, ...]]:
    rows = session.execute(select(Claim.order_id, Claim.state, Claim.strategy, Claim.flagged, Claim.deadline_at))
    snap = {r.order_id: (r.state, r.strategy, r.flagged, r.deadline_at) for r in rows}
    for order_id, step, status in session.execute(select(Claim.order_id, Draft.step, Draft.status).join(Draft)):
        snap[f"draft {order_id} {step}"] = (status,)
    return snap


def _diff(before: dict[str, tuple[Any, ...]], after: dict[str, tuple[Any, ...]]) -> list[str]:
    """What changed between two snapshots, one line per claim or draft, in order-ID order."""
    lines = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if key.startswith("draft "):
            if old is None and new is not None and new[0] == "superseded":
                continue  # a step the claim passed through within this run: never written, nothing to see
            lines.append(f"{key}: {old[0] if old else 'none'} -> {new[0] if new else 'none'}")
        elif new is None:
            lines.append(f"claim {key}: removed")
        elif old is None:
            lines.append(f"claim {key}: new, {new[0]} ({new[1] or 'no strategy'})"
                         + (", flagged" if new[2] else ""))
        else:
            parts = []
            if old[:2] != new[:2]:
                parts.append(f"{old[0]} ({old[1] or '-'}) -> {new[0]} ({new[1] or '-'})")
            if old[2] != new[2]:
                parts.append("flagged" if new[2] else "no longer flagged")
            if old[3] != new[3]:
                parts.append(f"deadline {_iso(old[3]) or 'none'} -> {_iso(new[3]) or 'none'}")
            lines.append(f"claim {key}: {'; '.join(parts)}")
    return lines


# --- views ----------------------------------------------------------------------------------------


def claim_rows(settings: Settings, state: str | None = None) -> list[dict[str, Any]]:
    """Every claim as a JSON-ready dict, most urgent first (open claims by deadline, then closed ones)."""
    with opened(settings) as store, store.session() as session:
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
    """One claim in the JSON vocabulary of DESIGN.md."""
    return {
        "order_id": claim.order_id,
        "state": claim.state,
        "complaint_type": claim.complaint_type,
        "strategy": claim.strategy,
        "marketplace": claim.marketplace,
        "language": claim.language,
        "opened_at": _iso(claim.opened_at),
        "deadline_at": _iso(claim.deadline_at),
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
    with opened(settings) as store, store.session() as session:
        claim = session.scalar(select(Claim).where(Claim.order_id == order_id))
        messages = list(session.scalars(select(StoredMessage).where(StoredMessage.order_id == order_id)
                                        .order_by(StoredMessage.sent_at, StoredMessage.id)))
        statements = list(session.scalars(select(SellerStatement).where(
            SellerStatement.order_id == order_id, SellerStatement.cleared_at.is_(None)).order_by(
            SellerStatement.stated_at, SellerStatement.id)))
        if claim is None and not messages and not statements:
            raise PipelineError(f"no claim and no message for order {order_id}")
        events = [] if claim is None else list(session.scalars(
            select(ClaimEvent).where(ClaimEvent.claim_id == claim.id).order_by(ClaimEvent.at, ClaimEvent.seq)))
        drafts = [] if claim is None else list(session.scalars(select(Draft).where(Draft.claim_id == claim.id)
                                                               .order_by(Draft.id)))
        return {
            "claim": claim_dict(claim) if claim else None,
            "messages": [{
                "at": _iso(m.sent_at), "kind": m.kind, "sender": m.sender, "subject": m.subject,
                "status": m.status, "error": m.error,
                "facts": {k: (m.facts or {}).get(k) for k in TIMELINE_FACTS},
            } for m in messages],
            "stated": [{"at": _iso(st.stated_at), "field": st.field, "value": st.value} for st in statements],
            "events": [{"at": _iso(e.at), "kind": e.kind, "from": e.from_state, "to": e.to_state,
                        "strategy": e.strategy, "rule": e.rule, "reason": e.reason} for e in events],
            "drafts": [{"strategy": d.strategy, "step": d.step, "status": d.status, "to": d.recipient,
                        "audience": d.audience,
                        "language": d.language, "written_at": _iso(d.written_at), "error": d.error}
                       for d in drafts],
        }


TIMELINE_FACTS = ("marketplace", "complaint_type", "buyer_intent", "tracking_number", "carrier", "delivered",
                  "deadline_hours", "amount", "currency", "return_reason", "return_carrier", "return_tracking_number", "buyer_name",
                  "reply_channel")


def state_facts(settings: Settings, order_id: str, values: dict[str, str], *, clear: bool = False,
                clock: Clock = now) -> dict[str, Any]:
    """`pipeline claims set`: record facts the seller states (they win over mail), or clear them; replay the
    order's claim. Returns the claim as `claims --json` shows it (None when the order has no claim yet)."""
    at = clock()
    with opened(settings) as store:
        with store.session() as session:
            if clear:
                for row in session.scalars(select(SellerStatement).where(SellerStatement.order_id == order_id,
                                                                         SellerStatement.cleared_at.is_(None))):
                    row.cleared_at = at
            for name, value in values.items():
                session.add(SellerStatement(order_id=order_id, field=name, value=value, stated_at=at))
        desk = ClaimDesk(settings, store)
        with store.session() as session:
            claim = desk.replay_claim(session, order_id, at)
            return claim_dict(claim) if claim is not None else {"order_id": order_id, "state": None}


def failed_messages(settings: Settings) -> list[dict[str, Any]]:
    """Messages whose processing failed, with their error."""
    with opened(settings) as store, store.session() as session:
        rows = session.scalars(select(StoredMessage).where(StoredMessage.status == "failed"))
        return [{"id": r.id, "subject": r.subject, "sender": r.sender, "error": r.error} for r in rows]


# --- check ----------------------------------------------------------------------------------------


@dataclass
class CheckLine:
    """One line of `pipeline check`."""

    name: str
    ok: bool
    detail: str


def check(settings: Settings) -> list[CheckLine]:
    """Config, database, IMAP login, capabilities, folders; stops at the first failure that blocks the rest."""
    lines = [CheckLine("config", True, str(settings.source))]
    try:
        with opened(settings) as store:
            store.check()
            lines.append(CheckLine("database", True, f"{store.safe_url} at revision {store.revision()}"))
    except PipelineError as exc:
        lines.append(CheckLine("database", False, str(exc)))
    except (OSError, SQLAlchemyError) as exc:  # e.g. the SQLite file's folder cannot be created
        lines.append(CheckLine("database", False, f"{type(exc).__name__}: {exc}"))
    try:
        mailbox: Mailbox = connect(settings.imap)
    except PipelineError as exc:
        lines.append(CheckLine("imap login", False, str(exc)))
        return lines
    with mailbox:
        lines.append(CheckLine("imap login", True, f"{settings.imap.username} on {settings.imap.host}:"
                               f"{settings.imap.effective_port} ({settings.imap.security})"))
        caps = [c for c in ("IDLE", "UIDPLUS", "SPECIAL-USE") if mailbox.has(c)]
        missing = [c for c in ("IDLE", "UIDPLUS", "SPECIAL-USE") if not mailbox.has(c)]
        lines.append(CheckLine("capabilities", True, " ".join(caps) + (f" (missing: {' '.join(missing)}; "
                                                                      "handled without)" if missing else "")))
        for folder in settings.imap.watched_folders:
            try:
                state = mailbox.select(folder)
                lines.append(CheckLine(f"folder {folder}", True, f"UIDVALIDITY {state.uidvalidity}"))
            except PipelineError as exc:
                lines.append(CheckLine(f"folder {folder}", False, str(exc)))
        try:
            lines.append(CheckLine("drafts folder", True, mailbox.drafts_folder()))
        except PipelineError as exc:
            lines.append(CheckLine("drafts folder", False, str(exc)))
    return lines


def _iso(value: datetime | None) -> str | None:
    return value.replace(microsecond=0).isoformat().replace("+00:00", "Z") if value else None
