"""`pipeline reprocess`: re-run understanding and the playbook over stored messages, or show what that would change."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from pipeline.claims import ClaimDesk
from pipeline.config import Settings
from pipeline.errors import PipelineError
from pipeline.mailbox import connect
from pipeline.message import candidate_from_header_bytes
from pipeline.poller import envelope
from pipeline.schema import Claim, Draft, StoredMessage
from pipeline.service import Clock, now, opened
from pipeline.store import Store
from pipeline.understanding.facts import iso

log = logging.getLogger(__name__)
Progress = Callable[[int], Any]


@dataclass(frozen=True)
class Selection:
    """Which stored messages a reprocess run takes: a date range on their Date, one order, or only failures."""

    since: datetime | None = None
    until: datetime | None = None
    order_id: str | None = None
    failed_only: bool = False

    def query(self) -> Select[Any]:
        """The ids of the selected messages, oldest first."""
        query = select(StoredMessage.id).order_by(StoredMessage.sent_at, StoredMessage.id)
        if self.since:
            query = query.where(StoredMessage.sent_at >= self.since)
        if self.until:
            query = query.where(StoredMessage.sent_at < self.until)
        if self.order_id:
            query = query.where(StoredMessage.order_id == self.order_id)
        if self.failed_only:
            query = query.where(StoredMessage.status == "failed")
        return query


@dataclass
class ReprocessResult:
    """What a reprocess run did (or, with --dry-run, would do)."""

    messages: int = 0
    fetched: int = 0
    failed: int = 0
    changes: list[str] = field(default_factory=list)
    failures: list[tuple[int, str]] = field(default_factory=list)  # (message id, error)


@dataclass
class _Run:
    """One run's settings, selection and progress callbacks."""

    settings: Settings
    selection: Selection
    from_imap: bool
    progress: Progress | None
    start: Progress | None
    now: datetime

    def begin(self, count: int) -> None:
        if self.start:
            self.start(count)

    def step(self) -> None:
        if self.progress:
            self.progress(1)


def reprocess(
    settings: Settings,
    selection: Selection = Selection(),
    *,
    from_imap: bool = False,
    dry_run: bool = False,
    progress: Progress | None = None,
    start: Progress | None = None,
    clock: Clock = now,
) -> ReprocessResult:
    """Re-run understanding and the playbook over the selected stored messages (optionally re-read from IMAP).

    Each message is processed in its own transaction, so an interrupted run keeps what it did and a second
    run finishes the job: the claims come out the same as after one uninterrupted run.

    With `dry_run` nothing is written: on SQLite the run happens for real on a snapshot copy of the database
    (the daemon is never blocked by a long dry run); elsewhere it runs in one transaction that is rolled back.
    """
    run = _Run(settings, selection, from_imap, progress, start, clock())
    with opened(settings) as store:
        if dry_run and _sqlite_file(store) is not None:
            with _sqlite_snapshot(store) as copy:
                return _run_for_real(run, copy)
        if dry_run:
            return _run_rolled_back(run, store)
        return _run_for_real(run, store)


def _run_for_real(run: _Run, store: Store) -> ReprocessResult:
    """The real run: one transaction per message."""
    result = ReprocessResult()
    desk = ClaimDesk(run.settings, store)
    with store.session() as session:
        before = _snapshot(session)
    if run.from_imap:
        result.fetched = _refetch(run.settings, store, run.selection, store.session)
    with store.session() as session:
        ids = list(session.scalars(run.selection.query()))
    result.messages = len(ids)
    run.begin(len(ids))
    try:
        for batch, understood in desk.understood_batches(ids):  # the rules over many messages at once: faster
            for message_id in batch:
                _done, failed = desk.process_ids([message_id], run.now, understood=understood)
                result.failed += failed
                run.step()
    finally:
        desk.close()
    with store.session() as session:
        if result.failed:
            result.failures = [
                (row.id, row.error or "")
                for row in session.execute(
                    select(StoredMessage.id, StoredMessage.error)
                    .where(StoredMessage.id.in_(ids), StoredMessage.status == "failed")
                    .order_by(StoredMessage.id)
                )
            ]
        result.changes = _diff(before, _snapshot(session))
    return result


def _run_rolled_back(run: _Run, store: Store) -> ReprocessResult:
    """A dry run in one transaction (a savepoint per message) that is rolled back at the end."""
    result = ReprocessResult()
    desk = ClaimDesk(run.settings, store)
    with store.engine.connect() as connection:
        outer = connection.begin()
        session = Session(bind=connection, join_transaction_mode="create_savepoint")

        @contextmanager
        def savepoint() -> Iterator[Session]:
            with session.begin_nested():
                yield session

        try:
            before = _snapshot(session)
            if run.from_imap:
                result.fetched = _refetch(run.settings, store, run.selection, savepoint)
            ids = list(session.scalars(run.selection.query()))
            result.messages = len(ids)
            run.begin(len(ids))
            for message_id in ids:
                try:
                    with session.begin_nested():
                        desk.process_message(session, session.get_one(StoredMessage, message_id), run.now)
                except Exception as exc:  # a dry run reports failures, it never stops on one
                    result.failed += 1
                    error = str(exc) if isinstance(exc, PipelineError) else f"{type(exc).__name__}: {exc}"
                    result.failures.append((message_id, error))
                run.step()
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


def _refetch(settings: Settings, store: Store, selection: Selection, session_scope: Callable[[], Any]) -> int:
    """Re-scan the watched folders (date-limited) and store any Amazon message we do not have; return how many.

    `session_scope()` gives the transaction to write in: a new one per message for a real run, a savepoint
    of the rolled-back transaction for a dry run.
    """
    added = 0
    with connect(settings.imap) as mailbox:
        for folder in settings.imap.watched_folders:
            state = mailbox.select(folder)
            # IMAP compares whole days in each message's own time zone, the database compares UTC instants:
            # a day's margin on each side (storing a few more is harmless) makes sure none in range is missed
            since, until = selection.since, selection.until
            uids = mailbox.uids_between(
                since - timedelta(days=1) if since else None, until + timedelta(days=1) if until else None
            )
            for start in range(0, len(uids), settings.imap.batch_size):
                batch = uids[start : start + settings.imap.batch_size]
                heads = [h for h in mailbox.fetch_headers(batch) if candidate_from_header_bytes(h.header_bytes)]
                with session_scope() as session:
                    wanted = [h.uid for h in heads if not (h.message_id and store.has_message(session, h.message_id))]
                for uid, raw in mailbox.fetch_raw(wanted).items():
                    with session_scope() as session:
                        _id, created = store.add_message(
                            session,
                            account=mailbox.account,
                            folder=folder,
                            uidvalidity=state.uidvalidity,
                            uid=uid,
                            raw=raw,
                            **envelope(raw),
                        )
                        added += created
    if added:
        log.info("re-read %d message(s) from IMAP that the database did not have", added)
    return added


def _snapshot(session: Session) -> dict[str, tuple[Any, ...]]:
    rows = session.execute(select(Claim.order_id, Claim.state, Claim.strategy, Claim.flagged, Claim.deadline_at))
    snap: dict[str, tuple[Any, ...]] = {r.order_id: (r.state, r.strategy, r.flagged, r.deadline_at) for r in rows}
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
            lines.append(f"claim {key}: new, {new[0]} ({new[1] or 'no strategy'})" + (", flagged" if new[2] else ""))
        else:
            parts = []
            if old[:2] != new[:2]:
                parts.append(f"{old[0]} ({old[1] or '-'}) -> {new[0]} ({new[1] or '-'})")
            if old[2] != new[2]:
                parts.append("flagged" if new[2] else "no longer flagged")
            if old[3] != new[3]:
                parts.append(f"deadline {iso(old[3]) or 'none'} -> {iso(new[3]) or 'none'}")
            lines.append(f"claim {key}: {'; '.join(parts)}")
    return lines
