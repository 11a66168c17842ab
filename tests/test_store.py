"""The message and cursor parts of the store, on SQLite and PostgreSQL: idempotent, atomic, storable."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from pipeline.schema import MailboxCursor, StoredMessage
from pipeline.store import Store, message_key

RAW = b"From: atoz-guarantee-no-reply@amazon.com\r\nMessage-ID: <k1@amazonses.com>\r\n\r\nbody \xff\x80 bytes\r\n"


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    store = Store(db_url)
    try:
        yield store
    finally:
        store.dispose()


def _values(key: str = "<k1@amazonses.com>", uid: int = 1, raw: bytes = RAW, **extra: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "message_key": key,
        "account": "claims@imap.example",
        "folder": "INBOX",
        "uidvalidity": 1700000000,
        "uid": uid,
        "raw": raw,
        "sender": "atoz-guarantee-no-reply@amazon.com",
        "subject": "Claim received",
        "sent_at": datetime(2026, 2, 10, 15, 41, 12, tzinfo=UTC),
    }
    values.update(extra)
    return values


def _count(store: Store) -> int:
    with store.session() as session:
        return session.scalar(select(func.count()).select_from(StoredMessage)) or 0


def test_message_key_is_the_message_id_or_a_hash_of_the_bytes() -> None:
    assert message_key("<a@b>", b"x") == "<a@b>"
    assert message_key("  <a@b>\r\n", b"x") == "<a@b>"
    assert message_key(None, b"x") == "sha256:" + hashlib.sha256(b"x").hexdigest()
    assert message_key("   ", b"x") == message_key(None, b"x")
    assert message_key(None, b"x") != message_key(None, b"y")


def test_unstorable_message_ids_get_a_stable_short_key() -> None:
    long_id = "<" + "x" * 2000 + "@example.com>"
    key = message_key(long_id, b"whatever")
    assert key.startswith("mid-sha256:") and len(key) < 100
    assert key == message_key(long_id, b"other bytes")  # the same Message-ID: the same key
    assert message_key("<a\x00b@c>", b"") == "<ab@c>"


def test_fresh_database_is_migrated_and_empty(store: Store) -> None:
    assert store.revision() is not None
    assert store.upgrade() == []  # already at head
    assert _count(store) == 0


def test_add_message_is_idempotent_and_keeps_the_raw_bytes(store: Store) -> None:
    with store.session() as session:
        first_id, created = store.add_message(session, **_values())
        assert created
    with store.session() as session:
        again_id, created = store.add_message(session, **_values(uid=7))  # the same message, seen again
        assert not created
        assert again_id == first_id
    assert _count(store) == 1
    with store.session() as session:
        row = session.scalars(select(StoredMessage)).one()
        assert row.raw == RAW  # byte for byte, invalid UTF-8 included
        assert row.uid == 1  # the first copy wins
        assert row.status == "pending"
        assert row.error is None
        assert row.sent_at == datetime(2026, 2, 10, 15, 41, 12, tzinfo=UTC)
        assert row.received_at.tzinfo is not None
        assert store.has_message(session, "<k1@amazonses.com>")
        assert store.has_message(session, " <k1@amazonses.com> ")
        assert not store.has_message(session, "<other@amazonses.com>")


def test_a_different_message_reusing_a_message_id_is_stored_too(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    """Identity is the Message-ID and the bytes: a real withdrawal that reuses a known Message-ID is not lost."""
    with store.session() as session:
        first, _ = store.add_message(session, **_values())
        second, created = store.add_message(session, **_values(uid=7, raw=b"From: a@amazon.com\r\n\r\nother"))
        assert created and second != first
        assert session.get_one(StoredMessage, second).message_key.startswith("<k1@amazonses.com>#sha256:")
        again, created_again = store.add_message(session, **_values(uid=7, raw=b"From: a@amazon.com\r\n\r\nother"))
        assert (again, created_again) == (second, False)
    assert _count(store) == 2
    assert "a different message reuses Message-ID <k1@amazonses.com>" in caplog.text


def test_a_failed_message_is_kept_with_its_error(store: Store) -> None:
    with store.session() as session:
        store.add_message(
            session, **_values(key="sha256:abc", raw=b"\x00garbage", status="failed", error="cannot parse MIME")
        )
    with store.session() as session:
        row = session.scalars(select(StoredMessage)).one()
        assert (row.status, row.error, row.raw) == ("failed", "cannot parse MIME", b"\x00garbage")


def test_upgrading_to_the_buyer_key_fills_it_from_the_facts_already_stored(store: Store) -> None:
    """Migration 0006 indexes the buyer name of the trusted buyer messages stored before it (and only those)."""
    from alembic import command

    with store.session() as session:
        for uid, (kind, facts) in enumerate(
            [
                ("buyer_message", {"buyer_name": "  Mara Quist ", "trusted": True}),
                ("buyer_message", {"buyer_name": "Forged Name", "trusted": False}),
                ("claim_opened", {"buyer_name": "Mara Quist", "trusted": True}),
            ],
            start=1,
        ):
            store.add_message(session, **_values(key=f"<k{uid}@x>", uid=uid, kind=kind, facts=facts))
    with store.engine.begin() as connection:
        config = store._alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, "0005")
    assert store.revision() == "0005"
    assert store.upgrade() == ["0006"]
    with store.session() as session:
        keys = {uid: key for uid, key in session.execute(select(StoredMessage.uid, StoredMessage.buyer_key))}
    assert keys == {1: "mara quist", 2: None, 3: None}
    with store.engine.connect() as connection:  # (the inspector skips expression indexes on SQLite)
        listing = (
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'messages'"
            if connection.dialect.name == "sqlite"
            else "SELECT indexname FROM pg_indexes WHERE tablename = 'messages'"
        )
        indexes = set(connection.exec_driver_sql(listing).scalars())
    assert {"ix_messages_buyer_key", "ix_messages_lower_sender"} <= indexes  # no index lost on the way


def test_message_and_cursor_are_one_transaction(store: Store) -> None:
    """A kill (here: an exception) between storing a message and moving the cursor leaves neither."""
    with pytest.raises(RuntimeError), store.session() as session:
        store.add_message(session, **_values())
        store.set_cursor(session, "claims@imap.example", "INBOX", 1700000000, 1)
        raise RuntimeError("killed before commit")
    assert _count(store) == 0
    with store.session() as session:
        assert store.cursor(session, "claims@imap.example", "INBOX") is None
        assert not store.has_message(session, "<k1@amazonses.com>")


def test_text_a_database_would_refuse_is_made_storable(store: Store) -> None:
    """NUL characters and broken Unicode from a malformed message must not make the insert fail (PostgreSQL)."""
    with store.session() as session:
        _id, created = store.add_message(
            session,
            **_values(
                key="<broken\x00id@amazonses.com>",
                sender="atoz\x00@amazon.com" + "x" * 400,
                subject="Claim \udcff\udcfe on order 11\x00-BROKEN",
            ),
        )
        assert created
    with store.session() as session:
        row = session.scalars(select(StoredMessage)).one()
        assert row.message_key == "<brokenid@amazonses.com>"
        assert "\x00" not in row.subject and "\x00" not in row.sender
        assert row.subject.startswith("Claim ") and row.subject.endswith(" on order 11-BROKEN")
        assert len(row.sender) <= 320
        assert store.has_message(session, "<broken\x00id@amazonses.com>")


def test_very_long_message_id_is_stored_once(store: Store) -> None:
    long_id = "<" + "é" * 1500 + "@example.com>"  # 3000 bytes: over the column and the PostgreSQL index limit
    for uid in (1, 2):
        with store.session() as session:
            store.add_message(session, **_values(key=message_key(long_id, b""), uid=uid))
    assert _count(store) == 1
    with store.session() as session:
        assert store.has_message(session, long_id)


def test_two_writers_racing_for_the_same_message_store_it_once(db_url: str) -> None:
    """Another process stores the message between our look and our write: we get theirs, no error."""
    first, second = Store(db_url), Store(db_url)
    inserted = threading.Event()
    results: dict[str, Any] = {}

    def writer_a() -> None:
        with first.session() as session:
            _row, results["a"] = first.add_message(session, **_values(uid=1))
            inserted.set()
            # hold the transaction open while B looks (finds nothing) and tries to write
            threading.Event().wait(0.5)

    def writer_b() -> None:
        inserted.wait(5)
        try:
            with second.session() as session:
                message_id, results["b"] = second.add_message(session, **_values(uid=2))
                results["b_uid"] = session.get_one(StoredMessage, message_id).uid
        except Exception as exc:  # the assertion below reports it
            results["b_error"] = exc

    try:
        threads = [threading.Thread(target=writer_a), threading.Thread(target=writer_b)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert "b_error" not in results, results.get("b_error")
        assert results["a"] is True and results["b"] is False
        assert results["b_uid"] == 1
        assert _count(first) == 1
    finally:
        first.dispose()
        second.dispose()


def test_cursors_per_account_and_folder(store: Store) -> None:
    with store.session() as session:
        assert store.cursor(session, "a@imap", "INBOX") is None
        store.set_cursor(session, "a@imap", "INBOX", 11, 5)
        store.set_cursor(session, "a@imap", "Amazon", 22, 9)
        store.set_cursor(session, "b@imap", "INBOX", 33, 1)
    with store.session() as session:
        store.set_cursor(session, "a@imap", "INBOX", 11, 8)
    with store.session() as session:
        got = {(c.account, c.folder): (c.uidvalidity, c.last_uid) for c in session.scalars(select(MailboxCursor))}
    assert got == {("a@imap", "INBOX"): (11, 8), ("a@imap", "Amazon"): (22, 9), ("b@imap", "INBOX"): (33, 1)}
    with store.session() as session:
        store.set_cursor(session, "a@imap", "INBOX", 12, 0)  # UIDVALIDITY changed: start over
    with store.session() as session:
        cursor = store.cursor(session, "a@imap", "INBOX")
        assert cursor is not None and (cursor.uidvalidity, cursor.last_uid) == (12, 0)
        assert cursor.updated_at.tzinfo is not None
