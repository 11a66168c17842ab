"""Takes Amazon mail in from IMAP exactly once: per-folder cursors, batches, IDLE, reconnects, clean shutdown."""

from __future__ import annotations

import email
import email.header
import email.policy
import email.utils
import logging
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import FrameType
from typing import Protocol

from pipeline.config import Settings
from pipeline.errors import FolderNotFoundError, LoginError, MailboxError, SecretError
from pipeline.mailbox import TRANSIENT_ERRORS, Mailbox, connect
from pipeline.message import candidate_from_header_bytes, normalize_message_id
from pipeline.store import Store, message_key, utcnow

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


class Stages(Protocol):
    """What the poller hands new mail to: the claim desk (understand → playbook → drafts)."""

    def process_pending(self, now: datetime) -> tuple[int, int]:
        """Process every stored message not yet processed; return (done, failed)."""

    def after_poll(self, mailbox: Mailbox, now: datetime) -> None:
        """Per-cycle work that needs the mailbox: deadline escalation, writing drafts, sent detection."""


@dataclass
class PollStats:
    """What one pass over the watched folders did."""

    seen: int = 0
    stored: int = 0
    known: int = 0
    ignored: int = 0
    processed: int = 0
    failed: int = 0
    folders: list[str] = field(default_factory=list)

    def add(self, other: PollStats) -> None:
        """Add another pass's counts to these."""
        for name in ("seen", "stored", "known", "ignored", "processed", "failed"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.folders += other.folders


@dataclass
class Backoff:
    """Exponential backoff with full jitter, capped; reset after a good cycle."""

    base: float = 1.0
    cap: float = 300.0
    attempt: int = 0

    def next_delay(self, *, minimum: float = 0.0) -> float:
        """The next wait in seconds, growing with each failure."""
        ceiling = min(self.cap, self.base * (2 ** self.attempt))
        self.attempt += 1
        return max(minimum, random.uniform(ceiling / 2, ceiling))

    def reset(self) -> None:
        """Back to short waits after a success."""
        self.attempt = 0


class Poller:
    """Ingests the watched folders into the store and runs the claim stages on what arrived."""

    def __init__(self, settings: Settings, store: Store, stages: Stages | None = None, *,
                 clock: Clock = utcnow, stop: threading.Event | None = None,
                 connector: Callable[[], Mailbox] | None = None, metrics: object | None = None) -> None:
        self.settings = settings
        self.store = store
        self.stages = stages
        self.clock = clock
        self.stop = stop or threading.Event()
        self._connect = connector or (lambda: connect(settings.imap))
        self.metrics = metrics
        self.last_success: float | None = None

    # --- one pass -------------------------------------------------------------------------------

    def poll_once(self) -> PollStats:
        """Connect, take in what is new in every watched folder, run the stages, log out."""
        mailbox = self._connect()
        try:
            return self.cycle(mailbox)
        finally:
            mailbox.close()

    def cycle(self, mailbox: Mailbox) -> PollStats:
        """One pass on an open connection: ingest every folder, then process and act."""
        stats = PollStats()
        for folder in self.settings.imap.watched_folders:
            if self.stop.is_set():
                break
            stats.add(self.ingest_folder(mailbox, folder))
        if self.stages is not None and not self.stop.is_set():
            now = self.clock()
            stats.processed, stats.failed = self.stages.process_pending(now)
            self.stages.after_poll(mailbox, now)
        self.last_success = time.time()
        self._count("cycles")
        return stats

    def ingest_folder(self, mailbox: Mailbox, folder: str) -> PollStats:
        """Store every new Amazon message of one folder; the cursor moves only past stored messages."""
        stats = PollStats(folders=[folder])
        state = mailbox.select(folder)
        account = mailbox.account
        with self.store.session() as session:
            cursor = self.store.cursor(session, account, folder)
            last_uid = 0
            if cursor is not None and cursor.uidvalidity == state.uidvalidity:
                last_uid = cursor.last_uid
            elif cursor is not None:
                log.warning("folder %s: UIDVALIDITY changed (%s -> %s); re-scanning and matching by Message-ID",
                            folder, cursor.uidvalidity, state.uidvalidity)
                self._count("uidvalidity_changes")
        uids = mailbox.uids_after(last_uid)
        for batch in _chunks(uids, self.settings.imap.batch_size):
            if self.stop.is_set():
                break
            self._ingest_batch(mailbox, account, folder, state.uidvalidity, batch, stats)
        if not uids:
            # record the UIDVALIDITY even for an empty folder, so a later change is noticed
            with self.store.session() as session:
                self.store.set_cursor(session, account, folder, state.uidvalidity, last_uid)
        return stats

    def _ingest_batch(self, mailbox: Mailbox, account: str, folder: str, uidvalidity: int,
                      batch: Sequence[int], stats: PollStats) -> None:
        heads = mailbox.fetch_headers(batch)
        with self.store.session() as session:
            wanted = []
            for head in heads:
                if not candidate_from_header_bytes(head.header_bytes):
                    stats.ignored += 1
                elif head.message_id and self.store.has_message(session, head.message_id):
                    stats.known += 1
                else:
                    wanted.append(head.uid)
        raws = mailbox.fetch_raw(wanted)
        stats.seen += len(heads)
        done_uid = None
        for uid in batch:
            if self.stop.is_set():
                break
            raw = raws.get(uid)
            with self.store.session() as session:
                if raw is not None:
                    _row, created = self.store.add_message(
                        session, account=account, folder=folder, uidvalidity=uidvalidity, uid=uid,
                        raw=raw, **_envelope(raw))
                    stats.stored += created
                    stats.known += not created
                    if created:
                        self._count("messages_stored")
                        log.info("stored message uid=%s folder=%s", uid, folder)
                self.store.set_cursor(session, account, folder, uidvalidity, uid)
            done_uid = uid
        log.debug("folder %s: batch done up to uid %s", folder, done_uid)

    # --- the daemon -----------------------------------------------------------------------------

    def run(self, *, install_signals: bool = True) -> None:
        """Poll until stopped: IDLE when the server has it, else every poll_interval; reconnect with backoff."""
        if install_signals:
            self._install_signal_handlers()
        backoff = Backoff()
        login_backoff = Backoff(base=60.0, cap=900.0)
        while not self.stop.is_set():
            try:
                mailbox = self._connect()
            except (LoginError, SecretError) as exc:
                delay = login_backoff.next_delay()
                log.error("login failed: %s; retrying in %.0f s", exc, delay)
                self._count("login_failures")
                self.stop.wait(delay)
                continue
            except MailboxError as exc:
                delay = backoff.next_delay()
                log.warning("cannot connect: %s; retrying in %.1f s", exc, delay)
                self._count("reconnects")
                self.stop.wait(delay)
                continue
            login_backoff.reset()
            try:
                self._serve(mailbox, backoff)
            except FolderNotFoundError as exc:
                delay = max(60.0, backoff.next_delay())
                log.error("%s; retrying in %.0f s", exc, delay)
                self.stop.wait(delay)
            except (*TRANSIENT_ERRORS, MailboxError) as exc:
                delay = backoff.next_delay()
                log.warning("connection lost: %s; reconnecting in %.1f s", _describe(exc), delay)
                self._count("reconnects")
                self.stop.wait(delay)
            except Exception as exc:
                # an IMAP protocol error (a NO/BAD answer) or a bug in one cycle: keep the daemon alive
                delay = backoff.next_delay(minimum=5.0)
                log.exception("poll cycle failed: %s; retrying in %.1f s", _describe(exc), delay)
                self._count("reconnects")
                self.stop.wait(delay)
            finally:
                mailbox.close()
        log.info("stopped")

    def _serve(self, mailbox: Mailbox, backoff: Backoff) -> None:
        idle = mailbox.has("IDLE")
        log.info("connected to %s (%s)", self.settings.imap.host, "IDLE" if idle else "polling")
        while not self.stop.is_set():
            stats = self.cycle(mailbox)
            backoff.reset()
            if stats.stored or stats.failed:
                log.info("poll: %d stored, %d processed, %d failed", stats.stored, stats.processed, stats.failed)
            if idle:
                self._idle(mailbox)
            else:
                self.stop.wait(self.settings.imap.poll_interval)
                mailbox.noop()

    def _idle(self, mailbox: Mailbox) -> None:
        """Wait in IDLE on the first watched folder until news, renewal time, or stop."""
        mailbox.select(self.settings.imap.watched_folders[0])
        renew_at = time.monotonic() + self.settings.imap.idle_renew
        # other folders have no IDLE of their own; they are re-read at least every poll_interval
        other_folders_due = time.monotonic() + self.settings.imap.poll_interval
        while not self.stop.is_set():
            now = time.monotonic()
            if now >= renew_at or (len(self.settings.imap.watched_folders) > 1 and now >= other_folders_due):
                return
            if mailbox.wait_for_news(min(1.0, renew_at - now)):
                return
            if self._escalation_due():
                return

    def _escalation_due(self) -> bool:
        """Deadline checks run each cycle; make sure a cycle happens at least every poll_interval."""
        return self.last_success is not None and time.time() - self.last_success >= self.settings.imap.poll_interval

    def _install_signal_handlers(self) -> None:
        def handle(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s: finishing the current message and stopping", signal.Signals(signum).name)
            self.stop.set()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def _count(self, name: str) -> None:
        if self.metrics is not None:
            self.metrics.inc(name)  # type: ignore[attr-defined]


def _envelope(raw: bytes) -> dict[str, object]:
    """Message key, sender, subject and Date of raw bytes, best effort (full parsing is a later stage)."""
    parsed = email.message_from_bytes(raw[:65536], policy=email.policy.compat32)
    message_id = normalize_message_id(parsed.get("Message-ID"))
    sender = email.utils.parseaddr(str(parsed.get("From") or ""))[1][:320]
    try:
        subject = str(email.header.make_header(email.header.decode_header(str(parsed.get("Subject") or ""))))
    except (LookupError, UnicodeError, ValueError):
        subject = str(parsed.get("Subject") or "")
    sent_at = None
    try:
        when = email.utils.parsedate_to_datetime(str(parsed.get("Date"))) if parsed.get("Date") else None
        if when is not None:
            sent_at = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
    except (TypeError, ValueError, IndexError):
        sent_at = None
    return {"message_key": message_key(message_id, raw), "sender": sender, "subject": subject[:2000],
            "sent_at": sent_at}


def _chunks(items: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(items), max(1, size)):
        yield items[start:start + size]


def _describe(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__).replace("\n", " ")[:300]
