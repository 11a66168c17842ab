"""The seller's playbook as pure functions: a claim so far plus a message's facts give the next transition.

No I/O here. `replay` folds an order's messages and the seller's own statements in date order, so the final
state depends only on which messages and statements there are (and `now`), never on the order or the number of
times they were processed.

A case begins before any claim: a buyer's complaint (a buyer message, a return request, Amazon customer service
asking for the buyer) is answered at once (state `buyer_contact`), because Amazon decides claims from what was
said to the buyer before them. When the A-to-z claim arrives, the case becomes the claim and the seller's
playbook goes on with everything already known.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation

from pipeline.marketplaces import language_of_marketplace
from pipeline.understanding.facts import Facts
from pipeline.vocabulary import (
    AMAZON_STRATEGIES,
    APPEAL_DAYS,
    CLAIM_KINDS,
    CLOSED_STATES,
    MAY_FILE_HOURS,
    RECOGNIZED_CARRIERS,
    REPLY_HOURS,
    STATES,
    STRATEGIES,
)

__all__ = [
    "STATES",
    "STRATEGIES",
    "ClaimView",
    "DraftPlan",
    "Rules",
    "Shipment",
    "Statement",
    "Transition",
    "apply",
    "apply_statement",
    "escalate",
    "replay",
]

SETTLING_INTENTS = ("resolved", "will_withdraw", "wants_resend")
BUYER_STRATEGIES = (
    "offer_refund_or_resend",
    "persuade_withdraw_damaged",
    "request_withdrawal",
    "answer_delivered",
    "answer_size",
    "answer_damaged",
    "answer_after_use",
)
REASON_UNKNOWN = (
    "reason not in Amazon's mail: check Seller Central, then state it with "
    "`pipeline claims set {order} --complaint TYPE`"
)
# Where a complaint came from, strongest first: what the seller states, a reason Amazon's claim notice names,
# the buyer's own words, a return request's reason and comment, Amazon customer service's reason.
RANK = {"seller": 5, "claim": 4, "buyer_message": 3, "return_request": 2, "amazon_inquiry": 1}


@dataclass(frozen=True)
class Rules:
    """The seller's numbers the playbook needs."""

    response_days: int = 7
    refund_margin_hours: int = 24
    recognized_carriers: tuple[str, ...] = RECOGNIZED_CARRIERS
    require_proof: bool = False  # [trust] mode = "strict": Amazon-looking mail without proof decides nothing

    def recognizes(self, carrier: str | None) -> bool:
        """Whether Amazon recognizes this carrier: case, spaces and punctuation ignored ("Yun Express"), and a
        service name counts as its carrier ("UPS Ground", "FedEx Home Delivery", "DHL eCommerce")."""
        if not carrier:
            return False
        words = _carrier_words(carrier)
        return any(
            _carrier_key(carrier) == _carrier_key(known) or words[: len(known_words)] == known_words
            for known in self.recognized_carriers
            for known_words in [_carrier_words(known)]
        )


def _carrier_key(name: str) -> str:
    return re.sub(r"[\W_]+", "", name).casefold()


def _carrier_words(name: str) -> list[str]:
    return [w for w in re.split(r"[\W_]+", name.casefold()) if w]


@dataclass(frozen=True)
class Shipment:
    """What the seller's own shipment records say about an order."""

    carrier: str | None = None
    tracking_number: str | None = None
    ship_date: date | None = None
    delivered_date: date | None = None


@dataclass(frozen=True)
class Statement:
    """A fact the seller stated (`pipeline claims set`): it wins over mail and is replayed like a message."""

    key: str
    at: datetime
    field: str  # complaint | carrier | tracking | delivered | note
    value: str


@dataclass(frozen=True)
class DraftPlan:
    """A reply the current step calls for: which template, to whom, answering which message.

    audience: "amazon" (Seller Central, or an Amazon address that reaches a person), "buyer", or "amazon_cs"
    (Amazon customer service asking for the buyer). A newer plan replaces the older one of its audience.
    """

    strategy: str
    audience: str
    step: str
    parent_key: str | None
    important: bool = False  # the buyer opted out of messages: mark the subject as Amazon advises


@dataclass(frozen=True)
class ClaimView:
    """A claim (or a case before the claim) as the playbook sees it.

    `opened`: an A-to-z claim exists. `case`: a buyer's complaint was answered before any claim.
    """

    order_id: str
    opened: bool = False
    case: bool = False
    state: str = "new"
    strategy: str | None = None
    complaint_type: str | None = None
    complaint_rank: int = 0
    marketplace: str | None = None
    language: str | None = None
    opened_at: datetime | None = None
    deadline_at: datetime | None = None
    buyer_address: str | None = None
    buyer_name: str | None = None
    amazon_reply_to: str | None = None  # an Amazon address that reaches a person (rare); else Seller Central
    amazon_key: str | None = None
    buyer_key: str | None = None
    inquiry_key: str | None = None
    inquiry_address: str | None = None
    tracking_number: str | None = None
    carrier: str | None = None
    delivered: bool = False
    delivered_on: date | None = None
    amount: str | None = None
    currency: str | None = None
    flagged: bool = False
    flag_reason: str | None = None
    info_rounds: int = 0
    undelivered_rounds: int = 0
    state_since: datetime | None = None
    last_buyer_at: datetime | None = None  # the buyer's last answer that moves things on (not a mere question)
    # the response clock: the oldest buyer contact not answered yet, and the answers given
    owed_since: datetime | None = None
    answered_at: datetime | None = None  # the last answer to the buyer (sent draft, Amazon's copy, the seller's word)
    complained_at: datetime | None = None  # the first complaint (buyer message, return, customer service)
    first_answer_at: datetime | None = None  # the first answer after that complaint
    replied_in_time: bool = False  # some contact was answered within REPLY_HOURS
    appeal_due_at: datetime | None = None  # a granted claim worth appealing: the last day to do so
    refunded: tuple[str, str | None] | None = None  # (amount, currency) refunded on the order so far
    stated: tuple[tuple[str, str], ...] = ()  # (field, value) the seller stated, in order
    drafts: tuple[DraftPlan, ...] = ()  # at most one per audience

    @property
    def reply_due_at(self) -> datetime | None:
        """When the buyer's oldest unanswered contact must be answered (Amazon's 24-hour response time)."""
        return self.owed_since + timedelta(hours=REPLY_HOURS) if self.owed_since else None

    @property
    def may_file_at(self) -> datetime | None:
        """When the buyer, still unanswered, may file an A-to-z claim (48 hours after contacting the seller)."""
        return self.owed_since + timedelta(hours=MAY_FILE_HOURS) if self.owed_since else None

    @property
    def listed(self) -> bool:
        """Whether the order has a row in `pipeline claims`: a claim, or a case before it."""
        return self.opened or self.case

    @property
    def draft(self) -> DraftPlan | None:
        """The newest plan."""
        return self.drafts[-1] if self.drafts else None

    def stated_value(self, name: str) -> str | None:
        """The last value the seller stated for a field, or None."""
        return next((value for key, value in reversed(self.stated) if key == name), None)


@dataclass(frozen=True)
class Transition:
    """One step of a claim's history: the rule that fired, why, and what the claim became."""

    at: datetime
    rule: str
    reason: str
    before: ClaimView
    after: ClaimView
    message_key: str | None = None
    kind: str = "transition"  # transition | escalation | flag | note


@dataclass(frozen=True)
class Replayed:
    """The result of replaying an order's messages: the final view and every transition on the way."""

    claim: ClaimView
    transitions: list[Transition] = field(default_factory=list)


def replay(
    order_id: str,
    messages: Iterable[tuple[str, Facts]],
    shipment: Shipment | None,
    now: datetime,
    rules: Rules,
    statements: Iterable[Statement] = (),
) -> Replayed:
    """Fold an order's messages (key, facts) and the seller's statements in date order, checking the deadline
    before each and at `now`. A message given twice (the same key) counts once."""
    unique: dict[str, Facts | Statement] = dict(messages)
    unique.update((s.key, s) for s in statements)

    def when(item: tuple[str, Facts | Statement]) -> tuple[datetime, int, str]:
        value = item[1]
        at = value.at if isinstance(value, Statement) else (value.sent_at or now)
        return at, isinstance(value, Statement), item[0]

    claim = ClaimView(order_id=order_id)
    transitions: list[Transition] = []
    for key, item in sorted(unique.items(), key=when):
        at = when((key, item))[0]
        escalation = escalate(claim, at, rules)
        if escalation:
            transitions.append(escalation)
            claim = escalation.after
        step = (
            apply_statement(claim, item, rules, at)
            if isinstance(item, Statement)
            else apply(claim, key, item, shipment, rules, at)
        )
        if step:
            transitions.append(step)
            claim = step.after
    escalation = escalate(claim, now, rules)
    if escalation:
        transitions.append(escalation)
        claim = escalation.after
    return Replayed(claim, transitions)


def apply(
    claim: ClaimView, key: str, facts: Facts, shipment: Shipment | None, rules: Rules, at: datetime
) -> Transition | None:
    """The transition one message causes, or None when it changes nothing."""
    if not facts.trusted:
        return _untrusted(claim, key, facts, at)
    handler = _HANDLERS.get(facts.kind)
    if handler is not None:
        step = handler(claim, key, facts, shipment, rules, at)
    elif facts.kind in CLAIM_KINDS:
        step = _amazon_message(claim, key, facts, shipment, rules, at)
    else:
        step = _other(claim, key, facts, at)
    step = _clock(claim, key, facts, step, at)
    if step is not None and rules.require_proof and not facts.verified:
        return _unproven(claim, key, facts, step, at)
    return step


# --- the response clock -----------------------------------------------------------------------------------------

OWING_KINDS = ("buyer_message", "amazon_inquiry")  # contacts owed an answer
COMPLAINING_KINDS = ("buyer_message", "amazon_inquiry", "return_request")


def _clock(claim: ClaimView, key: str, facts: Facts, step: Transition | None, at: datetime) -> Transition | None:
    """The response clock after one message: a buyer's contact is owed an answer (unless it settles the matter),
    its first complaint is dated, and Amazon's copy of the seller's reply answers it."""
    owes = facts.kind in OWING_KINDS and facts.buyer_intent not in ("resolved", "will_withdraw")
    complains = facts.kind in COMPLAINING_KINDS and facts.complaint_type is not None
    if not (owes or complains or facts.kind == "seller_reply_copy"):
        return step
    base = step.after if step is not None else claim
    after = base
    if facts.kind == "seller_reply_copy":
        after = _answered(after, at)
    if owes and after.owed_since is None and after.state not in CLOSED_STATES:
        after = replace(after, owed_since=at)
    if complains and after.complained_at is None:
        after = replace(after, complained_at=at)
    if after == base:
        return step
    if step is None:
        return _note(at, f"{facts.kind}_clock", "the buyer is owed an answer", claim, after, key)
    return replace(step, after=after)


def _answered(claim: ClaimView, at: datetime) -> ClaimView:
    """The claim once the buyer was answered at `at`: every contact before it is answered."""
    if claim.owed_since is not None and claim.owed_since > at:
        return claim  # an answer written before the contact answers nothing of it
    in_time = claim.owed_since is not None and at <= claim.owed_since + timedelta(hours=REPLY_HOURS)
    first = claim.first_answer_at
    if first is None and claim.complained_at is not None and at >= claim.complained_at:
        first = at
    return replace(
        claim,
        owed_since=None,
        answered_at=at,
        first_answer_at=first,
        replied_in_time=claim.replied_in_time or in_time,
    )


def escalate(claim: ClaimView, now: datetime, rules: Rules) -> Transition | None:
    """awaiting_buyer with less than refund_margin_hours left and no answer from the buyer since the current
    step began (an answer settles something: solved, will withdraw, wants a replacement; "any news?" is no
    answer): refund_needed. A buyer who said the problem is solved is not refunded; we wait for the withdrawal."""
    if claim.state != "awaiting_buyer" or claim.deadline_at is None:
        return None
    if now < claim.deadline_at - timedelta(hours=rules.refund_margin_hours):
        return None
    if claim.last_buyer_at and claim.state_since and claim.last_buyer_at >= claim.state_since:
        return None
    # dated when the rule became true, not when we noticed: a later replay writes the same history
    at = claim.deadline_at - timedelta(hours=rules.refund_margin_hours)
    if claim.state_since and at < claim.state_since:
        at = claim.state_since
    after = _refund_needed(claim, at)
    return Transition(
        at,
        "deadline_near_no_buyer_reply",
        f"no buyer reply and less than {rules.refund_margin_hours} h left before the deadline "
        f"{_fmt(claim.deadline_at)}: refund the buyer before Amazon does",
        claim,
        after,
        None,
        kind="escalation",
    )


def apply_statement(claim: ClaimView, statement: Statement, rules: Rules, at: datetime) -> Transition | None:
    """The transition a fact stated by the seller causes: it wins over what mail said."""
    stated = replace(claim, stated=(*claim.stated, (statement.field, statement.value)))
    key = statement.key
    if statement.field == "note":
        return Transition(at, "seller_note", f"seller's note: {statement.value}", claim, stated, key, kind="note")
    if statement.field == "answered":
        return _note(
            at, "seller_answered", f"the buyer was answered ({statement.value})", claim, _answered(stated, at), key
        )
    if statement.field == "complaint":
        stated = replace(stated, complaint_type=statement.value, complaint_rank=RANK["seller"])
    elif statement.field == "carrier":
        stated = replace(stated, carrier=statement.value)
    elif statement.field == "tracking":
        stated = replace(stated, tracking_number=statement.value)
    elif statement.field == "delivered":
        stated = replace(stated, delivered=True, delivered_on=date.fromisoformat(statement.value))
    why = f"the seller stated {statement.field} {statement.value}"
    if claim.state in CLOSED_STATES:
        return Transition(at, "seller_stated", f"{why} (the claim is closed)", claim, stated, key, kind="note")
    if claim.opened:
        return _decide(claim, stated, key, rules, at, why)
    if claim.case:
        return _answer(claim, stated, key, rules, at, why, audience=_case_audience(claim))
    return Transition(at, "seller_stated", f"{why}; kept for the claim", claim, stated, key, kind="note")


# --- Amazon's claim notifications -------------------------------------------------------------------------------


def _amazon_message(
    claim: ClaimView, key: str, facts: Facts, shipment: Shipment | None, rules: Rules, at: datetime
) -> Transition | None:
    """Amazon's own mail about a claim: filed, more information asked, or closed."""
    base = _absorb(claim, facts, shipment, "claim")
    if facts.kind == "claim_filed":
        return _claim_filed(claim, base, key, facts, rules, at)
    if facts.kind == "claim_info_request":
        return _info_request(claim, base, key, facts, rules, at)
    return _claim_closed(claim, base, key, facts, rules, at)


def _claim_filed(
    claim: ClaimView, base: ClaimView, key: str, facts: Facts, rules: Rules, at: datetime
) -> Transition | None:
    """The A-to-z claim notice: it opens the claim and the playbook decides; sent again, it only moves the
    deadline."""
    if claim.opened:
        if facts.deadline_at and facts.deadline_at != claim.deadline_at:
            after = replace(base, deadline_at=facts.deadline_at)
            reason = "Amazon sent the claim notice again; deadline updated"
            return _note(at, "claim_notice_again", reason, claim, after, key)
        return None
    opened = replace(
        base,
        opened=True,
        opened_at=facts.sent_at or at,
        deadline_at=facts.deadline_at,
        amazon_key=key,
        amazon_reply_to=_amazon_reply_address(facts),
    )
    if claim.refunded and claim.state != "refunded":
        return _claim_after_refund(claim, opened, key, rules, at)
    why = "claim filed" + (" after the buyer's contact" if claim.case else "")
    return _decide(claim, opened, key, rules, at, why)


def _info_request(claim: ClaimView, base: ClaimView, key: str, facts: Facts, rules: Rules, at: datetime) -> Transition:
    """Amazon asks for more information: the claim is flagged and the representation to Amazon drafted again for
    this round (by hand when no representation fits the complaint)."""
    rounds = claim.info_rounds + 1
    after = replace(
        base,
        opened=True,
        opened_at=claim.opened_at or facts.sent_at or at,
        deadline_at=facts.deadline_at or claim.deadline_at,
        amazon_key=key,
        amazon_reply_to=_amazon_reply_address(facts) or claim.amazon_reply_to,
        info_rounds=rounds,
        flagged=True,
        flag_reason="Amazon asks for more information",
    )
    strategy = claim.strategy if claim.strategy in AMAZON_STRATEGIES else _representation(after, rules)
    if strategy is None:
        return _info_request_by_hand(claim, after, key, at)
    plan = DraftPlan(strategy, "amazon", f"{strategy}#info{rounds}", key)
    after = replace(after, strategy=strategy, drafts=_with(after, plan))
    reason = (
        f"Amazon asks for more information (round {rounds}); "
        f"deadline {_fmt(after.deadline_at)}; drafting {strategy} to Amazon again"
    )
    return Transition(at, "info_request", reason, claim, after, key)


def _info_request_by_hand(claim: ClaimView, asked: ClaimView, key: str, at: datetime) -> Transition:
    """Amazon asks for more information and no representation fits the complaint: the seller answers by hand."""
    after = replace(
        asked,
        strategy="manual_review",
        drafts=_without(asked, "amazon"),
        flag_reason="Amazon asks for more information; no representation fits this complaint",
    )
    reason = "Amazon asks for more information; the playbook has no representation for this complaint: answer by hand"
    return Transition(at, "info_request_manual", reason, claim, after, key)


# Amazon's closing mail: the state it leaves the claim in, the rule, the reason
_CLOSING = {
    "claim_granted": ("granted", "claim_granted", "Amazon granted the claim"),
    "claim_denied": ("resolved", "claim_denied", "Amazon closed the claim in the seller's favour"),
    "claim_withdrawn": ("resolved", "claim_withdrawn", "the buyer withdrew the claim"),
}


def _claim_closed(
    claim: ClaimView, base: ClaimView, key: str, facts: Facts, rules: Rules, at: datetime
) -> Transition | None:
    """Amazon closed the claim (granted, decided in the seller's favour, withdrawn). A granted claim the evidence
    speaks against is appealed (within APPEAL_DAYS); otherwise nothing is left to do."""
    new_state, rule, reason = _CLOSING[facts.kind]
    if claim.state == new_state:
        return None
    after = replace(_closed(base, new_state, at), opened=True, opened_at=claim.opened_at or facts.sent_at)
    evidence = _appeal_evidence(after, rules) if facts.kind == "claim_granted" else None
    if evidence:
        due = at + timedelta(days=APPEAL_DAYS)
        plan = DraftPlan("appeal_granted", "amazon", "appeal_granted", key)
        after = replace(after, strategy="appeal_granted", drafts=(plan,), appeal_due_at=due)
        reason = f"{reason}, but {evidence}: appeal in Seller Central by {_fmt(due)}"
        return Transition(at, "appeal_granted", reason, claim, after, key)
    return Transition(at, rule, reason, claim, after, key)


def _appeal_evidence(claim: ClaimView, rules: Rules) -> str | None:
    """Why a granted claim should not have been: delivered by a recognized carrier before the claim, or the
    buyer answered in time; None when the facts are not that strong."""
    opened = claim.opened_at.date() if claim.opened_at else None
    delivered = claim.delivered_on if claim.delivered and rules.recognizes(claim.carrier) else None
    if delivered and opened and delivered <= opened:
        return f"{claim.carrier} delivered it on {delivered.isoformat()}, before the claim"
    if claim.replied_in_time and claim.answered_at and claim.opened_at and claim.answered_at <= claim.opened_at:
        return f"the buyer was answered in time ({_fmt(claim.answered_at)}), before the claim"
    return None


def _claim_after_refund(claim: ClaimView, opened: ClaimView, key: str, rules: Rules, at: datetime) -> Transition:
    """A claim on an order refunded before it: a full refund closes it (Seller Central's A-to-z help); a partial
    one does not."""
    refund, currency = claim.refunded or ("0", None)
    covered = _covers(refund, currency, opened.amount, opened.currency)
    if covered:
        after = _closed(opened, "refunded", at)
        return Transition(
            at,
            "refunded_before_claim",
            f"claim filed on an order already refunded ({refund} {currency or ''}): a full refund closes the claim",
            claim,
            after,
            key,
        )
    decided = _decide(claim, opened, key, rules, at, "claim filed")
    flagged = replace(
        decided.after,
        flagged=True,
        flag_reason=f"{refund} {currency or ''} was refunded before the "
        f"claim of {opened.amount or '?'} {opened.currency or ''}: check whether it was the full amount",
    )
    return replace(decided, after=flagged)


def _sum(first: str, second: str) -> Decimal:
    try:
        return Decimal(first) + Decimal(second)
    except InvalidOperation:
        return Decimal(second)


def _covers(refund: str, refund_currency: str | None, amount: str | None, currency: str | None) -> bool:
    """Whether a refund covers a claim's amount (same currency, not less)."""
    if amount is None or (currency and refund_currency and currency != refund_currency):
        return False
    try:
        return Decimal(refund) >= Decimal(amount)
    except InvalidOperation:
        return False


def _amazon_reply_address(facts: Facts) -> str | None:
    """An Amazon address a reply by email reaches (Amazon's claim mail gives none: answers go to Seller Central)."""
    return facts.reply_address if facts.reply_channel == "email" else None


def _representation(claim: ClaimView, rules: Rules) -> str | None:
    if claim.complaint_type == "not_received" and claim.delivered and rules.recognizes(claim.carrier):
        return "represent_delivered"
    return {"size": "represent_size", "damaged_after_use": "represent_misuse"}.get(claim.complaint_type or "")


def _decide(before: ClaimView, claim: ClaimView, key: str | None, rules: Rules, at: datetime, why: str) -> Transition:
    """Choose the strategy for an open claim from its complaint and shipment facts (the playbook table)."""
    complaint = claim.complaint_type
    if complaint == "not_received":
        return _decide_not_received(before, claim, key, rules, at, why)
    if complaint in _CLAIM_TABLE:
        strategy, new_state, rule, text = _CLAIM_TABLE[complaint]
        return _go(before, claim, key, at, strategy, new_state, rule, f"{why}: {text}")
    return _claim_by_hand(before, claim, key, at, why)


# the playbook table for a claim: complaint -> (strategy, state, rule, reason)
_CLAIM_TABLE = {
    "size": (
        "represent_size",
        "awaiting_amazon",
        "size_stated_in_listing",
        "size complaint: the listing states the size",
    ),
    "damaged_on_arrival": (
        "persuade_withdraw_damaged",
        "awaiting_buyer",
        "damaged_on_arrival",
        "damaged on arrival: offer a fix and ask the buyer to withdraw",
    ),
    "damaged_after_use": (
        "represent_misuse",
        "awaiting_amazon",
        "damaged_after_use",
        "damaged after a period of use: not the seller's fault",
    ),
}


def _decide_not_received(
    before: ClaimView, claim: ClaimView, key: str | None, rules: Rules, at: datetime, why: str
) -> Transition:
    """A claim that the item never came: represent the delivery when a carrier Amazon recognizes shows it
    delivered, else offer the buyer a refund or a replacement."""
    if claim.delivered and rules.recognizes(claim.carrier):
        on = " on " + claim.delivered_on.isoformat() if claim.delivered_on else ""
        reason = f"{why}: not received, but {claim.carrier} tracking {claim.tracking_number or '?'} shows delivered{on}"
        return _go(before, claim, key, at, "represent_delivered", "awaiting_amazon", "not_received_delivered", reason)
    reason = f"{why}: not received and {_why_undelivered(claim, rules)}"
    return _go(before, claim, key, at, "offer_refund_or_resend", "awaiting_buyer", "not_received_untracked", reason)


def _claim_by_hand(before: ClaimView, claim: ClaimView, key: str | None, at: datetime, why: str) -> Transition:
    """A claim whose complaint is unknown, unclear or has no rule: flagged for the seller to review by hand."""
    complaint = claim.complaint_type
    reason = (
        REASON_UNKNOWN.format(order=claim.order_id)
        if complaint is None
        else "the seller's playbook has no rule for 'not as described'"
        if complaint == "not_as_described"
        else "the complaint is unclear"
    )
    after = replace(
        claim,
        strategy="manual_review",
        drafts=(),
        flagged=True,
        flag_reason=reason,
        state="new" if claim.state in ("buyer_contact", *CLOSED_STATES) else claim.state,
    )
    return Transition(at, "manual_review", f"{why}: {reason}; review by hand", before, after, key)


def _why_undelivered(claim: ClaimView, rules: Rules) -> str:
    if not claim.tracking_number and not claim.carrier:
        return "no tracking"
    if not rules.recognizes(claim.carrier):
        return f"carrier {claim.carrier or 'unknown'} not recognized by Amazon"
    return "tracking does not show delivered"


def _go(
    before: ClaimView,
    claim: ClaimView,
    key: str | None,
    at: datetime,
    strategy: str,
    new_state: str,
    rule: str,
    reason: str,
    audience: str | None = None,
) -> Transition:
    audience = audience or ("amazon" if strategy in AMAZON_STRATEGIES else "buyer")
    parent = {"amazon": claim.amazon_key, "amazon_cs": claim.inquiry_key}.get(
        audience, claim.buyer_key or claim.amazon_key
    )
    plan = DraftPlan(strategy, audience, strategy if audience != "amazon_cs" else f"{strategy}#inquiry", parent)
    # a new step's plan replaces the others, but for a reply still owed to customer service and the answer to
    # the buyer that the representation to Amazon builds on ("delivered: look at the neighbours'")
    kept = tuple(
        p
        for p in claim.drafts
        if p.audience != plan.audience and (p.audience == "amazon_cs" or _BUILDS_ON.get(strategy) == p.strategy)
    )
    after = replace(
        claim,
        strategy=strategy,
        state=new_state,
        drafts=(*kept, plan),
        flagged=False,
        flag_reason=None,
        state_since=at if new_state != before.state else before.state_since or at,
    )
    return Transition(at, rule, reason, before, after, key)


# the answer to the buyer before the claim that a representation to Amazon builds on
_BUILDS_ON = {
    "represent_delivered": "answer_delivered",
    "represent_size": "answer_size",
    "represent_misuse": "answer_after_use",
}


# --- a case before the claim ----------------------------------------------------------------------------------------


def _answer(
    before: ClaimView,
    claim: ClaimView,
    key: str | None,
    rules: Rules,
    at: datetime,
    why: str,
    *,
    audience: str = "buyer",
) -> Transition:
    """Answer a buyer's complaint before any claim exists (state buyer_contact): the same facts as the seller's
    playbook choose the reply, because this reply is what Amazon reads when a claim comes."""
    claim = replace(claim, case=True)
    complaint = claim.complaint_type
    if complaint == "not_received":
        return _answer_not_received(before, claim, key, rules, at, why, audience)
    if complaint in _ANSWER_TABLE:
        strategy, rule, text = _ANSWER_TABLE[complaint]
        return _go(before, claim, key, at, strategy, "buyer_contact", rule, f"{why}: {text}", audience)
    return _answer_by_hand(before, claim, key, at, why)


# the answer before a claim: complaint -> (strategy, rule, reason)
_ANSWER_TABLE = {
    "size": ("answer_size", "answer_size", "size: point to the size chart, offer the return or exchange"),
    "damaged_on_arrival": (
        "answer_damaged",
        "answer_damaged",
        "damaged on arrival: apologise, offer a replacement or refund",
    ),
    "damaged_after_use": (
        "answer_after_use",
        "answer_after_use",
        "damaged after use: explain the warranty, a goodwill option",
    ),
}


def _answer_not_received(
    before: ClaimView, claim: ClaimView, key: str | None, rules: Rules, at: datetime, why: str, audience: str
) -> Transition:
    """The buyer says the item never came: tell them where to look when a carrier Amazon recognizes shows it
    delivered, else offer a refund or a replacement."""
    if claim.delivered and rules.recognizes(claim.carrier):
        reason = (
            f"{why}: not received, but {claim.carrier} tracking {claim.tracking_number or '?'} shows "
            "delivered: tell the buyer where to look"
        )
        return _go(before, claim, key, at, "answer_delivered", "buyer_contact", "answer_delivered", reason, audience)
    reason = f"{why}: not received and {_why_undelivered(claim, rules)}: offer a refund or a replacement"
    return _go(
        before, claim, key, at, "offer_refund_or_resend", "buyer_contact", "answer_not_received", reason, audience
    )


def _answer_by_hand(before: ClaimView, claim: ClaimView, key: str | None, at: datetime, why: str) -> Transition:
    """A complaint before any claim that the playbook has no answer for: the seller answers by hand."""
    reason = (
        "the seller's playbook has no answer for 'not as described': answer by hand"
        if claim.complaint_type == "not_as_described"
        else "the buyer's complaint is unclear: answer by hand"
    )
    after = replace(
        claim,
        state="buyer_contact",
        strategy="manual_review",
        drafts=(),
        flagged=True,
        flag_reason=reason,
        state_since=before.state_since if before.state == "buyer_contact" else at,
    )
    return Transition(at, "answer_by_hand", f"{why}: {reason}", before, after, key)


def _case_audience(claim: ClaimView) -> str:
    plan = claim.draft
    return plan.audience if plan is not None else "buyer"


# --- buyers, and Amazon writing for them ----------------------------------------------------------------------------


def _buyer_message(
    claim: ClaimView, key: str, facts: Facts, shipment: Shipment | None, rules: Rules, at: datetime
) -> Transition | None:
    """A buyer's message: before any claim it opens or moves the case; on an open claim what the buyer says they
    want (solved, will withdraw, a refund, a replacement) or what they describe moves the claim on."""
    base = replace(_absorb(claim, facts, shipment, "buyer_message"), buyer_key=key)
    if facts.buyer_intent in SETTLING_INTENTS:
        base = replace(base, last_buyer_at=at)
    intent = facts.buyer_intent
    if not claim.opened:
        return _before_claim(claim, base, key, facts, rules, at, "buyer")
    if claim.state in CLOSED_STATES:
        return _note(at, "buyer_message_after_close", "buyer wrote after the claim was closed", claim, base, key)
    if intent in ("resolved", "will_withdraw"):
        return _buyer_settles(claim, base, key, intent, at)
    if intent == "wants_refund":
        after = _refund_needed(base, at)
        reason = "buyer asks for a refund: refund before Amazon grants the claim"
        return Transition(at, "buyer_wants_refund", reason, claim, after, key)
    if intent == "wants_resend":
        return _buyer_wants_resend(claim, base, key, at)
    if _undecided(claim) and base.complaint_type:
        return _decide(claim, base, key, rules, at, "buyer described the complaint")
    if (
        claim.strategy == "offer_refund_or_resend"
        and base.complaint_type == "not_received"
        and base.delivered
        and not claim.delivered
        and rules.recognizes(base.carrier)
    ):
        # the buyer's own words: tracking shows delivered (by a carrier Amazon recognizes)
        return _decide(claim, base, key, rules, at, "buyer says tracking shows delivered")
    return _note(at, "buyer_message", f"buyer wrote (intent {intent or 'other'})", claim, base, key)


def _buyer_settles(claim: ClaimView, base: ClaimView, key: str, intent: str, at: datetime) -> Transition:
    """The buyer says the problem is solved (ask them to withdraw the claim) or that they will withdraw it (send
    the steps and wait for Amazon)."""
    new_state = "awaiting_buyer" if intent == "resolved" else "awaiting_amazon"
    plan = DraftPlan("request_withdrawal", "buyer", "request_withdrawal", key)
    after = replace(
        base,
        strategy="request_withdrawal",
        state=new_state,
        drafts=_with(base, plan),
        flagged=False,
        flag_reason=None,
        state_since=at,
    )
    text = (
        "buyer says the problem is solved: ask them to withdraw the claim"
        if intent == "resolved"
        else "buyer says they will withdraw the claim: thank them, send the steps, wait for Amazon"
    )
    return Transition(at, f"buyer_{intent}", text, claim, after, key)


def _buyer_wants_resend(claim: ClaimView, base: ClaimView, key: str, at: datetime) -> Transition:
    """The buyer asks for a replacement: the playbook has no rule for it, so the claim is flagged for the seller."""
    after = replace(
        base,
        strategy="manual_review",
        flagged=True,
        flag_reason="buyer asks for a replacement: ship it, then ask them to withdraw",
    )
    reason = "buyer asks for a replacement; the seller's playbook has no rule for it: ship it and follow up by hand"
    return Transition(at, "buyer_wants_resend", reason, claim, after, key, kind="flag")


# what a contact before any claim is called in the history
_CONTACT = {
    "buyer_message": "buyer message",
    "return_request": "return request",
    "amazon_inquiry": "Amazon customer service asks for the buyer",
}


def _before_claim(
    claim: ClaimView, base: ClaimView, key: str, facts: Facts, rules: Rules, at: datetime, audience: str
) -> Transition | None:
    """A buyer's message, return request or customer-service inquiry before any claim."""
    intent = facts.buyer_intent
    what = _CONTACT[facts.kind]
    if claim.state in CLOSED_STATES and claim.case:
        return _note(at, "after_case_closed", f"{what} after the case was closed", claim, base, key)
    if intent in ("resolved", "will_withdraw") and claim.case:
        reason = "the buyer says it is solved: nothing to answer, the case closes"
        return Transition(at, "buyer_says_solved", reason, claim, _closed(base, "resolved", at), key)
    if intent == "wants_refund" and (claim.case or base.complaint_type):
        after = replace(_refund_needed(base, at), case=True)
        reason = "the buyer asks for a refund before any claim: refund now, and no claim follows"
        return Transition(at, "buyer_wants_refund", reason, claim, after, key)
    if facts.kind == "return_request" and facts.complaint_type == "other" and not claim.case:
        reason = (
            f"the buyer returns the item ({facts.return_reason or 'no reason given'}): "
            "a reason that needs no answer; kept for the claim"
        )
        return _note(at, "return_request_before_claim", reason, claim, base, key)
    if facts.complaint_type and (not claim.case or _undecided(claim)):
        return _answer(claim, base, key, rules, at, f"{what} with a complaint before any claim", audience=audience)
    if not claim.case and facts.kind == "amazon_inquiry":
        return _inquiry_by_hand(claim, base, key, at)
    if not claim.case and facts.kind == "buyer_message" and intent not in ("resolved", "will_withdraw"):
        return _buyer_question(claim, base, key, at)
    reason = (
        f"{what} before any claim (intent {intent or '-'}, "
        f"complaint {facts.complaint_type or 'none'}); kept for the claim"
    )
    return _note(at, f"{facts.kind}_before_claim", reason, claim, base, key)


def _buyer_question(claim: ClaimView, base: ClaimView, key: str, at: datetime) -> Transition:
    """A buyer writes before any claim without a complaint (a question): owed an answer all the same, so the case
    opens; the playbook has no letter for it, so the seller writes it."""
    after = replace(base, case=True, state="buyer_contact", strategy=None, drafts=(), state_since=at)
    reason = f"the buyer wrote without a complaint: answer them within {REPLY_HOURS} h (the playbook has no letter)"
    return Transition(at, "buyer_question", reason, claim, after, key)


def _inquiry_by_hand(claim: ClaimView, base: ClaimView, key: str, at: datetime) -> Transition:
    """Amazon customer service asks about an order before any claim and names no complaint: the case opens and
    the seller answers them by e-mail."""
    after = replace(
        base,
        case=True,
        state="buyer_contact",
        strategy="manual_review",
        flagged=True,
        flag_reason="Amazon customer service asks about this order: answer them by e-mail",
        state_since=at,
    )
    reason = "Amazon customer service asks about this order and names no complaint: answer them by e-mail"
    return Transition(at, "answer_by_hand", reason, claim, after, key)


def _inquiry(
    claim: ClaimView, key: str, facts: Facts, shipment: Shipment | None, rules: Rules, at: datetime
) -> Transition | None:
    base = replace(
        _absorb(claim, facts, shipment, "amazon_inquiry"),
        inquiry_key=key,
        inquiry_address=facts.reply_address if facts.reply_channel == "email" else None,
    )
    if not claim.opened:
        return _before_claim(claim, base, key, facts, rules, at, "amazon_cs")
    if claim.state in CLOSED_STATES:
        return Transition(
            at,
            "amazon_inquiry",
            "Amazon customer service asked about the closed claim's order",
            claim,
            base,
            key,
            kind="note",
        )
    if _undecided(claim) and base.complaint_type:
        return _decide(claim, base, key, rules, at, "Amazon customer service named the complaint")
    after = replace(
        base, flagged=True, flag_reason="Amazon customer service asks about this order: answer them by e-mail"
    )
    if base.inquiry_address and base.complaint_type in (
        "not_received",
        "size",
        "damaged_on_arrival",
        "damaged_after_use",
    ):
        answer = _answer(
            claim, base, key, rules, at, "Amazon customer service asks for the buyer", audience="amazon_cs"
        )
        # the claim keeps its state and strategy; only the reply to customer service is added
        plan = answer.after.draft
        if plan is not None:
            after = replace(after, drafts=_with(after, plan))
    return Transition(
        at,
        "amazon_inquiry",
        "Amazon customer service asks for the buyer: answer them by e-mail",
        claim,
        after,
        key,
        kind="flag",
    )


def _return_request(
    claim: ClaimView, key: str, facts: Facts, shipment: Shipment | None, rules: Rules, at: datetime
) -> Transition | None:
    base = _absorb(claim, facts, shipment, "return_request")
    if not claim.opened:
        return _before_claim(claim, base, key, facts, rules, at, "buyer")
    if claim.state not in CLOSED_STATES and _undecided(claim) and base.complaint_type:
        return _decide(claim, base, key, rules, at, "the return request names the complaint")
    return Transition(
        at,
        "return_request",
        f"the buyer asked to return the item ({facts.return_reason or 'no reason'}"
        f"{', return parcel ' + facts.return_tracking_number if facts.return_tracking_number else ''})",
        claim,
        base,
        key,
        kind="note",
    )


def _refund(
    claim: ClaimView, key: str, facts: Facts, shipment: Shipment | None, rules: Rules, at: datetime
) -> Transition | None:
    base = _absorb(claim, facts, shipment, "refund")
    amount = f"{facts.amount} {facts.currency}" if facts.amount else "a refund"
    if facts.amount:
        before = claim.refunded
        total = facts.amount if before is None else str(_sum(before[0], facts.amount))
        base = replace(base, refunded=(total, facts.currency or (before[1] if before else None)))
    if claim.listed and claim.state not in CLOSED_STATES:
        after = _closed(base, "refunded", at)
        what = "claim" if claim.opened else "case"
        return Transition(at, "refund_issued", f"{amount} refunded to the buyer: the {what} is done", claim, after, key)
    return Transition(
        at,
        "refund_issued",
        f"{amount} refunded on this order" + (" (the claim was already closed)" if claim.listed else "; no claim"),
        claim,
        base,
        key,
        kind="note",
    )


def _undelivered(
    claim: ClaimView, key: str, facts: Facts, shipment: Shipment | None, rules: Rules, at: datetime
) -> Transition | None:
    base = _absorb(claim, facts, shipment, "notice")
    if not claim.listed or claim.state in CLOSED_STATES:
        return Transition(
            at,
            "message_undelivered",
            "a message of the seller did not reach the buyer (they opted out of unsolicited messages)",
            claim,
            base,
            key,
            kind="note",
        )
    rounds = claim.undelivered_rounds + 1
    after = replace(
        base,
        undelivered_rounds=rounds,
        flagged=True,
        flag_reason="the buyer did not get our message: resend it marked important",
    )
    plan = next((p for p in claim.drafts if p.audience == "buyer"), None)
    if plan is not None and plan.strategy in BUYER_STRATEGIES:
        again = DraftPlan(
            plan.strategy,
            "buyer",
            f"{plan.strategy}#important{rounds}",
            claim.buyer_key or plan.parent_key,
            important=True,
        )
        after = replace(after, drafts=_with(after, again))
    return Transition(
        at,
        "message_undelivered",
        "the buyer did not get our message (opted out of unsolicited "
        "messages): the next draft to them is marked important, as Amazon advises",
        claim,
        after,
        key,
        kind="flag",
    )


def _seller_reply(
    claim: ClaimView, key: str, facts: Facts, shipment: Shipment | None, rules: Rules, at: datetime
) -> Transition | None:
    reason = f"Amazon's copy of the seller's reply to {facts.buyer_name or 'the buyer'}: the buyer was answered"
    return _note(at, "seller_replied", reason, claim, claim, key)


def _cancellation(
    claim: ClaimView, key: str, facts: Facts, shipment: Shipment | None, rules: Rules, at: datetime
) -> Transition | None:
    return Transition(
        at,
        "cancellation_request",
        "the buyer asked to cancel the order: cancel it in Seller Central "
        "if not shipped, else ask them to refuse the parcel or return it",
        claim,
        _absorb(claim, facts, shipment, "notice"),
        key,
        kind="note",
    )


def _other(claim: ClaimView, key: str, facts: Facts, at: datetime) -> Transition | None:
    if claim.opened and claim.state not in CLOSED_STATES and (facts.notification_type or "").startswith("A_Z_"):
        after = replace(
            claim,
            flagged=True,
            flag_reason="Amazon wrote about this claim and the pipeline could not tell what: check Seller Central",
        )
        return Transition(at, "amazon_unread", after.flag_reason or "", claim, after, key, kind="flag")
    return None


# states a claim reaches without a draft: mail without proof must never put a claim there
_WITHOUT_DRAFT = ("refund_needed", *CLOSED_STATES)


def _unproven(claim: ClaimView, key: str, facts: Facts, step: Transition, at: datetime) -> Transition | None:
    """Amazon-looking mail without proof that Amazon sent it (strict trust): it may open a claim or call for a
    draft, flagged "unverified", but never closes, decides, or moves a claim to a state without a draft."""
    reason = f"unverified: nothing proves Amazon sent the {facts.kind} from {facts.sender}; check Seller Central"
    if step.after.state != claim.state and step.after.state in _WITHOUT_DRAFT:
        if not claim.listed:
            return None
        kept = replace(claim, flagged=True, flag_reason=reason)
        return Transition(at, "unverified_ignored", f"{facts.kind} ignored: {reason}", claim, kept, key, kind="flag")
    if step.kind == "note":
        return step
    after = step.after
    joined = f"{after.flag_reason}; {reason}" if after.flagged and after.flag_reason else reason
    return replace(step, after=replace(after, flagged=True, flag_reason=joined))


def _untrusted(claim: ClaimView, key: str, facts: Facts, at: datetime) -> Transition | None:
    """Mail that only looks like Amazon's: it never opens, moves or closes anything; an open claim is flagged."""
    if not claim.listed or facts.kind == "other":
        return None
    what = "a buyer message" if facts.kind == "buyer_message" else f"{facts.kind} from Amazon"
    after = replace(claim, flagged=True, flag_reason=f"mail claiming to be {what} came from {facts.sender}")
    return Transition(
        at,
        "untrusted_sender",
        f"{facts.kind} from {facts.sender} ignored: not Amazon's own mail",
        claim,
        after,
        key,
        kind="flag",
    )


_HANDLERS = {
    "buyer_message": _buyer_message,
    "amazon_inquiry": _inquiry,
    "return_request": _return_request,
    "refund_issued": _refund,
    "message_undelivered": _undelivered,
    "seller_reply_copy": _seller_reply,
    "cancellation_request": _cancellation,
}


# --- merging facts ------------------------------------------------------------------------------------------------


def _undecided(claim: ClaimView) -> bool:
    """An open claim or case still waiting for its complaint (manual review of an unknown reason)."""
    return claim.strategy in (None, "manual_review") and claim.state in ("new", "buyer_contact")


def _absorb(claim: ClaimView, facts: Facts, shipment: Shipment | None, source: str) -> ClaimView:
    """Merge what a message and the shipment records tell about the order. What the seller stated wins, then the
    shipment records, then the first message that said it; a complaint from a stronger source replaces one from
    a weaker (RANK)."""
    complaint, rank = claim.complaint_type, claim.complaint_rank
    source_rank = RANK.get(source if source != "claim" else "claim", 0)
    specific = facts.complaint_type != "other" or complaint in (None, "other")  # "other" says less than any
    if (
        facts.complaint_type
        and source in RANK
        and claim.stated_value("complaint") is None
        and specific
        and (complaint is None or source_rank > rank or (complaint == "other" and facts.complaint_type != "other"))
    ):
        complaint, rank = facts.complaint_type, max(rank, source_rank)
    tracking = claim.tracking_number or facts.tracking_number
    carrier = claim.carrier or facts.carrier
    delivered = claim.delivered or facts.delivered
    delivered_on = claim.delivered_on or (facts.delivered_on if facts.delivered else None)
    if shipment is not None:
        tracking = shipment.tracking_number or tracking
        carrier = shipment.carrier or carrier
        if shipment.delivered_date:
            delivered, delivered_on = True, shipment.delivered_date
    tracking = claim.stated_value("tracking") or tracking
    carrier = claim.stated_value("carrier") or carrier
    if claim.stated_value("delivered"):
        delivered, delivered_on = True, date.fromisoformat(claim.stated_value("delivered") or "")
    marketplace = claim.marketplace or facts.marketplace
    # the drafts' language follows the marketplace; without one, the first message's
    language = language_of_marketplace(marketplace) or claim.language or facts.language
    amount, currency = claim.amount, claim.currency
    if source == "claim" and facts.amount and not amount:
        amount, currency = facts.amount, facts.currency
    flagged, flag_reason = claim.flagged, claim.flag_reason
    if complaint and flag_reason and flag_reason.startswith(REASON_UNKNOWN[:30]):
        flagged, flag_reason = False, None  # the reason is known now
    return replace(
        claim,
        flagged=flagged,
        flag_reason=flag_reason,
        complaint_type=complaint,
        complaint_rank=rank,
        tracking_number=tracking,
        carrier=carrier,
        delivered=delivered,
        delivered_on=delivered_on,
        marketplace=marketplace,
        language=language,
        buyer_address=(facts.buyer_address or claim.buyer_address)
        if source == "buyer_message"
        else claim.buyer_address or (facts.buyer_address if source == "notice" else None),
        buyer_name=(facts.buyer_name or claim.buyer_name) if source == "buyer_message" else claim.buyer_name,
        amount=amount,
        currency=currency,
    )


def _with(claim: ClaimView, plan: DraftPlan) -> tuple[DraftPlan, ...]:
    """The claim's plans with `plan` replacing the one of its audience."""
    return (*(p for p in claim.drafts if p.audience != plan.audience), plan)


def _without(claim: ClaimView, audience: str) -> tuple[DraftPlan, ...]:
    return tuple(p for p in claim.drafts if p.audience != audience)


def _fmt(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "unknown"


def _note(at: datetime, rule: str, reason: str, before: ClaimView, after: ClaimView, key: str | None) -> Transition:
    """A step that only records something in the claim's history (kind "note")."""
    return Transition(at, rule, reason, before, after, key, kind="note")


def _closed(claim: ClaimView, state: str, at: datetime) -> ClaimView:
    """The claim in a closing state from `at`: no strategy, no plans, no flag, no answer owed any more."""
    return replace(
        claim, state=state, strategy=None, drafts=(), flagged=False, flag_reason=None, state_since=at, owed_since=None
    )


def _refund_needed(claim: ClaimView, at: datetime) -> ClaimView:
    """The claim waiting for the seller to refund the buyer from `at`: no strategy, no plans."""
    return replace(claim, state="refund_needed", strategy=None, drafts=(), state_since=at)
