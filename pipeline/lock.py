"""One writer per mailbox: a lock file beside a SQLite database, a PostgreSQL advisory lock elsewhere.

Two pollers on one mailbox would both write its drafts. `pipeline poll --once` gives up with one line when
another poller holds the mailbox; the daemon waits, and takes the mailbox over when its holder dies: the
operating system drops a dead process's file lock, and PostgreSQL its advisory lock when the connection goes
(TCP keepalives notice a machine that vanished within about a minute, LEASE_SECONDS).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from pipeline.errors import PipelineError
from pipeline.store import Store

log = logging.getLogger(__name__)

LEASE_SECONDS = 60  # keepalive idle 30 s + 3 probes 10 s apart: a vanished holder's lock is free after this


class MailboxBusyError(PipelineError):
    """Another poller holds the mailbox."""


class MailboxLock:
    """The right to write one mailbox's drafts and claims: `hold()` takes it when free and says whether this
    process has it; call it before each cycle (a PostgreSQL connection that broke has lost it)."""

    def __init__(self, store: Store, account: str) -> None:
        self.store = store
        self.account = account
        self.key = int.from_bytes(hashlib.sha256(account.encode()).digest()[:8], "big", signed=True)
        self.me = f"pid {os.getpid()} on {socket.gethostname()}"
        self._file: IO[str] | None = None
        self._connection: Connection | None = None
        self._engine: Engine | None = None
        url = store.engine.url
        self._path = None
        if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
            self._path = Path(f"{url.database}.{self.key & 0xFFFFFFFF:08x}.lock")

    def hold(self) -> bool:
        """Whether this process holds the mailbox, taking it when it is free."""
        if self.store.engine.url.get_backend_name() == "postgresql":
            return self._hold_advisory()
        if self._path is None:
            return True  # an in-memory database has one process by definition
        return self._hold_file()

    def holder(self) -> str:
        """Who holds the mailbox, as well as can be told ("pid 4711 on worker-2 since …")."""
        if self._path is not None:
            try:
                return self._path.read_text(encoding="utf-8").strip() or "another process"
            except OSError:
                return "another process"
        try:
            with self.store.engine.connect() as connection:
                found = connection.execute(
                    text(
                        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                        "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = :high AND l.objid = :low"
                    ),
                    {"high": (self.key >> 32) & 0xFFFFFFFF, "low": self.key & 0xFFFFFFFF},
                ).scalar()
        except SQLAlchemyError:
            found = None
        return str(found or "another worker")

    def release(self) -> None:
        """Give the mailbox up."""
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        if self._connection is not None:
            with contextlib.suppress(SQLAlchemyError):  # a connection that is gone took the lock with it
                self._connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
            self._connection.close()
            self._connection = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def busy_error(self) -> MailboxBusyError:
        """The one-line error of a poller that could not take the mailbox."""
        return MailboxBusyError(
            f"another `pipeline poll` is working on mailbox {self.account} ({self.holder()}); "
            "nothing done (one poller per mailbox)"
        )

    # --- internals --------------------------------------------------------------------------------------

    def _hold_file(self) -> bool:
        if self._file is not None:
            return True
        assert self._path is not None
        handle = open(self._path, "a+", encoding="utf-8")  # noqa: SIM115  (held open as the lock)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(f"{self.me} since {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC\n")
        handle.flush()
        self._file = handle
        return True

    def _hold_advisory(self) -> bool:
        if self._connection is not None:
            try:
                self._connection.execute(text("SELECT 1"))
                return True
            except SQLAlchemyError:
                log.warning("the database connection holding mailbox %s broke: taking it again", self.account)
                self._drop_connection()
        connection = self._lock_connection()
        try:
            taken = bool(connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}).scalar())
        except SQLAlchemyError:
            connection.close()
            raise
        if not taken:
            connection.close()
            return False
        self._connection = connection
        return True

    def _lock_connection(self) -> Connection:
        """A connection of its own (no pool), named after this process, with TCP keepalives, in autocommit."""
        if self._engine is None:
            self._engine = create_engine(
                self.store.engine.url,
                poolclass=NullPool,
                isolation_level="AUTOCOMMIT",
                connect_args={
                    "application_name": f"pipeline poll {self.me}"[:63],
                    "keepalives": 1,
                    "keepalives_idle": 30,
                    "keepalives_interval": 10,
                    "keepalives_count": 3,
                    "connect_timeout": 10,
                },
            )
        return self._engine.connect()

    def _drop_connection(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(SQLAlchemyError):
                self._connection.close()
            self._connection = None
