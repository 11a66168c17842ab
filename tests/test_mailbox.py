"""The IMAP side against the throwaway Dovecot: TLS and login, clear errors, read-only fetches, IDLE, drafts."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError

from pipeline.config import Settings
from pipeline.errors import FolderNotFoundError, LoginError, MailboxError
from pipeline.mailbox import TRANSIENT_ERRORS, Mailbox, connect
from pipeline.testing.dovecot import MailUser, ThrowawayDovecot

DATA = Path(__file__).parent / "data" / "poller"
MakeSettings = Callable[..., Settings]


@pytest.fixture
def settings(make_settings: MakeSettings, tmp_path: Path) -> Settings:
    return make_settings(f"sqlite:///{tmp_path}/pipeline.db")


@pytest.fixture
def mailbox(settings: Settings) -> Iterator[Mailbox]:
    box = connect(settings.imap)
    try:
        yield box
    finally:
        box.close()


def _imap(settings: Settings, **changes: object) -> Settings:
    return replace(settings, imap=replace(settings.imap, **changes))


# --- connecting --------------------------------------------------------------------------------------


def test_ssl_with_the_configured_ca_logs_in(dovecot: ThrowawayDovecot, settings: Settings) -> None:
    tls = _imap(settings, security="ssl", port=dovecot.ssl_port, ca_file=str(dovecot.ca_file))
    with connect(tls.imap) as box:
        assert box.select("INBOX").uidvalidity > 0
        assert box.client.socket().version() is not None  # really TLS


def test_ssl_without_the_ca_fails_on_the_certificate(dovecot: ThrowawayDovecot, settings: Settings) -> None:
    tls = _imap(settings, security="ssl", port=dovecot.ssl_port)
    with pytest.raises(MailboxError, match="certificate") as caught:
        connect(tls.imap)
    assert not isinstance(caught.value, LoginError)
    assert "\n" not in str(caught.value)


def test_starttls_on_the_plain_port_with_the_ca(dovecot: ThrowawayDovecot, settings: Settings) -> None:
    tls = _imap(settings, security="starttls", port=dovecot.port, ca_file=str(dovecot.ca_file))
    with connect(tls.imap) as box:
        assert box.client.socket().version() is not None
        box.select("INBOX")
    with pytest.raises(MailboxError, match="certificate"):
        connect(_imap(tls, ca_file="").imap)


def test_wrong_password_is_a_login_error(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, imap_password_env: str
) -> None:
    monkeypatch.setenv(imap_password_env, "not-the-password")
    with pytest.raises(LoginError, match="login refused") as caught:
        connect(settings.imap)
    assert "not-the-password" not in str(caught.value)


def test_cli_poll_once_with_a_wrong_password_says_so_in_one_line(
    dovecot: ThrowawayDovecot, mail_user: MailUser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.cli import cli

    config = tmp_path / "pipeline.toml"
    config.write_text(
        f'[imap]\nhost = "127.0.0.1"\nport = {dovecot.port}\nsecurity = "plain"\n'
        f'username = "{mail_user.username}"\npassword_env = "PIPELINE_TEST_WRONG_PASSWORD"\n'
        f'[database]\nurl = "sqlite:///{tmp_path}/pipeline.db"\n'
        '[seller]\nstore_name = "Kestrel Outdoor"\nfrom_address = "orders@kestrel-outdoor.example"\n'
    )
    monkeypatch.setenv("PIPELINE_TEST_WRONG_PASSWORD", "wrong-" + mail_user.password)
    result = CliRunner().invoke(cli, ["--config", str(config), "poll", "--once"])
    assert result.exit_code not in (0, None), result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    assert "login refused" in lines[0] and mail_user.username in lines[0]
    assert "Traceback" not in result.output
    assert mail_user.password not in result.output
    assert isinstance(result.exception, SystemExit), result.exception  # a handled error, not a crash


def test_xoauth2_needs_a_server_that_offers_it(settings: Settings, tmp_path: Path) -> None:
    marker = tmp_path / "token-fetched"
    oauth = _imap(settings, password_env="", oauth2_token_command=f"sh -c 'touch {marker}; echo ya29.token'")
    with pytest.raises(LoginError, match="does not offer XOAUTH2"):
        connect(oauth.imap)
    assert not marker.exists(), "the token was fetched although it could not be used"


def test_a_failing_token_command_is_a_secret_error(dovecot: ThrowawayDovecot, settings: Settings) -> None:
    from pipeline.errors import SecretError

    # STARTTLS skips the capability check (the list from before TLS may be stale): straight to the token
    oauth = _imap(
        settings,
        password_env="",
        oauth2_token_command="sh -c 'echo secret-ish >&2; exit 3'",
        security="starttls",
        ca_file=str(dovecot.ca_file),
    )
    with pytest.raises(SecretError, match="exited with status 3") as caught:
        connect(oauth.imap)
    assert "secret-ish" not in str(caught.value)


def test_a_server_that_never_answers_times_out(settings: Settings) -> None:
    """Nothing can hang forever: a peer that accepts the connection but never greets hits the timeout."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        silent.listen()
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(MailboxError, match=f"127.0.0.1:{port}"):
            connect(_imap(settings, port=port, timeout=1.0).imap)
        assert time.monotonic() - started < 5


def test_nothing_listening_is_a_mailbox_error(settings: Settings) -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    with pytest.raises(MailboxError, match="cannot connect"):
        connect(_imap(settings, port=port).imap)


# --- reading -----------------------------------------------------------------------------------------


def test_missing_folder_is_a_clear_error(mailbox: Mailbox) -> None:
    with pytest.raises(FolderNotFoundError, match=r"folder 'Amazon' does not exist on 127\.0\.0\.1"):
        mailbox.select("Amazon")
    mailbox.select("INBOX")  # the connection is still usable


def test_reading_never_marks_mail_seen(mailbox: Mailbox, imap: IMAPClient) -> None:
    raw = (DATA / "claim_received.eml").read_bytes()
    imap.append("INBOX", raw)
    imap.append("INBOX", (DATA / "newsletter.eml").read_bytes(), flags=[b"\\Flagged"])
    state = mailbox.select("INBOX")
    uids = mailbox.uids_after(0)
    assert len(uids) == 2 and state.uidnext == uids[-1] + 1
    heads = mailbox.fetch_headers(uids)
    assert heads[0].message_id == "<0100019d9801c2a4-7e1f0c55-4b1a-4c1e-9d0e-2b7f5a1c9e40-000000@email.amazonses.com>"
    assert b"atoz-guarantee-no-reply@amazon.com" in heads[0].header_bytes
    assert b"X-Space-Notification-Type: A_Z_CLAIM_RESPONDENT_NOTIFY" in heads[0].header_bytes
    assert mailbox.fetch_raw(uids)[uids[0]].replace(b"\r\n", b"\n") == raw.replace(b"\r\n", b"\n")
    assert mailbox.uids_after(uids[-1]) == []  # "n:*" past the end does not return the last UID
    imap.select_folder("INBOX", readonly=True)
    flags = imap.get_flags(uids)
    assert all(b"\\Seen" not in f for f in flags.values()), flags
    assert b"\\Flagged" in flags[uids[1]]  # the user's own flags are untouched


# --- IDLE --------------------------------------------------------------------------------------------


def test_idle_reports_new_mail_at_once(mailbox: Mailbox, imap: IMAPClient) -> None:
    mailbox.select("INBOX")
    timer = threading.Timer(0.3, lambda: imap.append("INBOX", (DATA / "buyer_message.eml").read_bytes()))
    timer.start()
    started = time.monotonic()
    try:
        assert mailbox.wait_for_news(10) is True
    finally:
        timer.join()
    assert time.monotonic() - started < 2
    mailbox.noop()  # still in a usable state after IDLE


def test_idle_times_out_quietly_and_can_be_stopped(mailbox: Mailbox) -> None:
    mailbox.select("INBOX")
    started = time.monotonic()
    assert mailbox.wait_for_news(1.5) is False
    assert 1.4 < time.monotonic() - started < 3
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    started = time.monotonic()
    assert mailbox.wait_for_news(60, should_stop=stop.is_set) is False
    assert time.monotonic() - started < 2.5
    mailbox.noop()


def test_idle_on_a_dropped_connection_raises(dovecot: ThrowawayDovecot, mail_user: MailUser, mailbox: Mailbox) -> None:
    """imapclient's idle_check returns quietly when the server hangs up; the mailbox must notice."""
    mailbox.select("INBOX")
    threading.Timer(0.5, dovecot.kick, args=(mail_user.username,)).start()
    started = time.monotonic()
    with pytest.raises(TRANSIENT_ERRORS):
        mailbox.wait_for_news(30)
    assert time.monotonic() - started < 5, "a dead connection was not noticed promptly"


def test_a_bye_during_idle_is_a_dead_connection() -> None:
    from pipeline.mailbox import _has_news

    assert _has_news([(3, b"EXISTS")]) is True
    assert _has_news([(b"OK", b"Still here"), (1, b"EXPUNGE")]) is False
    with pytest.raises(IMAPClientAbortError, match="Disconnected"):
        _has_news([(b"BYE", b"Disconnected", b"by", b"admin")])


# --- drafts ------------------------------------------------------------------------------------------


def test_drafts_folder_is_found_by_special_use(mailbox: Mailbox) -> None:
    assert mailbox.drafts_folder() == "Drafts"
    assert mailbox.sent_folder() == "Sent"


def test_configured_drafts_folder_must_exist(settings: Settings) -> None:
    with connect(_imap(settings, drafts="Entwürfe").imap) as box, pytest.raises(FolderNotFoundError, match="Entwürfe"):
        box.drafts_folder()


def test_append_and_delete_touch_only_our_drafts(mailbox: Mailbox, imap: IMAPClient) -> None:
    draft = b"From: orders@kestrel-outdoor.example\r\nSubject: Re: claim\r\nMessage-ID: <d1@pipeline>\r\n\r\nHi\r\n"
    uid = mailbox.append("Drafts", draft, [b"\\Draft", b"\\Seen"])
    assert uid is not None
    # the user has a message of their own flagged \Deleted in Drafts (not yet expunged by their client)
    imap.append("Drafts", b"Subject: mine\r\n\r\nkeep me\r\n", flags=[b"\\Draft", b"\\Deleted"])
    imap.select_folder("Drafts", readonly=True)
    assert len(imap.search("ALL")) == 2
    mailbox.delete("Drafts", [uid])
    imap.noop()
    remaining = imap.search("ALL")
    assert len(remaining) == 1 and uid not in remaining
