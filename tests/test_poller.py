"""The poller against the throwaway Dovecot: every Amazon message taken in exactly once, whatever happens."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from imapclient import IMAPClient
from sqlalchemy import select

from pipeline.config import Settings
from pipeline.errors import FolderNotFoundError, MailboxError
from pipeline.mailbox import Mailbox, connect
from pipeline.poller import LOGIN_RETRY_MIN, Backoff, Poller
from pipeline.schema import MailboxCursor, StoredMessage
from pipeline.store import Store
from pipeline.testing.dovecot import MailUser, ThrowawayDovecot

DATA = Path(__file__).parent / "data" / "poller"
PIPELINE = Path(sys.executable).with_name("pipeline")
MakeSettings = Callable[..., Settings]

CLAIM_ID = "<0100019d9801c2a4-7e1f0c55-4b1a-4c1e-9d0e-2b7f5a1c9e40-000000@email.amazonses.com>"
BUYER_ID = "<0100019da2b7e011-5c4e8f1d-88aa-4d0b-a3b5-91f0c2d7e6aa-000000@email.amazonses.com>"
MALFORMED_ID = "<0100019dbroken-0000-4bad-mime-000000@email.amazonses.com>"
NEWSLETTER_ID = "<weekly-2026-07.4471@shipping-weekly.example>"


# --- helpers -----------------------------------------------------------------------------------------


def eml(name: str) -> bytes:
    return (DATA / name).read_bytes()


def amazon_claim(n: int, *, with_message_id: bool = True, filler: int = 0) -> bytes:
    """A small A-to-z claim notification numbered n (Message-ID <claim-n@email.amazonses.com>)."""
    order = f"113-{n:07d}-{(n * 7919) % 10_000_000:07d}"
    headers = [
        f"Date: Tue, 10 Feb 2026 {n % 24:02d}:{n % 60:02d}:12 -0800",
        'From: "Amazon A-to-z Guarantee" <atoz-guarantee-no-reply@amazon.com>',
        "To: orders@kestrel-outdoor.example",
    ]
    if with_message_id:
        headers.append(f"Message-ID: <claim-{n}@email.amazonses.com>")
    headers += [
        f"Subject: Claim received on order {order}",
        "MIME-Version: 1.0",
        "X-Space-Notification-Type: A_Z_CLAIM_RESPONDENT_NOTIFY",
        "X-Marketplace-ID: ATVPDKIKX0DER",
        'Content-Type: text/plain; charset="utf-8"',
    ]
    body = (
        f"Hello,\n\nWe have received an A-to-z Guarantee claim from a buyer for order {order}.\n\n"
        "Reason: Item not received\nPlease respond within 7 days.\n\nAmazon Services\n"
    )
    body += "".join(f"Reference line {i} of the claim history for order {order}.\n" for i in range(filler))
    return ("\r\n".join(headers) + "\r\n\r\n" + body.replace("\n", "\r\n")).encode()


def newsletter(n: int) -> bytes:
    return (
        f"From: news@shipping-weekly.example\r\nMessage-ID: <news-{n}@shipping-weekly.example>\r\n"
        f"Subject: Weekly tips {n}\r\n\r\nNot from Amazon.\r\n"
    ).encode()


def stored(store: Store) -> dict[str, StoredMessage]:
    with store.session() as session:
        return {row.message_key: row for row in session.scalars(select(StoredMessage))}


def cursor_of(store: Store, folder: str = "INBOX") -> MailboxCursor | None:
    with store.session() as session:
        return session.scalars(select(MailboxCursor).where(MailboxCursor.folder == folder)).one_or_none()


def server_messages(imap: IMAPClient, folder: str = "INBOX") -> dict[int, dict[bytes, Any]]:
    """Every message of a folder as the server has it: UID -> BODY[] and FLAGS (read-only, with PEEK)."""
    imap.select_folder(folder, readonly=True)
    uids = imap.search("ALL")
    return imap.fetch(uids, [b"BODY.PEEK[]", b"FLAGS"]) if uids else {}


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll `condition` until true; return the seconds it took, fail after `timeout`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)
    return time.monotonic() - started


class Probe:
    """A connector that counts connections, records body fetches and tells when the daemon sits in IDLE."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.connections = 0
        self.body_fetches: list[int] = []
        self.idling = threading.Event()

    def connect(self) -> Mailbox:
        box = connect(self.settings.imap)
        self.connections += 1
        return ProbedMailbox(box.client, box.settings, self)


class ProbedMailbox(Mailbox):
    def __init__(self, client: IMAPClient, settings: Any, probe: Probe) -> None:
        super().__init__(client, settings)
        self.probe = probe

    def fetch_raw(self, uids: Any) -> dict[int, bytes]:
        self.probe.body_fetches += list(uids)
        return super().fetch_raw(uids)

    def wait_for_news(self, seconds: float, should_stop: Callable[[], bool] | None = None) -> bool:
        self.probe.idling.set()
        try:
            return super().wait_for_news(seconds, should_stop)
        finally:
            self.probe.idling.clear()


@contextlib.contextmanager
def daemon(poller: Poller) -> Iterator[threading.Thread]:
    """Poller.run in a thread; stopped (and checked to have stopped) at the end."""
    thread = threading.Thread(target=poller.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        poller.stop.set()
        thread.join(10)
        assert not thread.is_alive(), "the daemon did not stop within 10 s of the stop event"


class CuttingProxy:
    """A TCP proxy to Dovecot that cuts its first connection `cut_after` bytes into the first BODY.PEEK[] answer."""

    def __init__(self, target_port: int, cut_after: int) -> None:
        self.target_port = target_port
        self.cut_after = cut_after
        self.connections = 0
        self.cuts = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._sockets += [client, upstream]
            state = {"armed": self.connections == 1, "fetching": False, "sent": 0}
            threading.Thread(target=self._pump_up, args=(client, upstream, state), daemon=True).start()
            threading.Thread(target=self._pump_down, args=(upstream, client, state), daemon=True).start()

    def _pump_up(self, client: socket.socket, upstream: socket.socket, state: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                if state["armed"] and b"BODY.PEEK[]" in data:
                    state["fetching"] = True
                upstream.sendall(data)
        self._close(client, upstream)

    def _pump_down(self, upstream: socket.socket, client: socket.socket, state: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            while data := upstream.recv(65536):
                if state["fetching"]:
                    room = self.cut_after - state["sent"]
                    if len(data) >= room:
                        client.sendall(data[:room])
                        self.cuts += 1
                        break
                    state["sent"] += len(data)
                client.sendall(data)
        self._close(client, upstream)

    @staticmethod
    def _close(*sockets: socket.socket) -> None:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def close(self) -> None:
        self._closed = True
        self._close(self._server, *self._sockets)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/pipeline.db"


@pytest.fixture
def settings(make_settings: MakeSettings, sqlite_url: str) -> Settings:
    return make_settings(sqlite_url)


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    store = Store(settings.database.url)
    try:
        yield store
    finally:
        store.dispose()


def _with_imap(settings: Settings, **changes: Any) -> Settings:
    return replace(settings, imap=replace(settings.imap, **changes))


# --- one pass ----------------------------------------------------------------------------------------


def test_amazon_mail_is_stored_once_and_the_mailbox_is_left_untouched(
    make_settings: MakeSettings, db_url: str, imap: IMAPClient
) -> None:
    for name in ("claim_received.eml", "newsletter.eml", "malformed_amazon.eml", "buyer_message.eml"):
        imap.append("INBOX", eml(name))
    before = server_messages(imap)
    uid_of = {
        name: uid for name, uid in zip(("claim", "newsletter", "malformed", "buyer"), sorted(before), strict=True)
    }
    settings = make_settings(db_url)
    store = Store(db_url)
    try:
        probe = Probe(settings)
        stats = Poller(settings, store, connector=probe.connect).poll_once()
        assert (stats.seen, stats.stored, stats.ignored, stats.known) == (4, 3, 1, 0)

        rows = stored(store)
        assert set(rows) == {CLAIM_ID, BUYER_ID, MALFORMED_ID}, "exactly the Amazon messages, once each"
        assert NEWSLETTER_ID not in rows
        assert uid_of["newsletter"] not in probe.body_fetches, "non-Amazon mail must not even be downloaded"
        for key, name in ((CLAIM_ID, "claim"), (BUYER_ID, "buyer"), (MALFORMED_ID, "malformed")):
            row = rows[key]
            assert row.raw == before[uid_of[name]][b"BODY[]"], f"{name}: raw bytes not kept as the server has them"
            assert (row.folder, row.uid, row.status) == ("INBOX", uid_of[name], "pending")
        assert rows[CLAIM_ID].sender == "atoz-guarantee-no-reply@amazon.com"
        assert rows[CLAIM_ID].subject == "Action required: Claim received on order 113-4417820-6605031"
        assert rows[BUYER_ID].sender.endswith("@marketplace.amazon.com")
        cursor = cursor_of(store)
        assert cursor is not None and cursor.last_uid == max(before)

        after = server_messages(imap)
        assert sorted(after) == sorted(before), "a message was moved or deleted"
        for uid, data in after.items():
            assert b"\\Seen" not in data[b"FLAGS"], f"uid {uid} was marked \\Seen: {data[b'FLAGS']}"
            assert data[b"BODY[]"] == before[uid][b"BODY[]"]
        for folder in ("Drafts", "Sent", "Trash"):
            assert server_messages(imap, folder) == {}, f"something appeared in {folder}"

        again = Poller(settings, store).poll_once()
        assert (again.seen, again.stored) == (0, 0), "a second poll must find nothing new"
        assert len(stored(store)) == 3

        imap.append("INBOX", amazon_claim(1))
        later = Poller(settings, store).poll_once()
        assert (later.seen, later.stored) == (1, 1)
        assert len(stored(store)) == 4
    finally:
        store.dispose()


def test_a_malformed_message_between_good_ones_is_kept_and_passed(
    make_settings: MakeSettings, db_url: str, imap: IMAPClient
) -> None:
    imap.append("INBOX", amazon_claim(1))
    imap.append("INBOX", eml("malformed_amazon.eml"))
    imap.append("INBOX", amazon_claim(2))
    imap.append("INBOX", amazon_claim(3, with_message_id=False))
    on_server = server_messages(imap)
    settings = make_settings(db_url)
    store = Store(db_url)
    try:
        stats = Poller(settings, store).poll_once()
        assert stats.stored == 4
        rows = stored(store)
        malformed = rows[MALFORMED_ID]
        assert malformed.raw == on_server[malformed.uid][b"BODY[]"]  # kept byte for byte for reprocessing
        assert malformed.status in ("pending", "failed")
        assert malformed.sender == "atoz-guarantee-no-reply@amazon.com"
        assert "\x00" not in malformed.subject
        assert {"<claim-1@email.amazonses.com>", "<claim-2@email.amazonses.com>"} <= set(rows)
        hashed = [key for key in rows if key.startswith("sha256:")]
        assert len(hashed) == 1, "the message without Message-ID is keyed by a hash of its bytes"
        cursor = cursor_of(store)
        assert cursor is not None and cursor.last_uid == max(on_server), "the cursor did not pass the bad message"
    finally:
        store.dispose()


def test_uidvalidity_change_rescans_without_duplicates(
    make_settings: MakeSettings, db_url: str, dovecot: ThrowawayDovecot, mail_user: MailUser, imap: IMAPClient
) -> None:
    imap.append("INBOX", amazon_claim(1))
    imap.append("INBOX", newsletter(1))
    imap.append("INBOX", amazon_claim(2, with_message_id=False))
    settings = make_settings(db_url)
    store = Store(db_url)
    try:
        assert Poller(settings, store).poll_once().stored == 2
        old = cursor_of(store)
        assert old is not None

        dovecot.set_uidvalidity(mail_user.username, "INBOX", old.uidvalidity + 1000)
        probe = Probe(settings)
        stats = Poller(settings, store, connector=probe.connect).poll_once()
        assert stats.stored == 0, "messages taken twice after the UIDVALIDITY change"
        assert stats.known == 2
        new = cursor_of(store)
        assert new is not None and new.uidvalidity == old.uidvalidity + 1000
        # after a UIDVALIDITY change every Amazon message is re-read: only its bytes tell a copy from a different
        # message reusing a Message-ID; the newsletter's headers are enough to leave it alone
        assert len(probe.body_fetches) == 2

        imap.append("INBOX", amazon_claim(3))
        stats = Poller(settings, store).poll_once()
        assert stats.stored == 1, "mail arriving after the change was missed"
        assert len(stored(store)) == 3
    finally:
        store.dispose()


def test_a_rebuilt_folder_with_new_uids_is_matched_by_message_id(
    settings: Settings, store: Store, imap: IMAPClient
) -> None:
    """A folder deleted and re-created (new UIDVALIDITY, UIDs from 1 again, below the old cursor)."""
    imap.create_folder("Amazon")
    for n in range(1, 6):
        imap.append("Amazon", amazon_claim(n))
    settings = _with_imap(settings, folders=("INBOX", "Amazon"))
    assert Poller(settings, store).poll_once().stored == 5
    imap.delete_folder("Amazon")
    imap.create_folder("Amazon")
    for n in (4, 5, 6):  # the client re-uploads part of the old mail, plus one new message
        imap.append("Amazon", amazon_claim(n))
    imap.append("INBOX", amazon_claim(7))
    stats = Poller(settings, store).poll_once()
    assert (stats.stored, stats.known) == (2, 2)
    assert set(stored(store)) == {f"<claim-{n}@email.amazonses.com>" for n in range(1, 8)}


def test_several_folders_and_a_copy_in_each(settings: Settings, store: Store, imap: IMAPClient) -> None:
    imap.create_folder("Amazon")
    imap.append("INBOX", amazon_claim(1))
    imap.append("Amazon", amazon_claim(1))  # a server-side rule copied it
    imap.append("Amazon", amazon_claim(2))
    stats = Poller(settings=_with_imap(settings, folders=("INBOX", "Amazon")), store=store).poll_once()
    assert (stats.stored, stats.known) == (2, 1)
    assert stats.folders == ["INBOX", "Amazon"]
    assert stored(store)["<claim-2@email.amazonses.com>"].folder == "Amazon"
    assert cursor_of(store, "Amazon") is not None


def test_a_missing_folder_is_a_clear_error(settings: Settings, store: Store) -> None:
    with pytest.raises(FolderNotFoundError, match="folder 'Amazon' does not exist"):
        Poller(_with_imap(settings, folders=("INBOX", "Amazon")), store).poll_once()


def test_a_message_the_server_cannot_read_does_not_block_the_folder(
    settings: Settings,
    store: Store,
    dovecot: ThrowawayDovecot,
    mail_user: MailUser,
    imap: IMAPClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A file Dovecot cannot read: it answers the FETCH with BYE and hangs up, every time."""
    import pipeline.poller

    monkeypatch.setattr(pipeline.poller, "UNREADABLE_PAUSE", 0.05)
    for n in (1, 2, 3):
        imap.append("INBOX", amazon_claim(n))
    maildir = dovecot.workdir / "home" / mail_user.username / "Maildir"
    files = [p for p in maildir.glob("*/*") if p.is_file() and b"<claim-2@" in p.read_bytes()]
    assert len(files) == 1
    files[0].chmod(0)
    try:
        stats = Poller(settings, store).poll_once()
    finally:
        files[0].chmod(0o600)
    rows = stored(store)
    assert {"<claim-1@email.amazonses.com>", "<claim-3@email.amazonses.com>"} <= set(rows)
    failed = [row for row in rows.values() if row.status == "failed"]
    assert len(failed) == 1 and "could not return" in (failed[0].error or ""), [r.error for r in rows.values()]
    assert stats.stored == 3
    cursor = cursor_of(store)
    assert cursor is not None and cursor.last_uid == 3


def test_poll_once_reports_a_dropped_connection_and_the_next_run_completes(
    dovecot: ThrowawayDovecot, settings: Settings, store: Store, imap: IMAPClient
) -> None:
    imap.multiappend("INBOX", [amazon_claim(n, filler=40) for n in range(1, 31)])
    proxy = CuttingProxy(dovecot.port, cut_after=20_000)
    try:
        via_proxy = _with_imap(settings, port=proxy.port)
        with pytest.raises(MailboxError, match="connection lost"):
            Poller(via_proxy, store).poll_once()
        assert proxy.cuts == 1
        first = len(stored(store))
        assert first < 30
        stats = Poller(via_proxy, store).poll_once()
        assert stats.stored == 30 - first
        assert len(stored(store)) == 30
    finally:
        proxy.close()


# --- the daemon --------------------------------------------------------------------------------------


def test_daemon_reconnects_after_the_connection_drops_mid_fetch(
    dovecot: ThrowawayDovecot, settings: Settings, store: Store, imap: IMAPClient
) -> None:
    messages = [amazon_claim(n, filler=40) for n in range(1, 61)]  # ~4 kB each: the cut lands inside a fetch
    imap.multiappend("INBOX", messages)
    proxy = CuttingProxy(dovecot.port, cut_after=30_000)
    try:
        poller = Poller(_with_imap(settings, port=proxy.port), store)
        with daemon(poller):
            wait_until(lambda: len(stored(store)) == 60, 15, "all 60 messages after the cut")
        assert proxy.cuts == 1, "the connection was not cut during the fetch"
        assert proxy.connections >= 2, "the daemon did not reconnect"
        rows = stored(store)
        assert set(rows) == {f"<claim-{n}@email.amazonses.com>" for n in range(1, 61)}
        on_server = server_messages(imap)
        assert all(row.raw == on_server[row.uid][b"BODY[]"] for row in rows.values()), "a half-read message"
    finally:
        proxy.close()


def test_daemon_stores_new_mail_within_two_seconds_with_idle(
    settings: Settings, store: Store, imap: IMAPClient
) -> None:
    imap.append("INBOX", amazon_claim(1))
    probe = Probe(settings)
    poller = Poller(settings, store, connector=probe.connect)
    latencies = []
    with daemon(poller):
        wait_until(lambda: len(stored(store)) == 1 and probe.idling.is_set(), 10, "the daemon to sit in IDLE")
        for n in (2, 3, 4):
            wait_until(probe.idling.is_set, 10, "the daemon to sit in IDLE again")
            time.sleep(0.2)  # well inside the IDLE, not at its start
            started = time.monotonic()
            imap.append("INBOX", amazon_claim(n))
            wait_until(lambda n=n: f"<claim-{n}@email.amazonses.com>" in stored(store), 10, f"claim {n}")
            latencies.append(time.monotonic() - started)
    print(f"IDLE latencies: {', '.join(f'{x:.3f} s' for x in latencies)}")
    assert max(latencies) < 2.0, f"new mail stored after {max(latencies):.2f} s (all: {latencies})"
    assert probe.connections == 1


def test_daemon_reconnects_after_a_kick_during_idle(
    dovecot: ThrowawayDovecot, mail_user: MailUser, settings: Settings, store: Store, imap: IMAPClient
) -> None:
    imap.append("INBOX", amazon_claim(1))
    probe = Probe(settings)
    poller = Poller(settings, store, connector=probe.connect)
    with daemon(poller):
        wait_until(lambda: len(stored(store)) == 1 and probe.idling.is_set(), 10, "the daemon to sit in IDLE")
        imap.logout()  # the kick below hits every session of the user; the test's own one goes first
        assert dovecot.kick(mail_user.username)
        wait_until(lambda: probe.connections >= 2, 10, "a reconnect after the kick")
        with IMAPClient(dovecot.host, port=dovecot.port, ssl=False) as other:
            other.login(mail_user.username, mail_user.password)
            other.append("INBOX", amazon_claim(2))
            other.append("INBOX", amazon_claim(1))  # a copy of a known message
            other.logout()
        wait_until(lambda: len(stored(store)) == 2, 10, "the message appended after the reconnect")
        time.sleep(0.3)
    assert set(stored(store)) == {"<claim-1@email.amazonses.com>", "<claim-2@email.amazonses.com>"}


def test_daemon_stops_promptly_from_idle(settings: Settings, store: Store) -> None:
    probe = Probe(settings)
    poller = Poller(settings, store, connector=probe.connect)
    thread = threading.Thread(target=poller.run, kwargs={"install_signals": False})
    thread.start()
    try:
        wait_until(probe.idling.is_set, 10, "the daemon to sit in IDLE")
        started = time.monotonic()
        poller.stop.set()
        thread.join(5)
        assert not thread.is_alive()
        assert time.monotonic() - started < 2
    finally:
        poller.stop.set()
        thread.join(5)


class SlowStages:
    """A processing stage that takes 5 s for its backlog unless told to stop (the Stages protocol, with `stop`)."""

    def __init__(self) -> None:
        self.processing = threading.Event()
        self.stopped_after: int | None = None
        self.after_polls = 0

    def process_pending(self, now: Any, stop: Callable[[], bool] | None = None) -> tuple[int, int]:
        self.processing.set()
        for done in range(100):
            if stop is not None and stop():
                self.stopped_after = done
                return done, 0
            time.sleep(0.05)
        return 100, 0

    def after_poll(self, mailbox: Mailbox, now: Any) -> None:
        self.after_polls += 1


class PlainStages:
    """The protocol without `stop`: still called the old way."""

    def __init__(self) -> None:
        self.calls = 0

    def process_pending(self, now: Any) -> tuple[int, int]:
        self.calls += 1
        return 2, 1

    def after_poll(self, mailbox: Mailbox, now: Any) -> None:
        assert mailbox.select("INBOX").uidvalidity > 0  # the stages get a usable connection


def test_stop_reaches_a_processing_stage_that_takes_it(settings: Settings, store: Store, imap: IMAPClient) -> None:
    imap.append("INBOX", amazon_claim(1))
    stages = SlowStages()
    poller = Poller(settings, store, stages)
    thread = threading.Thread(target=poller.run, kwargs={"install_signals": False})
    thread.start()
    try:
        wait_until(stages.processing.is_set, 10, "processing to start")
        started = time.monotonic()
        poller.stop.set()
        thread.join(5)
        assert time.monotonic() - started < 1.0
        assert stages.stopped_after is not None and stages.stopped_after < 100
        assert stages.after_polls == 0, "drafts and escalation must not start once stopping"
    finally:
        poller.stop.set()
        thread.join(5)


def test_a_stage_without_stop_is_called_as_before(settings: Settings, store: Store) -> None:
    stages = PlainStages()
    stats = Poller(settings, store, stages).poll_once()
    assert stages.calls == 1 and (stats.processed, stats.failed) == (2, 1)


class RecordingStop(threading.Event):
    """A stop event whose wait() returns at once, records the delay asked for, and stops after `limit` waits."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(float(timeout or 0))
        if len(self.waits) >= self.limit:
            self.set()
        return self.is_set()


def test_a_refused_login_is_retried_slowly(
    settings: Settings, store: Store, monkeypatch: pytest.MonkeyPatch, imap_password_env: str
) -> None:
    monkeypatch.setenv(imap_password_env, "wrong")
    attempts = []

    def connector() -> Mailbox:
        attempts.append(time.monotonic())
        return connect(settings.imap)

    stop = RecordingStop(limit=3)
    Poller(settings, store, connector=connector, stop=stop).run(install_signals=False)
    assert len(attempts) == 3
    assert all(delay >= LOGIN_RETRY_MIN for delay in stop.waits), stop.waits
    assert stop.waits[-1] > stop.waits[0]  # and slower and slower


def test_an_unreachable_server_is_retried_with_growing_delays(settings: Settings, store: Store) -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    stop = RecordingStop(limit=12)
    Poller(_with_imap(settings, port=port), store, stop=stop).run(install_signals=False)
    for attempt, delay in enumerate(stop.waits):
        step = min(300.0, 2.0**attempt)
        assert step / 2 <= delay <= step, (attempt, delay)


def test_a_missing_folder_is_retried_slowly_by_the_daemon(settings: Settings, store: Store) -> None:
    stop = RecordingStop(limit=2)
    Poller(_with_imap(settings, folders=("Amazon",)), store, stop=stop).run(install_signals=False)
    assert all(delay >= 60 for delay in stop.waits), stop.waits


def test_backoff_grows_with_jitter_is_capped_and_resets() -> None:
    backoff = Backoff(base=1.0, cap=300.0)
    delays = [backoff.next_delay() for _ in range(12)]
    for attempt, delay in enumerate(delays):
        step = min(300.0, 2.0**attempt)
        assert step / 2 <= delay <= step
    assert len({round(d, 6) for d in delays[9:]}) > 1, "no jitter: daemons would reconnect in lockstep"
    for _ in range(5000):  # days of failures must not overflow
        assert backoff.next_delay() <= 300.0
    backoff.reset()
    assert backoff.next_delay() <= 1.0
    assert Backoff(base=60.0, cap=900.0).next_delay(minimum=LOGIN_RETRY_MIN) >= 60.0


# --- the real command: SIGTERM and SIGKILL while busy ------------------------------------------------


def _write_config(tmp_path: Path, dovecot: ThrowawayDovecot, user: MailUser, env_name: str) -> Path:
    config = tmp_path / "pipeline.toml"
    config.write_text(
        f'[imap]\nhost = "127.0.0.1"\nport = {dovecot.port}\nsecurity = "plain"\nusername = "{user.username}"\n'
        f'password_env = "{env_name}"\ntimeout = 10\nbatch_size = 100\n'
        f'[database]\nurl = "sqlite:///{tmp_path}/pipeline.db"\n'
        '[seller]\nstore_name = "Kestrel Outdoor"\nfrom_address = "orders@kestrel-outdoor.example"\n'
        "[drafts]\nenabled = false\n"
    )
    return config


def _start_daemon(config: Path, log: Path) -> subprocess.Popen[bytes]:
    assert PIPELINE.exists(), f"console script not installed at {PIPELINE}"
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(PIPELINE), "--config", str(config), "--log-level", "INFO", "poll"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _consistent(store: Store, imap: IMAPClient, amazon_ids: dict[int, str]) -> int:
    """The cursor never points past an unstored Amazon message; what is stored is whole. Returns stored count."""
    rows = stored(store)
    cursor = cursor_of(store)
    last = cursor.last_uid if cursor else 0
    missing = [uid for uid, key in amazon_ids.items() if uid <= last and key not in rows]
    assert not missing, f"cursor at {last} but Amazon UIDs {missing[:5]} were never stored"
    on_server = server_messages(imap)
    assert all(row.raw == on_server[row.uid][b"BODY[]"] for row in rows.values()), "a half-written message"
    return len(rows)


@pytest.fixture
def busy_mailbox(imap: IMAPClient) -> dict[int, str]:
    """300 Amazon messages (with a newsletter every tenth): UID -> Message-ID of the Amazon ones."""
    messages = []
    for n in range(1, 301):
        messages.append(amazon_claim(n, filler=10))
        if n % 10 == 0:
            messages.append(newsletter(n))
    imap.multiappend("INBOX", messages)
    imap.select_folder("INBOX", readonly=True)
    heads = imap.fetch(imap.search("ALL"), [b"BODY.PEEK[HEADER.FIELDS (MESSAGE-ID FROM)]"])
    ids = {}
    for uid, data in heads.items():
        header = next(v for k, v in data.items() if k.startswith(b"BODY[HEADER"))
        if b"amazon.com" in header:
            ids[uid] = header.split(b"Message-ID: ", 1)[1].split(b"\r\n", 1)[0].decode()
    assert len(ids) == 300
    return ids


def _stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


@pytest.mark.slow
def test_sigterm_while_busy_exits_cleanly_and_nothing_is_half_written(
    dovecot: ThrowawayDovecot,
    mail_user: MailUser,
    imap_password_env: str,
    imap: IMAPClient,
    busy_mailbox: dict[int, str],
    tmp_path: Path,
) -> None:
    config = _write_config(tmp_path, dovecot, mail_user, imap_password_env)
    log = tmp_path / "daemon.log"
    store = Store(f"sqlite:///{tmp_path}/pipeline.db")
    proc = _start_daemon(config, log)
    try:
        wait_until(lambda: len(stored(store)) >= 1 or proc.poll() is not None, 30, "the daemon to store mail")
        assert proc.poll() is None, log.read_text()
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"no exit 10 s after SIGTERM\n{log.read_text()[-3000:]}")
        took = time.monotonic() - started
        output = log.read_text()
        at_term = len(stored(store))
        print(f"SIGTERM: exit {code} after {took:.2f} s with {at_term}/300 stored")
        assert code == 0, output[-3000:]
        assert took < 5, f"exit took {took:.2f} s\n{output[-3000:]}"
        assert "Traceback" not in output, output[-3000:]
        assert _consistent(store, imap, busy_mailbox) == at_term

        result = CliRunner().invoke(_cli(), ["--config", str(config), "poll", "--once"])
        assert result.exit_code == 0, result.output
        rows = stored(store)
        assert set(rows) == set(busy_mailbox.values()), "the next poll did not complete exactly the rest"
        assert len(rows) == 300
    finally:
        _stop_process(proc)
        store.dispose()


@pytest.mark.slow
def test_sigkill_at_any_moment_loses_and_duplicates_nothing(
    dovecot: ThrowawayDovecot,
    mail_user: MailUser,
    imap_password_env: str,
    imap: IMAPClient,
    busy_mailbox: dict[int, str],
    tmp_path: Path,
) -> None:
    config = _write_config(tmp_path, dovecot, mail_user, imap_password_env)
    store = Store(f"sqlite:///{tmp_path}/pipeline.db")
    proc = _start_daemon(config, tmp_path / "daemon.log")
    try:
        wait_until(lambda: len(stored(store)) >= 40 or proc.poll() is not None, 30, "the daemon to store mail")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
        at_kill = _consistent(store, imap, busy_mailbox)
        print(f"SIGKILL with {at_kill}/300 stored")
        result = CliRunner().invoke(_cli(), ["--config", str(config), "poll", "--once"])
        assert result.exit_code == 0, result.output
        rows = stored(store)
        assert set(rows) == set(busy_mailbox.values())
        assert len(rows) == 300
    finally:
        _stop_process(proc)
        store.dispose()


def _cli() -> Any:
    from pipeline.cli import cli

    return cli


def test_the_desk_fails_the_malformed_message_with_its_error_and_processes_the_rest(
    make_settings: MakeSettings, db_url: str, imap: IMAPClient
) -> None:
    """Issue 3: a malformed message between good ones is stored as failed with its error; the good ones are done."""
    from pipeline.service import make_desk

    imap.append("INBOX", amazon_claim(1))
    imap.append("INBOX", eml("malformed_amazon.eml"))
    imap.append("INBOX", amazon_claim(2))
    settings = make_settings(db_url)
    store = Store(db_url)
    try:
        stats = Poller(settings, store, make_desk(settings, store)).poll_once()
        assert (stats.stored, stats.processed, stats.failed) == (3, 2, 1)
        rows = stored(store)
        malformed = rows[MALFORMED_ID]
        assert malformed.status == "failed"
        assert malformed.error is not None and "broken MIME structure" in malformed.error
        assert malformed.raw  # kept for `pipeline reprocess --failed`
        assert {rows[key].status for key in rows if key != MALFORMED_ID} == {"done"}
    finally:
        store.dispose()
