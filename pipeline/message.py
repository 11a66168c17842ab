"""Turns raw RFC 5322 bytes into a ParsedMessage: decoded headers, body text, and the sender's own new words."""

from __future__ import annotations

import email
import email.errors
import email.header
import email.message
import email.policy
import email.utils
import json
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property, lru_cache
from pathlib import Path

import mailparser
from inscriptis import get_text
from mailparser_reply import EmailReplyParser

from pipeline.errors import MessageError
from pipeline.marketplaces import MARKETPLACE_IDS, is_amazon_domain, marketplace_of_domain
from pipeline.resources import bundled_dir
from pipeline.trust import AUTH_HEADERS, header_failure

# mail-parser warns "Email content ... not handled" for every alternative part it does not pick: noise to us
logging.getLogger("mailparser").setLevel(logging.ERROR)

# MIME defects after which the parts cannot be trusted to be what the sender wrote
BROKEN_STRUCTURE = frozenset(
    {
        "StartBoundaryNotFoundDefect",
        "MultipartInvariantViolationDefect",
        "InvalidMultipartContentTransferEncodingDefect",
    }
)
NOTIFICATION_HEADERS = ("X-Space-Notification-Type", "X-Marketplace-ID")
AUTH_HEADER_NAMES = frozenset(name.lower() for name in AUTH_HEADERS)
SLIM_ABOVE = 2_000_000  # bytes: bigger messages are parsed without their attachments (see slimmed)
PARSE_LIMIT = 4_000_000  # bytes of a message that are ever parsed
PART_LIMIT = 1_000_000  # characters of one text part kept for parsing, far beyond any letter
# Amazon SES sends mail for anyone: a candidate worth reading, never proof that Amazon sent it.
RELAY_DOMAINS = ("amazonses.com",)


@dataclass(frozen=True)
class ParsedMessage:
    """What the later stages need of one email, decoded."""

    message_id: str | None
    sender: str
    sender_name: str
    reply_to: str | None
    to: tuple[str, ...]
    subject: str
    sent_at: datetime | None
    in_reply_to: str | None
    references: tuple[str, ...]
    notification_type: str | None
    marketplace_id: str | None
    plain_parts: tuple[str, ...]  # the text/plain parts, decoded
    # Authentication-Results and their ARC and Exchange kin: (header name, value) as received
    authentication: tuple[tuple[str, str], ...] = field(default=())
    html: str = ""  # the text/html parts as sent (the understanding reads Amazon's layout from it)
    has_plain: bool = False  # whether the body text came from a text/plain part
    raw_size: int = 0  # the message's size; more than PARSE_LIMIT means only its beginning was read

    @cached_property  # (a frozen dataclass keeps it: cached_property writes the instance dict directly)
    def authentication_failure(self) -> str | None:
        """A receiving server's verdict that takes trust away (fail, softfail or permerror), or None."""
        return header_failure(list(self.authentication))

    @cached_property
    def text(self) -> str:
        """The readable body: the text/plain parts, else the HTML as text with its layout kept (worked out when
        first asked for: an Amazon notice is read from its HTML, and most never need it)."""
        return body_text(list(self.plain_parts), [self.html] if self.html else [])

    @cached_property
    def _sender_words(self) -> tuple[str, bool]:
        return sender_words(self.text)

    @property
    def new_text(self) -> str:
        """The sender's own new words: between Amazon's markers, else without quoted earlier mail."""
        return self._sender_words[0]

    @property
    def had_markers(self) -> bool:
        """Whether Amazon's begin/end markers framed the sender's words."""
        return self._sender_words[1]

    @cached_property
    def sender_domain(self) -> str:
        """The domain of the From address, lower-cased."""
        return self.sender.rpartition("@")[2].lower()


def parse_message(raw: bytes) -> ParsedMessage:
    """Parse raw message bytes; raise MessageError when they are not an email at all."""
    if not raw or not raw.strip():
        raise MessageError("empty message")
    size = len(raw)
    if size > SLIM_ABOVE:
        # what is read of a big message is its beginning (the text comes before a buyer's photos), without
        # attachments: bounded memory and time whatever arrives
        raw = slimmed(raw[:PARSE_LIMIT])
    try:
        mail = mailparser.parse_from_bytes(raw)
    except Exception as exc:  # mail-parser raises many kinds on broken input; all mean the same to us
        raise MessageError(f"cannot parse MIME: {exc}") from None
    senders = [(name, addr) for name, addr in (mail.from_ or []) if addr and "@" in addr]
    if not senders:
        raise MessageError("no sender address (From header missing or unreadable)")
    broken = sorted(set(mail.defects_categories or ()) & BROKEN_STRUCTURE)
    if broken:
        # the body we could read is not the body that was sent: keep the message as failed, never guess
        raise MessageError(f"broken MIME structure ({', '.join(broken)})")
    sender_name, sender = senders[0]
    headers = mail.headers
    reply_to = next((addr for _, addr in (mail.reply_to or []) if addr and "@" in addr), None)
    plain, html = _text_parts(mail.message)
    return ParsedMessage(
        message_id=normalize_message_id(mail.message_id),
        sender=sender.strip().lower(),
        sender_name=_one_line(_decoded(sender_name)),
        reply_to=reply_to.strip() if reply_to else None,
        to=tuple(addr for _, addr in (mail.to or []) if addr),
        subject=_one_line(mail.subject or ""),
        sent_at=_as_utc(mail.date),
        in_reply_to=normalize_message_id(headers.get("In-Reply-To")),
        references=tuple(re.findall(r"<[^<>\s]+>", str(headers.get("References") or ""))),
        notification_type=_header(headers, "X-Space-Notification-Type"),
        marketplace_id=_header(headers, "X-Marketplace-ID"),
        plain_parts=tuple(plain),
        authentication=tuple(
            (name, str(value)) for name, value in mail.message.items() if name.lower() in AUTH_HEADER_NAMES
        ),
        html="\n".join(html),
        has_plain=any(part.strip() for part in plain),
        raw_size=size,
    )


def slimmed(raw: bytes) -> bytes:
    """A big message without what no stage reads: attachments emptied, each text part cut to PART_LIMIT.

    A buyer's photos can make a message tens of megabytes; parsing it whole would cost several times that in
    memory. The stored raw bytes stay whole: only what is parsed is slimmed.
    """
    try:
        message = email.message_from_bytes(raw, policy=email.policy.compat32)
        for part in message.walk():
            if part.is_multipart():
                continue
            if part.get_content_type() not in ("text/plain", "text/html"):
                part.set_payload("")
                continue
            payload = part.get_payload()
            if isinstance(payload, str) and len(payload) > PART_LIMIT:
                cut = payload.rfind("\n", 0, PART_LIMIT)  # whole lines: base64 and quoted-printable stay decodable
                part.set_payload(payload[: cut if cut > 0 else PART_LIMIT])
        return message.as_bytes()
    except Exception:  # the stdlib cannot even read it: mail-parser will say what is wrong
        return raw


def body_text(plain_parts: list[str], html_parts: list[str]) -> str:
    """The readable body: the text/plain parts, else the HTML converted to text with its layout kept."""
    plain = "\n".join(part for part in plain_parts if part.strip())
    if plain.strip():
        return _normalize(plain)
    html = "\n".join(html_parts)
    return _normalize(get_text(html)) if html.strip() else ""


def _text_parts(message: email.message.Message | None) -> tuple[list[str], list[str]]:
    """The decoded text/plain and text/html parts that are not attachments.

    Decoded here rather than by mail-parser, which leaves 7bit ISO-2022-JP (Japanese) undecoded.
    """
    plain: list[str] = []
    html: list[str] = []
    if message is None:
        return plain, html
    for part in message.walk():
        if part.is_multipart() or part.get_content_maintype() != "text":
            continue
        if (part.get("Content-Disposition") or "").strip().lower().startswith("attachment"):
            continue
        subtype = part.get_content_subtype()
        if subtype not in ("plain", "html"):
            continue
        (plain if subtype == "plain" else html).append(_decode_part(part))
    return plain, html


def _decode_part(part: email.message.Message) -> str:
    payload = part.get_payload(decode=True)
    if payload is None:
        return str(part.get_payload() or "")
    if not isinstance(payload, bytes):
        return str(payload)
    charset = (part.get_content_charset() or "utf-8").strip().strip('"').lower()
    for candidate in (charset, "utf-8"):
        try:
            return payload.decode(candidate)
        except (LookupError, UnicodeDecodeError):
            continue
    return payload.decode("latin-1")


def sender_words(text: str) -> tuple[str, bool]:
    """The sender's own new text: between Amazon's message markers, without quoted mail or signature."""
    section, had_markers = _between_markers(text)
    return strip_quoted(section), had_markers


def strip_quoted(text: str) -> str:
    """Remove quoted earlier mail ("On … wrote:", "> " lines) and signatures from a reply."""
    cut = _quote_header_regex().search(text)
    if cut:
        text = text[: cut.start()]
    try:
        replies = _reply_parser().read(text).replies
        body = replies[0].body if replies else text
    except Exception:  # the reply parser is heuristic; on any failure keep our own cut
        body = text
    lines = [line for line in body.splitlines() if not line.lstrip().startswith(">")]
    return "\n".join(lines).strip()


def is_candidate(sender: str, headers: dict[str, str]) -> bool:
    """Whether a message is worth fetching whole: Amazon senders, SES relays, or notification headers."""
    domain = sender.rpartition("@")[2].lower()
    if is_amazon_domain(domain) or any(domain == d or domain.endswith("." + d) for d in RELAY_DOMAINS):
        return True
    return any(headers.get(name.lower()) for name in NOTIFICATION_HEADERS)


def candidate_from_header_bytes(header_bytes: bytes) -> bool:
    """is_candidate for a header block as fetched with BODY.PEEK[HEADER.FIELDS (...)]."""
    parsed = email.message_from_bytes(header_bytes, policy=email.policy.compat32)
    addresses = email.utils.getaddresses(
        [str(v) for v in parsed.get_all("From", [])] + [str(v) for v in parsed.get_all("Sender", [])]
    )
    headers = {name.lower(): str(parsed.get(name, "")) for name in NOTIFICATION_HEADERS}
    return any(is_candidate(addr, headers) for _, addr in addresses if addr)


def marketplace_of(message: ParsedMessage) -> str | None:
    """The marketplace (amazon.de, …) from X-Marketplace-ID, else from an Amazon sender domain."""
    if message.marketplace_id and message.marketplace_id.strip() in MARKETPLACE_IDS:
        return MARKETPLACE_IDS[message.marketplace_id.strip()]
    return marketplace_of_domain(message.sender_domain)


# --- internals ------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _marker_config() -> dict[str, list[str]]:
    """Buyer-message markers and quote headers of every language (models/<lang>/language.json)."""
    merged: dict[str, list[str]] = {"begin_markers": [], "end_markers": [], "quote_headers": []}
    for path in sorted(Path(bundled_dir("models")).glob("*/language.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        markers = data.get("markers", {})
        merged["begin_markers"].extend(markers.get("begin", []))
        merged["end_markers"].extend(markers.get("end", []))
        merged["quote_headers"].extend(data.get("quote_headers", []))
    return merged


@lru_cache(maxsize=1)
def _marker_regexes() -> tuple[re.Pattern[str], re.Pattern[str]]:
    config = _marker_config()

    def alternation(words: list[str]) -> str:
        return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))

    begin = re.compile(
        rf"^[ \t]*-{{3,}}[ \t]*(?:{alternation(config['begin_markers'])})[ \t]*-{{3,}}[ \t]*$",
        re.MULTILINE | re.IGNORECASE,
    )
    end = re.compile(
        rf"^[ \t]*-{{3,}}[ \t]*(?:{alternation(config['end_markers'])})[ \t]*-{{3,}}[ \t]*$",
        re.MULTILINE | re.IGNORECASE,
    )
    return begin, end


@lru_cache(maxsize=1)
def _quote_header_regex() -> re.Pattern[str]:
    patterns = _marker_config()["quote_headers"] or [r"(?!x)x"]
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.MULTILINE | re.IGNORECASE)


@lru_cache(maxsize=1)
def _reply_parser() -> EmailReplyParser:
    from mailparser_reply.constants import MAIL_LANGUAGES

    # every bundled language the reply parser knows the quote headers of
    languages = [lang for lang in _bundled_language_codes() if lang in MAIL_LANGUAGES]
    return EmailReplyParser(languages=languages or ["en"])


def _bundled_language_codes() -> list[str]:
    return sorted(path.parent.name for path in Path(bundled_dir("models")).glob("*/language.json"))


def _between_markers(text: str) -> tuple[str, bool]:
    begin, end = _marker_regexes()
    start = begin.search(text)
    if not start:
        return text, False
    stop = end.search(text, start.end())
    return text[start.end() : stop.start() if stop else len(text)], True


def _normalize(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u00a0", " ")
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _one_line(value: str) -> str:
    return re.sub(r"\s+", " ", value or "").strip()


def _decoded(value: str) -> str:
    """A display name with any RFC 2047 encoded words still in it decoded (mail-parser leaves some)."""
    if "=?" not in (value or ""):
        return value
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (LookupError, UnicodeError, ValueError, email.errors.HeaderParseError):
        return value


def normalize_message_id(value: object) -> str | None:
    """The `<id@host>` part of a Message-ID style header, or None."""
    if not value:
        return None
    found = re.search(r"<[^<>\s]+>", str(value))
    return found.group(0) if found else str(value).strip() or None


def _header(headers: dict[str, object], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name.lower() and value:
            return str(value).strip()
    return None


def _as_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
