"""Reply drafts: render the strategy's template, build the threaded MIME message, keep one copy in Drafts."""

from __future__ import annotations

import contextlib
import email.errors
import email.header
import email.policy
import email.utils
import hashlib
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import jinja2
from imapclient import DRAFT, SEEN
from jinja2.sandbox import SandboxedEnvironment
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from pipeline.config import Settings
from pipeline.errors import DraftError
from pipeline.mailbox import Mailbox
from pipeline.marketplaces import seller_central_url
from pipeline.resources import search_path
from pipeline.schema import Claim, Draft, StoredMessage
from pipeline.store import Store, record_event, utcnow
from pipeline.understanding.language import bundled_languages, bundled_reply_prefix
from pipeline.understanding.language import format_date as lang_format_date
from pipeline.vocabulary import AMAZON_STRATEGIES, CLOSED_STATES

log = logging.getLogger(__name__)

# carriers' public tracking pages, for the answer that tells the buyer their parcel was delivered
TRACKING_LINKS = {
    "UPS": "https://www.ups.com/track?tracknum={number}",
    "USPS": "https://tools.usps.com/go/TrackConfirmAction?tLabels={number}",
    "FedEx": "https://www.fedex.com/fedextrack/?trknbr={number}",
    "DHL": "https://www.dhl.com/global-en/home/tracking.html?tracking-id={number}",
    "Royal Mail": "https://www.royalmail.com/track-your-item#/tracking-results/{number}",
    "YunExpress": "https://www.yuntrack.com/parcelTracking?id={number}",
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
    subject: str | None = None  # instead of "Re: <parent's subject>"
    step: str = ""  # the claim's step the draft belongs to (X-Pipeline-Step): one draft per claim and step
    seller_central: bool = False  # answered by pasting into Seller Central: no To, where-to-paste lines on top


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
        self.env = SandboxedEnvironment(
            loader=loader, undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
        )

    def language_for(self, strategy: str, language: str | None) -> str:
        """The draft language: the claim's when a template exists in it (a folder templates/<lang>/), else English."""
        lang = language if language and language.isalpha() else "en"
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
            raise DraftError(
                f"template {language}/{strategy}.txt.j2 needs a value we do not have: {exc.message}"
            ) from None
        except jinja2.TemplateError as exc:
            raise DraftError(f"template {language}/{strategy}.txt.j2 failed: {exc}") from None


def format_date(value: date | datetime | None, language: str) -> str | None:
    """A date written the way the draft's language writes it (models/<lang>/language.json "date_format")."""
    if value is None:
        return None
    languages = bundled_languages()
    data = languages.get(language) or languages["en"]
    return lang_format_date(value, data)


def marketplace_words(language: str) -> dict[str, str]:
    """Seller Central's words in a language ("Respond to Amazon", "Performance", "[Important]", …)."""
    languages = bundled_languages()
    data = languages.get(language) or languages["en"]
    return {**languages["en"].get("seller_central", {}), **data.get("seller_central", {})}


def tracking_link(carrier: str | None, number: str | None) -> str | None:
    """The carrier's public tracking page for a number, when we know the carrier's page."""
    if not carrier or not number:
        return None
    template = next(
        (url for name, url in TRACKING_LINKS.items() if carrier.casefold().startswith(name.casefold())), None
    )
    return template.format(number=number) if template else None


def reply_subject(original: str) -> str:
    """'Re: ' plus the original subject without its reply/forward prefixes (never 'Re: Re:')."""
    return "Re: " + bundled_reply_prefix().sub("", header_text(original)).strip()


def one_line(value: str) -> str:
    """Text from mail made safe for a header: control characters and line breaks become single spaces."""
    return re.sub(r"[\x00-\x1f\x7f\u2028\u2029\x85]+", " ", value or "").strip()


ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")


def header_text(value: str) -> str:
    """Text taken from mail, made inert for a header we write.

    Line breaks and control characters become spaces. RFC 2047 encoded words are decoded here, again
    and again, and the result cleaned each time: the email package decodes them when a header is set,
    so one left in would bring back the CR/LF it hides ("=?utf-8?q?x=0D=0ABcc:...?="). Whatever still
    looks like the start of one is broken up.
    """
    text = one_line(value)
    for _ in range(5):
        if not ENCODED_WORD.search(text):
            break
        try:
            decoded = str(email.header.make_header(email.header.decode_header(text)))
        except (LookupError, UnicodeError, ValueError, email.errors.HeaderParseError):
            break
        decoded = one_line(decoded)
        if decoded == text:
            break
        text = decoded
    return text.replace("=?", "= ?")


def greeting_name(value: str | None) -> str | None:
    """The buyer's name as the greeting may use it, or None (generic greeting) when it looks like anything else.

    The name comes from the mail's From header, which anyone can fill: an address, header syntax or
    template syntax in it means it is not a name to greet.
    """
    if not value:
        return None
    name = header_text(value)
    if not name or len(name) > 60 or re.search(r"[@<>:;\\\"=?{}%\[\]|]|https?|www\.", name, re.IGNORECASE):
        return None
    return name


MESSAGE_ID = re.compile(r"<[!-;=?-~]+>")  # printable ASCII, no spaces, no angle brackets inside


def safe_message_id(value: object) -> str | None:
    """A Message-ID from mail fit for In-Reply-To/References, or None (a header can hide nothing in it)."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    if len(value) > 250 or not MESSAGE_ID.fullmatch(value) or "=?" in value:
        return None
    return value


def new_message_id(from_address: str) -> str:
    """A fresh Message-ID on the seller's domain, short enough that its header line is never folded."""
    domain = from_address.rpartition("@")[2] or "pipeline.invalid"
    if not re.fullmatch(r"[A-Za-z0-9.-]+", domain):
        domain = "pipeline.invalid"
    return f"<pipeline.{secrets.token_hex(8)}@{domain}>"


def fingerprint(raw: bytes) -> str:
    """A hash of the whole draft as stored (line endings aside): any change a person or a mail client makes (a
    word, a Cc, an attachment) gives another hash, and a changed draft is never deleted by us."""
    normalized = b"\n".join(line.rstrip(b"\r") for line in raw.rstrip(b"\r\n").split(b"\n"))
    return hashlib.sha256(normalized).hexdigest()


DRAFT_POLICY = email.policy.SMTP.clone(max_line_length=998)
STEP_HEADERS = ("X-Pipeline-Claim", "X-Pipeline-Step", "Message-ID")
OUR_HEADERS = {
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "x-pipeline-claim",
    "x-pipeline-strategy",
    "x-pipeline-step",
    "content-type",
    "content-transfer-encoding",
    "mime-version",
}


def build_message(
    request: DraftRequest,
    body: str,
    *,
    from_address: str,
    store_name: str,
    now: datetime,
    message_id: str | None = None,
) -> RenderedDraft:
    """The draft as MIME: threaded under its parent, addressed, UTF-8 plain text, our headers.

    Text from mail (subject, addresses, message IDs) can neither add nor change a header: it is cleaned
    first, and the finished message is parsed back and refused (DraftError) if it holds any header
    that is not ours or one of ours twice.
    """
    message_id = message_id or new_message_id(from_address)
    parent = safe_message_id(request.parent_message_id)
    references = [r for r in (safe_message_id(r) for r in request.parent_references) if r and r != parent]
    # long lines are allowed (up to RFC 5322's 998): a folded Message-ID would be written as an RFC 2047 encoded
    # word, which no mail client (nor Amazon) reads as a reference, and the draft would lose its thread
    message = EmailMessage(policy=DRAFT_POLICY)
    try:
        message["From"] = email.utils.formataddr((header_text(store_name), from_address))
        if request.recipient:
            message["To"] = _safe_address(request.recipient)
        message["Subject"] = header_text(request.subject) if request.subject else reply_subject(request.parent_subject)
        message["Date"] = format_datetime(now)
        message["Message-ID"] = message_id
        if parent:
            message["In-Reply-To"] = parent
            message["References"] = " ".join([*references[-20:], parent])
        message["X-Pipeline-Claim"] = request.order_id
        message["X-Pipeline-Strategy"] = request.strategy
        if request.step:
            message["X-Pipeline-Step"] = header_text(request.step)
        message.set_content(body, subtype="plain", charset="utf-8", cte="quoted-printable")
        raw = message.as_bytes()
    except (ValueError, TypeError, email.errors.MessageError) as exc:
        raise DraftError(f"cannot build the draft message: {exc}") from None
    _verify_headers(raw, request)
    return RenderedDraft(message_id, raw, fingerprint(raw), request.language)


def _text_of(raw: bytes) -> str:
    """A draft's plain text (what a person would edit), for telling copies from edited drafts."""
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    body = parsed.get_body(("plain",)) if isinstance(parsed, EmailMessage) else None
    return body.get_content().strip() if body is not None else ""


def _same_audience(draft: Draft) -> Any:
    """A query condition: drafts for the same audience as `draft` (a newer one replaces only those)."""
    if draft.audience is None:
        return or_(
            Draft.audience.is_(None), Draft.audience == ("amazon" if draft.strategy in AMAZON_STRATEGIES else "buyer")
        )
    return or_(Draft.audience == draft.audience, Draft.audience.is_(None))


def _verify_headers(raw: bytes, request: DraftRequest) -> None:
    parsed = email.message_from_bytes(raw, policy=email.policy.compat32)
    names = [name.lower() for name in parsed]
    unexpected = sorted(set(names) - OUR_HEADERS)
    doubled = sorted({n for n in names if names.count(n) > 1})
    if unexpected or doubled or parsed.get("X-Pipeline-Claim") != request.order_id:
        raise DraftError(
            f"draft refused: text from the mail would change its headers "
            f"(unexpected {', '.join(unexpected + doubled) or 'values'})"
        )


def _safe_address(value: str) -> str:
    cleaned = one_line(value)
    if "=?" in cleaned or not re.fullmatch(
        r"[A-Za-z0-9.!#$%&'*+/=^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+", cleaned
    ):
        raise DraftError(f"recipient address {cleaned!r} is not a plain email address")
    return cleaned


class DraftSync:
    """Keeps the Drafts folder in step with what the claims want: write, replace untouched, notice sent/edited.

    `Draft.body_sha256` holds the draft's fingerprint (a hash of the whole message as the server stores it): a
    draft in the folder whose fingerprint differs was changed by a person and is never deleted by us.
    """

    def __init__(self, settings: Settings, store: Store, renderer: DraftRenderer | None = None) -> None:
        self.settings = settings
        self.store = store
        self.renderer = renderer or DraftRenderer(settings.drafts.templates_dir or None)
        self.sent_orders: set[str] = set()  # claims whose reply was found sent in this pass (their clock moves)

    def sync(self, mailbox: Mailbox, now: datetime) -> int:
        """Write every wanted draft, take out the ones their claim no longer wants, then check the written ones;
        return how many were written."""
        with self.store.session() as session:
            pending = list(session.scalars(select(Draft.id).where(Draft.status == "wanted").order_by(Draft.id)))
        if not pending and not self._has_written():
            return 0
        folder = mailbox.drafts_folder()
        written = 0
        for draft_id in pending:
            with self.store.session() as session:
                draft = session.get_one(Draft, draft_id)
                if draft.status != "wanted":
                    continue
                newer = session.scalar(
                    select(Draft.id).where(
                        Draft.claim_id == draft.claim_id,
                        Draft.id > draft.id,
                        _same_audience(draft),
                        Draft.status.in_(("wanted", "written")),
                    )
                )
                if newer:
                    draft.status = "superseded"
                    continue
                written += self._write(session, mailbox, folder, draft, now)
        self._retire_unwanted(mailbox, folder, now)
        self._remove_duplicates(mailbox, folder, now)
        self._check_written(mailbox, folder, now)
        return written

    def _retire_unwanted(self, mailbox: Mailbox, folder: str, now: datetime) -> None:
        """Drafts of steps the claim has left (a newer step, a decision): untouched ones are deleted."""
        with self.store.session() as session:
            retiring = list(
                session.scalars(select(Draft.id).where(Draft.status.in_(("retiring", "deleting"))).order_by(Draft.id))
            )
        for draft_id in retiring:
            with self.store.session() as session:
                draft = session.get_one(Draft, draft_id)
                if draft.status in ("retiring", "deleting"):
                    self._retire(session, mailbox, folder, draft, now)

    def _has_written(self) -> bool:
        with self.store.session() as session:
            return (
                session.scalar(select(Draft.id).where(Draft.status.in_(("written", "retiring", "deleting"))).limit(1))
                is not None
            )

    def _write(self, session: Session, mailbox: Mailbox, folder: str, draft: Draft, now: datetime) -> int:
        claim = draft.claim
        try:
            request = self.request_for(session, draft)
            body = self.renderer.render(draft.strategy, request.language, request.context)
            if request.seller_central:
                # answered in Seller Central: say where, above the text to paste
                body = self.renderer.render("seller_central", request.language, request.context) + body
            rendered = build_message(
                request,
                body,
                from_address=self.settings.seller.from_address,
                store_name=self.settings.seller.store_name,
                now=now,
                message_id=draft.header_message_id,
            )
        except DraftError as exc:
            again = draft.error == str(exc)  # tried again after the claim changed, and failed the same way
            draft.status, draft.error = "failed", str(exc)
            claim.flagged, claim.flag_reason = True, f"draft {draft.strategy} not written: {exc}"
            if not again:
                record_event(session, claim, "draft_failed", str(exc), now)
                log.warning("claim %s: draft %s failed: %s", claim.order_id, draft.strategy, exc)
            return 0
        uid, fingerprint_ = None, rendered.body_sha256
        found: list[int] = []
        if draft.header_message_id:
            # an earlier run got as far as the APPEND but not as recording it: that copy is the draft
            mailbox.select(folder, readonly=True)
            found = mailbox.search_header("Message-ID", draft.header_message_id)
        else:
            # another process (a second poller) may have written this step's draft: that copy is the draft
            adopted = self._copy_of(mailbox, folder, claim.order_id, draft.step)
            if adopted is not None:
                found, draft.header_message_id = [adopted[0]], adopted[1]
            else:
                draft.header_message_id = rendered.message_id
            # the Message-ID is recorded before the APPEND, so a crash in between cannot double the draft
            session.commit()
        if found:
            uid = found[-1]
            fingerprint_ = next((fingerprint(raw) for raw in mailbox.fetch_raw([uid]).values()), fingerprint_)
        else:
            uid = mailbox.append(folder, rendered.raw, [DRAFT, SEEN], now)
            if uid is not None:
                # the server's copy is the reference: some servers rewrite headers or line endings on APPEND
                mailbox.select(folder, readonly=True)
                fingerprint_ = next((fingerprint(raw) for raw in mailbox.fetch_raw([uid]).values()), fingerprint_)
        draft.status, draft.folder, draft.uid, draft.error = "written", folder, uid, None
        draft.body_sha256, draft.written_at = fingerprint_, now
        draft.language, draft.recipient = request.language, request.recipient
        if claim.flagged and (claim.flag_reason or "").startswith(f"draft {draft.strategy} not written"):
            claim.flagged, claim.flag_reason = False, None
        where = request.recipient or ("Seller Central" if request.seller_central else "no address yet")
        record_event(session, claim, "draft_written", f"{draft.strategy} draft ({request.language}) to {where}", now)
        log.info("claim %s: wrote %s draft", claim.order_id, draft.strategy)
        return 1

    @staticmethod
    def _copy_of(mailbox: Mailbox, folder: str, order_id: str, step: str) -> tuple[int, str] | None:
        """(uid, Message-ID) of a draft in the folder for this claim and step, if any."""
        mailbox.select(folder, readonly=True)
        uids = mailbox.search_header("X-Pipeline-Claim", order_id)
        for uid, headers in sorted(mailbox.header_fields(uids, STEP_HEADERS).items()):
            if headers.get("x-pipeline-claim") == order_id and headers.get("x-pipeline-step") == step:
                message_id = safe_message_id(headers.get("message-id"))
                if message_id:
                    return uid, message_id
        return None

    def _remove_duplicates(self, mailbox: Mailbox, folder: str, now: datetime) -> int:
        """Copies of one claim's step beyond the one recorded (two pollers, a lost lock): the copies whose text
        is the recorded draft's are deleted; one that differs was changed by a person and stays."""
        mailbox.select(folder, readonly=True)
        ours = mailbox.header_fields(mailbox.search_header("X-Pipeline-Claim", ""), STEP_HEADERS)
        groups: dict[tuple[str, str], list[tuple[int, str]]] = {}
        for uid, headers in ours.items():
            if headers.get("x-pipeline-step") and headers.get("x-pipeline-claim"):
                key = (headers["x-pipeline-claim"], headers["x-pipeline-step"])
                groups.setdefault(key, []).append((uid, safe_message_id(headers.get("message-id")) or ""))
        doubled = {key: copies for key, copies in groups.items() if len(copies) > 1}
        if not doubled:
            return 0
        removed = 0
        with self.store.session() as session:
            for (order_id, step), copies in doubled.items():
                removed += self._remove_copies(session, mailbox, folder, order_id, step, copies, now)
        return removed

    def _remove_copies(
        self,
        session: Session,
        mailbox: Mailbox,
        folder: str,
        order_id: str,
        step: str,
        copies: list[tuple[int, str]],
        now: datetime,
    ) -> int:
        recorded = session.scalar(select(Draft).join(Draft.claim).where(Claim.order_id == order_id, Draft.step == step))
        keep = next((uid for uid, mid in copies if recorded and mid == recorded.header_message_id), copies[0][0])
        mailbox.select(folder, readonly=True)
        texts = {uid: _text_of(raw) for uid, raw in mailbox.fetch_raw([uid for uid, _ in copies]).items()}
        extra = [uid for uid, _ in copies if uid != keep and texts.get(uid) == texts.get(keep)]
        if not extra:
            return 0
        mailbox.delete(folder, extra)
        if recorded is not None:
            record_event(
                session, recorded.claim, "draft_replaced", f"{len(extra)} duplicate {step} draft(s) removed", now
            )
        log.warning("claim %s: removed %d duplicate %s draft(s)", order_id, len(extra), step)
        return len(extra)

    def request_for(self, session: Session, draft: Draft) -> DraftRequest:
        """The template context, addressing and threading of a draft, from its claim and the message it answers."""
        claim = draft.claim
        parent = session.get(StoredMessage, draft.parent_message_id) if draft.parent_message_id else None
        facts = parent.facts if parent is not None and parent.facts else {}
        language = self.renderer.language_for(
            draft.strategy, draft.language or claim.language or self.settings.seller.language
        )
        audience = draft.audience or ("amazon" if draft.strategy in AMAZON_STRATEGIES else "buyer")
        recipient = {"amazon": claim.amazon_reply_to, "amazon_cs": draft.recipient}.get(audience, claim.buyer_address)
        seller_central = audience == "amazon" and not recipient
        words = marketplace_words(language)
        context: dict[str, object] = {
            "store_name": self.settings.seller.store_name,
            "order_id": claim.order_id,
            "marketplace": claim.marketplace or "amazon.com",
            "seller_central_url": seller_central_url(claim.marketplace),
            "info_request": "#info" in draft.step,
            "to_amazon_cs": audience == "amazon_cs",
            "deadline": format_date(claim.deadline_at, language),
            "buyer_name": greeting_name(claim.buyer_name),
            "tracking_number": claim.tracking_number,
            "carrier": claim.carrier,
            "tracking_link": tracking_link(claim.carrier, claim.tracking_number),
            "delivery_date": format_date(claim.delivered_on, language),
            "complaint_type": claim.complaint_type,
            **{f"sc_{key}": value for key, value in words.items()},
            **self._appeal_context(draft, claim, language),
        }
        subject = None
        if seller_central:
            action = "appeal" if draft.strategy == "appeal_granted" else "respond_to_amazon"
            subject = f"{words.get(action, 'Respond to Amazon')}: {claim.order_id}"
        elif "#important" in draft.step:
            subject = f"{words.get('important', '[Important]')} {reply_subject(str(facts.get('subject') or ''))}"
        return DraftRequest(
            order_id=claim.order_id,
            strategy=draft.strategy,
            language=language,
            recipient=recipient,
            parent_subject=str(facts.get("subject") or f"Order {claim.order_id}"),
            parent_message_id=facts.get("message_id")
            or (parent.message_key if parent and parent.message_key.startswith("<") else None),
            parent_references=tuple(facts.get("references") or ()),
            context=context,
            subject=subject,
            seller_central=seller_central,
            step=draft.step,
        )

    @staticmethod
    def _appeal_context(draft: Draft, claim: Claim, language: str) -> dict[str, object]:
        """An appeal's dates: when the claim was filed and decided, when we answered the buyer, the last day."""
        if draft.strategy != "appeal_granted":
            return {}
        return {
            "appeal": True,
            "claim_filed_on": format_date(claim.opened_at, language),
            "decided_on": format_date(claim.state_since, language),
            "answered_on": format_date(claim.first_answer_at or claim.answered_at, language)
            if claim.answered_at and claim.opened_at and claim.answered_at <= claim.opened_at
            else None,
            "appeal_deadline": format_date(claim.appeal_due_at, language),
        }

    def _locate(self, mailbox: Mailbox, header_message_id: str | None) -> list[int]:
        if not header_message_id:
            return []
        return mailbox.search_header("Message-ID", header_message_id)

    def _retire(self, session: Session, mailbox: Mailbox, folder: str, older: Draft, now: datetime) -> None:
        """Take out a draft its claim no longer wants: delete it if untouched; if edited or sent, leave it.

        The draft is "retiring" in the database before anything is deleted, so a crash between the delete and
        the record cannot make our own deletion look like a person's edit on the next run.
        """
        mailbox.select(folder, readonly=False)
        uids = self._locate(mailbox, older.header_message_id)
        decided = older.claim.state in CLOSED_STATES
        if not uids:
            if older.status == "deleting":  # our own delete went through, then the run stopped
                older.status = "replaced"
                record_event(session, older.claim, "draft_replaced", f"untouched {older.strategy} draft removed", now)
            else:
                self._gone(session, mailbox, older, now)
            return
        raws = mailbox.fetch_raw(uids)
        if raws and all(fingerprint(raw) == older.body_sha256 for raw in raws.values()):
            older.status = "deleting"
            session.commit()  # what we are about to delete is on record before it goes
            mailbox.delete(folder, list(raws))
            older.status = "replaced"
            why = "the claim was decided" if decided else "the claim moved to a newer step"
            record_event(
                session, older.claim, "draft_replaced", f"untouched {older.strategy} draft removed: {why}", now
            )
            return
        older.status = "edited"
        if decided:
            older.claim.flagged = True
            older.claim.flag_reason = f"the claim was decided: do not send the edited {older.strategy} draft"
        record_event(
            session,
            older.claim,
            "draft_edited",
            f"the {older.strategy} draft was changed by hand; left in Drafts"
            + (": the claim was decided, do not send it" if decided else ""),
            now,
        )

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
        """Our draft is no longer in Drafts: sent (a reply in Sent) or edited/removed by the person."""
        sent_at = self._in_sent(session, mailbox, draft)
        if sent_at is not None:
            draft.status, draft.sent_at = "sent", sent_at
            self.sent_orders.add(draft.claim.order_id)
            record_event(session, draft.claim, "reply_sent", f"the {draft.strategy} reply was sent", now)
            return
        draft.status = "edited"
        record_event(
            session,
            draft.claim,
            "draft_edited",
            f"the {draft.strategy} draft was edited or removed by hand; left alone",
            now,
        )

    def _in_sent(self, session: Session, mailbox: Mailbox, draft: Draft) -> datetime | None:
        """When the reply went out, if the Sent folder holds our draft or a reply to the message it answers
        (the copy's Date header; the time we found it when the header cannot be read)."""
        sent = mailbox.sent_folder()
        if not sent:
            return None
        mailbox.select(sent, readonly=True)
        ours = set(mailbox.search_header("X-Pipeline-Claim", draft.claim.order_id))
        found = sorted(ours & set(mailbox.search_header("X-Pipeline-Strategy", draft.strategy))) if ours else []
        if not found and draft.parent_message_id:
            parent = session.get(StoredMessage, draft.parent_message_id)
            if parent is not None and parent.message_key.startswith("<"):
                found = mailbox.search_header("In-Reply-To", parent.message_key)
        if not found:
            return None
        date = mailbox.header_fields(found[-1:], ("Date",)).get(found[-1], {}).get("date")
        with contextlib.suppress(TypeError, ValueError):
            when = email.utils.parsedate_to_datetime(date) if date else None
            if when is not None:
                return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
        return utcnow()
