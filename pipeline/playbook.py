"""The seller's playbook as pure functions: a claim so far plus a message's facts give the next transition.

No I/O here. `replay` folds a claim's messages in date order, so the final state depends only on which
messages there are (and `now`), never on the order or the number of times they were processed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta

from pipeline.message import is_amazon_domain
from pipeline.understand import Facts
from pipeline.vocabulary import STATES, STRATEGIES

__all__ = ["STATES", "STRATEGIES", "ClaimView", "Rules", "Shipment", "Transition", "apply", "escalate", "replay"]

SETTLING_INTENTS = ("resolved", "will_withdraw", "wants_resend")
CLOSED_STATES = ("resolved", "granted")
AMAZON_FACING = ("represent_delivered", "represent_size", "represent_misuse")
BUYER_FACING = ("offer_refund_or_resend", "persuade_withdraw_damaged", "request_withdrawal")


@dataclass(frozen=True)
class Rules:
    """The seller's numbers the playbook needs."""

    response_days: int = 7
    refund_margin_hours: int = 24
    recognized_carriers: tuple[str, ...] = ("UPS", "USPS", "FedEx", "DHL", "Amazon Logistics", "Royal Mail",
                                            "China Post", "Yanwen", "YunExpress", "4PX")

    def recognizes(self, carrier: str | None) -> bool:
        """Whether Amazon recognizes this carrier: case, spaces and punctuation ignored ("Yun Express"), and a
        service name counts as its carrier ("UPS Ground", "FedEx Home Delivery", "DHL eCommerce")."""
        if not carrier:
            return False
        words = _carrier_words(carrier)
        return any(_carrier_key(carrier) == _carrier_key(known) or words[:len(known_words)] == known_words
                   for known in self.recognized_carriers for known_words in [_carrier_words(known)])


def _carrier_key(name: str) -> str:
    return re.sub(r"[\W_]+", "", name).casefold()


def _carrier_words(name: str) -> list[str]:
    return [w for w in re.split(r"[\W_]+", name.casefold()) if w]


def _amazon_reply_address(facts: Facts, known: str | None) -> str | None:
    """Where a reply to Amazon goes: the notification's Reply-To only when it is Amazon's own address."""
    for candidate in (facts.reply_to, known, facts.sender):
        if candidate and is_amazon_domain(candidate.rpartition("@")[2]):
            return candidate
    return None


@dataclass(frozen=True)
class Shipment:
    """What the seller's own shipment records say about an order."""

    carrier: str | None = None
    tracking_number: str | None = None
    ship_date: date | None = None
    delivered_date: date | None = None


@dataclass(frozen=True)
class DraftPlan:
    """The reply the current step calls for: which template, to whom, answering which message."""

    strategy: str
    audience: str  # "amazon" | "buyer"
    step: str
    parent_key: str | None


@dataclass(frozen=True)
class ClaimView:
    """A claim as the playbook sees it. `opened` is False while only buyer messages are known."""

    order_id: str
    opened: bool = False
    state: str = "new"
    strategy: str | None = None
    complaint_type: str | None = None
    marketplace: str | None = None
    language: str | None = None
    opened_at: datetime | None = None
    deadline_at: datetime | None = None
    buyer_address: str | None = None
    buyer_name: str | None = None
    amazon_reply_to: str | None = None
    amazon_key: str | None = None
    buyer_key: str | None = None
    tracking_number: str | None = None
    carrier: str | None = None
    delivered: bool = False
    delivered_on: date | None = None
    amount: str | None = None
    currency: str | None = None
    flagged: bool = False
    flag_reason: str | None = None
    info_rounds: int = 0
    state_since: datetime | None = None
    last_buyer_at: datetime | None = None  # the buyer's last answer that moves things on (not a mere question)
    draft: DraftPlan | None = None


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
    """The result of replaying a claim's messages: the final view and every transition on the way."""

    claim: ClaimView
    transitions: list[Transition] = field(default_factory=list)


def replay(order_id: str, messages: Iterable[tuple[str, Facts]], shipment: Shipment | None, now: datetime,
           rules: Rules) -> Replayed:
    """Fold a claim's messages (key, facts) in date order, checking the deadline before each and at `now`.

    A message given twice (the same key) counts once, so neither the processing order nor repeats matter.
    """
    unique = dict(messages)
    ordered = sorted(unique.items(), key=lambda item: (item[1].sent_at or now, item[0]))
    claim = ClaimView(order_id=order_id)
    transitions: list[Transition] = []
    for key, facts in ordered:
        at = facts.sent_at or now
        escalation = escalate(claim, at, rules)
        if escalation:
            transitions.append(escalation)
            claim = escalation.after
        step = apply(claim, key, facts, shipment, rules, at)
        if step:
            transitions.append(step)
            claim = step.after
    escalation = escalate(claim, now, rules)
    if escalation:
        transitions.append(escalation)
        claim = escalation.after
    return Replayed(claim, transitions)


def apply(claim: ClaimView, key: str, facts: Facts, shipment: Shipment | None, rules: Rules,
          at: datetime) -> Transition | None:
    """The transition one message causes, or None when it changes nothing."""
    if facts.kind == "buyer_message":
        if not facts.trusted:
            # a look-alike relay address: its words must not steer the claim, nor its address get a draft
            if not claim.opened:
                return None
            after = replace(claim, flagged=True,
                            flag_reason=f"mail claiming to be a buyer message came from {facts.sender}")
            return Transition(at, "untrusted_sender", f"buyer message from {facts.sender} ignored: "
                              "not an Amazon relay address", claim, after, key, kind="flag")
        return _buyer_message(claim, key, facts, shipment, rules, at)
    if facts.kind in ("claim_filed", "claim_info_request", "claim_granted", "claim_denied", "claim_withdrawn"):
        if not facts.trusted:
            if not claim.opened:
                return None
            after = replace(claim, flagged=True,
                            flag_reason=f"mail claiming to be from Amazon came from {facts.sender}")
            return Transition(at, "untrusted_sender", f"{facts.kind} from {facts.sender} ignored: not Amazon's domain",
                              claim, after, key, kind="flag")
        return _amazon_message(claim, key, facts, shipment, rules, at)
    return None


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
    after = replace(claim, state="refund_needed", strategy=None, draft=None, state_since=at)
    return Transition(at, "deadline_near_no_buyer_reply",
                      f"no buyer reply and less than {rules.refund_margin_hours} h left before the deadline "
                      f"{_fmt(claim.deadline_at)}: refund the buyer before Amazon does",
                      claim, after, None, kind="escalation")


# --- Amazon's notifications -----------------------------------------------------------------------


def _amazon_message(claim: ClaimView, key: str, facts: Facts, shipment: Shipment | None, rules: Rules,
                    at: datetime) -> Transition | None:
    base = _absorb(claim, facts, shipment, from_amazon=True)
    if facts.kind == "claim_filed":
        if claim.opened:
            if facts.deadline_at and facts.deadline_at != claim.deadline_at:
                after = replace(base, deadline_at=facts.deadline_at)
                return Transition(at, "claim_notice_again", "Amazon sent the claim notice again; deadline updated",
                                  claim, after, key, kind="note")
            return None
        opened = replace(base, opened=True, opened_at=facts.sent_at or at, deadline_at=facts.deadline_at,
                         amazon_key=key, amazon_reply_to=_amazon_reply_address(facts, None))
        return _decide(claim, opened, key, rules, at, "claim filed")
    if facts.kind == "claim_info_request":
        rounds = claim.info_rounds + 1
        after = replace(base, opened=True, opened_at=claim.opened_at or facts.sent_at or at,
                        deadline_at=facts.deadline_at or claim.deadline_at, amazon_key=key,
                        amazon_reply_to=_amazon_reply_address(facts, claim.amazon_reply_to),
                        info_rounds=rounds, flagged=True, flag_reason="Amazon asks for more information")
        strategy = claim.strategy if claim.strategy in AMAZON_FACING else _representation(after, rules)
        if strategy is None:
            after = replace(after, strategy="manual_review", draft=None,
                            flag_reason="Amazon asks for more information; no representation fits this complaint")
            return Transition(at, "info_request_manual", "Amazon asks for more information; "
                              "the playbook has no representation for this complaint: answer by hand",
                              claim, after, key)
        plan = DraftPlan(strategy, "amazon", f"{strategy}#info{rounds}", key)
        after = replace(after, strategy=strategy, draft=plan)
        return Transition(at, "info_request", f"Amazon asks for more information (round {rounds}); "
                          f"deadline {_fmt(after.deadline_at)}; drafting {strategy} to Amazon again",
                          claim, after, key)
    closing = {"claim_granted": ("granted", "claim_granted", "Amazon granted the claim"),
               "claim_denied": ("resolved", "claim_denied", "Amazon closed the claim in the seller's favour"),
               "claim_withdrawn": ("resolved", "claim_withdrawn", "the buyer withdrew the claim")}
    state, rule, reason = closing[facts.kind]
    if claim.state == state:
        return None
    after = replace(base, opened=True, opened_at=claim.opened_at or facts.sent_at, state=state, strategy=None,
                    draft=None, flagged=False, flag_reason=None, state_since=at)
    return Transition(at, rule, reason, claim, after, key)


def _representation(claim: ClaimView, rules: Rules) -> str | None:
    if claim.complaint_type == "not_received" and claim.delivered and rules.recognizes(claim.carrier):
        return "represent_delivered"
    return {"size": "represent_size", "damaged_after_use": "represent_misuse"}.get(claim.complaint_type or "")


def _decide(before: ClaimView, claim: ClaimView, key: str | None, rules: Rules, at: datetime,
            why: str) -> Transition:
    """Choose the strategy for an open claim from its complaint and shipment facts (the playbook table)."""
    complaint = claim.complaint_type
    if complaint == "not_received":
        if claim.delivered and rules.recognizes(claim.carrier):
            return _go(before, claim, key, at, "represent_delivered", "awaiting_amazon", "not_received_delivered",
                       f"{why}: not received, but {claim.carrier} tracking {claim.tracking_number or '?'} shows "
                       f"delivered{' on ' + claim.delivered_on.isoformat() if claim.delivered_on else ''}")
        detail = ("no tracking" if not claim.tracking_number and not claim.carrier else
                  f"carrier {claim.carrier or 'unknown'} not recognized by Amazon"
                  if not rules.recognizes(claim.carrier) else "tracking does not show delivered")
        return _go(before, claim, key, at, "offer_refund_or_resend", "awaiting_buyer", "not_received_untracked",
                   f"{why}: not received and {detail}")
    table = {
        "size": ("represent_size", "awaiting_amazon", "size_stated_in_listing",
                 "size complaint: the listing states the size"),
        "damaged_on_arrival": ("persuade_withdraw_damaged", "awaiting_buyer", "damaged_on_arrival",
                               "damaged on arrival: offer a fix and ask the buyer to withdraw"),
        "damaged_after_use": ("represent_misuse", "awaiting_amazon", "damaged_after_use",
                              "damaged after a period of use: not the seller's fault"),
    }
    if complaint in table:
        strategy, state, rule, text = table[complaint]
        return _go(before, claim, key, at, strategy, state, rule, f"{why}: {text}")
    reason = ("the playbook has no rule for 'not as described'" if complaint == "not_as_described" else
              "the complaint is unclear" if complaint in (None, "other") else f"no rule for {complaint}")
    after = replace(claim, strategy="manual_review", draft=None, flagged=True, flag_reason=reason)
    return Transition(at, "manual_review", f"{why}: {reason}; review by hand", before, after, key)


def _go(before: ClaimView, claim: ClaimView, key: str | None, at: datetime, strategy: str, state: str,
        rule: str, reason: str) -> Transition:
    audience = "amazon" if strategy in AMAZON_FACING else "buyer"
    parent = claim.amazon_key if audience == "amazon" else (claim.buyer_key or claim.amazon_key)
    plan = DraftPlan(strategy, audience, strategy, parent)
    after = replace(claim, strategy=strategy, state=state, draft=plan, flagged=False, flag_reason=None,
                    state_since=at if state != before.state else before.state_since or at)
    return Transition(at, rule, reason, before, after, key)


# --- buyer messages -------------------------------------------------------------------------------


def _buyer_message(claim: ClaimView, key: str, facts: Facts, shipment: Shipment | None, rules: Rules,
                   at: datetime) -> Transition | None:
    base = _absorb(claim, facts, shipment, from_amazon=False)
    base = replace(base, buyer_key=key)
    if facts.buyer_intent in SETTLING_INTENTS:
        base = replace(base, last_buyer_at=at)
    if not claim.opened:
        # kept for when the claim arrives: its complaint, address and tracking fill the claim's gaps
        return Transition(at, "buyer_message_before_claim",
                          f"buyer message before any claim (intent {facts.buyer_intent}, complaint "
                          f"{facts.complaint_type or 'none'}); kept for the claim", claim, base, key, kind="note")
    if claim.state in CLOSED_STATES:
        return Transition(at, "buyer_message_after_close", "buyer wrote after the claim was closed",
                          claim, base, key, kind="note")
    intent = facts.buyer_intent
    if intent in ("resolved", "will_withdraw"):
        state = "awaiting_buyer" if intent == "resolved" else "awaiting_amazon"
        plan = DraftPlan("request_withdrawal", "buyer", "request_withdrawal", key)
        after = replace(base, strategy="request_withdrawal", state=state, draft=plan, flagged=False,
                        flag_reason=None, state_since=at)
        text = ("buyer says the problem is solved: ask them to withdraw the claim" if intent == "resolved" else
                "buyer says they will withdraw the claim: thank them, send the steps, wait for Amazon")
        return Transition(at, f"buyer_{intent}", text, claim, after, key)
    if intent == "wants_refund":
        after = replace(base, state="refund_needed", strategy=None, draft=None, state_since=at)
        return Transition(at, "buyer_wants_refund", "buyer asks for a refund: refund before Amazon grants the claim",
                          claim, after, key)
    if intent == "wants_resend":
        after = replace(base, strategy="manual_review", flagged=True,
                        flag_reason="buyer asks for a replacement: ship it, then ask them to withdraw")
        return Transition(at, "buyer_wants_resend", "buyer asks for a replacement; the seed gives no rule: "
                          "ship it and follow up by hand", claim, after, key, kind="flag")
    if claim.strategy in (None, "manual_review") and claim.state == "new" and base.complaint_type:
        return _decide(claim, base, key, rules, at, "buyer described the complaint")
    if (claim.strategy == "offer_refund_or_resend" and base.complaint_type == "not_received"
            and base.delivered and not claim.delivered and rules.recognizes(base.carrier)):
        # the buyer's own words: tracking shows delivered (by a carrier Amazon recognizes)
        return _decide(claim, base, key, rules, at, "buyer says tracking shows delivered")
    return Transition(at, "buyer_message", f"buyer wrote (intent {intent or 'other'})", claim, base, key, kind="note")


def _absorb(claim: ClaimView, facts: Facts, shipment: Shipment | None, *, from_amazon: bool) -> ClaimView:
    """Merge what a message and the shipment records tell about the order; known facts are not overwritten."""
    complaint = claim.complaint_type
    if facts.complaint_type and (complaint is None or complaint == "other" or
                                 (from_amazon and facts.kind == "claim_filed" and facts.complaint_type != "other")):
        # Amazon's claim reason wins over the buyer's words, unless Amazon's says no more than "other"
        complaint = facts.complaint_type
    tracking = claim.tracking_number or facts.tracking_number
    carrier = claim.carrier or facts.carrier
    delivered = claim.delivered or facts.delivered
    delivered_on = claim.delivered_on or (facts.delivered_on if facts.delivered else None)
    if shipment is not None:
        tracking = shipment.tracking_number or tracking
        carrier = shipment.carrier or carrier
        if shipment.delivered_date:
            delivered, delivered_on = True, shipment.delivered_date
    marketplace = claim.marketplace or (facts.marketplace if facts.trusted else None)
    language = claim.language
    if from_amazon and facts.marketplace:
        # the marketplace's language, as Amazon writes to the seller, wins over a buyer's who wrote first
        language = facts.language if not claim.opened else (claim.language or facts.language)
    elif not from_amazon and facts.language and not claim.language:
        language = facts.language
    return replace(
        claim, complaint_type=complaint, tracking_number=tracking, carrier=carrier, delivered=delivered,
        delivered_on=delivered_on, marketplace=marketplace, language=language,
        buyer_address=claim.buyer_address if from_amazon else (facts.buyer_address or claim.buyer_address),
        buyer_name=claim.buyer_name if from_amazon else (facts.buyer_name or claim.buyer_name),
        amount=claim.amount or facts.amount, currency=claim.currency or facts.currency,
    )


def _fmt(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "unknown"
