"""Facts from rule hits, each with its evidence.

The message kind by text, order ID, complaint, buyer intent, tracking number and carrier, delivery, deadline and
amount."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date
from decimal import Decimal, InvalidOperation

from pipeline.understanding.facts import Evidence
from pipeline.understanding.language import find_date
from pipeline.understanding.rules import Hit
from pipeline.understanding.text import inside_quotes, join_wrapped_ids, order_ids
from pipeline.understanding.tracking import tracking_carrier

CURRENCY_SYMBOLS = {
    "$": "USD",
    "US$": "USD",
    "£": "GBP",
    "€": "EUR",
    "¥": "JPY",
    "￥": "JPY",
    "円": "JPY",
    "CA$": "CAD",
    "C$": "CAD",
}
# an amount: thousands grouped by . , or a space, then one or two decimals ("39.9" in real refund notices)
_NUMBER = r"(?:\d{1,3}(?:[.,\s]\d{3})+|\d+)(?:[.,]\d{1,2})?(?![\d])"
MONEY = re.compile(
    rf"(?P<pre>US\$|CA\$|C\$|CAD|EUR|GBP|USD|JPY|[$£€¥￥])\s?(?P<num>{_NUMBER})"
    rf"|(?P<num2>{_NUMBER})\s?(?P<post>€|EUR|円|GBP|USD|CAD|JPY)"
)
_CURRENCY_MARK = re.compile(r"US\$|CA\$|C\$|CAD|EUR|GBP|USD|JPY|[$£€¥￥円]")
_DIGITS = re.compile(r"\d+")
_SPACE = re.compile(r"\s")
_CENTS = re.compile(r"[.,]\d{1,2}$")
_SEPARATORS = re.compile(r"[.,]")
_AMAZON_NAME_SUFFIX = re.compile(r"\s+-\s+Amazon")
_FULLWIDTH_DIGITS = str.maketrans("０１２３４５６７８９", "0123456789")


def best(hits: Iterable[Hit], allowed: Iterable[str] | None = None) -> Hit | None:
    """The not negated hit of the highest priority (the earliest of them), among the allowed values."""
    chosen: Hit | None = None
    values = set(allowed) if allowed is not None else None
    for hit in hits:
        if hit.negated or (values is not None and hit.value not in values):
            continue
        if chosen is None or hit.priority > chosen.priority:
            chosen = hit
    return chosen


def kind_by_text(hits: list[Hit], allowed: Iterable[str], denied_priority: int) -> tuple[str, Evidence] | None:
    """A claim kind from the KIND hits, among `allowed`. "We have not granted the claim" is a denial, of the
    priority denials have (`denied_priority`)."""
    candidates = []
    for hit in hits:
        if hit.hypothetical:
            continue
        if hit.negated:
            if hit.value != "claim_granted":
                continue
            hit = hit._replace(
                value="claim_denied", negated=False, rule=hit.rule + "(negated)", priority=denied_priority
            )
        candidates.append(hit)
    found = best(candidates, allowed)
    if found is None:
        return None
    return found.value, Evidence(found.rule, found.text)


def order_id(subject: str, text: str, evidence: dict[str, Evidence]) -> str | None:
    """The order a message is about: the subject's, else the one the text names most (first when tied)."""
    in_subject = order_ids(join_wrapped_ids(subject))
    if in_subject:
        evidence["order_id"] = Evidence("order-id:subject", in_subject[0])
        return in_subject[0]
    found = order_ids(text)
    if not found:
        return None
    chosen = max(dict.fromkeys(found), key=lambda oid: (found.count(oid), -found.index(oid)))
    evidence["order_id"] = Evidence("order-id:body", chosen)
    return chosen


def _reason_hit(hits: dict[str, list[Hit]], text: str) -> Hit | None:
    """The complaint Amazon's reason field states: on the reason label's line, or the line below (tables)."""
    cues = hits.get("REASON_CUE")
    if not cues:
        return None
    stated: list[Hit] = sorted(
        (h for h in (*hits.get("COMPLAINT", ()), *hits.get("REASON", ())) if not h.negated),
        key=lambda h: (h.start, -h.end, h.rule),
    )
    for cue in cues:
        line_end = text.find("\n", cue.end)
        line_end = len(text) if line_end < 0 else line_end
        next_end = text.find("\n", line_end + 1)
        next_end = len(text) if next_end < 0 else next_end
        for limit in (line_end, next_end):
            found = [h for h in stated if cue.end <= h.start < limit]
            if found:
                return found[0]
    return None


def complaint(hits: dict[str, list[Hit]], text: str, evidence: dict[str, Evidence]) -> str | None:
    """The complaint type: a stated reason field, else the words by priority; damage split by when it showed
    (USE_PERIOD, ARRIVAL)."""
    complaints = [h for h in hits.get("COMPLAINT", ()) if not h.negated]
    reason = _reason_hit(hits, text)
    hit = reason
    if reason is not None and reason.value == "not_as_described":
        size = next((h for h in complaints if h.value == "size"), None)
        hit = size or reason  # Amazon files wrong sizes under "not as described"; the words say which
    if hit is None:
        hit = best(complaints)
    if hit is None:
        return None
    value = hit.value
    rule = hit.rule if hit is not reason else f"reason:{hit.rule}"
    if value == "damaged":
        use = best(hits.get("USE_PERIOD", []))
        arrival = best(hits.get("ARRIVAL", []))
        if use and not arrival:
            evidence["complaint_type"] = Evidence(f"{rule}+{use.rule}", f"{hit.text} … {use.text}")
            return "damaged_after_use"
        value = "damaged_on_arrival"
        if arrival:
            evidence["complaint_type"] = Evidence(f"{rule}+{arrival.rule}", f"{hit.text} … {arrival.text}")
            return value
    evidence["complaint_type"] = Evidence(rule, hit.text)
    return value


def intent(hits: list[Hit], complaint_type: str | None, evidence: dict[str, Evidence]) -> str:
    """The buyer's wish; "it arrived" settles only a parcel that did not come."""
    allowed = None if complaint_type in (None, "not_received") else {h.value for h in hits} - {"arrived"}
    hit = best(hits, allowed)
    if hit:
        evidence["buyer_intent"] = Evidence(hit.rule, hit.text)
        return "resolved" if hit.value == "arrived" else hit.value
    evidence["buyer_intent"] = Evidence("no-intent-rule", "")
    return "other"


def delivered(hits: list[Hit], evidence: dict[str, Evidence]) -> bool:
    """Whether the text says tracking shows the parcel delivered ("if it was delivered" does not)."""
    hit = best(h for h in hits if not h.hypothetical)
    if hit:
        evidence["delivered"] = Evidence(hit.rule, hit.text)
    return hit is not None


def delivery_date(text: str, hits: list[Hit], months: dict[str, int], evidence: dict[str, Evidence]) -> date | None:
    """The date written right after "tracking shows … delivered" ("on February 12, 2026", "am 3. März 2026")."""
    for hit in hits:
        if hit.negated:
            continue
        when = find_date(text[hit.start : hit.end + 60].replace("\u00a0", " "), months)
        if when:
            evidence["delivered_on"] = Evidence(f"{hit.rule}+date", when[1])
            return when[0]
    return None


def deadline_hours(
    hits: list[Hit], text: str, number_words: dict[str, int], evidence: dict[str, Evidence]
) -> int | None:
    """The response time the text states, in hours ("within 3 calendar days" -> 72)."""
    for hit in hits:
        if hit.negated or inside_quotes(text, hit.start):
            continue  # a buyer's quoted comment ("promised within 2 days") is not Amazon's deadline
        number = _DIGITS.search(hit.text.translate(_FULLWIDTH_DIGITS))
        if number is None:
            lowered = hit.text.lower()
            amount = next((n for w, n in number_words.items() if re.search(rf"\b{w}\b", lowered)), None)
            if amount is None:
                continue
        else:
            amount = int(number.group(0))
        evidence["deadline_hours"] = Evidence(hit.rule, hit.text)
        return amount * (24 if hit.value == "days" else 1)
    return None


def tracking(hits: dict[str, list[Hit]], evidence: dict[str, Evidence]) -> tuple[str | None, str | None]:
    """The tracking number with a valid format and check digit, and its carrier (format or a named carrier)."""
    numbers = hits.get("TRACKING")
    if not numbers:
        return None, None
    numbers = sorted(numbers, key=lambda h: (h.start, -h.priority))
    has_cue = "TRACKING_CUE" in hits
    named = hits.get("CARRIER", [])
    for hit in numbers:
        number = _SPACE.sub("", hit.text).upper()
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


def amount(
    text: str, cues: list[Hit], offset: int, marketplace: str | None, evidence: dict[str, Evidence]
) -> tuple[str | None, str | None]:
    """The amount: the money right after an amount cue ("Claim amount", "claim of"), else the first.

    `text` is the part of the read text the money may come from, starting `offset` characters into it.
    """
    matches = money(text)
    if not matches:
        return None, None
    match = matches[0]
    rule = "money"
    for cue in cues:
        after = [m for m in matches if 0 <= m.start() + offset - cue.end <= 80]
        if after:
            match, rule = after[0], f"money+{cue.rule}"
            break
    symbol = match.group("pre") or match.group("post")
    number = match.group("num") or match.group("num2")
    currency = CURRENCY_SYMBOLS.get(symbol, symbol)
    if symbol == "$" and marketplace == "amazon.ca":
        currency = "CAD"
    value = decimal(number, currency)
    if value is None:
        return None, None
    evidence["amount"] = Evidence(rule, match.group(0).strip())
    evidence["currency"] = Evidence(f"currency:{symbol}", match.group(0).strip())
    return value, currency


def money(text: str) -> list[re.Match[str]]:
    """MONEY matches, looked for only around currency marks (scanning every digit is slow)."""
    found: list[re.Match[str]] = []
    seen = -1
    for mark in _CURRENCY_MARK.finditer(text):
        start = max(0, mark.start() - 24, seen)
        for match in MONEY.finditer(text, start, min(len(text), mark.end() + 24)):
            if match.start() >= seen and (match.start() <= mark.start() < match.end()):
                found.append(match)
                seen = match.end()
    return found


def decimal(number: str, currency: str) -> str | None:
    """A written amount as a decimal string ("1.234,50" -> "1234.50"; yen without cents)."""
    number = number.replace(" ", "")
    cents_match = _CENTS.search(number)
    if cents_match:
        whole, cents = number[: cents_match.start()], number[cents_match.start() + 1 :].ljust(2, "0")
        whole = _SEPARATORS.sub("", whole)
        number = f"{whole}.{cents}"
    else:
        number = _SEPARATORS.sub("", number)
    try:
        value = Decimal(number)
    except InvalidOperation:
        return None
    return str(value.quantize(Decimal("1")) if currency == "JPY" else value.quantize(Decimal("0.01")))


def buyer_name(sender_name: str | None) -> str | None:
    """The buyer's name from the relay sender's display name ("Maria - Amazon Marketplace" -> "Maria")."""
    name = _AMAZON_NAME_SUFFIX.split(sender_name or "", maxsplit=1)[0].strip(" \"'")
    if not name or "@" in name or len(name) > 80:
        return None
    return name
