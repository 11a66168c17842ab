"""Reply drafts: render the strategy's template, build the threaded MIME message, keep one copy in Drafts."""

from __future__ import annotations

import email.policy
import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import date, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

import jinja2
from jinja2.sandbox import SandboxedEnvironment
from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.claims import record_event
from pipeline.config import Settings
from pipeline.errors import DraftError
from pipeline.mailbox import Mailbox
from pipeline.playbook import AMAZON_FACING as AMAZON_STRATEGIES
from pipeline.resources import search_path
from pipeline.schema import Draft, StoredMessage
from pipeline.store import Store

log = logging.getLogger(__name__)

TEMPLATE_LANGUAGES = ("en", "de", "fr", "it", "es")
REPLY_PREFIX = re.compile(r"^\s*(?:(?:re|aw|antw|wg|fw|fwd|tr|rif|r|sv|vs)\s*(?:\[\d+\])?\s*:\s*)+", re.IGNORECASE)
MONTHS = {
    "en": ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"),
    "de": ("Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September", "Oktober",
           "November", "Dezember"),
    "fr": ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre",
           "novembre", "décembre"),
    "it": ("gennaio", "febbraio", "marzo", "aprile", "maggio", "giugno", "luglio", "agosto", "settembre",
           "ottobre", "novembre", "dicembre"),
    "es": ("enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto", "septiembre", "octubre",
           "noviembre", "diciembre"),
}


@dataclass(frozen=True)
class DraftRequest:
    """Everything one draft needs, already decided by the playbook and the claim."""

    order_id: str
    strategy: str
    language: str
    recipient: str | None
    parent_subject: str
    parent_message_id: str | None
    parent_references: tuple[str, ...]
    context: dict[str, object]


@dataclass(frozen=True)
class RenderedDraft:
    """A draft ready to APPEND: its bytes, its Message-ID, and a hash of its body to spot edits."""

    message_id: str
    raw: bytes
    body_sha256: str
    language: str


class DraftRenderer:
    """Jinja2 templates (bundled, with single files overridable) rendered strictly: a gap fails the draft."""

    def __init__(self, templates_dir: str | Path | None = None) -> None:
        loader = jinja2.ChoiceLoader([jinja2.FileSystemLoader(str(p)) for p in search_path("templates", templates_dir)])
        # sandboxed and strict: values from mail are data only, and a missing value is an error, never a blank
        self.env = SandboxedEnvironment(loader=loader, undefined=jinja2.StrictUndefined, autoescape=False,
                                        keep_trailing_newline=True)

    def language_for(self, strategy: str, language: str | None) -> str:
        """The draft language: the claim's when a template exists in it, else English."""
        lang = language if language in TEMPLATE_LANGUAGES else "en"
        try:
            self.env.get_template(f"{lang}/{strategy}.txt.j2")
        except jinja2.TemplateNotFound:
            lang = "en"
        return lang

    def render(self, strategy: str, language: str, context: dict[str, object]) -> str:
        """The body text; DraftError naming the missing value when the template needs one we do not have."""
        try:
            template = self.env.get_template(f"{language}/{strategy}.txt.j2")
        except jinja2.TemplateNotFound:
            raise DraftError(f"no template {language}/{strategy}.txt.j2") from None
        values = {k: v for k, v in context.items() if v is not None}
        try:
            return template.render(**values)
        except jinja2.UndefinedError as exc:
            raise DraftError(f"template {language}/{strategy}.txt.j2 needs a value we do not have: {exc.message}") \
                from None
        except jinja2.TemplateError as exc:
            raise DraftError(f"template {language}/{strategy}.txt.j2 failed: {exc}") from None


def format_date(value: date | datetime | None, language: str) -> str | None:
    """A date written the way the draft's language writes it."""
    if value is None:
        return None
    day, month, year = value.day, MONTHS.get(language, MONTHS["en"])[value.month - 1], value.year
    return {
        "en": f"{month} {day}, {year}",
        "de": f"{day}. {month} {year}",
        "fr": f"{day} {month} {year}",
        "it": f"{day} {month} {year}",
        "es": f"{day} de {month} de {year}",
    }.get(language, f"{month} {day}, {year}")


def reply_subject(original: str) -> str:
    """'Re: ' plus the original subject without its reply/forward prefixes (never 'Re: Re:')."""
    return "Re: " + REPLY_PREFIX.sub("", one_line(original)).strip()


def one_line(value: str) -> str:
    """Text from mail made safe for a header: control characters and line breaks become single spaces."""
    return re.sub(r"[\x00-\x1f\x7f\u2028\u2029\x85]+", " ", value or "").strip()


def build_message(request: DraftRequest, body: str, *, from_address: str, store_name: str,
                  now: datetime) -> RenderedDraft:
    """The draft as MIME: threaded under its parent, addressed, UTF-8 plain text, our headers."""
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = email.utils.formataddr((one_line(store_name), from_address))
    if request.recipient:
        message["To"] = _safe_address(request.recipient)
    message["Subject"] = reply_subject(request.parent_subject)
    message["Date"] = format_datetime(now)
    domain = from_address.rpartition("@")[2] or "pipeline.invalid"
    message_id = make_msgid(idstring="pipeline", domain=domain)
    message["Message-ID"] = message_id
    if request.parent_message_id:
        message["In-Reply-To"] = request.parent_message_id
        message["References"] = " ".join([*request.parent_references, request.parent_message_id])
    message["X-Pipeline-Claim"] = request.order_id
    message["X-Pipeline-Strategy"] = request.strategy
    message.set_content(body, subtype="plain", charset="utf-8", cte="quoted-printable")
    raw = message.as_bytes()
    return RenderedDraft(message_id, raw, hashlib.sha256(body.encode()).hexdigest(), request.language)


def _safe_address(value: str) -> str:
    cleaned = one_line(value)
    if not re.fullmatch(r"[^\s<>@,;:\"]+@[^\s<>@,;:\"]+", cleaned):
        raise DraftError(f"recipient address {cleaned!r} is not a plain email address")
    return cleaned


class DraftSync:
    """Keeps the Drafts folder in step with what the claims want: write, replace untouched, notice sent/edited."""

    def __init__(self, settings: Settings, store: Store, renderer: DraftRenderer | None = None) -> None:
        self.settings = settings
        self.store = store
        self.renderer = renderer or DraftRenderer(settings.drafts.templates_dir or None)

    def sync(self, mailbox: Mailbox, now: datetime) -> int:
        """Write every wanted draft, then check the written ones; return how many were written."""
        with self.store.session() as session:
            wanted = list(session.scalars(select(Draft).where(Draft.status == "wanted").order_by(Draft.id)))
            pending = [d.id for d in wanted]
        if not pending and not self._has_written():
            return 0
        folder = mailbox.drafts_folder()
        written = 0
        for draft_id in pending:
            with self.store.session() as session:
                draft = session.get_one(Draft, draft_id)
                newer = session.scalar(select(Draft.id).where(Draft.claim_id == draft.claim_id, Draft.id > draft.id,
                                                              Draft.status.in_(("wanted", "written"))))
                if newer:
                    draft.status = "superseded"
                    continue
                written += self._write(session, mailbox, folder, draft, now)
        self._check_written(mailbox, folder, now)
        return written

    def _has_written(self) -> bool:
        with self.store.session() as session:
            return session.scalar(select(Draft.id).where(Draft.status == "written").limit(1)) is not None

    def _write(self, session: Session, mailbox: Mailbox, folder: str, draft: Draft, now: datetime) -> int:
        claim = draft.claim
        try:
            request = self.request_for(session, draft)
            body = self.renderer.render(draft.strategy, request.language, request.context)
            rendered = build_message(request, body, from_address=self.settings.seller.from_address,
                                     store_name=self.settings.seller.store_name, now=now)
        except DraftError as exc:
            draft.status, draft.error = "failed", str(exc)
            claim.flagged, claim.flag_reason = True, f"draft {draft.strategy} not written: {exc}"
            record_event(session, claim, "draft_failed", str(exc), now)
            log.warning("claim %s: draft %s failed: %s", claim.order_id, draft.strategy, exc)
            return 0
        uid = mailbox.append(folder, rendered.raw, [b"\\Draft", b"\\Seen"], now)
        draft.status, draft.folder, draft.uid = "written", folder, uid
        draft.header_message_id, draft.body_sha256, draft.written_at = rendered.message_id, rendered.body_sha256, now
        draft.language, draft.recipient = request.language, request.recipient
        record_event(session, claim, "draft_written",
                     f"{draft.strategy} draft ({request.language}) to {request.recipient or 'no address yet'}", now)
        log.info("claim %s: wrote %s draft", claim.order_id, draft.strategy)
        for older in session.scalars(select(Draft).where(Draft.claim_id == claim.id, Draft.id != draft.id,
                                                          Draft.status == "written")):
            self._retire(session, mailbox, folder, older, now)
        return 1

    def request_for(self, session: Session, draft: Draft) -> DraftRequest:
        """The template context and threading of a draft, from its claim and the message it answers."""
        claim = draft.claim
        parent = session.get(StoredMessage, draft.parent_message_id) if draft.parent_message_id else None
        facts = parent.facts if parent is not None and parent.facts else {}
        language = self.renderer.language_for(draft.strategy, claim.language or self.settings.seller.language)
        context: dict[str, object] = {
            "store_name": self.settings.seller.store_name,
            "order_id": claim.order_id,
            "marketplace": claim.marketplace or "amazon.com",
            "info_request": "#info" in draft.step,
            "deadline": format_date(claim.deadline_at, language),
            "buyer_name": one_line(claim.buyer_name) if claim.buyer_name else None,
            "tracking_number": claim.tracking_number,
            "carrier": claim.carrier,
            "delivery_date": format_date(claim.delivered_on, language),
        }
        recipient = claim.amazon_reply_to if draft.strategy in AMAZON_STRATEGIES else claim.buyer_address
        return DraftRequest(
            order_id=claim.order_id, strategy=draft.strategy, language=language, recipient=recipient,
            parent_subject=str(facts.get("subject") or f"Order {claim.order_id}"),
            parent_message_id=facts.get("message_id") or (parent.message_key if parent and
                                                           parent.message_key.startswith("<") else None),
            parent_references=tuple(facts.get("references") or ()), context=context)

    def _locate(self, mailbox: Mailbox, header_message_id: str | None) -> list[int]:
        if not header_message_id:
            return []
        return mailbox.search_header("Message-ID", header_message_id)

    def _retire(self, session: Session, mailbox: Mailbox, folder: str, older: Draft, now: datetime) -> None:
        """Replace an older step's draft: delete it if untouched; if edited or sent, leave it and say so."""
        mailbox.select(folder, readonly=False)
        uids = self._locate(mailbox, older.header_message_id)
        if uids:
            mailbox.delete(folder, uids)
            older.status = "replaced"
            record_event(session, older.claim, "draft_replaced",
                         f"untouched {older.strategy} draft replaced by the newer step", now)
            return
        self._gone(session, mailbox, older, now)

    def _check_written(self, mailbox: Mailbox, folder: str, now: datetime) -> None:
        """Drafts that left the Drafts folder were sent or edited by the person: record which, once."""
        with self.store.session() as session:
            written = list(session.scalars(select(Draft).where(Draft.status == "written")))
            if not written:
                return
            mailbox.select(folder, readonly=True)
            present = set(mailbox.search_header("X-Pipeline-Claim", ""))
            for draft in written:
                if draft.uid is not None and draft.uid in present:
                    continue
                if self._locate(mailbox, draft.header_message_id):
                    continue
                self._gone(session, mailbox, draft, now)
                mailbox.select(folder, readonly=True)

    def _gone(self, session: Session, mailbox: Mailbox, draft: Draft, now: datetime) -> None:
        sent = mailbox.sent_folder()
        found = False
        if sent:
            mailbox.select(sent, readonly=True)
            found = bool(mailbox.search_header("X-Pipeline-Claim", draft.claim.order_id))
            if not found and draft.parent_message_id:
                parent = session.get(StoredMessage, draft.parent_message_id)
                if parent is not None and parent.message_key.startswith("<"):
                    found = bool(mailbox.search_header("In-Reply-To", parent.message_key))
        if found:
            draft.status = "sent"
            record_event(session, draft.claim, "reply_sent", f"the {draft.strategy} reply was sent", now)
        else:
            draft.status = "edited"
            record_event(session, draft.claim, "draft_edited",
                         f"the {draft.strategy} draft was edited or removed by hand; left alone", now)
