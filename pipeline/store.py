"""The database: opening and migrating it, transactions, and the idempotent writes the stages need."""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, func, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from pipeline.errors import StoreError
from pipeline.schema import Claim, ClaimEvent, MailboxCursor, StoredMessage

log = logging.getLogger(__name__)
MIGRATION_LOCK = 7_310_425_001  # the PostgreSQL advisory lock key of schema migrations

MIGRATIONS = Path(__file__).parent / "migrations"
# A btree index entry must stay under ~2700 bytes in PostgreSQL; the column holds 998 characters.
MAX_KEY_BYTES = 900
# Text columns of a message with a length limit (characters).
_TEXT_LIMITS = {"account": 320, "folder": 500, "sender": 320, "subject": None, "error": None}


def message_key(message_id: str | None, raw: bytes) -> str:
    """The idempotency key of a message: its Message-ID, or a hash of its bytes when it has none.

    A Message-ID that cannot be stored as is (NUL bytes, longer than the column or a PostgreSQL index
    entry allows) is replaced by a hash of it, so the same message always gets the same key.
    """
    if message_id and message_id.strip():
        return normal_key(message_id.strip())
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def normal_key(key: str) -> str:
    """A message key as stored: valid UTF-8 without NUL, short enough for the unique index (idempotent)."""
    cleaned = _clean_text(key).strip()
    if len(cleaned.encode("utf-8")) > MAX_KEY_BYTES:
        return "mid-sha256:" + hashlib.sha256(cleaned.encode("utf-8")).hexdigest()
    return cleaned


_INSERT_MESSAGE = {
    name: insert(StoredMessage).on_conflict_do_nothing(index_elements=["message_key"]).returning(StoredMessage.id)
    for name, insert in (("sqlite", sqlite_insert), ("postgresql", postgresql_insert))
}


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class Store:
    """A migrated database and the sessions to work on it; one per process."""

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = url
        try:
            self.engine = _make_engine(url)
        except (ArgumentError, ImportError, ValueError) as exc:
            raise StoreError(f"bad database url: {exc}") from None
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        if migrate:
            self.upgrade()

    @property
    def safe_url(self) -> str:
        """The URL with any password masked, for messages and logs."""
        return self.engine.url.render_as_string(hide_password=True)

    def upgrade(self) -> list[str]:
        """Bring the schema to the newest migration; return the revisions applied (empty when up to date)."""
        script = ScriptDirectory.from_config(self._alembic_config())
        head = script.get_current_head()
        try:
            with self._one_migrator(), self.engine.begin() as connection:
                if connection.dialect.name == "postgresql":  # two processes starting at once: one migrates
                    connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
                current = MigrationContext.configure(connection).get_current_revision()
                if current == head:
                    return []
                cfg = self._alembic_config()
                cfg.attributes["connection"] = connection
                command.upgrade(cfg, "head")
        except OperationalError as exc:
            raise StoreError(f"cannot open database {self.safe_url}: {exc.orig}") from None
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot migrate database {self.safe_url}: {exc}") from None
        applied = []
        rev = script.get_revision(head) if head else None
        while rev is not None and rev.revision != current:
            applied.append(rev.revision)
            down = rev.down_revision
            rev = script.get_revision(down) if isinstance(down, str) else None
        return list(reversed(applied))

    @contextmanager
    def _one_migrator(self) -> Iterator[None]:
        """On a SQLite file, hold a lock file next to it while migrating (PostgreSQL: an advisory lock)."""
        path = self.engine.url.database if self.engine.url.get_backend_name() == "sqlite" else None
        if not path or path == ":memory:":
            yield
            return
        with open(f"{path}.migrate-lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def revision(self) -> str | None:
        """The schema revision the database is at."""
        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def _alembic_config(self) -> Config:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        return cfg

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back on any exception."""
        session = self._sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def check(self) -> None:
        """Open a connection and run a trivial query; raise StoreError when that fails."""
        try:
            with self.engine.connect() as connection:
                connection.exec_driver_sql("SELECT 1")
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot open database {self.safe_url}: {getattr(exc, 'orig', exc)}") from None

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    # --- messages ---------------------------------------------------------------------------------

    def add_message(self, session: Session, **values: Any) -> tuple[int, bool]:
        """Store a message unless the same one is there; return its id and whether it is new.

        A message is the same when its key (Message-ID) and its bytes are: a different message that reuses a
        known Message-ID is stored too, under the key with its digest appended, and logged. The write joins
        the caller's transaction (no savepoint: on SQLite, releasing one would commit the message on its own,
        apart from the cursor the caller moves with it). Text fields are made storable on every backend (no
        NUL, valid UTF-8, within the column's length).
        """
        values = dict(values)
        values["message_key"] = key = normal_key(values["message_key"])
        for name, limit in _TEXT_LIMITS.items():
            if isinstance(values.get(name), str):
                values[name] = _clean_text(values[name])[:limit]
        raw = values.get("raw") or b""
        values["raw_sha256"] = digest = hashlib.sha256(raw).hexdigest()
        existing = self._stored_digest(session, key)
        if existing is not None:
            existing_id, existing_digest = existing
            if existing_digest == digest or not raw:
                return existing_id, False
            known_key = key
            values["message_key"] = key = normal_key(f"{key}#sha256:{digest[:16]}")
            again = self._stored_digest(session, key)
            if again is not None:
                return again[0], False
            log.warning(
                "a different message reuses Message-ID %s (uid %s in %s): stored as %s",
                known_key,
                values.get("uid"),
                values.get("folder"),
                key,
            )
        values.setdefault("received_at", utcnow())
        dialect = session.get_bind().dialect.name
        if dialect in ("sqlite", "postgresql"):
            # another process may store the same message between our look and our write: then nothing is
            # inserted and theirs is returned (the values go as parameters: the statement is compiled once)
            new_id = session.execute(_INSERT_MESSAGE[dialect], values).scalar()
            if new_id is None:
                theirs = self._stored_digest(session, key)
                if theirs is None:  # pragma: no cover - the other writer rolled back after blocking us
                    raise StoreError(f"message {key!r} could neither be inserted nor found")
                return theirs[0], False
            return new_id, True
        row = StoredMessage(**values)
        session.add(row)
        session.flush()
        return row.id, True

    def _stored_digest(self, session: Session, key: str) -> tuple[int, str] | None:
        """The id and the SHA-256 of the bytes of the message stored under this key (not loading the bytes,
        unless a row from before the digest column has none)."""
        found = session.execute(
            select(StoredMessage.id, StoredMessage.raw_sha256).where(StoredMessage.message_key == key)
        ).first()
        if found is None:
            return None
        message_id, digest = found
        if digest is None:
            raw = session.scalar(select(StoredMessage.raw).where(StoredMessage.id == message_id)) or b""
            digest = hashlib.sha256(raw).hexdigest()
        return message_id, digest

    def has_message(self, session: Session, key: str) -> bool:
        """True when a message with this key (or Message-ID) is stored."""
        return session.scalar(select(StoredMessage.id).where(StoredMessage.message_key == normal_key(key))) is not None

    def uids_stored_from(
        self, session: Session, account: str, folder: str, uidvalidity: int, uids: list[int]
    ) -> set[int]:
        """Which of these UIDs of a folder are stored (whatever their Message-IDs): stored_from for many."""
        found: set[int] = set()
        for first in range(0, len(uids), 500):  # within every database's limit on bound parameters
            found.update(
                session.scalars(
                    select(StoredMessage.uid).where(
                        StoredMessage.account == account,
                        StoredMessage.folder == folder,
                        StoredMessage.uidvalidity == uidvalidity,
                        StoredMessage.uid.in_(uids[first : first + 500]),
                    )
                )
            )
        return found

    # --- cursors ----------------------------------------------------------------------------------

    def cursor(self, session: Session, account: str, folder: str) -> MailboxCursor | None:
        """The poller's position in a folder, or None before the first poll."""
        return session.get(MailboxCursor, (account, folder))

    def set_cursor(self, session: Session, account: str, folder: str, uidvalidity: int, last_uid: int) -> None:
        """Record that every UID up to `last_uid` under `uidvalidity` is done."""
        row = session.get(MailboxCursor, (account, folder))
        if row is None:
            session.add(
                MailboxCursor(
                    account=account, folder=folder, uidvalidity=uidvalidity, last_uid=last_uid, updated_at=utcnow()
                )
            )
        else:
            row.uidvalidity, row.last_uid, row.updated_at = uidvalidity, last_uid, utcnow()


@contextmanager
def opened_store(url: str) -> Iterator[Store]:
    """The database at `url`, migrated, closed afterwards."""
    store = Store(url)
    try:
        yield store
    finally:
        store.dispose()


def record_event(
    session: Session, claim: Claim, kind: str, reason: str, at: datetime, message_id: int | None = None
) -> None:
    """Add an event the replay does not derive (draft written/replaced/edited, reply sent) to a claim's timeline.

    Derived events are numbered from 0 and rewritten with each replay; these from 1000 on, and kept.
    """
    last = session.scalar(
        select(func.max(ClaimEvent.seq)).where(ClaimEvent.claim_id == claim.id, ClaimEvent.seq >= 1000)
    )
    seq = 1000 if last is None else last + 1
    session.add(
        ClaimEvent(
            claim_id=claim.id,
            seq=seq,
            at=at,
            kind=kind,
            from_state=claim.state,
            to_state=claim.state,
            strategy=claim.strategy,
            rule=kind,
            reason=reason,
            message_id=message_id,
        )
    )


def _clean_text(value: str) -> str:
    """Text every backend accepts: no NUL characters (PostgreSQL refuses them), no lone surrogates."""
    return value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            _private_file(Path(path))
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")  # readers (the CLI) never block the daemon
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        # No SAVEPOINTs on SQLite: the sqlite3 module commits a released savepoint on its own. Its deferred
        # BEGIN before the first write is kept on purpose: writers then wait for each other (busy_timeout)
        # instead of failing with "database is locked" when a read transaction tries to upgrade.
        return engine
    connect_args = {"connect_timeout": 10} if url.startswith("postgresql") else {}
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args)


def _private_file(path: Path) -> None:
    """Create the SQLite file (and its folder) readable by its owner only: it holds every buyer's mail.

    SQLite gives its -wal and -shm files the database file's permissions. An existing file is left as it is
    (its owner chose its mode).
    """
    folder = path.parent
    try:
        if not folder.exists():
            folder.mkdir(mode=0o700, parents=True)
        if not path.exists():
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass  # another process created it at the same moment
    except OSError as exc:
        raise StoreError(f"cannot create the database {path}: {exc.strerror}") from None
