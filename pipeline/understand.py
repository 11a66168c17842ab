"""Reads a parsed message with spaCy rule models (models/<lang>/) and returns its facts, each with evidence."""

from __future__ import annotations

import json
import re
import threading
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import spacy
from spacy.lookups import load_lookups
from spacy.matcher import Matcher, PhraseMatcher
from spacy.tokens import Doc, Span

from pipeline.message import (
    ParsedMessage,
    is_amazon_domain,
    language_of_marketplace,
    marketplace_of,
)
from pipeline.resources import search_path

LANGUAGES = ("en", "de", "fr", "it", "es", "ja")
KINDS = ("claim_filed", "claim_info_request", "claim_granted", "claim_denied", "claim_withdrawn",
         "buyer_message", "other")
COMPLAINTS = ("not_received", "size", "damaged_on_arrival", "damaged_after_use", "not_as_described", "other")
INTENTS = ("wants_refund", "wants_resend", "resolved", "will_withdraw", "other")
# Decisions outrank requests, requests outrank the filing notice: a decision mail restates the claim.
KIND_PRIORITY = ("claim_withdrawn", "claim_granted", "claim_denied", "claim_info_request", "claim_filed")
INTENT_PRIORITY = ("will_withdraw", "resolved", "wants_resend", "wants_refund")
COMPLAINT_PRIORITY = ("damaged", "size", "not_as_described", "not_received", "other")
CARRIERS = ("UPS", "USPS", "FedEx", "DHL", "Amazon Logistics", "Royal Mail", "China Post", "Yanwen",
            "YunExpress", "4PX")
CURRENCY_SYMBOLS = {"$": "USD", "US$": "USD", "£": "GBP", "€": "EUR", "¥": "JPY", "￥": "JPY", "円": "JPY",
                    "CA$": "CAD", "C$": "CAD"}
ORDER_ID = re.compile(r"(?<![\w-])((?:\d{3}|D01)-\d{7}-\d{7})(?![\w-])")
# An order ID split by a line break (wrapped plain text): "111-2233445-\n5566778"
WRAPPED_ORDER_ID = re.compile(r"(?<![\w-])((?:\d{3}|D01)-\d{0,7})[ \t]*\r?\n[ \t>]*(\d{0,7}(?:-\d{7})?)(?![\w-])")
MONEY = re.compile(
    r"(?P<pre>US\$|CA\$|C\$|EUR|GBP|USD|JPY|[$£€¥￥])\s?(?P<num>\d{1,3}(?:[.,\s]\d{3})*(?:[.,]\d{2})?|\d+(?:[.,]\d{2})?)"
    r"|(?P<num2>\d{1,3}(?:[.,\s]\d{3})*(?:[.,]\d{2})?|\d+(?:[.,]\d{2})?)\s?(?P<post>€|EUR|円|GBP|USD)"
)


@dataclass(frozen=True)
class Evidence:
    """Why a fact was found: the rule that fired and the text it matched."""

    rule: str
    text: str


@dataclass
class Facts:
    """Everything the pipeline understood of one message. A fact that was not found is None."""

    kind: str
    order_id: str | None
    complaint_type: str | None
    buyer_intent: str | None
    tracking_number: str | None
    carrier: str | None
    delivered: bool
    deadline_hours: int | None
    deadline_at: datetime | None
    amount: str | None
    currency: str | None
    marketplace: str | None
    language: str
    trusted: bool
    sent_at: datetime | None
    sender: str
    reply_to: str | None
    buyer_address: str | None
    buyer_name: str | None
    subject: str
    message_id: str | None
    in_reply_to: str | None
    references: tuple[str, ...]
    evidence: dict[str, Evidence] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The facts as JSON-ready values (dates in ISO 8601 UTC); the keys of DESIGN.md's inspect output."""
        data = asdict(self)
        for key in ("deadline_at", "sent_at"):
            data[key] = _iso(data[key])
        data["references"] = list(self.references)
        data["evidence"] = {k: {"rule": v.rule, "text": v.text} for k, v in self.evidence.items()}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Facts:
        """Rebuild Facts from to_json output (as stored with each message)."""
        values = dict(data)
        for key in ("deadline_at", "sent_at"):
            values[key] = datetime.fromisoformat(values[key]) if values.get(key) else None
        values["references"] = tuple(values.get("references") or ())
        values["evidence"] = {k: Evidence(**v) for k, v in (values.get("evidence") or {}).items()}
        return cls(**values)


@dataclass(frozen=True)
class Hit:
    """One rule match in the text."""

    label: str
    value: str
    rule: str
    text: str
    start: int
    negated: bool = False


class RuleModel:
    """One language's blank spaCy pipeline with its lookup lemmatizer and its pattern rules."""

    def __init__(self, lang: str, folders: list[Path]) -> None:
        self.lang = lang
        self.nlp = spacy.blank(lang)
        if lang != "ja":  # Japanese is tokenized by Sudachi, which gives lemmas itself
            lemmatizer = self.nlp.add_pipe("lemmatizer", config={"mode": "lookup"})
            lemmatizer.initialize(lookups=load_lookups(lang, ["lemma_lookup"]))
        self.matcher = Matcher(self.nlp.vocab)
        self.phrases = PhraseMatcher(self.nlp.vocab, attr="LOWER")
        self.negations: set[str] = set()
        self.contrast: set[str] = set()
        self.rules: dict[str, tuple[str, str]] = {}
        for path in _pattern_files(folders, lang):
            self._load(path)

    def _load(self, path: Path) -> None:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("//"):
                continue
            try:
                entry = json.loads(line)
                label, value = entry["label"], entry.get("id", "")
            except (ValueError, KeyError) as exc:
                raise ValueError(f"{path}:{number}: bad pattern line: {exc}") from None
            if label == "NEGATION":
                self.negations.update(w.lower() for w in entry["words"])
                continue
            if label == "CONTRAST":
                self.contrast.update(w.lower() for w in entry["words"])
                continue
            rule = f"{self.lang}/{path.stem}:{number}"
            self.rules[rule] = (label, value)
            if "phrase" in entry or "phrases" in entry:
                phrases = entry.get("phrases") or [entry["phrase"]]
                self.phrases.add(rule, [self.nlp.make_doc(p) for p in phrases])
            else:
                self.matcher.add(rule, [entry["pattern"]])

    def hits(self, text: str) -> list[Hit]:
        """Every rule match in the text, with negation marked."""
        doc = self.nlp(text)
        found = [(self.nlp.vocab.strings[m], s, e) for m, s, e in self.matcher(doc)]
        found += [(self.nlp.vocab.strings[m], s, e) for m, s, e in self.phrases(doc)]
        hits = []
        for rule, start, end in sorted(found, key=lambda f: (f[1], -f[2])):
            label, value = self.rules[rule]
            span = doc[start:end]
            hits.append(Hit(label, value, rule, span.text, span.start_char, self._negated(doc, span)))
        return hits

    def _negated(self, doc: Doc, span: Span) -> bool:
        """A negation cue shortly before the match, in the same clause (no punctuation or 'but' between)."""
        if any(t.lower_ in self.negations for t in span):
            return False  # the rule itself spells the negation ("not received"): it is the claim, not its denial
        for token in reversed(doc[max(0, span.start - 5):span.start]):
            if token.is_punct or "\n" in token.text or token.lower_ in self.contrast:
                return False
            if token.lower_ in self.negations:
                return True
        return False


class Understander:
    """Builds facts from parsed messages. Rule models are built once per language, on first use."""

    def __init__(self, models_dir: str | Path | None = None, *, response_days: int = 7) -> None:
        self.folders = search_path("models", models_dir)
        self.response_days = response_days
        self._models: dict[str, RuleModel] = {}
        self._lock = threading.Lock()

    def model(self, lang: str) -> RuleModel:
        """The rule model of a language (built on first use)."""
        with self._lock:
            if lang not in self._models:
                self._models[lang] = RuleModel(lang, self.folders)
            return self._models[lang]

    def understand(self, message: ParsedMessage) -> Facts:
        """All facts of one message, each with its evidence."""
        evidence: dict[str, Evidence] = {}
        domain = message.sender_domain
        trusted = is_amazon_domain(domain)
        marketplace = marketplace_of(message) if trusted else None
        is_buyer = (trusted and domain.startswith("marketplace.")) or (message.had_markers and not trusted
                                                                     and "marketplace.amazon" in domain)
        text = _join_wrapped_ids(message.new_text if is_buyer else message.text)
        language = detect_language(message.subject + "\n" + text, language_of_marketplace(marketplace) or "en")
        evidence["trusted"] = Evidence("sender-domain", domain)
        if marketplace:
            rule = "x-marketplace-id" if message.marketplace_id else "sender-domain"
            evidence["marketplace"] = Evidence(rule, message.marketplace_id or domain)

        model = self.model(language)
        subject_hits = model.hits(message.subject)
        hits = model.hits(text)
        if language != "en":  # buyers and Amazon's templates mix in English phrases
            hits += [h for h in self.model("en").hits(text) if h.label in ("INTENT", "COMPLAINT", "DELIVERED",
                                                                             "USE_PERIOD", "KIND")]
            subject_hits += self.model("en").hits(message.subject)

        kind = self._kind(message, is_buyer, trusted, hits, subject_hits, evidence)
        order_id = _order_id(message.subject, text if is_buyer else message.text, evidence)
        if order_id is None and is_buyer:
            order_id = _order_id("", _join_wrapped_ids(message.text), evidence)
        complaint = _complaint(hits, kind, evidence)
        intent = _intent(hits, evidence) if kind == "buyer_message" else None
        tracking, carrier = _tracking(hits, text, evidence)
        delivered = _delivered(hits, evidence)
        deadline_hours = _deadline_hours(hits, evidence) if kind in ("claim_filed", "claim_info_request") else None
        amount, currency = _amount(message.text if not is_buyer else text, marketplace, evidence)
        deadline_at = None
        if message.sent_at and kind in ("claim_filed", "claim_info_request"):
            if deadline_hours:
                deadline_at = message.sent_at + timedelta(hours=deadline_hours)
            elif kind == "claim_filed":
                deadline_at = message.sent_at + timedelta(days=self.response_days)
                evidence["deadline_at"] = Evidence("config:response_days", f"{self.response_days} days")
        buyer_name = _buyer_name(message) if kind == "buyer_message" else None
        return Facts(
            kind=kind, order_id=order_id, complaint_type=complaint, buyer_intent=intent,
            tracking_number=tracking, carrier=carrier, delivered=delivered, deadline_hours=deadline_hours,
            deadline_at=deadline_at, amount=amount, currency=currency, marketplace=marketplace,
            language=language, trusted=trusted, sent_at=message.sent_at, sender=message.sender,
            reply_to=message.reply_to, buyer_address=message.sender if kind == "buyer_message" else None,
            buyer_name=buyer_name, subject=message.subject, message_id=message.message_id,
            in_reply_to=message.in_reply_to, references=message.references, evidence=evidence,
        )

    def _kind(self, message: ParsedMessage, is_buyer: bool, trusted: bool, hits: list[Hit],
              subject_hits: list[Hit], evidence: dict[str, Evidence]) -> str:
        if is_buyer:
            evidence["kind"] = Evidence("buyer-relay-address", message.sender)
            return "buyer_message"
        found = [h for h in subject_hits + hits if h.label == "KIND" and not h.negated]
        for kind in KIND_PRIORITY:
            hit = next((h for h in found if h.value == kind), None)
            if hit:
                evidence["kind"] = Evidence(hit.rule, hit.text)
                return kind
        if message.notification_type and "A_Z_CLAIM" in message.notification_type.upper():
            evidence["kind"] = Evidence("x-space-notification-type", message.notification_type)
            return "claim_filed"
        evidence["kind"] = Evidence("no-claim-rule", "")
        return "other"


_DEFAULT: Understander | None = None


def default_understander() -> Understander:
    """A process-wide Understander over the bundled models."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Understander()
    return _DEFAULT


def detect_language(text: str, default: str) -> str:
    """The text's language among ours, by script and stop-word counts; `default` when unclear."""
    if re.search(r"[\u3040-\u30ff]", text):
        return "ja"
    words = re.findall(r"[^\W\d_]+", text.lower())[:400]
    if not words:
        return default
    scores = {lang: sum(w in stops for w in words) for lang, stops in _stop_words().items()}
    best = max(scores, key=lambda lang: (scores[lang], lang == default))
    if scores[best] < 3 or scores[best] < scores.get(default, 0) * 1.3:
        return default if default in LANGUAGES else "en"
    return best


def _stop_words() -> dict[str, frozenset[str]]:
    global _STOPS
    if _STOPS is None:
        from spacy.lang.de.stop_words import STOP_WORDS as de
        from spacy.lang.en.stop_words import STOP_WORDS as en
        from spacy.lang.es.stop_words import STOP_WORDS as es
        from spacy.lang.fr.stop_words import STOP_WORDS as fr
        from spacy.lang.it.stop_words import STOP_WORDS as it

        # words that are stop words in several of our languages say nothing about which one it is
        sets = {"en": set(en), "de": set(de), "fr": set(fr), "it": set(it), "es": set(es)}
        shared = {w for lang, s in sets.items() for w in s if sum(w in o for o in sets.values()) > 1}
        _STOPS = {lang: frozenset(s - shared) for lang, s in sets.items()}
    return _STOPS


_STOPS: dict[str, frozenset[str]] | None = None


def _pattern_files(folders: list[Path], lang: str) -> list[Path]:
    """Pattern files of a language: models/xx (language-independent) then models/<lang>; overrides win by name."""
    chosen: dict[str, Path] = {}
    for sub in ("xx", lang):
        for folder in reversed(folders):  # bundled first, override last so it replaces by file name
            for path in sorted((folder / sub).glob("*.jsonl")):
                chosen[f"{sub}/{path.name}"] = path
    return list(chosen.values())


def _join_wrapped_ids(text: str) -> str:
    def join(match: re.Match[str]) -> str:
        joined = match.group(1) + match.group(2)
        return joined if ORDER_ID.fullmatch(joined) else match.group(0)

    return WRAPPED_ORDER_ID.sub(join, text)


def _order_id(subject: str, text: str, evidence: dict[str, Evidence]) -> str | None:
    in_subject = ORDER_ID.findall(_join_wrapped_ids(subject))
    if in_subject:
        evidence["order_id"] = Evidence("order-id:subject", in_subject[0])
        return in_subject[0]
    found = ORDER_ID.findall(text)
    if not found:
        return None
    # the order a message is about is the one it names most, and first when tied
    best = max(dict.fromkeys(found), key=lambda oid: (found.count(oid), -found.index(oid)))
    evidence["order_id"] = Evidence("order-id:body", best)
    return best


def _first(hits: list[Hit], label: str, order: tuple[str, ...]) -> Hit | None:
    candidates = [h for h in hits if h.label == label and not h.negated]
    for value in order:
        hit = next((h for h in candidates if h.value == value), None)
        if hit:
            return hit
    return None


def _complaint(hits: list[Hit], kind: str, evidence: dict[str, Evidence]) -> str | None:
    if kind in ("claim_granted", "claim_denied", "claim_withdrawn", "other"):
        relevant = [h for h in hits if h.label == "REASON_CUE"]
        if not relevant:
            return None
    hit = _first(hits, "COMPLAINT", COMPLAINT_PRIORITY)
    if hit is None:
        return None
    value = hit.value
    if value == "damaged":
        use = _first(hits, "USE_PERIOD", ("use",))
        arrival = _first(hits, "ARRIVAL", ("arrival",))
        value = "damaged_after_use" if use and not arrival else "damaged_on_arrival"
        if use and not arrival:
            evidence["complaint_type"] = Evidence(f"{hit.rule}+{use.rule}", f"{hit.text} … {use.text}")
            return value
    evidence["complaint_type"] = Evidence(hit.rule, hit.text)
    return value


def _intent(hits: list[Hit], evidence: dict[str, Evidence]) -> str:
    hit = _first(hits, "INTENT", INTENT_PRIORITY)
    if hit is None:
        evidence["buyer_intent"] = Evidence("no-intent-rule", "")
        return "other"
    evidence["buyer_intent"] = Evidence(hit.rule, hit.text)
    return hit.value


def _delivered(hits: list[Hit], evidence: dict[str, Evidence]) -> bool:
    hit = _first(hits, "DELIVERED", ("delivered",))
    if hit:
        evidence["delivered"] = Evidence(hit.rule, hit.text)
    return hit is not None


def _deadline_hours(hits: list[Hit], evidence: dict[str, Evidence]) -> int | None:
    for hit in hits:
        if hit.label != "DEADLINE":
            continue
        number = re.search(r"\d+", hit.text.translate(_FULLWIDTH_DIGITS))
        if number is None:
            number_word = next((n for w, n in _NUMBER_WORDS.items() if w in hit.text.lower()), None)
            if number_word is None:
                continue
            amount = number_word
        else:
            amount = int(number.group(0))
        hours = amount * (24 if hit.value == "days" else 1)
        evidence["deadline_hours"] = Evidence(hit.rule, hit.text)
        return hours
    return None


_FULLWIDTH_DIGITS = str.maketrans("０１２３４５６７８９", "0123456789")
_NUMBER_WORDS = {"three": 3, "seven": 7, "two": 2, "drei": 3, "sieben": 7, "trois": 3, "sept": 7, "tre": 3,
                 "sette": 7, "tres": 3, "siete": 7}


def _tracking(hits: list[Hit], text: str, evidence: dict[str, Evidence]) -> tuple[str | None, str | None]:
    has_cue = any(h.label == "TRACKING_CUE" for h in hits)
    named = [h for h in hits if h.label == "CARRIER"]
    for hit in hits:
        if hit.label != "TRACKING":
            continue
        number = re.sub(r"\s", "", hit.text).upper()
        carrier = tracking_carrier(number, hit.value)
        if carrier is None:
            continue
        if hit.value in ("fedex", "dhl") and not (has_cue or named):
            continue  # bare 10-15 digit numbers are phone or invoice numbers unless the text speaks of tracking
        nearest = min(named, key=lambda h: abs(h.start - hit.start), default=None)
        if nearest is not None and (hit.value in ("fedex", "dhl", "usps") or carrier == "unknown"):
            carrier = nearest.value
            evidence["carrier"] = Evidence(nearest.rule, nearest.text)
        elif carrier == "unknown":
            carrier = None
        else:
            evidence["carrier"] = Evidence(f"tracking-format:{hit.value}", number)
        evidence["tracking_number"] = Evidence(hit.rule, hit.text)
        return number, carrier
    return None, None


def tracking_carrier(number: str, fmt: str) -> str | None:
    """The carrier a tracking number's format implies (None when its check digit is wrong)."""
    if fmt == "ups":
        return "UPS" if ups_check_ok(number) else None
    if fmt == "s10":
        if not s10_check_ok(number):
            return None
        return {"CN": "China Post", "GB": "Royal Mail"}.get(number[-2:], "unknown")
    return {"usps": "USPS", "fedex": "FedEx", "dhl": "DHL", "yunexpress": "YunExpress",
            "amazon": "Amazon Logistics", "yanwen": "Yanwen", "4px": "4PX"}.get(fmt, "unknown")


def ups_check_ok(number: str) -> bool:
    """UPS 1Z numbers: mod-10 check over the 15 characters after '1Z'."""
    body = number[2:]
    if len(body) != 16 or not body.isalnum():
        return False
    digits = [int(c) if c.isdigit() else (ord(c) - 63) % 10 for c in body[:15]]
    total = sum(d if i % 2 == 0 else 2 * d for i, d in enumerate(digits))
    return (10 - total % 10) % 10 == int(body[15]) if body[15].isdigit() else False


def s10_check_ok(number: str) -> bool:
    """UPU S10 numbers (AA123456785CN): mod-11 check over the 8 serial digits."""
    if not re.fullmatch(r"[A-Z]{2}\d{9}[A-Z]{2}", number):
        return False
    serial, check = number[2:10], int(number[10])
    total = sum(int(d) * w for d, w in zip(serial, (8, 6, 4, 2, 3, 5, 9, 7), strict=True))
    expected = 11 - total % 11
    expected = 0 if expected == 10 else 5 if expected == 11 else expected
    return expected == check


def _amount(text: str, marketplace: str | None, evidence: dict[str, Evidence]) -> tuple[str | None, str | None]:
    match = MONEY.search(text)
    if not match:
        return None, None
    symbol = match.group("pre") or match.group("post")
    number = match.group("num") or match.group("num2")
    currency = CURRENCY_SYMBOLS.get(symbol, symbol)
    if symbol == "$" and marketplace == "amazon.ca":
        currency = "CAD"
    value = _decimal(number, currency)
    if value is None:
        return None, None
    evidence["amount"] = Evidence("money", match.group(0).strip())
    return value, currency


def _decimal(number: str, currency: str) -> str | None:
    number = number.replace(" ", "")
    if re.search(r"[.,]\d{2}$", number):
        whole, cents = number[:-3], number[-2:]
        whole = re.sub(r"[.,]", "", whole)
        number = f"{whole}.{cents}"
    else:
        number = re.sub(r"[.,]", "", number)
    try:
        value = Decimal(number)
    except InvalidOperation:
        return None
    return str(value.quantize(Decimal("1")) if currency == "JPY" else value.quantize(Decimal("0.01")))


def _buyer_name(message: ParsedMessage) -> str | None:
    name = re.split(r"\s+-\s+Amazon", message.sender_name or "", maxsplit=1)[0].strip(" \"'")
    if not name or "@" in name or len(name) > 80:
        return None
    return name


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None
