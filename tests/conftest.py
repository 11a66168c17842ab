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

    from pipeline.dovecot import MailUser, ThrowawayDovecot

# =====================================================================================================
# Throwaway Dovecot IMAP server and PostgreSQL databases (real servers, no mocks)
#
#   dovecot   (session)  a running pipeline.dovecot.ThrowawayDovecot with TLS (ssl_port, ca_file)
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


@pytest.fixture(scope="session")
def dovecot() -> Iterator[ThrowawayDovecot]:
    """A throwaway Dovecot (plain IMAP with STARTTLS on .port, implicit TLS on .ssl_port) for the session."""
    from pipeline.dovecot import DovecotError, ThrowawayDovecot, ensure_installed

    server = ThrowawayDovecot(ssl=True)
    try:
        ensure_installed()
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


# ============================================ end of servers section ================================
