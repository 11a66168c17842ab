"""The Understander: a parsed message in, Facts with evidence out.

Per message: Amazon's structure first (structure.py: header, sender role, subject template), then the region
whose words carry meaning (regions.py), then the language and the rules over that region (rules.py), then the
facts each kind has (extract.py).
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import ClassVar

from spacy.attrs import IDX, LOWER
from spacy.tokens import Doc

from pipeline.errors import ConfigError
from pipeline.marketplaces import is_amazon_domain, language_of_marketplace
from pipeline.message import PARSE_LIMIT, ParsedMessage, marketplace_of
from pipeline.resources import search_path
from pipeline.understanding import extract
from pipeline.understanding.facts import Evidence, Facts
from pipeline.understanding.language import (
    LanguageData,
    decide_language,
    function_word_languages,
    load_languages,
    month_names,
)
from pipeline.understanding.regions import FieldLabels, Region, buyer_region, notice_region
from pipeline.understanding.rules import Hit, RuleModel
from pipeline.understanding.structure import DECISIONS, Structure, StructureReader
from pipeline.understanding.text import A_TO_Z_WORDS, normalize_chars, prepare_text
from pipeline.vocabulary import CLAIM_KINDS

# The most characters of a message the rules read (the daemon and `pipeline inspect` alike): far beyond any
# letter, far below spaCy's max_length, and a bound on the time one hostile message can take.
MAX_TEXT = 100_000
_LANGUAGE_SAMPLE = 1000  # characters of a text whose function words tell its language
# the kinds whose complaint the rules read, and from which part
COMPLAINT_KINDS = ("buyer_message", "amazon_inquiry", "return_request")
TRACKING_KINDS = ("buyer_message", "amazon_inquiry", *CLAIM_KINDS)
AMOUNT_KINDS = (*CLAIM_KINDS, "refund_issued")
DEADLINE_KINDS = ("claim_filed", "claim_info_request")
COMPLAINT_LABELS = frozenset({"COMPLAINT", "REASON", "REASON_CUE", "USE_PERIOD", "ARRIVAL", "BLOCK"})
TRACKING_LABELS = frozenset({"DELIVERED", "TRACKING", "CARRIER", "TRACKING_CUE", "BLOCK"})


def labels_for(kind: str | None) -> frozenset[str] | None:
    """The rule labels a message of this kind needs (None: all, when its text must still tell the kind)."""
    if kind is None:
        return None
    labels: set[str] = set()
    if kind == "buyer_message":
        labels |= COMPLAINT_LABELS | {"INTENT"}
    if kind in CLAIM_KINDS:
        labels |= COMPLAINT_LABELS
    if kind in TRACKING_KINDS:
        labels |= TRACKING_LABELS
    if kind in DEADLINE_KINDS:
        labels.add("DEADLINE")
    if kind in AMOUNT_KINDS:
        labels |= {"AMOUNT_CUE", "BLOCK"}
    return frozenset(labels)


@dataclass(frozen=True)
class Reading:
    """What the rules read of a message, in which language, and what Amazon's structure already said."""

    structure: Structure
    region: Region
    trusted: bool
    marketplace: str | None
    language: str
    text: str  # the subject (unless a buyer's reply), a blank line, the region's words
    subject_end: int
    cut_from: int | None = None  # the region's length when it was longer than MAX_TEXT and cut


class Understander:
    """Builds facts from parsed messages. A language's rule model is built on first use."""

    _shared: ClassVar[dict[tuple[object, ...], Understander]] = {}
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def shared(cls, models_dir: str | Path | None = None, *, response_days: int = 7) -> Understander:
        """One Understander per process for the same models and settings, built again when a model file
        changed (its rule models are the slow part to build, and immutable once built)."""
        folders = search_path("models", models_dir)
        key = (tuple(folders), response_days, _fingerprint(folders))
        with cls._shared_lock:
            found = cls._shared.get(key)
            if found is None:
                cls._shared.clear()  # the models changed: the old one is never asked for again
                found = cls._shared[key] = cls(models_dir, response_days=response_days)
            return found

    def __init__(self, models_dir: str | Path | None = None, *, response_days: int = 7) -> None:
        self.folders = search_path("models", models_dir)
        self.response_days = response_days
        try:
            self.languages: dict[str, LanguageData] = load_languages(self.folders)
            self.structures = StructureReader(self.folders, self.languages)
            self.scripts = [
                (lang, re.compile(data.get("script"))) for lang, data in self.languages.items() if data.get("script")
            ]
        except (ValueError, OSError, re.error) as exc:
            raise ConfigError(f"the models' language files cannot be read: {exc}") from None
        self.labels = FieldLabels(self.languages)
        self.word_languages = function_word_languages(self.languages)
        self.months = month_names(self.languages)
        self.guarantee_names = [
            re.compile(name, re.IGNORECASE)
            for data in self.languages.values()
            for name in data.get("guarantee_names", [])
        ]
        self._models: dict[str, RuleModel] = {}
        self._lock = threading.Lock()

    def model(self, lang: str) -> RuleModel:
        """The rule model of a language (built on first use)."""
        built = self._models.get(lang)
        if built is not None:
            return built
        with self._lock:
            if lang not in self._models:
                try:
                    self._models[lang] = RuleModel(self.languages[lang], self.folders)
                except (ValueError, re.error, OSError, KeyError) as exc:
                    raise ConfigError(f"rule model {lang!r} cannot be loaded: {exc}") from None
            return self._models[lang]

    def understand(self, message: ParsedMessage) -> Facts:
        """All facts of one message, each with its evidence."""
        reading = self.read(message)
        if labels_for(reading.structure.kind) == frozenset():
            # a notice whose kind Amazon's structure decided and whose facts need no rule (a cancellation, a
            # copy of the seller's reply, ...): not tokenized; its language is its marketplace's
            return self._facts(message, reading, self.model(reading.language), None)
        model, doc, reading = self._tokens(reading)
        return self._facts(message, reading, model, doc)

    def understand_many(self, messages: Iterable[ParsedMessage]) -> Iterator[Facts]:
        """The facts of each message, in order."""
        for message in messages:
            yield self.understand(message)

    def read(self, message: ParsedMessage) -> Reading:
        """The structure, the region the rules read and its language (still a guess: see _tokens)."""
        structure = self.structures.read(message)
        # Amazon's domain in From is what anyone can write; a receiving server's failed check overrules it
        trusted = is_amazon_domain(message.sender_domain) and message.authentication_failure is None
        marketplace = marketplace_of(message) if trusted else None
        region = buyer_region(message) if structure.family == "buyer" else notice_region(message, self.labels)
        subject = normalize_chars(message.subject)
        if structure.family == "buyer" and self.structures.reply_prefix.match(subject):
            subject = ""  # a reply's subject restates the old complaint
        region_text, cut_from = region.text, None
        if len(region_text) > MAX_TEXT:  # a message this long is no letter; what matters comes first
            region_text, cut_from = region_text[:MAX_TEXT], len(region_text)
        body = prepare_text(region_text)
        text = f"{subject}\n\n{body}" if subject else body
        default = language_of_marketplace(marketplace) or "en"
        language = self._by_script(text) or (default if default in self.languages else "en")
        return Reading(structure, region, trusted, marketplace, language, text, len(subject), cut_from)

    def _by_script(self, text: str) -> str | None:
        """The language whose own script the text uses (language.json "script": kana says Japanese), if any."""
        return next((lang for lang, script in self.scripts if script.search(text)), None)

    def _tokens(self, reading: Reading) -> tuple[RuleModel, Doc, Reading]:
        """The reading's language told by its function words, and its tokens in that language.

        The text is tokenized in the guessed language and its words counted there; only when they say another
        language is it tokenized again.
        """
        model = self.model(reading.language)
        doc = model.doc(reading.text)
        if self._by_script(reading.text) == reading.language:
            return model, doc, reading
        strings = doc.vocab.strings
        found = [
            lang
            for at, word in doc.to_array([IDX, LOWER]).tolist()
            if at < _LANGUAGE_SAMPLE and (lang := self.word_languages.get(strings[word])) is not None
        ]
        language = decide_language(found, reading.language)
        if language == reading.language:
            return model, doc, reading
        model = self.model(language)
        return model, model.doc(reading.text), replace(reading, language=language)

    def _facts(self, message: ParsedMessage, reading: Reading, model: RuleModel, doc: Doc | None) -> Facts:
        """The facts of a message from its reading and tokens, each kind's facts from the part that states them."""
        evidence = self._source_evidence(message, reading)
        hits, body_hits = self._hits(reading, model, doc)
        structure, region, text = reading.structure, reading.region, reading.text
        kind = self._kind(structure, hits.get("KIND", []), text, region, model, evidence)
        body = text[reading.subject_end :]
        order_id = extract.order_id(message.subject, body, evidence)
        if order_id is None:
            order_id = extract.order_id("", prepare_text(message.text), evidence)
        complaint = self._complaint(kind, region, hits, text, model, evidence)
        intent = extract.intent(hits.get("INTENT", []), complaint, evidence) if kind == "buyer_message" else None
        shipment = self._shipment(kind, body_hits, text, evidence)
        deadline_hours, deadline_at = self._deadline(message, kind, body_hits, text, model, evidence)
        amount, currency = self._amount(kind, reading, body_hits, evidence)
        returned = self._returned(kind, region, evidence)
        channel, address = self._reply_channel(message, reading, kind, evidence)
        return Facts(
            kind=kind,
            order_id=order_id,
            complaint_type=complaint,
            buyer_intent=intent,
            tracking_number=shipment[0],
            carrier=shipment[1],
            delivered=shipment[2],
            deadline_hours=deadline_hours,
            deadline_at=deadline_at,
            amount=amount,
            currency=currency,
            marketplace=reading.marketplace,
            language=reading.language,
            trusted=reading.trusted,
            sent_at=message.sent_at,
            sender=message.sender,
            reply_to=message.reply_to,
            buyer_address=message.sender if kind == "buyer_message" else region.relay,
            buyer_name=self._buyer_name(message, structure, kind),
            subject=message.subject,
            message_id=message.message_id,
            in_reply_to=message.in_reply_to,
            references=message.references,
            evidence=evidence,
            delivered_on=shipment[3],
            notification_type=structure.notification_type,
            return_reason=returned[0],
            return_carrier=returned[1],
            return_tracking_number=returned[2],
            reply_channel=channel,
            reply_address=address,
        )

    @staticmethod
    def _hits(reading: Reading, model: RuleModel, doc: Doc | None) -> tuple[dict[str, list[Hit]], dict[str, list[Hit]]]:
        """The rules' hits in the reading by label: all of them, and those outside the subject."""
        hits: dict[str, list[Hit]] = {}
        body_hits: dict[str, list[Hit]] = {}
        if doc is None:
            return hits, body_hits
        for hit in model.hits(doc, reading.subject_end, labels_for(reading.structure.kind)):
            hits.setdefault(hit.label, []).append(hit)
            if not hit.in_subject:
                body_hits.setdefault(hit.label, []).append(hit)
        return hits, body_hits

    @staticmethod
    def _amount(
        kind: str, reading: Reading, body_hits: dict[str, list[Hit]], evidence: dict[str, Evidence]
    ) -> tuple[str | None, str | None]:
        """The amount and currency of a claim or refund (other kinds state none), read from the body; a refund's
        subject states its amount too."""
        if kind not in AMOUNT_KINDS:
            return None, None
        text = reading.text
        source = text if kind == "refund_issued" else text[reading.subject_end :]
        cues = body_hits.get("AMOUNT_CUE", [])
        return extract.amount(source, cues, len(text) - len(source), reading.marketplace, evidence)

    @staticmethod
    def _source_evidence(message: ParsedMessage, reading: Reading) -> dict[str, Evidence]:
        """Where trust, marketplace, region and language came from."""
        failure = message.authentication_failure
        evidence = {
            "trusted": Evidence("authentication-results", failure)
            if failure
            else Evidence("sender-domain", message.sender_domain)
        }
        if reading.marketplace:
            rule = "x-marketplace-id" if message.marketplace_id else "sender-domain"
            evidence["marketplace"] = Evidence(rule, message.marketplace_id or message.sender_domain)
        evidence["region"] = Evidence(f"region:{reading.region.source}", " ".join(reading.region.text.split())[:80])
        evidence["language"] = Evidence("language-detection", reading.language)
        if message.raw_size > PARSE_LIMIT:
            evidence["cut"] = Evidence("size-limit", f"read the first {PARSE_LIMIT} of {message.raw_size} bytes")
        elif reading.cut_from is not None:
            evidence["cut"] = Evidence("text-limit", f"read the first {MAX_TEXT} of {reading.cut_from} characters")
        return evidence

    def _shipment(
        self,
        kind: str,
        body_hits: dict[str, list[Hit]],
        text: str,
        evidence: dict[str, Evidence],
    ) -> tuple[str | None, str | None, bool, date | None]:
        """Our shipment's tracking number, carrier, whether it shows delivered, and when (kinds that state it)."""
        if kind not in TRACKING_KINDS:
            return None, None, False, None
        tracking, carrier = extract.tracking(body_hits, evidence)
        delivered_hits = body_hits.get("DELIVERED", [])
        delivered = extract.delivered(delivered_hits, evidence)
        delivered_on = extract.delivery_date(text, delivered_hits, self.months, evidence) if delivered else None
        return tracking, carrier, delivered, delivered_on

    def _deadline(
        self,
        message: ParsedMessage,
        kind: str,
        body_hits: dict[str, list[Hit]],
        text: str,
        model: RuleModel,
        evidence: dict[str, Evidence],
    ) -> tuple[int | None, datetime | None]:
        """The response time Amazon states, and the deadline it gives counted from the message's Date."""
        if kind not in DEADLINE_KINDS:
            return None, None
        hours = extract.deadline_hours(body_hits.get("DEADLINE", []), text, model.language.number_words, evidence)
        if message.sent_at is None:
            return hours, None
        if hours:
            evidence["deadline_at"] = Evidence(evidence["deadline_hours"].rule, evidence["deadline_hours"].text)
            return hours, message.sent_at + timedelta(hours=hours)
        if kind == "claim_filed":
            evidence["deadline_at"] = Evidence("config:response_days", f"{self.response_days} days")
            return hours, message.sent_at + timedelta(days=self.response_days)
        return hours, None

    @staticmethod
    def _returned(
        kind: str, region: Region, evidence: dict[str, Evidence]
    ) -> tuple[str | None, str | None, str | None]:
        """A return request's reason, and the carrier and tracking number of the buyer's parcel back."""
        if kind != "return_request":
            return None, None, None
        found = (
            region.fields.get("return_reason"),
            region.fields.get("return_carrier"),
            region.fields.get("return_tracking"),
        )
        for key, value in zip(("return_reason", "return_carrier", "return_tracking_number"), found, strict=True):
            if value:
                evidence[key] = Evidence(f"field:{key}", value)
        return found

    def _kind(
        self,
        structure: Structure,
        hits: list[Hit],
        text: str,
        region: Region,
        model: RuleModel,
        evidence: dict[str, Evidence],
    ) -> str:
        """The kind: as the structure decided it, else by the text rules within the family."""
        if structure.kind is not None:
            evidence["kind"] = structure.evidence
            return structure.kind
        denied = max(
            (r.priority for r in model.rules.values() if r.label == "KIND" and r.value == "claim_denied"), default=0
        )
        allowed: tuple[str, ...]
        if structure.family == "atoz":
            allowed = DECISIONS if structure.subject_kind == "claim_decision" else CLAIM_KINDS
        elif structure.notification_type and structure.notification_type.startswith("A_Z_"):
            allowed = CLAIM_KINDS
        elif self._names_guarantee(text):
            allowed = CLAIM_KINDS  # a text rule for a claim kind needs an A-to-z signal
        else:
            allowed = ()
        found = extract.kind_by_text(hits, allowed, denied) if allowed else None
        if found:
            evidence["kind"] = Evidence(f"{structure.evidence.rule}+{found[1].rule}", found[1].text)
            return found[0]
        if structure.family == "customer_service" and {"order", "details"} <= region.fields.keys():
            evidence["kind"] = Evidence(f"{structure.evidence.rule}+fields", region.fields["details"][:80])
            return "amazon_inquiry"
        evidence["kind"] = Evidence(f"{structure.evidence.rule}+no-kind-rule", structure.evidence.text)
        return "other"

    def _names_guarantee(self, text: str) -> bool:
        plain = A_TO_Z_WORDS.sub("A-to-z", text.replace("\u2011", "-"))
        return any(pattern.search(plain) for pattern in self.guarantee_names)

    def _complaint(
        self,
        kind: str,
        region: Region,
        hits: dict[str, list[Hit]],
        text: str,
        model: RuleModel,
        evidence: dict[str, Evidence],
    ) -> str | None:
        """The complaint: a buyer's words; a return's reason and comment; an inquiry's reason and details; a claim
        notice's labelled reason field only (real ones have none, and their general paragraph is no complaint)."""
        if kind == "buyer_message":
            return extract.complaint(hits, text, evidence)
        if kind in ("return_request", "amazon_inquiry"):
            keys = ("return_reason", "customer_comment") if kind == "return_request" else ("reason", "details")
            parts = [row.get(key, "") for row in region.rows for key in keys] if kind == "return_request" else []
            parts = [p for p in parts if p] or [region.fields.get(key, "") for key in keys]
            words = "\n".join(p for p in parts if p)
            if not words:
                return None
            doc = model.doc(prepare_text(words))
            found: dict[str, list[Hit]] = {}
            for hit in model.hits(doc):
                # Amazon's return reasons ("Bought by mistake") count as complaints here only
                found.setdefault("COMPLAINT" if hit.label == "RETURN_REASON" else hit.label, []).append(hit)
            return extract.complaint(found, doc.text, evidence)
        if kind in CLAIM_KINDS and "REASON_CUE" in hits:
            scratch: dict[str, Evidence] = {}
            value = extract.complaint(
                {k: hits.get(k, []) for k in ("REASON_CUE", "REASON", "COMPLAINT", "USE_PERIOD", "ARRIVAL")},
                text,
                scratch,
            )
            if value is not None and scratch.get("complaint_type", Evidence("", "")).rule.startswith("reason:"):
                evidence.update(scratch)
                return value
        return None

    def _reply_channel(
        self, message: ParsedMessage, reading: Reading, kind: str, evidence: dict[str, Evidence]
    ) -> tuple[str | None, str | None]:
        """Where an answer reaches a person: ("email", address) or ("seller_central", None); None when the
        mail is not Amazon's."""
        if not reading.trusted:
            return None, None
        structure = reading.structure
        if kind == "buyer_message" and structure.role == "relay":
            address = message.reply_to or message.sender
            evidence["reply_channel"] = Evidence("relay-address", address)
            return "email", address
        address = message.reply_to or message.sender
        local = address.rpartition("@")[0].lower()
        reaches_person = (
            structure.role == "amazon"
            and is_amazon_domain(address.rpartition("@")[2])
            and not self.structures.is_no_reply(local)
            and local not in self.structures.atoz_locals
        )
        if reaches_person:
            evidence["reply_channel"] = Evidence("reply-address", address)
            return "email", address
        evidence["reply_channel"] = Evidence("no-reply-sender", address)
        return "seller_central", None

    @staticmethod
    def _buyer_name(message: ParsedMessage, structure: Structure, kind: str) -> str | None:
        if kind == "buyer_message":
            return extract.buyer_name(message.sender_name)
        if kind == "seller_reply_copy" and structure.subject_buyer:
            return structure.subject_buyer
        return None


def _fingerprint(folders: list[Path]) -> tuple[tuple[str, int, int], ...]:
    """Name, size and modification time of every model file: changes when a rule or word list does."""
    found = []
    for folder in folders:
        for path in sorted(folder.glob("*/*")):
            with contextlib.suppress(OSError):
                stat = path.stat()
                found.append((str(path), stat.st_size, stat.st_mtime_ns))
    return tuple(found)
