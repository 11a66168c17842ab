"""The test harness itself: the throwaway Dovecot and PostgreSQL fixtures work against real servers."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import ssl
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

import pytest
import sqlalchemy
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

from pipeline.testing import dovecot as harness
from pipeline.testing.dovecot import DovecotError, MailUser, ThrowawayDovecot, find_dovecot


def _message(subject: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Buyer <buyer@example.com>"
    msg["To"] = "claims@example.com"
    msg["Subject"] = subject
    msg["Message-ID"] = "<harness-1@example.com>"
    msg.set_content("Where is my order? 111-1234567-1234567\n")
    return msg.as_bytes()


def test_fresh_user_has_empty_inbox_and_special_use_folders(imap: IMAPClient) -> None:
    assert imap.select_folder("INBOX", readonly=True)[b"EXISTS"] == 0
    assert imap.search("ALL") == []
    folders = {name: flags for flags, _delimiter, name in imap.list_folders()}
    assert {"INBOX", "Drafts", "Sent", "Trash"} <= set(folders)
    assert b"\\Drafts" in folders["Drafts"]
    assert b"\\Sent" in folders["Sent"]
    assert b"\\Trash" in folders["Trash"]
    assert imap.find_special_folder(b"\\Drafts") == "Drafts"
    assert imap.find_special_folder(b"\\Sent") == "Sent"
    assert imap.find_special_folder(b"\\Trash") == "Trash"
    assert imap.list_folders()[0][1] == b"/"
    for folder in ("Drafts", "Sent", "Trash"):
        assert imap.folder_status(folder, [b"MESSAGES"])[b"MESSAGES"] == 0


def test_users_are_isolated(dovecot: ThrowawayDovecot, imap: IMAPClient) -> None:
    imap.append("INBOX", _message("only for the first user"))
    other = dovecot.add_user()
    with IMAPClient(dovecot.host, port=dovecot.port, ssl=False) as client:
        client.login(other.username, other.password)
        assert client.select_folder("INBOX")[b"EXISTS"] == 0
        client.logout()


def test_add_user_with_given_credentials(dovecot: ThrowawayDovecot) -> None:
    user = dovecot.add_user("claims@example.com", "s3cret-pass")
    assert user == MailUser("claims@example.com", "s3cret-pass")
    with IMAPClient(dovecot.host, port=dovecot.port, ssl=False) as client:
        client.login("claims@example.com", "s3cret-pass")
        client.logout()


def test_append_and_read_back(imap: IMAPClient) -> None:
    raw = _message("Harness round trip")
    result = imap.append("INBOX", raw, flags=[b"\\Seen"])
    assert b"APPENDUID" in result  # UIDPLUS
    imap.select_folder("INBOX")
    uids = imap.search(["SUBJECT", "Harness round trip"])
    assert len(uids) == 1
    data = imap.fetch(uids, [b"RFC822", b"FLAGS"])[uids[0]]
    assert data[b"RFC822"].replace(b"\r\n", b"\n") == raw.replace(b"\r\n", b"\n")
    assert b"\\Seen" in data[b"FLAGS"]


def test_capabilities(imap: IMAPClient) -> None:
    capabilities = set(imap.capabilities())
    assert {b"IDLE", b"UIDPLUS", b"SPECIAL-USE"} <= capabilities
    assert b"THREAD=REFERENCES" in capabilities


def test_implicit_tls_with_ca(dovecot: ThrowawayDovecot, mail_user: MailUser) -> None:
    assert dovecot.ssl_port is not None and dovecot.ca_file is not None
    context = ssl.create_default_context(cafile=str(dovecot.ca_file))
    with IMAPClient(dovecot.host, port=dovecot.ssl_port, ssl=True, ssl_context=context) as client:
        client.login(mail_user.username, mail_user.password)
        assert client.noop()
        client.logout()


def test_implicit_tls_with_localhost_name(dovecot: ThrowawayDovecot, mail_user: MailUser) -> None:
    context = ssl.create_default_context(cafile=str(dovecot.ca_file))
    with IMAPClient("localhost", port=dovecot.ssl_port, ssl=True, ssl_context=context) as client:
        client.login(mail_user.username, mail_user.password)
        client.logout()


def test_implicit_tls_without_ca_fails(dovecot: ThrowawayDovecot) -> None:
    context = ssl.create_default_context()  # system CAs only: our throwaway CA is unknown
    with pytest.raises(ssl.SSLCertVerificationError):
        IMAPClient(dovecot.host, port=dovecot.ssl_port, ssl=True, ssl_context=context, timeout=10)


def test_starttls_on_plain_port(dovecot: ThrowawayDovecot, mail_user: MailUser) -> None:
    context = ssl.create_default_context(cafile=str(dovecot.ca_file))
    with IMAPClient(dovecot.host, port=dovecot.port, ssl=False) as client:
        assert b"STARTTLS" in client.capabilities()
        client.starttls(context)
        client.login(mail_user.username, mail_user.password)
        assert client.noop()
        client.logout()


def test_starttls_without_ca_fails(dovecot: ThrowawayDovecot) -> None:
    client = IMAPClient(dovecot.host, port=dovecot.port, ssl=False, timeout=10)
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            client.starttls(ssl.create_default_context())
    finally:
        with contextlib.suppress(OSError):
            client.shutdown()


def test_kick_drops_the_connection(dovecot: ThrowawayDovecot, mail_user: MailUser, imap: IMAPClient) -> None:
    imap.select_folder("INBOX")
    assert imap.noop()
    assert dovecot.kick(mail_user.username) is True
    deadline = time.monotonic() + 5
    with pytest.raises((IMAPClientError, OSError)):  # IMAPClient.AbortError is an IMAPClientError
        while time.monotonic() < deadline:
            imap.noop()
            time.sleep(0.05)
    assert dovecot.kick(mail_user.username) is False  # nobody left to kick


def test_set_uidvalidity(dovecot: ThrowawayDovecot, mail_user: MailUser, imap: IMAPClient) -> None:
    imap.append("INBOX", _message("before the change"))
    before = imap.select_folder("INBOX")[b"UIDVALIDITY"]
    imap.unselect_folder()
    new_value = before + 12345
    dovecot.set_uidvalidity(mail_user.username, "INBOX", new_value)
    assert imap.select_folder("INBOX")[b"UIDVALIDITY"] == new_value
    with IMAPClient(dovecot.host, port=dovecot.port, ssl=False) as client:
        client.login(mail_user.username, mail_user.password)
        assert client.select_folder("INBOX")[b"UIDVALIDITY"] == new_value
        client.logout()


def test_doveadm_reports_errors(dovecot: ThrowawayDovecot, mail_user: MailUser) -> None:
    with pytest.raises(DovecotError, match="doveadm"):
        dovecot.doveadm("mailbox", "status", "-u", mail_user.username, "messages", "No/Such/Mailbox")


@pytest.mark.server
def test_standalone_server_lifecycle() -> None:
    server = ThrowawayDovecot()
    with server:
        assert server.ssl_port is None and server.ca_file is None
        user = server.add_user()
        with IMAPClient(server.host, port=server.port, ssl=False) as client:
            assert b"STARTTLS" not in client.capabilities()
            client.login(user.username, user.password)
            client.logout()
        workdir = server.workdir
        assert workdir.is_dir()
    assert not server.running
    assert not workdir.exists()


def test_pg_url_accepts_connections(pg_url: str) -> None:
    engine = sqlalchemy.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("SELECT 1")).scalar_one() == 1
    finally:
        engine.dispose()


def test_db_url_is_a_fresh_database(db_url: str) -> None:
    engine = sqlalchemy.create_engine(db_url)
    try:
        assert sqlalchemy.inspect(engine).get_table_names() == []
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text("CREATE TABLE probe (id INTEGER PRIMARY KEY)"))
        assert sqlalchemy.inspect(engine).get_table_names() == ["probe"]
    finally:
        engine.dispose()


def test_failed_logins_do_not_slow_down_later_logins(dovecot: ThrowawayDovecot, mail_user: MailUser) -> None:
    started = time.monotonic()
    for _ in range(3):
        client = IMAPClient(dovecot.host, port=dovecot.port, ssl=False, timeout=10)
        with pytest.raises(LoginError):
            client.login(mail_user.username, "wrong password")
        client.shutdown()
    with IMAPClient(dovecot.host, port=dovecot.port, ssl=False, timeout=10) as client:
        client.login(mail_user.username, mail_user.password)
        client.logout()
    assert time.monotonic() - started < 5  # Dovecot's auth penalty would add 4 + 8 + 15 s


@pytest.mark.server
def test_given_workdir_with_long_path_is_kept() -> None:
    base = Path(tempfile.mkdtemp(prefix="dovecot-test-"))
    base.chmod(0o711)  # as root, the dovecot user must be able to enter it
    workdir = base / ("deeply-nested-work-directory-" * 3)  # too long a base for Unix socket paths
    try:
        with ThrowawayDovecot(workdir) as server:
            user = server.add_user()
            with IMAPClient(server.host, port=server.port, ssl=False) as client:
                client.login(user.username, user.password)
                client.logout()
            with pytest.raises(DovecotError, match="already running"):
                ThrowawayDovecot(workdir).start()
            attached = ThrowawayDovecot.attach(workdir)
            assert attached.port == server.port
        assert not server.running
        assert workdir.is_dir() and (workdir / "dovecot.log").is_file()
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.server
@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the mail processes as another user")
def test_unreachable_workdir_is_refused_clearly() -> None:
    base = Path(tempfile.mkdtemp(prefix="dovecot-test-"))  # mode 0700: closed to the dovecot user
    try:
        with pytest.raises(DovecotError, match="cannot enter"):
            ThrowawayDovecot(base / "work").start()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_find_dovecot_when_installed(dovecot: ThrowawayDovecot) -> None:
    assert Path(find_dovecot()).name == "dovecot"


@pytest.fixture
def no_dovecot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither PATH nor the sbin directories hold dovecot/doveadm."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(harness, "_SBIN_PATH", str(empty))


def test_missing_dovecot_is_one_line_naming_setup_sh(no_dovecot: None, tmp_path: Path) -> None:
    with pytest.raises(DovecotError) as raised:
        find_dovecot()
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("Dovecot is not installed") and "scripts/setup.sh" in message
    with pytest.raises(DovecotError) as raised:
        ThrowawayDovecot(tmp_path / "work").start()
    assert str(raised.value) == message
    assert not (tmp_path / "work").exists()


def test_missing_dovecot_in_scripts_dovecot_py(
    no_dovecot: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = Path(__file__).resolve().parent.parent / "scripts" / "dovecot.py"
    spec = importlib.util.spec_from_file_location("scripts_dovecot", path)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["start", "--dir", str(tmp_path / "work")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: Dovecot is not installed") and "scripts/setup.sh" in err


def test_missing_dovecot_in_pipeline_demo(no_dovecot: None, ops_cli) -> None:
    result = ops_cli(None, "demo")
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "Dovecot is not installed" in result.output
    assert "scripts/setup.sh" in result.output
