"""Shared pytest fixtures."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

# Make the checkout importable when the package is not installed (plain `pytest` in a fresh clone).
if importlib.util.find_spec("pipeline") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

if TYPE_CHECKING:
    import psycopg
    from imapclient import IMAPClient

    from pipeline.testing.dovecot import MailUser, ThrowawayDovecot

# =====================================================================================================
# Throwaway Dovecot IMAP server and PostgreSQL databases (real servers, no mocks)
#
#   dovecot   (session)  a running pipeline.testing.dovecot.ThrowawayDovecot with TLS (ssl_port, ca_file)
#   mail_user (function) a fresh, empty mailbox on it (Drafts/Sent/Trash exist)
#   imap      (function) an IMAPClient on the plain port, logged in as mail_user
#   pg_url    (session)  SQLAlchemy URL of a fresh PostgreSQL database, dropped at the end
#   db_url    (function) parametrized [sqlite, postgresql]: a fresh, empty database per test
#
# When a server is unavailable the tests that need it are skipped, except under CI=true where they fail.
# =====================================================================================================

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_USER = "postgres"
PG_ADMIN_DB = "test"  # the database we connect to for CREATE/DROP DATABASE


def _under_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def _unavailable(reason: str) -> NoReturn:
    """Skip the test, or fail it under CI where a missing server is a broken setup."""
    if _under_ci():
        pytest.fail(f"{reason} (CI=true: not skipping)", pytrace=False)
    pytest.skip(reason)


def _dkim_test_keys() -> None:
    """Amazon mail built by pipeline.testing is signed with the test DKIM key: publish its records to every
    process of the session (subprocesses included) through PIPELINE_DKIM_KEYS, as the demo does."""
    import tempfile

    from pipeline.testing import dkim as test_key

    folder = Path(tempfile.mkdtemp(prefix="pipeline-dkim-"))
    os.environ["PIPELINE_DKIM_KEYS"] = str(test_key.records_file(folder, test_key.amazon_domains()))


_dkim_test_keys()


def examples(count: int) -> int:
    """How many examples a hypothesis test tries: all of them in CI (CI=true), a fifth at the desk."""
    return count if os.environ.get("CI") == "true" else max(5, count // 5)


@pytest.fixture(scope="session")
def dovecot() -> Iterator[ThrowawayDovecot]:
    """A throwaway Dovecot (plain IMAP with STARTTLS on .port, implicit TLS on .ssl_port) for the session."""
    from pipeline.testing.dovecot import DovecotError, ThrowawayDovecot

    server = ThrowawayDovecot(ssl=True)
    try:
        server.start()
    except (DovecotError, OSError) as error:
        _unavailable(f"cannot start a throwaway Dovecot: {error}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mail_user(dovecot: ThrowawayDovecot) -> MailUser:
    """A new user with a fresh, empty mailbox on the session's Dovecot."""
    return dovecot.add_user()


@pytest.fixture
def imap(dovecot: ThrowawayDovecot, mail_user: MailUser) -> Iterator[IMAPClient]:
    """An IMAPClient connected to the plain IMAP port and logged in as mail_user; logged out afterwards."""
    from imapclient import IMAPClient

    client = IMAPClient(dovecot.host, port=dovecot.port, ssl=False, timeout=30)
    client.login(mail_user.username, mail_user.password)
    try:
        yield client
    finally:
        try:
            client.logout()
        except Exception:  # the test may have closed or killed the connection
            with contextlib.suppress(Exception):
                client.shutdown()


def _pg_admin_connect() -> psycopg.Connection:
    import psycopg

    return psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=PG_ADMIN_DB, autocommit=True, connect_timeout=5
    )


def _pg_create_database(prefix: str) -> str:
    name = f"{prefix}{secrets.token_hex(6)}"
    with _pg_admin_connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def _pg_drop_database(name: str) -> None:
    with _pg_admin_connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _pg_url(name: str) -> str:
    return f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """SQLAlchemy URL of a fresh PostgreSQL database `pipeline_test_<hex>`, dropped after the session."""
    try:
        import psycopg
    except ImportError as error:
        _unavailable(f"psycopg is not installed: {error}")
    try:
        name = _pg_create_database("pipeline_test_")
    except psycopg.Error as error:
        _unavailable(f"PostgreSQL at {PG_HOST}:{PG_PORT} is not usable: {error}")
    try:
        yield _pg_url(name)
    finally:
        _pg_drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a fresh, empty database for this test: SQLite in tmp_path, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/pipeline.db"
        return
    request.getfixturevalue("pg_url")  # skips (or fails under CI) when PostgreSQL is unavailable
    name = _pg_create_database("pipeline_t_")
    try:
        yield _pg_url(name)
    finally:
        _pg_drop_database(name)


# Fixtures that start the throwaway Dovecot or connect to PostgreSQL. item.fixturenames is a test's whole
# fixture closure, so naming these roots catches every fixture built on them (mail_user, imap, desk_env, …).
SERVER_FIXTURES = frozenset({"dovecot", "pg_url"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `server` every test that needs the throwaway Dovecot or PostgreSQL; -m "not server" is the fast lane.

    db_url[postgresql] reaches pg_url through getfixturevalue, so its parameter counts too. Tests that start a
    Dovecot of their own (ThrowawayDovecot(), `pipeline demo`) carry @pytest.mark.server themselves.
    """
    for item in items:
        callspec = getattr(item, "callspec", None)
        postgres = callspec is not None and callspec.params.get("db_url") == "postgresql"
        if postgres or SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.server)


# ============================================ end of servers section ================================


# =====================================================================================================
# Poller, mailbox and store tests (tests/test_poller.py, tests/test_mailbox.py, tests/test_store.py)
#
#   imap_password_env (function) the mail_user's password in the environment variable PIPELINE_TEST_IMAP_PASSWORD
#                                (secrets never go on a command line); yields the variable's name
#   make_settings     (function) make_settings(db_url, **imap_overrides) -> Settings for mail_user on the session
#                                Dovecot (plain IMAP on 127.0.0.1, short timeouts); overrides replace [imap] keys
# =====================================================================================================

if TYPE_CHECKING:
    from collections.abc import Callable

    from pipeline.config import Settings

IMAP_PASSWORD_ENV = "PIPELINE_TEST_IMAP_PASSWORD"


@pytest.fixture
def imap_password_env(mail_user: MailUser, monkeypatch: pytest.MonkeyPatch) -> str:
    """Put mail_user's password into PIPELINE_TEST_IMAP_PASSWORD for this test."""
    monkeypatch.setenv(IMAP_PASSWORD_ENV, mail_user.password)
    return IMAP_PASSWORD_ENV


@pytest.fixture
def make_settings(dovecot: ThrowawayDovecot, mail_user: MailUser, imap_password_env: str) -> Callable[..., Settings]:
    """A factory of Settings for mail_user: make_settings(db_url, **imap_overrides)."""
    from pipeline.config import settings_from_dict

    def make(db_url: str, **imap: object) -> Settings:
        section: dict[str, object] = {
            "host": dovecot.host,
            "port": dovecot.port,
            "security": "plain",
            "username": mail_user.username,
            "password_env": imap_password_env,
            "timeout": 10,
            "poll_interval": 60,
        }
        section.update(imap)
        raw = {
            "imap": section,
            "seller": {"store_name": "Kestrel Outdoor", "from_address": "orders@kestrel-outdoor.example"},
            "database": {"url": db_url},
        }
        return settings_from_dict(raw, Path("test.toml"))

    return make


# ============================================ end of poller section =================================


# =====================================================================================================
# Operating tests: config, CLI, reprocess, check, demo, digest, metrics, packaging
# (tests/test_config.py, test_cli.py, test_reprocess.py, test_check.py, test_demo.py, test_digest.py, …)
#
#   ops_config         (function) ops_config(imap={...}, seller={...}, database={...}, text="") -> Path of a
#                                 pipeline.toml in tmp_path; defaults: an unreachable IMAP host with
#                                 password_env PIPELINE_IMAP_PASSWORD (set), SQLite in tmp_path
#   ops_dovecot_config (function) ops_dovecot_config(**imap_overrides) -> Path: the same, for mail_user on the
#                                 session Dovecot (plain IMAP to 127.0.0.1, password from the environment)
#   ops_cli            (function) ops_cli(config, *args, color=False) -> click Result of `pipeline --config
#                                 CONFIG ARGS…` (CliRunner, exceptions not caught); restores logging afterwards
#   ops_store_raw      (function) ops_store_raw(settings, [raw, …]) stores raw messages as the poller would
#                                 (status pending), without IMAP
# =====================================================================================================

if TYPE_CHECKING:
    from typing import Any

OPS_PASSWORD_ENV = "PIPELINE_IMAP_PASSWORD"
OPS_SELLER = {"store_name": "Kestrel Outdoor", "from_address": "claims@kestrel-outdoor.example"}


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def _toml_text(sections: dict[str, dict[str, object]]) -> str:
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in values.items() if value is not None]
        lines.append("")
    return "\n".join(lines)


@pytest.fixture
def ops_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """A factory writing tmp_path/pipeline.toml; a key given as None is left out."""
    monkeypatch.setenv(OPS_PASSWORD_ENV, os.environ.get(OPS_PASSWORD_ENV) or "not-used-password")

    def make(
        *,
        imap: dict[str, object] | None = None,
        seller: dict[str, object] | None = None,
        database: dict[str, object] | None = None,
        text: str = "",
        name: str = "pipeline.toml",
    ) -> Path:
        sections: dict[str, dict[str, object]] = {
            "imap": {
                "host": "imap.invalid",
                "port": 993,
                "security": "ssl",
                "username": "claims@example.com",
                "password_env": OPS_PASSWORD_ENV,
                "timeout": 10,
                **(imap or {}),
            },
            "database": {"url": f"sqlite:///{tmp_path / 'pipeline.db'}", **(database or {})},
            "seller": {**OPS_SELLER, **(seller or {})},
        }
        path = tmp_path / name
        path.write_text(_toml_text(sections) + text, encoding="utf-8")
        return path

    return make


@pytest.fixture
def ops_dovecot_config(
    ops_config: Callable[..., Path], dovecot: ThrowawayDovecot, mail_user: MailUser, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Path]:
    """A factory of configs for mail_user on the session Dovecot: ops_dovecot_config(**imap_overrides)."""
    monkeypatch.setenv(OPS_PASSWORD_ENV, mail_user.password)

    def make(**imap: object) -> Path:
        return ops_config(
            imap={
                "host": dovecot.host,
                "port": dovecot.port,
                "security": "plain",
                "username": mail_user.username,
                **imap,
            }
        )

    return make


@pytest.fixture
def ops_cli() -> Iterator[Callable[..., Any]]:
    """Run `pipeline --config CONFIG ARGS…` in-process; our log handler is removed afterwards."""
    import logging

    from click.testing import CliRunner

    from pipeline.cli import cli
    from pipeline.logs import HANDLER_NAME

    root = logging.getLogger()
    level = root.level

    def run(config: Path | None, *args: str, color: bool = False, **kwargs: Any) -> Any:
        argv = (["--config", str(config)] if config is not None else []) + list(args)
        # the caller's own log settings must not change what the tests see
        env = {
            "PIPELINE_LOG_LEVEL": None,
            "PIPELINE_LOG_FORMAT": None,
            "PIPELINE_METRICS_PORT": None,
            **kwargs.pop("env", {}),
        }
        return CliRunner().invoke(
            cli, argv, color=color, catch_exceptions=False, prog_name="pipeline", env=env, **kwargs
        )

    try:
        yield run
    finally:
        for handler in list(root.handlers):
            if handler.get_name() == HANDLER_NAME:
                root.removeHandler(handler)
        root.setLevel(level)


@pytest.fixture
def ops_store_raw() -> Callable[..., None]:
    """ops_store_raw(settings, [raw, …]): store messages as the poller does (pending), without IMAP."""
    from pipeline.poller import envelope
    from pipeline.store import Store

    def store_raw(settings: Settings, raws: list[bytes], *, folder: str = "INBOX") -> None:
        store = Store(settings.database.url)
        try:
            with store.session() as session:
                for uid, raw in enumerate(raws, start=1):
                    store.add_message(
                        session,
                        account="test@localhost",
                        folder=folder,
                        uidvalidity=1,
                        uid=uid,
                        raw=raw,
                        **envelope(raw),
                    )
        finally:
            store.dispose()

    return store_raw


# ============================================ end of operating section ==============================


# =====================================================================================================
# Playbook and drafts tests (tests/test_playbook.py, test_playbook_e2e.py, test_drafts.py, test_shipments.py)
#
#   PLAYBOOK_DATA      tests/data/playbook: the messages of each story in real formats, named "<case>__<what it is>.eml"
#                      (written by tests/data/playbook/build.py)
#   desk_env           (function) a DeskEnv: a fresh mail user on the session Dovecot, its pipeline.toml and
#                                 SQLite database in tmp_path
#   make_desk_env      (function) make_desk_env(seller={...}, drafts={...}, imap={...}) -> DeskEnv with overrides
#   playbook_world     (session)  a read-only DeskEnv holding one story per playbook row (WORLD_FILES), dates
#                                 moved next to now, tests/data/playbook/shipments.csv imported with
#                                 `pipeline orders import`, then one `pipeline poll --once`
#
# DeskEnv: .settings, .config (Path); .append(name or bytes, folder=, shift=); .poll(clock=None) runs
# `pipeline poll --once` (with a clock: pipeline.service.poll_one_pass(settings, clock=...));
# .cli(*args); .claims() / .claim(order) from `claims --json`; .timeline(order) from `claims show --json`;
# .show(order) the text of `claims show`; .imap() a logged-in IMAPClient; .mails(folder) and
# .drafts(order=None) read back over IMAP as DeskMail(uid, flags, message, raw).
# =====================================================================================================

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

PLAYBOOK_DATA = Path(__file__).resolve().parent / "data" / "playbook"
PLAYBOOK_SELLER = {"store_name": "Harbor Goods", "from_address": "claims@harbor-goods.example"}
# the latest Date in WORLD_FILES; the world moves it to an hour before now
WORLD_LATEST = "2026-11-10T22:00:00+00:00"
WORLD_FILES = (
    "represent_delivered__buyer_not_arrived.eml",
    "represent_delivered__claim_not_received.eml",
    "offer_refund_or_resend__buyer_not_arrived.eml",
    "offer_refund_or_resend__claim_not_received_no_tracking.eml",
    "represent_size__kaeufer_zu_klein_amazon_de.eml",
    "represent_size__antrag_groesse_amazon_de.eml",
    "persuade_withdraw_damaged__buyer_arrived_broken.eml",
    "persuade_withdraw_damaged__claim_damaged_on_arrival.eml",
    "represent_misuse__buyer_broke_after_use.eml",
    "represent_misuse__claim_damaged_after_use.eml",
    "request_withdrawal__buyer_not_arrived.eml",
    "request_withdrawal__claim_not_received.eml",
    "request_withdrawal__buyer_found_parcel.eml",
    "will_withdraw__buyer_arrived_cracked.eml",
    "will_withdraw__claim_damaged_on_arrival.eml",
    "will_withdraw__buyer_will_withdraw.eml",
    "refund_needed__claim_not_received.eml",
    "refund_needed__buyer_wants_refund.eml",
    "resolved_withdrawn__buyer_too_small.eml",
    "resolved_withdrawn__claim_size.eml",
    "resolved_withdrawn__amazon_claim_withdrawn.eml",
    "resolved_denied__buyer_not_arrived.eml",
    "resolved_denied__claim_not_received.eml",
    "resolved_denied__amazon_decided_in_your_favour.eml",
    "granted__buyer_not_arrived.eml",
    "granted__claim_not_received.eml",
    "granted__amazon_granted.eml",
    "manual_review__buyer_not_as_pictured.eml",
    "manual_review__claim_not_as_described.eml",
    "manual_review__claim_no_reason.eml",
    "info_request__buyer_too_big.eml",
    "info_request__claim_size.eml",
    "info_request__amazon_more_information_48h.eml",
    "untrusted__spoof_claim_filed_lookalike_domain.eml",
    "untrusted__buyer_arrived_dented.eml",
    "untrusted__claim_damaged_on_arrival.eml",
    "untrusted__spoof_claim_withdrawn.eml",
)


def shift_date(raw: bytes, shift: Any) -> bytes:
    """The message with its Date header moved by `shift` (a timedelta), signed again when it was signed (the
    signature covers Date, as Amazon's does); every other byte unchanged."""
    import email.utils
    import re

    from pipeline.testing.dkim import resign

    def move(match: re.Match[bytes]) -> bytes:
        when = email.utils.parsedate_to_datetime(match.group(2).decode())
        return match.group(1) + email.utils.format_datetime(when + shift).encode()

    moved = re.sub(rb"(?mi)^(Date:[ \t]*)([^\r\n]+)", move, raw, count=1)
    return resign(moved) if re.search(rb"(?mi)^DKIM-Signature:", raw) else moved


class DeskMail:
    """A message read back over IMAP."""

    def __init__(self, uid: int, flags: tuple[bytes, ...], raw: bytes) -> None:
        import email
        import email.policy

        self.uid, self.flags, self.raw = uid, flags, raw
        self.message = email.message_from_bytes(raw, policy=email.policy.default)

    def __getitem__(self, name: str) -> Any:
        return self.message[name]

    @property
    def body(self) -> str:
        part = self.message.get_body(("plain",))
        return part.get_content().replace("\r\n", "\n") if part is not None else ""

    def __repr__(self) -> str:
        return f"DeskMail(uid={self.uid}, subject={self.message['Subject']!r})"


class DeskEnv:
    """A mailbox on the session Dovecot with its own pipeline config and SQLite database."""

    def __init__(
        self,
        dovecot: ThrowawayDovecot,
        user: MailUser,
        workdir: Path,
        *,
        seller: dict[str, object] | None = None,
        drafts: dict[str, object] | None = None,
        imap: dict[str, object] | None = None,
        database: str | None = None,
        trust: dict[str, object] | None = None,
    ) -> None:
        from pipeline.config import load_settings

        self.dovecot, self.user, self.workdir = dovecot, user, workdir
        self.now: Any = None  # set by poll(clock=...); the CLI then runs at that time too (PIPELINE_NOW)
        self.shift: Any = None  # how far the world moved its messages' dates (a timedelta)
        workdir.mkdir(parents=True, exist_ok=True)
        secret = workdir / "imap-password"
        secret.write_text(user.password, encoding="utf-8")
        secret.chmod(0o600)
        sections: dict[str, dict[str, object]] = {
            "imap": {
                "host": dovecot.host,
                "port": dovecot.port,
                "security": "plain",
                "username": user.username,
                "password_file": str(secret),
                "timeout": 10,
                **(imap or {}),
            },
            "database": {"url": database or f"sqlite:///{workdir / 'pipeline.db'}"},
            "seller": {**PLAYBOOK_SELLER, **(seller or {})},
            "log": {"level": "WARNING"},
        }
        if drafts:
            sections["drafts"] = dict(drafts)
        if trust:
            sections["trust"] = dict(trust)
        self.config = workdir / "pipeline.toml"
        self.config.write_text(_toml_text(sections), encoding="utf-8")
        self.settings = load_settings(self.config)

    # --- mail in --------------------------------------------------------------------------------

    @staticmethod
    def eml(name: str) -> bytes:
        """The bytes of tests/data/playbook/<name>."""
        return (PLAYBOOK_DATA / name).read_bytes()

    def append(
        self, message: str | bytes, *, folder: str = "INBOX", shift: Any = None, flags: tuple[bytes, ...] = ()
    ) -> bytes:
        """APPEND a message (a file name in tests/data/playbook, or raw bytes); return the bytes appended."""
        raw = self.eml(message) if isinstance(message, str) else message
        if shift is not None:
            raw = shift_date(raw, shift)
        with self.imap() as client:
            client.append(folder, raw, flags=flags)
        return raw

    # --- the pipeline -------------------------------------------------------------------------------

    def cli(self, *args: str, expect: int | None = 0) -> Any:
        """`pipeline --config CONFIG ARGS…` in-process; asserts the exit code unless expect is None."""
        import logging

        from click.testing import CliRunner

        from pipeline.cli import cli
        from pipeline.logs import HANDLER_NAME

        root = logging.getLogger()
        level = root.level
        # the world's clock: once a test polled at a fixed time, the CLI runs at that time too
        env = {"PIPELINE_NOW": self.now.isoformat()} if self.now else {}
        try:
            result = CliRunner(env=env).invoke(cli, ["--config", str(self.config), *args], prog_name="pipeline")
        finally:
            for handler in list(root.handlers):
                if handler.get_name() == HANDLER_NAME:
                    root.removeHandler(handler)
            root.setLevel(level)
        if expect is not None and result.exit_code != expect:
            raise AssertionError(
                f"pipeline {' '.join(args)} exited {result.exit_code}, not {expect}:\n"
                f"{result.output}\n{result.exception!r}"
            )
        return result

    def poll(self, clock: Any = None) -> Any:
        """One pass: `pipeline poll --once`, or poll_one_pass with a fixed clock (a datetime) when given."""
        if clock is None:
            return self.cli("poll", "--once")
        self.now = clock
        from pipeline.service import poll_one_pass

        return poll_one_pass(self.settings, clock=lambda: clock)

    def claims(self) -> list[dict[str, Any]]:
        """`pipeline claims --json`."""
        import json

        return json.loads(self.cli("claims", "--json").output)

    def claim(self, order_id: str) -> dict[str, Any] | None:
        """One claim of `pipeline claims --json`, or None."""
        return next((c for c in self.claims() if c["order_id"] == order_id), None)

    def timeline(self, order_id: str) -> dict[str, Any]:
        """`pipeline claims show ORDER --json`."""
        import json

        return json.loads(self.cli("claims", "show", order_id, "--json").output)

    def show(self, order_id: str) -> str:
        """The text of `pipeline claims show ORDER`."""
        return self.cli("claims", "show", order_id).output

    # --- reading the mailbox back ---------------------------------------------------------------------

    @contextlib.contextmanager
    def imap(self) -> Iterator[IMAPClient]:
        """An IMAPClient logged in as the user."""
        from imapclient import IMAPClient

        client = IMAPClient(self.dovecot.host, port=self.dovecot.port, ssl=False, timeout=30)
        client.login(self.user.username, self.user.password)
        try:
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.logout()

    def mails(self, folder: str = "Drafts") -> list[DeskMail]:
        """Every message of a folder, read with BODY.PEEK[] (flags untouched)."""
        with self.imap() as client:
            client.select_folder(folder, readonly=True)
            uids = client.search(["ALL"])
            if not uids:
                return []
            data = client.fetch(uids, [b"BODY.PEEK[]", b"FLAGS"])
        return [DeskMail(uid, tuple(data[uid][b"FLAGS"]), data[uid][b"BODY[]"]) for uid in sorted(data)]

    def drafts(self, order_id: str | None = None, folder: str = "Drafts") -> list[DeskMail]:
        """The drafts in the Drafts folder (of one claim, by X-Pipeline-Claim)."""
        return [m for m in self.mails(folder) if order_id is None or m["X-Pipeline-Claim"] == order_id]


@pytest.fixture
def make_desk_env(dovecot: ThrowawayDovecot, tmp_path: Path) -> Callable[..., DeskEnv]:
    """make_desk_env(seller=, drafts=, imap=, database=, trust=) -> a DeskEnv for a new mail user, files in tmp_path."""
    counter = iter(range(1000))

    def make(**overrides: Any) -> DeskEnv:
        return DeskEnv(dovecot, dovecot.add_user(), tmp_path / f"desk{next(counter)}", **overrides)

    return make


@pytest.fixture
def desk_env(make_desk_env: Callable[..., DeskEnv]) -> DeskEnv:
    """A DeskEnv with the default seller (Harbor Goods)."""
    return make_desk_env()


@pytest.fixture(scope="session")
def playbook_world(dovecot: ThrowawayDovecot, tmp_path_factory: pytest.TempPathFactory) -> DeskEnv:
    """One story per playbook row, dated up to an hour before now, shipments imported, polled once. Read-only."""
    from datetime import UTC, datetime, timedelta

    env = DeskEnv(dovecot, dovecot.add_user(), tmp_path_factory.mktemp("playbook-world"))
    shift = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1) - datetime.fromisoformat(WORLD_LATEST)
    env.shift = shift
    for name in WORLD_FILES:
        env.append(name, shift=shift)
    env.cli("orders", "import", str(PLAYBOOK_DATA / "shipments.csv"))
    env.poll()
    return env


# ============================================ end of playbook section ===============================


# =====================================================================================================
# Small messages built in code (for parsing and understanding tests)
# =====================================================================================================


def make_mail(
    body: str,
    *,
    sender: str,
    subject: str,
    subtype: str = "plain",
    charset: str = "utf-8",
    headers: dict[str, str] | None = None,
    date: str = "Tue, 03 Mar 2026 10:00:00 +0000",
    message_id: str = "<t1@example.com>",
) -> bytes:
    """A one-part message to the seller, as raw bytes."""
    from email.header import Header
    from email.mime.text import MIMEText

    message = MIMEText(body, subtype, charset)
    message["From"] = sender
    message["To"] = "Acme Store <claims@example.com>"
    message["Subject"] = Header(subject, "utf-8").encode()
    message["Date"] = date
    message["Message-ID"] = message_id
    for name, value in (headers or {}).items():
        message[name] = value
    return message.as_bytes()
