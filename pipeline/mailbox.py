"""IMAP in and out: connect and log in safely, read folders without changing them, append and find drafts."""

from __future__ import annotations

import contextlib
import email
import email.policy
import logging
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType

import imapclient
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError
from imapclient.exceptions import LoginError as ImapLoginError
from imapclient.imapclient import DRAFTS, SENT

from pipeline.config import ImapSettings
from pipeline.errors import FolderNotFoundError, LoginError, MailboxError

log = logging.getLogger(__name__)

# Network and protocol failures after which reconnecting may help.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    socket.timeout,
    ssl.SSLError,
    IMAPClientAbortError,
    EOFError,
)
# IDLE waits in slices of this many seconds, so a stop request is noticed quickly.
IDLE_SLICE = 1.0
HEADER_FIELDS = b"FROM SENDER MESSAGE-ID X-SPACE-NOTIFICATION-TYPE X-MARKETPLACE-ID"
# Beyond imapclient's English names: what servers without SPECIAL-USE call them in our languages (and Gmail).
LOCALIZED_DRAFTS_NAMES = (
    "[Gmail]/Drafts",
    "INBOX.Drafts",
    "INBOX/Drafts",
    "Entwürfe",
    "Brouillons",
    "Bozze",
    "Borradores",
    "Draft",
    "下書き",
)
LOCALIZED_SENT_NAMES = (
    "[Gmail]/Sent Mail",
    "INBOX.Sent",
    "INBOX/Sent",
    "Gesendet",
    "Gesendete Elemente",
    "Envoyés",
    "Éléments envoyés",
    "Inviata",
    "Posta inviata",
    "Enviados",
    "送信済み",
)


@dataclass(frozen=True)
class FolderState:
    """A selected folder's UIDVALIDITY and UIDNEXT."""

    name: str
    uidvalidity: int
    uidnext: int | None


@dataclass(frozen=True)
class HeaderSummary:
    """The few headers fetched for every new UID to decide whether to fetch the whole message."""

    uid: int
    header_bytes: bytes
    message_id: str | None


class Mailbox:
    """One logged-in IMAP connection. Watched folders are opened read-only, so nothing there can change."""

    def __init__(self, client: IMAPClient, settings: ImapSettings) -> None:
        self.client = client
        self.settings = settings
        self.capabilities = {
            c.decode().upper() if isinstance(c, bytes) else str(c).upper() for c in client.capabilities()
        }

    @property
    def account(self) -> str:
        """The account name the cursors are kept under: user@host."""
        return f"{self.settings.username}@{self.settings.host}"

    def has(self, capability: str) -> bool:
        """Whether the server announced a capability (IDLE, UIDPLUS, SPECIAL-USE, …)."""
        return capability.upper() in self.capabilities

    # --- reading --------------------------------------------------------------------------------

    def select(self, folder: str, *, readonly: bool = True) -> FolderState:
        """Open a folder (read-only unless asked) and return its UIDVALIDITY; FolderNotFoundError if absent."""
        try:
            info = self.client.select_folder(folder, readonly=readonly)
        except IMAPClientError as exc:
            if _is_missing_folder(exc):
                raise FolderNotFoundError(f"folder {folder!r} does not exist on {self.settings.host}") from None
            raise
        uidnext = info.get(b"UIDNEXT")
        return FolderState(folder, int(info[b"UIDVALIDITY"]), int(uidnext) if uidnext is not None else None)

    def uids_after(self, last_uid: int) -> list[int]:
        """UIDs above `last_uid` in the selected folder, ascending."""
        found = self.client.search(["UID", f"{last_uid + 1}:*"])
        # "n:*" also matches the highest UID when it is below n
        return sorted(uid for uid in found if uid > last_uid)

    def exists(self, uid: int) -> bool:
        """Whether a UID is (still) in the selected folder."""
        return uid in self.client.search(["UID", str(uid)])

    def uids_between(self, since: datetime | None, until: datetime | None) -> list[int]:
        """UIDs of messages whose Date header lies in [since, until) (whole days), ascending."""
        criteria: list[object] = []
        if since:
            criteria += ["SENTSINCE", since.date()]
        if until:
            criteria += ["SENTBEFORE", until.date()]
        return sorted(self.client.search(criteria or ["ALL"]))

    def fetch_headers(self, uids: Sequence[int]) -> list[HeaderSummary]:
        """The sender and notification headers of each UID (BODY.PEEK: never sets \\Seen)."""
        if not uids:
            return []
        item = b"BODY.PEEK[HEADER.FIELDS (" + HEADER_FIELDS + b")]"
        response = self.client.fetch(list(uids), [item])
        result = []
        for uid in uids:
            data = response.get(uid)
            if data is None:  # expunged meanwhile
                continue
            # servers differ in how they echo the item name (case, quoting), so match on its start only
            header_bytes = next(
                (
                    value
                    for name, value in data.items()
                    if isinstance(name, bytes) and name.upper().startswith(b"BODY[HEADER")
                ),
                None,
            )
            if header_bytes is None:
                raise MailboxError(f"{self.settings.host}: the server sent no headers for UID {uid}")
            header_bytes = header_bytes or b""
            mid = re.search(
                rb"^message-id:[ \t]*(?:\r?\n[ \t]+)?(<[^<>\s]+>)", header_bytes, re.IGNORECASE | re.MULTILINE
            )
            result.append(HeaderSummary(uid, header_bytes, mid.group(1).decode("ascii", "replace") if mid else None))
        return result

    def fetch_raw(self, uids: Sequence[int]) -> dict[int, bytes]:
        """The whole message of each UID (BODY.PEEK[]: never sets \\Seen); expunged ones are absent."""
        if not uids:
            return {}
        response = self.client.fetch(list(uids), [b"BODY.PEEK[]"])
        return {uid: data[b"BODY[]"] for uid, data in response.items() if b"BODY[]" in data}

    def header_fields(self, uids: Sequence[int], names: Sequence[str]) -> dict[int, dict[str, str]]:
        """Some headers of each UID in the selected folder (BODY.PEEK: never sets \\Seen), names lower-cased."""
        if not uids:
            return {}
        item = f"BODY.PEEK[HEADER.FIELDS ({' '.join(n.upper() for n in names)})]".encode()
        found = {}
        for uid, data in self.client.fetch(list(uids), [item]).items():
            raw = next((v for k, v in data.items() if isinstance(k, bytes) and k.upper().startswith(b"BODY[")), b"")
            parsed = email.message_from_bytes(raw or b"", policy=email.policy.compat32)
            found[uid] = {name.lower(): " ".join(str(value).split()) for name, value in parsed.items()}
        return found

    def search_header(self, name: str, value: str) -> list[int]:
        """UIDs in the selected folder whose header `name` contains `value`."""
        return sorted(self.client.search(["HEADER", name, value]))

    def noop(self) -> None:
        """Ask the server for pending updates; raises if the connection is dead."""
        self.client.noop()

    # --- IDLE -----------------------------------------------------------------------------------

    def wait_for_news(self, seconds: float, should_stop: Callable[[], bool] | None = None) -> bool:
        """Wait in one IDLE up to `seconds` for new mail; True when something arrived. Raises when the link died.

        `should_stop` is asked about once a second and ends the wait early. imapclient's idle_check returns
        quietly (and at once) when the server has closed the connection, and a server that logs us out
        sends BYE first: both are turned into IMAPClientAbortError, so the caller reconnects.
        """
        deadline = time.monotonic() + max(0.0, seconds)
        news = False
        self.client.idle()
        while not news:
            left = deadline - time.monotonic()
            if left <= 0 or (should_stop is not None and should_stop()):
                break
            step = min(IDLE_SLICE, left)
            started = time.monotonic()
            responses = self.client.idle_check(timeout=step)
            news = _has_news(responses)
            if not responses and time.monotonic() - started < step / 2:
                break  # woke up early with nothing to read: end of file, or a spurious wake-up; DONE tells
        _text, responses = self.client.idle_done()  # fails on a dead connection
        news = _has_news(responses) or news
        return news

    # --- drafts ---------------------------------------------------------------------------------

    def find_folder(self, configured: str, special_use: bytes, localized_names: Iterable[str]) -> str:
        """A folder by configured name, else imapclient's find_special_folder (the SPECIAL-USE flag, then its
        usual English names), else one of our localized names ("Entwürfe", "Bozze", …)."""
        if configured:
            names = {name for _flags, _delim, name in self.client.list_folders()}
            if configured in names:
                return configured
            raise FolderNotFoundError(f"folder {configured!r} does not exist on {self.settings.host}")
        found = self.client.find_special_folder(special_use)
        if found:
            return str(found)
        names = {name for _flags, _delim, name in self.client.list_folders()}
        for candidate in localized_names:
            if candidate in names:
                return candidate
        kind = special_use.decode().lstrip("\\")
        raise FolderNotFoundError(
            f"no {kind} folder on {self.settings.host}: none has the \\{kind} flag and none has a usual name; "
            f"set [imap] {kind.lower()} in the config"
        )

    def drafts_folder(self) -> str:
        """The Drafts folder: configured, else SPECIAL-USE \\Drafts, else a usual name."""
        return self.find_folder(self.settings.drafts, DRAFTS, LOCALIZED_DRAFTS_NAMES)

    def sent_folder(self) -> str | None:
        """The Sent folder, or None when there is none."""
        try:
            return self.find_folder(self.settings.sent, SENT, LOCALIZED_SENT_NAMES)
        except FolderNotFoundError:
            return None

    def append(self, folder: str, message: bytes, flags: Sequence[bytes], when: datetime | None = None) -> int | None:
        """APPEND a message; return its UID when the server says (UIDPLUS), else None."""
        response = self.client.append(folder, message, flags=flags, msg_time=when)
        found = re.search(rb"APPENDUID (\d+) (\d+)", response if isinstance(response, bytes) else b"")
        return int(found.group(2)) if found else None

    def delete(self, folder: str, uids: Sequence[int]) -> None:
        """Delete messages of our own (drafts) from a folder: flag \\Deleted and expunge just those UIDs."""
        if not uids:
            return
        self.select(folder, readonly=False)
        self.client.delete_messages(list(uids))
        if self.has("UIDPLUS"):
            self.client.uid_expunge(list(uids))
            return
        # A plain EXPUNGE removes every \\Deleted message of the folder, the user's too: only when ours are all.
        others = set(self.client.search(["DELETED"])) - set(uids)
        if others:
            log.warning(
                "%s has no UIDPLUS and %s holds other deleted messages: our %d old drafts stay flagged "
                "\\Deleted until the folder is expunged",
                self.settings.host,
                folder,
                len(uids),
            )
            return
        self.client.expunge()

    # --- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        """Log out; a connection that is already dead is just dropped."""
        try:
            self.client.logout()
        except Exception:  # logging out of a dead connection has nothing left to clean up
            with contextlib.suppress(Exception):
                self.client.shutdown()

    def abort(self) -> None:
        """Drop a connection that failed, without the LOGOUT round trip that could wait for a read timeout."""
        _drop(self.client)

    def __enter__(self) -> Mailbox:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def connect(settings: ImapSettings) -> Mailbox:
    """Connect with the configured security, verify the certificate, log in; raise MailboxError/LoginError."""
    timeout = imapclient.SocketTimeout(connect=settings.timeout, read=settings.timeout)
    context = tls_context(settings)
    host, port = settings.host, settings.effective_port
    try:
        client = IMAPClient(host, port=port, ssl=settings.security == "ssl", ssl_context=context, timeout=timeout)
    except ssl.SSLCertVerificationError as exc:
        raise MailboxError(_untrusted(host, port, exc, settings)) from None
    except (OSError, IMAPClientError) as exc:
        raise MailboxError(f"cannot connect to {host}:{port}: {_describe(exc)}") from None
    try:
        if settings.security == "starttls":
            if b"STARTTLS" not in client.capabilities():
                raise MailboxError(f"{host}:{port} does not offer STARTTLS; refusing to log in unencrypted")
            client.starttls(context)
        if settings.uses_oauth2 and settings.security != "starttls":  # (before STARTTLS the list may be stale)
            mechanisms = {c.upper() for c in client.capabilities() if c.upper().startswith(b"AUTH=")}
            if mechanisms and b"AUTH=XOAUTH2" not in mechanisms:
                offered = ", ".join(m.decode()[5:] for m in sorted(mechanisms))
                raise LoginError(
                    f"{host}: the server does not offer XOAUTH2 login (it offers {offered}); "
                    "use a password instead of oauth2_token_command"
                )
        secret = settings.secret()
        try:
            if settings.uses_oauth2:
                client.oauth2_login(settings.username, secret)
            else:
                client.login(settings.username, secret)
        except ImapLoginError:
            raise LoginError(f"{host}: login refused for {settings.username} (check the password or token)") from None
        finally:
            del secret
        return Mailbox(client, settings)
    except ssl.SSLCertVerificationError as exc:
        _drop(client)
        raise MailboxError(_untrusted(host, port, exc, settings)) from None
    except (OSError, IMAPClientError) as exc:
        _drop(client)
        raise MailboxError(f"{host}:{port}: {_describe(exc)}") from None
    except BaseException:
        _drop(client)
        raise


def tls_context(settings: ImapSettings) -> ssl.SSLContext:
    """A verifying TLS context: system CAs, plus the configured CA file."""
    context = ssl.create_default_context()
    if settings.ca_file:
        try:
            context.load_verify_locations(cafile=settings.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise MailboxError(f"cannot load imap.ca_file {settings.ca_file}: {exc}") from None
    return context


def _untrusted(host: str, port: int, exc: ssl.SSLCertVerificationError, settings: ImapSettings) -> str:
    hint = "" if settings.ca_file else "; if the server uses a private CA, set [imap] ca_file"
    return f"TLS certificate of {host}:{port} not trusted: {exc.verify_message}{hint}"


def _drop(client: IMAPClient) -> None:
    with contextlib.suppress(Exception):  # the connection is being thrown away either way
        client.shutdown()


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.replace("\r", " ").replace("\n", " ")[:300]


def _has_news(responses: Sequence[tuple[object, ...]]) -> bool:
    """Whether IDLE responses announce new mail; raise when the server said BYE (it is closing the link)."""
    for response in responses:
        if response and response[0] == b"BYE":
            text = b" ".join(r for r in response[1:] if isinstance(r, bytes)).decode("ascii", "replace")
            raise IMAPClientAbortError(f"server closed the connection: {text}".strip())
    return any(len(r) >= 2 and r[1] == b"EXISTS" for r in responses)


def _is_missing_folder(exc: IMAPClientError) -> bool:
    text = str(exc).lower()
    return "nonexistent" in text or "doesn't exist" in text or "does not exist" in text or "not found" in text
