"""Which of Amazon's messages this is, read from Amazon's own structure before any text rule.

The order (models/xx/notifications.json and each language's "subjects"):

1. `X-Space-Notification-Type`: a known value decides the family and usually the kind (RETURN_REQUEST is a
   return request whatever its text says). Without the header, the same value in the body's links
   (`communicationName=`, `nt=`) counts: it survives forwarding.
2. The sender's role: a buyer's relay address, the A-to-z sender, a Seller Central no-reply sender, another
   Amazon address (customer service), or not Amazon at all.
3. Subject templates, allowed only within the family the header or sender gave: a claim kind's template needs
   the A-to-z family, a Seller Central template the no-reply sender.
4. What is left to the text rules (understander.py): a decision's outcome, or the kind of A-to-z mail whose
   subject no template knows. A text rule for a claim kind needs an A-to-z signal; a stock phrase alone never
   decides a claim kind.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.marketplaces import is_amazon_domain
from pipeline.message import ParsedMessage
from pipeline.understanding.facts import Evidence
from pipeline.understanding.language import LanguageData, reply_prefix
from pipeline.understanding.text import normalize_chars

DECISIONS = ("claim_granted", "claim_denied", "claim_withdrawn")
SELLER_CENTRAL_KINDS = (
    "return_request",
    "refund_issued",
    "cancellation_request",
    "seller_reply_copy",
    "message_undelivered",
)
# subject templates each family may use: a template never moves a message into another family
_SUBJECTS_OF = {
    "atoz": ("claim_filed", "claim_decision", "claim_info_request", "claim_withdrawn"),
    "seller_central": SELLER_CENTRAL_KINDS,
    "customer_service": ("amazon_inquiry", *SELLER_CENTRAL_KINDS),
    "buyer": ("buyer_message",),
    "unknown": (
        "claim_filed",
        "claim_decision",
        "claim_info_request",
        "claim_withdrawn",
        "amazon_inquiry",
        *SELLER_CENTRAL_KINDS,
        "buyer_message",
    ),
}
_LINK_TYPE = re.compile(
    r"(?:communicationName|customAttribute1Value)=([A-Z][A-Z0-9_]{3,60})"
    r"|[?&;]nt=([A-Z][A-Z0-9_]{3,60})"
)


@dataclass(frozen=True)
class Structure:
    """What Amazon's structure says of a message, before its text is read."""

    family: str  # atoz | buyer | seller_central | customer_service | unknown
    kind: str | None  # the kind, or None when the text decides within the family
    role: str  # relay | lookalike_relay | atoz | no_reply | amazon | not_amazon
    notification_type: str | None  # the header's value as written (None without the header)
    evidence: Evidence
    subject_kind: str | None = None  # the kind a subject template names ("claim_decision": an outcome)
    subject_buyer: str | None = None  # a buyer's name a subject template holds ("Your e-mail to Tyler")


class StructureReader:
    """Reads Structure from a parsed message (data: models/xx/notifications.json, languages' "subjects")."""

    def __init__(self, folders: list[Path], languages: dict[str, LanguageData]) -> None:
        data = _notifications(folders)
        self.types: dict[str, dict[str, Any]] = data.get("notification_types", {})
        self.prefixes: dict[str, str] = data.get("family_prefixes", {})
        senders = data.get("senders", {})
        self.relay_domains = tuple(senders.get("relay_domains", ()))
        self.atoz_locals = frozenset(senders.get("atoz_local_parts", ()))
        self.no_reply_locals = frozenset(senders.get("no_reply_local_parts", ()))
        self.reply_prefix = reply_prefix(languages)
        self.subjects: list[tuple[str, re.Pattern[str]]] = []
        for language in languages.values():
            for kind, patterns in language.get("subjects", {}).items():
                self.subjects.extend((kind, re.compile(p, re.IGNORECASE)) for p in patterns)

    def role(self, message: ParsedMessage) -> str:
        """The sender's role, from its address."""
        domain = message.sender_domain
        local = message.sender.rpartition("@")[0].lower()
        if not is_amazon_domain(domain):
            return "lookalike_relay" if message.had_markers and "marketplace.amazon" in domain else "not_amazon"
        if domain.startswith(self.relay_domains) and not self.is_no_reply(local):
            return "relay"
        if local in self.atoz_locals:
            return "atoz"
        if self.is_no_reply(local):
            return "no_reply"
        return "amazon"

    def is_no_reply(self, local: str) -> bool:
        """Whether an address's local part says a reply reaches nobody."""
        local = local.lower()
        return local in self.no_reply_locals or any(
            mark in local for mark in ("no-reply", "noreply", "donotreply", "do-not-reply")
        )

    def read(self, message: ParsedMessage) -> Structure:
        """The family and, where the structure decides it, the kind of a message."""
        role = self.role(message)
        header = message.notification_type.strip() if message.notification_type else None
        found_type, source = header, "x-space-notification-type"
        if not found_type:
            found_type, source = self._type_in_links(message), "link:communicationName"
        subject_kind, subject_buyer = self._subject(message.subject)
        entry = self.types.get(found_type or "")
        if entry is not None:
            family, kind = entry["family"], entry.get("kind")
            evidence = Evidence(source, found_type or "")
            if (
                family == "atoz"
                and kind == "claim_filed"
                and subject_kind in ("claim_decision", "claim_withdrawn", "claim_info_request")
            ):
                # the filing header on a mail whose reported subject says it is a decision (or more)
                kind = None if subject_kind == "claim_decision" else subject_kind
                evidence = Evidence(f"{source}+subject:{subject_kind}", message.subject)
            if family == "atoz" and kind is None and subject_kind in ("claim_withdrawn", "claim_info_request"):
                kind = subject_kind
            return Structure(family, kind, role, header, evidence, subject_kind, subject_buyer)
        if found_type:
            family = next((f for prefix, f in self.prefixes.items() if found_type.startswith(prefix)), None)
            if family is not None:
                return self._by_subject(family, role, header, Evidence(source, found_type), subject_kind, subject_buyer)
            # a Seller Central notification of a kind that is none of ours
            return Structure("seller_central", "other", role, header, Evidence(source, found_type))
        family = {
            "relay": "buyer",
            "lookalike_relay": "buyer",
            "atoz": "atoz",
            "no_reply": "seller_central",
            "amazon": "customer_service",
        }.get(role, "unknown")
        evidence = Evidence(f"sender:{role}", message.sender)
        if family == "buyer":
            return Structure("buyer", "buyer_message", role, header, evidence, subject_kind, subject_buyer)
        return self._by_subject(family, role, header, evidence, subject_kind, subject_buyer)

    def _by_subject(
        self,
        family: str,
        role: str,
        header: str | None,
        evidence: Evidence,
        subject_kind: str | None,
        subject_buyer: str | None,
    ) -> Structure:
        if subject_kind is None or subject_kind not in _SUBJECTS_OF.get(family, ()):
            return Structure(family, None, role, header, evidence, None, subject_buyer)
        kind = None if subject_kind == "claim_decision" else subject_kind
        return Structure(
            family,
            kind,
            role,
            header,
            Evidence(f"{evidence.rule}+subject:{subject_kind}", evidence.text),
            subject_kind,
            subject_buyer,
        )

    def _subject(self, subject: str) -> tuple[str | None, str | None]:
        """The kind a subject template names, and the buyer's name it holds, if any."""
        text = self.reply_prefix.sub("", normalize_chars(subject)).strip()
        for kind, pattern in self.subjects:
            match = pattern.search(text)
            if match:
                buyer = match.groupdict().get("buyer")
                return kind, buyer.strip() if buyer else None
        return None, None

    def _type_in_links(self, message: ParsedMessage) -> str | None:
        """A known notification type named in the body's links (a forwarded notice keeps them)."""
        for match in _LINK_TYPE.finditer(message.html or message.text):
            value = match.group(1) or match.group(2)
            if value in self.types or any(value.startswith(prefix) for prefix in self.prefixes):
                return value
        return None


def _notifications(folders: list[Path]) -> dict[str, Any]:
    for folder in folders:
        path = folder / "xx" / "notifications.json"
        if path.is_file():
            return dict(json.loads(path.read_text(encoding="utf-8")))
    return {}
