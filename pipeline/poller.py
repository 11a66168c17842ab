"""Takes Amazon mail in from IMAP exactly once: per-folder cursors, batches, IDLE, reconnects, clean shutdown."""

from __future__ import annotations

import contextlib
import email
import email.header
import email.parser
import email.policy
import email.utils
import inspect
import logging
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import FrameType
from typing import Any, Protocol, TypeVar

from imapclient.exceptions import IMAPClientAbortError, IMAPClientError
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError

from pipeline.config import Settings
from pipeline.errors import FolderNotFoundError, LoginError, MailboxError, PipelineError, SecretError, StoreError
from pipeline.mailbox import TRANSIENT_ERRORS, HeaderSummary, Mailbox, connect
from pipeline.message import candidate_from_header_bytes, normalize_message_id
from pipeline.store import Store, message_key, utcnow
from pipeline.timing import stage

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
T = TypeVar("T")
Where = tuple[str, int]  # (folder, UIDVALIDITY)

# Whole messages are fetched this many at a time, so a stop request waits for one small fetch at most.
BODY_CHUNK = 20
# Headers beyond this many bytes are not looked at for the envelope (the body is kept whole anyway).
HEADER_LIMIT = 256 * 1024
# A refused login is retried after at least this long (then slower): never in a tight loop.
LOGIN_RETRY_MIN = 60.0
# After a missing folder, wait at least this long; after an error that is no network trouble, this long.
FOLDER_RETRY_MIN = 60.0
ERROR_RETRY_MIN = 5.0
# A message the server refuses to return is tried this often (pausing between) before it is recorded as failed.
UNREADABLE_ATTEMPTS = 3
UNREADABLE_PAUSE = 1.0
# A message fetching which made the server close the connection this often is recorded as failed.
HANGUP_STRIKES = 3
# poll_once reconnects at most this often in one run to get past such messages.
LOCK_RETRY = 10.0  # seconds a standby poller waits before trying to take the mailbox again
MAX_PASSES = 12


class Stages(Protocol):
    """What the poller hands new mail to: the claim desk (understand → playbook → drafts)."""

    def process_pending(self, now: datetime) -> tuple[int, int]:
        """Process every stored message not yet processed; return (done, failed).

        An implementation may also take a keyword `stop: Callable[[], bool]`; the poller then passes it, and
        the stage should return after the current message once it is true (SIGTERM must exit within 5 s).
        """

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
    """Exponential backoff with jitter (each wait between half and all of the current step), capped; reset
    after a good cycle."""

    base: float = 1.0
    cap: float = 300.0
    attempt: int = 0

    def next_delay(self, *, minimum: float = 0.0) -> float:
        """The next wait in seconds, growing with each failure, never below `minimum`."""
        # the exponent is bounded: a daemon that fails for days must not overflow a float
        ceiling = min(self.cap, self.base * 2.0 ** min(self.attempt, 64))
        self.attempt += 1
        return max(minimum, random.uniform(ceiling / 2, ceiling))

    def reset(self) -> None:
        """Back to short waits after a success."""
        self.attempt = 0


class Poller:
    """Ingests the watched folders into the store and runs the claim stages on what arrived."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        stages: Stages | None = None,
        *,
        clock: Clock = utcnow,
        stop: threading.Event | None = None,
        connector: Callable[[], Mailbox] | None = None,
        metrics: object | None = None,
        guard: Callable[[], bool] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.stages = stages
        self.clock = clock
        self.stop = stop or threading.Event()
        self._connect = connector or (lambda: connect(settings.imap))
        self.metrics = metrics
        # whether this process may write the mailbox now (pipeline.lock.MailboxLock.hold); asked before each cycle
        self.guard = guard
        self._standing_by = False
        self.last_success: float | None = None  # time.time() of the last complete cycle
        self._uidnext_seen: dict[str, int] = {}
        # messages the server would not return: the batches it hung up on, and per UID how often it did
        self._suspects: dict[Where, set[int]] = {}
        self._hangups: dict[tuple[str, int, int], int] = {}

    # --- one pass -------------------------------------------------------------------------------

    def poll_once(self) -> PollStats:
        """Connect, take in what is new in every watched folder, run the stages, log out.

        Network and server failures become MailboxError, database failures StoreError (one-line messages
        for the CLI); whatever was stored before the failure stays stored and is not taken again. When the
        server hangs up on a message it cannot read, the pass is repeated on a new connection until that
        message is isolated and recorded as failed (at most MAX_PASSES connections).
        """
        for _attempt in range(MAX_PASSES - 1):
            strikes = sum(self._hangups.values()) + sum(len(s) for s in self._suspects.values())
            try:
                return self._one_pass()
            except MailboxError:
                if sum(self._hangups.values()) + sum(len(s) for s in self._suspects.values()) == strikes:
                    raise  # not a message the server refuses: report it
                log.warning("the server closed the connection on a message it cannot read; reconnecting")
        return self._one_pass()

    def _one_pass(self) -> PollStats:
        mailbox = self._connect()
        host = self.settings.imap.host
        try:
            stats = self.cycle(mailbox)
        except PipelineError:
            mailbox.close()
            raise
        except TRANSIENT_ERRORS as exc:
            mailbox.abort()
            raise MailboxError(f"{host}: connection lost: {_describe(exc)}") from None
        except IMAPClientError as exc:
            mailbox.close()
            raise MailboxError(f"{host}: IMAP error: {_describe(exc)}") from None
        except SQLAlchemyError as exc:
            mailbox.close()
            raise StoreError(f"database error: {_describe(getattr(exc, 'orig', None) or exc)}") from None
        except BaseException:
            mailbox.abort()
            raise
        mailbox.close()
        return stats

    def cycle(self, mailbox: Mailbox) -> PollStats:
        """One pass on an open connection: ingest every folder, then process and act."""
        stats = PollStats()
        for folder in self.settings.imap.watched_folders:
            if self.stop.is_set():
                break
            stats.add(self.ingest_folder(mailbox, folder))
        if self.stages is not None and not self.stop.is_set():
            now = self.clock()
            stats.processed, stats.failed = self._process_pending(now)
            if not self.stop.is_set():
                self.stages.after_poll(mailbox, now)
        self.last_success = time.time()
        self._count("cycles")
        return stats

    def _process_pending(self, now: datetime) -> tuple[int, int]:
        """Run the processing stage; a stage that takes `stop` is told to stop early on SIGTERM."""
        assert self.stages is not None
        process = self.stages.process_pending
        try:
            takes_stop = "stop" in inspect.signature(process).parameters
        except (TypeError, ValueError):
            takes_stop = False
        if takes_stop:
            return process(now, stop=self.stop.is_set)  # type: ignore[call-arg]
        return process(now)

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
            else:
                if cursor is not None:
                    log.warning(
                        "folder %s: UIDVALIDITY changed (%s -> %s); re-scanning and matching by Message-ID",
                        folder,
                        cursor.uidvalidity,
                        state.uidvalidity,
                    )
                    self._count("uidvalidity_changes")
                # record the UIDVALIDITY at once (an empty folder too), so a later change is noticed
                self.store.set_cursor(session, account, folder, state.uidvalidity, 0)
        uids = mailbox.uids_after(last_uid)
        self._uidnext_seen[folder] = max(state.uidnext or 0, uids[-1] + 1 if uids else 0)
        for batch in _chunks(uids, self.settings.imap.batch_size):
            if self.stop.is_set():
                break
            self._ingest_batch(mailbox, account, folder, state.uidvalidity, batch, stats)
        return stats

    def _ingest_batch(
        self, mailbox: Mailbox, account: str, folder: str, uidvalidity: int, batch: Sequence[int], stats: PollStats
    ) -> None:
        """Headers of the whole batch, then bodies of the candidates in small chunks, each stored on its own."""
        where = (folder, uidvalidity)
        heads, unreadable = self._fetch_headers(mailbox, where, batch)
        stats.seen += len(heads) + len(unreadable)
        wanted = self._candidates(heads, stats, account, where)
        # in UID order, so the cursor (moved with each stored message) never passes one not yet stored
        todo: list[tuple[int, HeaderSummary | None]] = sorted(
            [(head.uid, head) for head in wanted] + [(uid, None) for uid in unreadable], key=lambda item: item[0]
        )
        for chunk in _chunks(todo, BODY_CHUNK):
            if self.stop.is_set():
                return
            raws, errors = self._fetch_bodies(mailbox, where, [uid for uid, head in chunk if head is not None])
            entries: list[tuple[int, bytes, dict[str, Any] | None, str | None]] = []
            for uid, head in chunk:
                if head is None:
                    # not even its headers could be read, so not whether it is Amazon's: keep a visible failed
                    # record rather than block the folder
                    key = f"unreadable:{account}/{folder}/{uidvalidity}/{uid}"
                    error = f"the IMAP server could not return this message's headers: {unreadable[uid]}"
                    entries.append((uid, b"", _unreadable(key), error))
                elif uid in raws:
                    entries.append((uid, raws[uid], None, None))
                elif uid in errors:
                    key = message_key(head.message_id, b"unreadable:%d:" % uid + head.header_bytes)
                    error = f"the IMAP server could not return this message: {errors[uid]}"
                    entries.append((uid, b"", _unreadable(key), error))
                # else: expunged meanwhile; nothing to store
            self._store_chunk(account, folder, uidvalidity, entries, stats)
        # every UID of the batch is stored, ignored, already known or gone
        with self.store.session() as session:
            self.store.set_cursor(session, account, folder, uidvalidity, batch[-1])
        log.debug("folder %s: batch done up to uid %s", folder, batch[-1])

    def _candidates(
        self, heads: list[HeaderSummary], stats: PollStats, account: str, where: Where
    ) -> list[HeaderSummary]:
        """The messages to fetch whole: Amazon's by their headers, not stored from this very place yet.

        A known Message-ID seen at another place (another folder, a new UIDVALIDITY) is fetched again: only its
        bytes tell a copy of a stored message from a different message that reuses the Message-ID, and
        Store.add_message decides which it is.
        """
        wanted: list[HeaderSummary] = []
        folder, uidvalidity = where
        amazons = []
        for summary in heads:
            if candidate_from_header_bytes(summary.header_bytes):
                amazons.append(summary)
            else:
                stats.ignored += 1
        if not amazons:
            return wanted
        with self.store.session() as session:
            stored = self.store.uids_stored_from(session, account, folder, uidvalidity, [s.uid for s in amazons])
        for summary in amazons:
            if summary.uid in stored:
                stats.known += 1
            else:
                wanted.append(summary)
        return wanted

    def _fetch_headers(
        self, mailbox: Mailbox, where: Where, uids: Sequence[int]
    ) -> tuple[list[HeaderSummary], dict[int, str]]:
        """Headers of the UIDs, isolating a message the server cannot read; see _fetch_each."""
        return self._fetch_each(
            mailbox, where, uids, mailbox.fetch_headers, lambda found: {head.uid: head for head in found}, "headers"
        )

    def _fetch_bodies(
        self, mailbox: Mailbox, where: Where, uids: Sequence[int]
    ) -> tuple[dict[int, bytes], dict[int, str]]:
        """Whole messages (BODY.PEEK[]), isolating a message the server cannot read; see _fetch_each."""
        found, errors = self._fetch_each(mailbox, where, uids, mailbox.fetch_raw, lambda found: found, "messages")
        return dict(found), errors

    def _fetch_each(
        self,
        mailbox: Mailbox,
        where: Where,
        uids: Sequence[int],
        fetch: Callable[[Sequence[int]], Any],
        by_uid: Callable[[Any], dict[int, Any]],
        what: str,
    ) -> tuple[Any, dict[int, str]]:
        """Fetch a batch at once; when the server refuses it, one by one, so one bad message is isolated.

        A server refuses a message it cannot read with NO (then it is retried UNREADABLE_ATTEMPTS times), or,
        like Dovecot, with BYE, closing the connection. A UID that made the server hang up HANGUP_STRIKES times
        is not asked for again. Either way it is returned with its error, to be recorded as failed; expunged
        UIDs are left out. Network trouble (EOF, timeouts) raises, as ever: the daemon reconnects and retries.
        """
        suspects = self._suspects.get(where, set())
        found: dict[int, Any] = {}
        if not suspects.intersection(uids):
            try:
                with stage("fetch", len(uids) if what == "messages" else 0):
                    found = by_uid(fetch(uids))
            except IMAPClientAbortError as exc:
                if _server_hung_up(exc):
                    self._suspects[where] = suspects | set(uids)
                raise
            except IMAPClientError as exc:
                log.warning("fetching %d %s failed (%s); trying them one by one", len(uids), what, _describe(exc))
        errors: dict[int, str] = {}
        for uid in uids:
            if uid in found:
                continue
            result, error = self._fetch_one(mailbox, where, uid, lambda u: by_uid(fetch([u])).get(u))
            if result is not None:
                found[uid] = result
            elif error is not None:
                errors[uid] = error
        return _unwrap(found, what), errors

    def _fetch_one(
        self, mailbox: Mailbox, where: Where, uid: int, fetch: Callable[[int], Any]
    ) -> tuple[Any, str | None]:
        """(result, None); (None, error) for a message that exists but cannot be read; (None, None) when gone."""
        strikes = self._hangups.get((*where, uid), 0)
        if strikes >= HANGUP_STRIKES:
            return None, f"the server closed the connection each time it was asked for it ({strikes} times)"
        error = "the server returned nothing for it"
        for attempt in range(UNREADABLE_ATTEMPTS):
            if attempt:
                self.stop.wait(UNREADABLE_PAUSE)
            try:
                result = fetch(uid)
                if result is not None:
                    return result, None
            except IMAPClientAbortError as exc:
                if _server_hung_up(exc):
                    self._hangups[(*where, uid)] = strikes + 1
                    log.warning(
                        "the server hung up when asked for uid %s of %s (%d of %d): %s",
                        uid,
                        where[0],
                        strikes + 1,
                        HANGUP_STRIKES,
                        _describe(exc),
                    )
                raise
            except IMAPClientError as exc:
                error = _describe(exc)
            if not mailbox.exists(uid):
                return None, None
        log.error("uid %s of %s cannot be read from the server (%s); recording it as failed", uid, where[0], error)
        return None, error

    def _store_chunk(
        self,
        account: str,
        folder: str,
        uidvalidity: int,
        entries: list[tuple[int, bytes, dict[str, Any] | None, str | None]],
        stats: PollStats,
    ) -> None:
        """Store a chunk of messages and move the cursor past the last, in one transaction: a crash stores all
        or none of them, and the cursor never passes one not stored. A chunk the database refuses is stored
        message by message (_store), so that one value it cannot hold fails only its own message."""
        if not entries:
            return
        with stage("store", len(entries)):
            prepared = [(uid, raw, _values(raw, values, error)) for uid, raw, values, error in entries]
        created: list[tuple[int, bool]] = []
        try:
            with stage("store", 0), self.store.session() as session:
                for uid, raw, values in prepared:
                    _id, new = self.store.add_message(
                        session, account=account, folder=folder, uidvalidity=uidvalidity, uid=uid, raw=raw, **values
                    )
                    created.append((uid, new))
                self.store.set_cursor(session, account, folder, uidvalidity, prepared[-1][0])
        except SQLAlchemyError as exc:
            if _database_unavailable(exc):
                raise
            for uid, raw, values in prepared:
                self._store(account, folder, uidvalidity, uid, raw, stats, values=values)
            return
        for uid, new in created:
            self._record_stored(uid, folder, new, stats)

    def _record_stored(self, uid: int, folder: str, created: bool, stats: PollStats) -> None:
        if created:
            stats.stored += 1
            self._count("messages_stored")
            log.info("stored message uid=%s folder=%s", uid, folder)
        else:
            stats.known += 1

    def _store(
        self,
        account: str,
        folder: str,
        uidvalidity: int,
        uid: int,
        raw: bytes,
        stats: PollStats,
        *,
        values: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        """Store one message and move the cursor to it, in one transaction.

        A message the database refuses as it is (a value it cannot hold) is stored as failed, with its raw bytes
        and the error, so it never blocks the folder; an unreachable database raises (the daemon retries).
        """
        values = _values(raw, values, error)
        try:
            with stage("store", 0):
                created = self._add(account, folder, uidvalidity, uid, raw, values)
        except SQLAlchemyError as exc:
            if _database_unavailable(exc):
                raise
            problem = _describe(getattr(exc, "orig", None) or exc)
            log.error(
                "uid %s in %s cannot be stored as parsed (%s); keeping its raw bytes as failed", uid, folder, problem
            )
            created = self._add(
                account,
                folder,
                uidvalidity,
                uid,
                raw,
                {
                    "message_key": values["message_key"],
                    "sender": "",
                    "subject": "",
                    "sent_at": None,
                    "status": "failed",
                    "error": f"could not be stored: {problem}"[:4000],
                },
            )
        self._record_stored(uid, folder, created, stats)

    def _add(self, account: str, folder: str, uidvalidity: int, uid: int, raw: bytes, values: dict[str, Any]) -> bool:
        with self.store.session() as session:
            _id, created = self.store.add_message(
                session, account=account, folder=folder, uidvalidity=uidvalidity, uid=uid, raw=raw, **values
            )
            self.store.set_cursor(session, account, folder, uidvalidity, uid)
        return created

    # --- the daemon -----------------------------------------------------------------------------

    def run(self, *, install_signals: bool = True) -> None:
        """Poll until stopped: IDLE when the server has it, else every poll_interval; reconnect with backoff."""
        previous = self._install_signal_handlers() if install_signals else {}
        try:
            self._run()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _run(self) -> None:
        backoff = Backoff()
        login_backoff = Backoff(base=LOGIN_RETRY_MIN, cap=900.0)
        while not self.stop.is_set():
            if not self._may_write():
                self.stop.wait(LOCK_RETRY)
                continue
            try:
                mailbox = self._connect()
            except (LoginError, SecretError) as exc:
                delay = login_backoff.next_delay(minimum=LOGIN_RETRY_MIN)
                log.error("login failed: %s; retrying in %.0f s", exc, delay)
                self._count("login_failures")
                self.stop.wait(delay)
                continue
            except (MailboxError, *TRANSIENT_ERRORS, IMAPClientError) as exc:
                delay = backoff.next_delay()
                log.warning("cannot connect: %s; retrying in %.1f s", _describe(exc), delay)
                self._count("reconnects")
                self.stop.wait(delay)
                continue
            login_backoff.reset()
            delay = 0.0
            healthy = True
            try:
                self._serve(mailbox, backoff)
            except FolderNotFoundError as exc:
                delay = backoff.next_delay(minimum=FOLDER_RETRY_MIN)
                log.error("%s; retrying in %.0f s", exc, delay)
            except (*TRANSIENT_ERRORS, MailboxError) as exc:  # type: ignore[misc]  # a tuple of exception types
                healthy = False
                delay = backoff.next_delay()
                log.warning("connection lost: %s; reconnecting in %.1f s", _describe(exc), delay)
                self._count("reconnects")
            except Exception as exc:
                # an IMAP protocol error (a NO/BAD answer), a database outage or a bug in one cycle:
                # keep the daemon alive, and do not hammer
                delay = backoff.next_delay(minimum=ERROR_RETRY_MIN)
                log.exception("poll cycle failed: %s; retrying in %.1f s", _describe(exc), delay)
                self._count("reconnects")
            finally:
                if healthy:
                    mailbox.close()
                else:
                    mailbox.abort()
            if delay:
                self.stop.wait(delay)
        log.info("stopped")

    def _serve(self, mailbox: Mailbox, backoff: Backoff) -> None:
        idle = mailbox.has("IDLE")
        log.info("connected to %s (%s)", self.settings.imap.host, "IDLE" if idle else "polling")
        while not self.stop.is_set():
            if not self._may_write():
                return  # another poller took the mailbox: log out and stand by
            stats = self.cycle(mailbox)
            backoff.reset()
            if stats.stored or stats.failed:
                log.info("poll: %d stored, %d processed, %d failed", stats.stored, stats.processed, stats.failed)
            if self.stop.is_set():
                break
            if idle:
                self._idle(mailbox)
            else:
                self.stop.wait(self.settings.imap.poll_interval)
                if not self.stop.is_set():
                    mailbox.noop()

    def _may_write(self) -> bool:
        """Whether this process holds the mailbox now (always, without a guard); says so when that changes."""
        if self.guard is None:
            return True
        held = self.guard()
        if held == self._standing_by:  # a change
            if held:
                log.info("took the mailbox %s: polling", self.settings.imap.username)
            else:
                log.warning("another poller holds the mailbox %s: standing by", self.settings.imap.username)
        self._standing_by = not held
        return held

    def _idle(self, mailbox: Mailbox) -> None:
        """Wait in IDLE on the first watched folder until news, renewal time, the next due cycle, or stop."""
        imap = self.settings.imap
        folder = imap.watched_folders[0]
        state = mailbox.select(folder)
        if state.uidnext is not None and state.uidnext > self._uidnext_seen.get(folder, state.uidnext):
            return  # mail arrived after the cycle looked; IDLE would not announce it again
        wait = imap.idle_renew
        if len(imap.watched_folders) > 1:
            # the other folders have no IDLE of their own; they are re-read at least every poll_interval
            wait = min(wait, imap.poll_interval)
        if self.last_success is not None:
            # deadline checks run each cycle: make sure one happens at least every poll_interval
            wait = min(wait, imap.poll_interval - (time.time() - self.last_success))
        if wait > 0:
            mailbox.wait_for_news(wait, should_stop=self.stop.is_set)

    def _install_signal_handlers(self) -> dict[int, Any]:
        def handle(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s: finishing the current message and stopping", signal.Signals(signum).name)
            self.stop.set()

        previous: dict[int, Any] = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, handle)
        return previous

    def _count(self, name: str) -> None:
        if self.metrics is not None:
            self.metrics.inc(name)  # type: ignore[attr-defined]


def _unreadable(key: str) -> dict[str, Any]:
    """The stored values of a message the server would not return: its key and nothing else."""
    return {"message_key": key, "sender": "", "subject": "", "sent_at": None}


def _values(raw: bytes, values: dict[str, Any] | None, error: str | None) -> dict[str, Any]:
    """What is stored beside a message's bytes: its envelope (or the values given), and its error if it failed."""
    found = dict(values or envelope(raw))
    if error is not None:
        found.update(status="failed", error=error[:4000])
    return found


def envelope(raw: bytes) -> dict[str, object]:
    """Message key, sender, subject and Date of raw bytes, best effort (full parsing is a later stage).

    Never raises: whatever cannot be read is left empty, and the key falls back to a hash of the bytes.
    """
    message_id = None
    sender = subject = ""
    sent_at = None
    parsed = None
    with contextlib.suppress(Exception):
        head = raw[:HEADER_LIMIT]
        end = min((i for i in (head.find(b"\r\n\r\n"), head.find(b"\n\n")) if i >= 0), default=len(head))
        # the header block alone: parsing the body too would cost more than all the rest of storing it
        parsed = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head[: end + 4])
    if parsed is not None:
        with contextlib.suppress(Exception):
            message_id = normalize_message_id(parsed.get("Message-ID"))
        with contextlib.suppress(Exception):
            sender = email.utils.parseaddr(str(parsed.get("From") or ""))[1][:320]
        with contextlib.suppress(Exception):
            subject = str(parsed.get("Subject") or "")
            subject = str(email.header.make_header(email.header.decode_header(subject)))
        with contextlib.suppress(Exception):
            when = email.utils.parsedate_to_datetime(str(parsed.get("Date"))) if parsed.get("Date") else None
            if when is not None:
                sent_at = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
    return {
        "message_key": message_key(message_id, raw),
        "sender": sender,
        "subject": subject[:2000],
        "sent_at": sent_at,
    }


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), max(1, size)):
        yield items[start : start + size]


def _describe(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__).replace("\r", " ").replace("\n", " ")[:300]


def _unwrap(found: dict[int, Any], what: str) -> Any:
    """Headers come back as a list in UID order, bodies as a dict."""
    return [found[uid] for uid in sorted(found)] if what == "headers" else found


def _server_hung_up(exc: IMAPClientAbortError) -> bool:
    """True when the server itself ended the connection with BYE (a refusal), not the network (EOF, reset)."""
    text = str(exc).lower()
    return "socket error" not in text and "eof" not in text and "timed out" not in text


def _database_unavailable(exc: SQLAlchemyError) -> bool:
    """True when the database cannot be reached or is locked (worth retrying), not when it refuses one value."""
    return isinstance(exc, OperationalError | InterfaceError) or bool(getattr(exc, "connection_invalidated", False))
