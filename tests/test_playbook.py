"""The playbook as pure functions (every row of the README's playbook table), deadlines, and convergence.

Convergence: the final claim depends on which messages there are, never on the order they were processed
in nor on how often. Checked with hypothesis on the pure `replay`, and on the database with ClaimDesk.
"""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import PLAYBOOK_DATA, examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.playbook import ClaimView, Rules, Shipment, Statement, apply, escalate, replay
from pipeline.understanding.facts import Facts

RULES = Rules()
ORDER = "111-2233445-5566778"
T0 = datetime(2026, 11, 9, 12, tzinfo=UTC)
NOW = T0 + timedelta(days=1)
RELAY = "q1w2e3r4t5y6buy@marketplace.amazon.com"
REPLY_TO = "atoz-guarantee-no-reply@amazon.com"


def facts(kind: str, *, at: datetime | None = T0, **values: Any) -> Facts:
    """Facts as the Understander gives them, with the values a test cares about."""
    amazon = kind != "buyer_message"
    base: dict[str, Any] = {
        "kind": kind,
        "order_id": ORDER,
        "complaint_type": None,
        "buyer_intent": None,
        "tracking_number": None,
        "carrier": None,
        "delivered": False,
        "deadline_hours": None,
        "deadline_at": None,
        "amount": None,
        "currency": None,
        "marketplace": "amazon.com",
        "language": "en",
        "trusted": True,
        "sent_at": at,
        "sender": "atoz-guarantee-no-reply@amazon.com" if amazon else RELAY,
        "reply_to": REPLY_TO if amazon else None,
        "buyer_address": None if amazon else RELAY,
        "buyer_name": None if amazon else "Jane",
        "subject": f"Claim received on order {ORDER}",
        "message_id": None,
        "in_reply_to": None,
        "references": (),
    }
    if kind == "claim_filed" and at is not None:
        base["deadline_hours"] = 168
        base["deadline_at"] = at + timedelta(days=7)
    if kind == "buyer_message":
        base["buyer_intent"] = "other"
    base.update(values)
    return Facts(**base)


def claim(complaint: str | None, **values: Any) -> Facts:
    return facts("claim_filed", complaint_type=complaint, **values)


def buyer(intent: str, *, at: datetime = T0 + timedelta(hours=5), **values: Any) -> Facts:
    return facts("buyer_message", buyer_intent=intent, at=at, **values)


def run(
    *messages: Facts, shipment: Shipment | None = None, now: datetime = NOW, rules: Rules = RULES
) -> tuple[ClaimView, list[Any]]:
    result = replay(ORDER, [(f"<m{i}@x>", m) for i, m in enumerate(messages)], shipment, now, rules)
    return result.claim, result.transitions


DELIVERED_UPS = Shipment("UPS", "1Z4V82W80312457006", date(2026, 10, 29), date(2026, 11, 3))

# --- every row of the table ------------------------------------------------------------------------------------


def test_not_received_delivered_per_shipment_records() -> None:
    view, steps = run(claim("not_received"), shipment=DELIVERED_UPS)
    assert (view.state, view.strategy) == ("awaiting_amazon", "represent_delivered")
    assert (view.tracking_number, view.carrier, view.delivered_on) == ("1Z4V82W80312457006", "UPS", date(2026, 11, 3))
    assert view.draft.audience == "amazon" and view.draft.parent_key == "<m0@x>"
    assert steps[-1].rule == "not_received_delivered"
    assert "UPS tracking 1Z4V82W80312457006 shows delivered on 2026-11-03" in steps[-1].reason


def test_not_received_delivered_per_amazons_own_words() -> None:
    view, _ = run(claim("not_received", tracking_number="1ZA8E5960348210005", carrier="UPS", delivered=True))
    assert (view.state, view.strategy) == ("awaiting_amazon", "represent_delivered")
    assert view.delivered_on is None  # the words give no date: the draft will say what is missing


def test_the_delivery_date_amazon_writes_is_kept_and_shipment_records_win() -> None:
    words = claim(
        "not_received",
        tracking_number="1ZA8E5960348210005",
        carrier="UPS",
        delivered=True,
        delivered_on=date(2026, 11, 2),
    )
    view, steps = run(words)
    assert (view.strategy, view.delivered_on) == ("represent_delivered", date(2026, 11, 2))
    assert "shows delivered on 2026-11-02" in steps[-1].reason
    view, _ = run(words, shipment=DELIVERED_UPS)
    assert view.delivered_on == date(2026, 11, 3)  # the seller's own records are the better source


def test_not_received_delivered_per_the_buyers_words() -> None:
    # "UPS says it was delivered but nothing is here": the claim was drafted to the buyer, now to Amazon
    view, steps = run(
        claim("not_received"), buyer("other", delivered=True, tracking_number="1Z4V82W80312457006", carrier="UPS")
    )
    assert (view.state, view.strategy, view.carrier) == ("awaiting_amazon", "represent_delivered", "UPS")
    assert view.draft.audience == "amazon" and view.draft.parent_key == "<m0@x>"
    assert steps[-1].message_key == "<m1@x>" and "buyer says tracking shows delivered" in steps[-1].reason
    # a carrier Amazon does not recognize changes nothing; a buyer who wants a refund gets refund_needed
    assert (
        run(claim("not_received"), buyer("other", delivered=True, carrier="SlowBoat"))[0].strategy
        == "offer_refund_or_resend"
    )
    assert run(claim("not_received"), buyer("wants_refund", delivered=True, carrier="UPS"))[0].state == "refund_needed"


@pytest.mark.parametrize(
    ("shipment", "why"),
    [
        (None, "no tracking"),
        (Shipment("SlowBoat Parcel", "SB123", None, date(2026, 11, 3)), "carrier SlowBoat Parcel not recognized"),
        (Shipment("DHL", "JJD0003900078", date(2026, 10, 29), None), "tracking does not show delivered"),
    ],
)
def test_not_received_without_delivery_by_a_recognized_carrier(shipment: Shipment | None, why: str) -> None:
    view, steps = run(claim("not_received"), shipment=shipment)
    assert (view.state, view.strategy) == ("awaiting_buyer", "offer_refund_or_resend")
    assert view.draft.audience == "buyer"
    assert steps[-1].rule == "not_received_untracked" and why in steps[-1].reason


def test_recognized_carriers_come_from_the_rules() -> None:
    rules = Rules(recognized_carriers=("SlowBoat Parcel",))
    view, _ = run(
        claim("not_received"), shipment=Shipment("slowboat parcel", "SB1", None, date(2026, 11, 3)), rules=rules
    )
    assert view.strategy == "represent_delivered"
    assert not Rules().recognizes(None) and Rules().recognizes("ups")
    assert Rules().recognizes("Yun Express") and Rules().recognizes("china-post")
    assert not Rules().recognizes("") and not Rules().recognizes("SlowBoat")


@pytest.mark.parametrize(
    ("complaint", "state", "strategy", "audience"),
    [
        ("size", "awaiting_amazon", "represent_size", "amazon"),
        ("damaged_on_arrival", "awaiting_buyer", "persuade_withdraw_damaged", "buyer"),
        ("damaged_after_use", "awaiting_amazon", "represent_misuse", "amazon"),
    ],
)
def test_complaint_rows(complaint: str, state: str, strategy: str, audience: str) -> None:
    view, steps = run(claim(complaint))
    assert (view.state, view.strategy, view.draft.audience, view.flagged) == (state, strategy, audience, False)
    assert steps[-1].message_key == "<m0@x>"


@pytest.mark.parametrize(("intent", "state"), [("resolved", "awaiting_buyer"), ("will_withdraw", "awaiting_amazon")])
def test_buyer_satisfied_asks_for_withdrawal(intent: str, state: str) -> None:
    view, steps = run(claim("damaged_on_arrival"), buyer(intent))
    assert (view.state, view.strategy) == (state, "request_withdrawal")
    assert view.draft.parent_key == "<m1@x>" and view.buyer_address == RELAY
    assert steps[-1].rule == f"buyer_{intent}"


def test_buyer_wants_refund() -> None:
    view, steps = run(claim("not_received"), buyer("wants_refund"))
    assert (view.state, view.strategy, view.draft) == ("refund_needed", None, None)
    assert steps[-1].rule == "buyer_wants_refund"


def test_buyer_wants_a_replacement_is_flagged() -> None:
    view, steps = run(claim("damaged_on_arrival"), buyer("wants_resend"))
    assert (view.state, view.strategy, view.flagged) == ("awaiting_buyer", "manual_review", True)
    assert steps[-1].kind == "flag"


@pytest.mark.parametrize(
    ("kind", "state", "rule"),
    [
        ("claim_withdrawn", "resolved", "claim_withdrawn"),
        ("claim_denied", "resolved", "claim_denied"),
        ("claim_granted", "granted", "claim_granted"),
    ],
)
def test_amazons_decisions_close_the_claim(kind: str, state: str, rule: str) -> None:
    view, steps = run(claim("not_as_described"), facts(kind, at=T0 + timedelta(days=2)))
    assert (view.state, view.strategy, view.draft, view.flagged) == (state, None, None, False)
    assert steps[-1].rule == rule
    after, _ = run(
        claim("not_as_described"), facts(kind, at=T0 + timedelta(days=2)), buyer("resolved", at=T0 + timedelta(days=3))
    )
    assert after.state == state  # a buyer writing after the close changes nothing


@pytest.mark.parametrize(
    ("complaint", "why"),
    [
        ("not_as_described", "no rule for 'not as described'"),
        (None, "reason not in Amazon's mail"),
        ("other", "unclear"),
    ],
)
def test_no_rule_means_manual_review(complaint: str | None, why: str) -> None:
    view, steps = run(claim(complaint))
    assert (view.state, view.strategy, view.flagged, view.draft) == ("new", "manual_review", True, None)
    assert why in steps[-1].reason


def test_info_request_moves_the_deadline_and_drafts_to_amazon_again() -> None:
    info_at = T0 + timedelta(days=2)
    info = facts(
        "claim_info_request",
        at=info_at,
        deadline_hours=48,
        deadline_at=info_at + timedelta(hours=48),
        reply_to="atoz-guarantee-reply+Info1@amazon.com",
    )
    view, steps = run(claim("size"), info)
    assert (view.state, view.strategy, view.flagged) == ("awaiting_amazon", "represent_size", True)
    assert view.deadline_at == info_at + timedelta(hours=48)
    assert view.draft.step == "represent_size#info1" and view.draft.parent_key == "<m1@x>"
    assert view.amazon_reply_to is None  # answered in Seller Central: Amazon's claim mail has no reply address
    assert steps[-1].rule == "info_request"
    second = facts("claim_info_request", at=info_at + timedelta(days=1))
    view2, _ = run(claim("size"), info, second)
    assert view2.draft.step == "represent_size#info2" and view2.deadline_at == view.deadline_at


def test_info_request_without_a_representation_is_manual() -> None:
    view, steps = run(claim("damaged_on_arrival"), facts("claim_info_request", at=T0 + timedelta(days=1)))
    assert (view.state, view.strategy, view.flagged) == ("awaiting_buyer", "manual_review", True)
    assert steps[-1].rule == "info_request_manual"


# --- trust -------------------------------------------------------------------------------------------------------


def test_untrusted_mail_cannot_open_a_claim() -> None:
    view, steps = run(claim("not_received", trusted=False, sender="x@amazon-claims-support.net"))
    assert view.opened is False and steps == []


def test_untrusted_mail_cannot_close_a_claim() -> None:
    spoof = facts("claim_withdrawn", at=T0 + timedelta(days=1), trusted=False, sender="x@amazon.evil.example")
    view, steps = run(claim("damaged_on_arrival"), spoof)
    assert (view.state, view.strategy) == ("awaiting_buyer", "persuade_withdraw_damaged")
    assert view.flagged and "x@amazon.evil.example" in view.flag_reason
    assert steps[-1].rule == "untrusted_sender"


def test_untrusted_buyer_message_cannot_steer_a_claim() -> None:
    spoof = buyer(
        "resolved",
        trusted=False,
        sender="q1w2@marketplace.amazon.com.evil.test",
        buyer_address="q1w2@marketplace.amazon.com.evil.test",
    )
    view, _ = run(claim("not_received"), spoof)
    assert (view.state, view.strategy, view.buyer_address, view.flagged) == (
        "awaiting_buyer",
        "offer_refund_or_resend",
        None,
        True,
    )
    assert run(spoof)[0] == ClaimView(order_id=ORDER)


# --- early buyer messages -------------------------------------------------------------------------------------


def test_early_buyer_message_fills_a_notification_without_a_complaint() -> None:
    early = buyer("other", at=T0 - timedelta(days=2), complaint_type="damaged_on_arrival")
    view, steps = run(early, claim(None))
    assert (view.state, view.strategy, view.complaint_type) == (
        "awaiting_buyer",
        "persuade_withdraw_damaged",
        "damaged_on_arrival",
    )
    assert view.buyer_address == RELAY and view.draft.parent_key == "<m0@x>"  # answers the buyer's message
    assert view.opened_at == T0
    # answered at once, before any claim; the claim goes on from what was known
    assert [s.rule for s in steps] == ["answer_damaged", "damaged_on_arrival"]
    assert [p.strategy for p in view.drafts] == ["persuade_withdraw_damaged"]


def test_amazons_reason_wins_over_the_buyers_words_unless_it_says_other() -> None:
    early = buyer("other", at=T0 - timedelta(days=2), complaint_type="damaged_on_arrival")
    assert run(early, claim("size"))[0].strategy == "represent_size"
    assert run(early, claim("other"))[0].strategy == "persuade_withdraw_damaged"


def test_the_marketplaces_language_wins_over_an_early_buyers() -> None:
    early = buyer("other", at=T0 - timedelta(days=1), language="en", marketplace="amazon.de")
    view, _ = run(early, claim("size", language="de", marketplace="amazon.de"))
    assert (view.language, view.marketplace) == ("de", "amazon.de")
    later, _ = run(claim("size", language="de", marketplace="amazon.de"), buyer("other", language="en"))
    assert later.language == "de"


def test_buyer_describes_the_complaint_after_an_unclear_claim() -> None:
    view, _ = run(claim(None), buyer("other", complaint_type="size"))
    assert (view.state, view.strategy, view.flagged) == ("awaiting_amazon", "represent_size", False)


def test_a_buyer_question_opens_a_case_but_no_claim() -> None:
    """No complaint, but owed an answer within 24 h all the same: a case to answer by hand."""
    view, steps = run(buyer("other"))
    assert view.opened is False and view.listed is True
    assert (view.state, view.strategy, view.drafts) == ("buyer_contact", None, ())
    assert view.reply_due_at == T0 + timedelta(hours=5 + 24)
    assert [s.rule for s in steps] == ["buyer_question"]
    thanks, _ = run(buyer("resolved"))
    assert thanks.listed is False and thanks.reply_due_at is None


# --- the whole family of Amazon's mail, and cases before the claim ------------------------------------------


def notice(kind: str, *, at: datetime, **values: Any) -> Facts:
    """A Seller Central notice (return request, refund, …) from the no-reply sender."""
    values = {
        "sender": "donotreply@amazon.com",
        "reply_to": "donotreply@amazon.com",
        "reply_channel": "seller_central",
        **values,
    }
    return facts(kind, at=at, **values)


def inquiry(complaint: str | None, *, at: datetime) -> Facts:
    return facts(
        "amazon_inquiry",
        at=at,
        complaint_type=complaint,
        sender="cs-reply@amazon.com",
        reply_to=None,
        reply_channel="email",
        reply_address="cs-reply@amazon.com",
    )


def test_a_claim_notice_without_reason_asks_the_seller() -> None:
    view, steps = run(claim(None))
    assert (view.state, view.strategy, view.flagged) == ("new", "manual_review", True)
    assert view.flag_reason.startswith("reason not in Amazon's mail: check Seller Central")
    assert f"pipeline claims set {ORDER} --complaint TYPE" in view.flag_reason
    assert steps[-1].rule == "manual_review"


@pytest.mark.parametrize(
    ("complaint", "strategy", "rule"),
    [
        ("not_received", "offer_refund_or_resend", "answer_not_received"),
        ("size", "answer_size", "answer_size"),
        ("damaged_on_arrival", "answer_damaged", "answer_damaged"),
        ("damaged_after_use", "answer_after_use", "answer_after_use"),
    ],
)
def test_a_buyers_complaint_is_answered_before_any_claim(complaint: str, strategy: str, rule: str) -> None:
    view, steps = run(buyer("other", complaint_type=complaint))
    assert (view.opened, view.case, view.state, view.strategy) == (False, True, "buyer_contact", strategy)
    assert view.listed and [p.audience for p in view.drafts] == ["buyer"] and view.draft.parent_key == "<m0@x>"
    assert steps[-1].rule == rule


def test_delivered_by_a_recognized_carrier_is_answered_with_the_tracking() -> None:
    view, steps = run(buyer("other", complaint_type="not_received"), shipment=DELIVERED_UPS)
    assert (view.state, view.strategy) == ("buyer_contact", "answer_delivered")
    assert "UPS tracking 1Z4V82W80312457006 shows delivered" in steps[-1].reason


def test_a_buyer_who_says_solved_closes_the_case() -> None:
    view, steps = run(buyer("other", complaint_type="damaged_on_arrival"), buyer("resolved", at=T0 + timedelta(days=1)))
    assert (view.state, view.strategy, view.drafts) == ("resolved", None, ())
    assert steps[-1].rule == "buyer_says_solved"


def test_the_case_becomes_the_claim() -> None:
    early = buyer("other", at=T0 - timedelta(days=2), complaint_type="size")
    view, steps = run(early, claim(None))
    assert (view.opened, view.state, view.strategy) == (True, "awaiting_amazon", "represent_size")
    # the answer to the buyer the representation builds on stays wanted next to it
    assert [p.strategy for p in view.drafts] == ["answer_size", "represent_size"]
    assert [s.rule for s in steps] == ["answer_size", "size_stated_in_listing"]


def test_a_return_request_gives_the_complaint_and_never_our_tracking() -> None:
    ret = notice(
        "return_request",
        at=T0 - timedelta(days=1),
        complaint_type="damaged_on_arrival",
        return_tracking_number="1ZA47V290368140279",
        return_carrier="UPS",
        return_reason="Item defective",
    )
    view, steps = run(ret, claim(None))
    assert (view.complaint_type, view.strategy, view.tracking_number) == (
        "damaged_on_arrival",
        "persuade_withdraw_damaged",
        None,
    )
    assert steps[0].rule == "answer_damaged" and view.drafts[-1].audience == "buyer"
    assert view.buyer_address is None  # no buyer message: the draft goes out without To (Contact buyer form)


def test_complaint_sources_in_order_seller_buyer_return_inquiry() -> None:
    ret = notice("return_request", at=T0 - timedelta(days=3), complaint_type="size")
    ask = inquiry("damaged_on_arrival", at=T0 - timedelta(days=4))
    words = buyer("other", at=T0 - timedelta(days=2), complaint_type="not_received")
    assert run(ask, ret, claim(None))[0].complaint_type == "size"  # the return outranks customer service
    assert run(ask, ret, words, claim(None))[0].complaint_type == "not_received"  # the buyer outranks both
    stated = Statement("seller:1", T0 + timedelta(hours=1), "complaint", "damaged_after_use")
    view = replay(
        ORDER, [("<a>", ask), ("<b>", ret), ("<c>", words), ("<d>", claim(None))], None, NOW, RULES, [stated]
    ).claim
    assert (view.complaint_type, view.strategy) == ("damaged_after_use", "represent_misuse")


def test_a_stated_fact_wins_over_mail_and_is_replayed() -> None:
    stated = Statement("seller:1", T0 + timedelta(hours=1), "complaint", "size")
    later = buyer("other", at=T0 + timedelta(hours=5), complaint_type="not_received")
    result = replay(ORDER, [("<c>", claim(None)), ("<b>", later)], None, NOW, RULES, [stated])
    assert (result.claim.complaint_type, result.claim.strategy) == ("size", "represent_size")
    assert [t.rule for t in result.transitions] == ["manual_review", "size_stated_in_listing", "buyer_message"]
    assert "the seller stated complaint size" in result.transitions[1].reason
    # without the statement (cleared) the mail decides again
    assert (
        replay(ORDER, [("<c>", claim(None)), ("<b>", later)], None, NOW, RULES).claim.complaint_type == "not_received"
    )


def test_stated_shipment_facts_win_over_the_shipment_records() -> None:
    statements = [
        Statement("seller:1", T0 + timedelta(hours=1), "carrier", "DHL"),
        Statement("seller:2", T0 + timedelta(hours=1), "tracking", "JJD000390007827123456"),
        Statement("seller:3", T0 + timedelta(hours=1), "delivered", "2026-11-05"),
    ]
    view = replay(
        ORDER, [("<c>", claim("not_received"))], Shipment("SlowBoat", "SB1", None, None), NOW, RULES, statements
    ).claim
    assert (view.carrier, view.tracking_number, view.delivered_on, view.strategy) == (
        "DHL",
        "JJD000390007827123456",
        date(2026, 11, 5),
        "represent_delivered",
    )


def test_a_refund_closes_the_claim_and_stops_the_alarm() -> None:
    refund = notice("refund_issued", at=T0 + timedelta(days=1), amount="24.99", currency="USD")
    view, steps = run(claim("not_received"), refund, now=T0 + timedelta(days=30))
    assert (view.state, view.strategy, view.drafts, view.flagged) == ("refunded", None, (), False)
    assert steps[-1].rule == "refund_issued" and "24.99 USD" in steps[-1].reason


def test_a_refund_without_a_claim_is_kept_on_the_order() -> None:
    view, steps = run(notice("refund_issued", at=T0, amount="10.00", currency="EUR"))
    assert not view.listed and steps[-1].kind == "note" and "no claim" in steps[-1].reason


@pytest.mark.parametrize(
    ("refunds", "state", "flagged"),
    [
        ((("10.00", "EUR"),), "refunded", False),  # the whole amount: Amazon closes the claim
        ((("4.00", "EUR"), ("6.00", "EUR")), "refunded", False),  # two partial refunds that add up
        ((("4.00", "EUR"),), "awaiting_buyer", True),  # part of it: the claim goes on, the seller looks
        ((("10.00", "USD"),), "awaiting_buyer", True),  # another currency is no proof
    ],
)
def test_a_claim_after_a_refund(refunds: tuple[tuple[str, str], ...], state: str, flagged: bool) -> None:
    messages = [
        notice("refund_issued", at=T0 + timedelta(hours=i), amount=a, currency=c) for i, (a, c) in enumerate(refunds)
    ]
    view, steps = run(*messages, claim("not_received", at=T0 + timedelta(days=1), amount="10.00", currency="EUR"))
    assert (view.state, view.flagged) == (state, flagged)
    assert view.opened
    if state == "refunded":
        assert steps[-1].rule == "refunded_before_claim" and view.drafts == ()
    else:
        assert "was refunded before the claim of 10.00 EUR" in (view.flag_reason or "")


def test_an_untrusted_refund_cannot_close_a_claim() -> None:
    spoof = notice("refund_issued", at=T0 + timedelta(days=1), trusted=False, sender="x@amaz0n.example")
    view, steps = run(claim("not_received"), spoof)
    assert view.state == "awaiting_buyer" and view.flagged and steps[-1].rule == "untrusted_sender"


def test_an_undelivered_message_marks_the_next_buyer_draft_important() -> None:
    undelivered = notice("message_undelivered", at=T0 + timedelta(days=1))
    view, steps = run(claim("damaged_on_arrival"), undelivered)
    assert view.flagged and "did not get our message" in view.flag_reason
    assert view.draft.step == "persuade_withdraw_damaged#important1" and view.draft.important
    assert steps[-1].kind == "flag"


def test_amazons_copy_of_the_sellers_reply_answers_the_buyer() -> None:
    asked = buyer("other", at=T0 + timedelta(hours=1), complaint_type="not_received")
    copy = notice("seller_reply_copy", at=T0 + timedelta(hours=3), buyer_name="Jane")
    before, _ = run(claim("not_received"), asked)
    assert before.reply_due_at == T0 + timedelta(hours=25)
    view, steps = run(claim("not_received"), asked, copy)
    assert view.answered_at == T0 + timedelta(hours=3) and steps[-1].rule == "seller_replied"
    assert (view.reply_due_at, view.replied_in_time) == (None, True)
    assert view.strategy == "offer_refund_or_resend"


# --- the response clock ---------------------------------------------------------------------------------------


def answered(at: datetime, how: str = "by hand") -> Statement:
    return Statement(f"seller:{at.isoformat()}", at, "answered", how)


def test_each_contact_is_owed_an_answer_within_24_hours_and_may_be_filed_on_after_48() -> None:
    first = buyer("other", at=T0, complaint_type="size")
    second = buyer("other", at=T0 + timedelta(hours=30))
    view, _ = run(first, second, now=T0 + timedelta(hours=31))
    assert (view.reply_due_at, view.may_file_at) == (T0 + timedelta(hours=24), T0 + timedelta(hours=48))
    assert view.complained_at == T0
    late = replay(
        ORDER,
        [("<a>", first), ("<b>", second)],
        None,
        T0 + timedelta(hours=40),
        RULES,
        [answered(T0 + timedelta(hours=35))],
    ).claim
    assert (late.reply_due_at, late.replied_in_time, late.first_answer_at) == (None, False, T0 + timedelta(hours=35))
    after_second = replay(
        ORDER,
        [("<a>", first), ("<b>", second)],
        None,
        T0 + timedelta(hours=40),
        RULES,
        [answered(T0 + timedelta(hours=10))],
    ).claim
    assert after_second.reply_due_at == T0 + timedelta(hours=30 + 24)  # the second contact is owed anew
    assert after_second.replied_in_time is True


def test_a_buyer_who_settles_is_owed_nothing() -> None:
    view, _ = run(claim("not_received"), buyer("resolved", at=T0 + timedelta(hours=2)))
    assert view.reply_due_at is None


# --- appeals --------------------------------------------------------------------------------------------------


def test_a_claim_granted_although_tracking_showed_delivered_before_it_is_appealed() -> None:
    granted = facts("claim_granted", at=T0 + timedelta(days=5))
    view, steps = run(claim("not_received", at=T0), granted, shipment=DELIVERED_UPS, now=T0 + timedelta(days=6))
    assert (view.state, view.strategy) == ("granted", "appeal_granted")
    assert view.appeal_due_at == T0 + timedelta(days=35)
    assert [(p.strategy, p.audience) for p in view.drafts] == [("appeal_granted", "amazon")]
    assert steps[-1].rule == "appeal_granted" and "UPS delivered it on 2026-11-03, before the claim" in steps[-1].reason


def test_a_claim_granted_after_the_buyer_was_answered_in_time_is_appealed() -> None:
    asked = buyer("other", at=T0 - timedelta(days=3), complaint_type="not_received")
    view = replay(
        ORDER,
        [
            ("<b>", asked),
            ("<c>", claim("not_received", at=T0)),
            ("<g>", facts("claim_granted", at=T0 + timedelta(days=4))),
        ],
        None,
        T0 + timedelta(days=5),
        RULES,
        [answered(T0 - timedelta(days=3) + timedelta(hours=5))],
    ).claim
    assert (view.state, view.strategy) == ("granted", "appeal_granted")


def test_a_claim_granted_on_weak_facts_is_not_appealed() -> None:
    view, steps = run(claim("not_received", at=T0), facts("claim_granted", at=T0 + timedelta(days=5)))
    assert (view.state, view.strategy, view.drafts, view.appeal_due_at) == ("granted", None, (), None)
    assert steps[-1].rule == "claim_granted"


def test_customer_service_is_answered_by_email() -> None:
    view, _ = run(inquiry("size", at=T0))
    assert (view.state, view.strategy, view.inquiry_address) == ("buyer_contact", "answer_size", "cs-reply@amazon.com")
    assert view.draft.audience == "amazon_cs" and view.draft.step == "answer_size#inquiry"
    opened, _ = run(claim("not_received"), inquiry("not_received", at=T0 + timedelta(hours=2)))
    assert opened.strategy == "offer_refund_or_resend" and opened.flagged
    assert {p.audience for p in opened.drafts} == {"buyer", "amazon_cs"}


def test_a_cancellation_request_is_noted_and_changes_nothing() -> None:
    view, steps = run(claim("size"), notice("cancellation_request", at=T0 + timedelta(hours=1)))
    assert view.strategy == "represent_size" and steps[-1].rule == "cancellation_request"


def test_a_decision_removes_every_plan() -> None:
    view, _ = run(
        buyer("other", at=T0 - timedelta(days=1), complaint_type="not_received"),
        claim(None),
        inquiry("not_received", at=T0 + timedelta(hours=1)),
        facts("claim_denied", at=T0 + timedelta(days=1)),
    )
    assert (view.state, view.drafts) == ("resolved", ())


# --- deadlines --------------------------------------------------------------------------------------------------


def test_deadline_is_the_notifications_own() -> None:
    view, _ = run(claim("size", deadline_hours=72, deadline_at=T0 + timedelta(hours=72)))
    assert view.deadline_at == T0 + timedelta(hours=72) and view.opened_at == T0


def test_escalation_before_and_after_the_margin() -> None:
    deadline = T0 + timedelta(days=7)
    edge = deadline - timedelta(hours=RULES.refund_margin_hours)
    before, _ = run(claim("not_received"), now=edge - timedelta(seconds=1))
    assert before.state == "awaiting_buyer"
    after, steps = run(claim("not_received"), now=edge)
    assert (after.state, after.strategy, after.draft) == ("refund_needed", None, None)
    assert (steps[-1].kind, steps[-1].rule, steps[-1].at) == ("escalation", "deadline_near_no_buyer_reply", edge)


def test_escalation_uses_the_configured_margin() -> None:
    rules = Rules(refund_margin_hours=72)
    view, _ = run(claim("not_received"), now=T0 + timedelta(days=4, minutes=1), rules=rules)
    assert view.state == "refund_needed"


def test_no_escalation_once_the_buyer_answered_the_offer() -> None:
    """The buyer chose a replacement: the seller ships it; refunding as well would be wrong."""
    view, _ = run(claim("not_received"), buyer("wants_resend", at=T0 + timedelta(days=1)), now=T0 + timedelta(days=30))
    assert view.state == "awaiting_buyer" and view.strategy == "manual_review"


def test_a_mere_question_from_the_buyer_does_not_stop_the_escalation() -> None:
    """ "Any news on my parcel?" answers nothing: with the deadline near, the seller must refund."""
    view, steps = run(
        claim("not_received"), buyer("other", at=T0 + timedelta(days=1)), now=T0 + timedelta(days=6, hours=1)
    )
    assert view.state == "refund_needed"
    assert steps[-1].rule == "deadline_near_no_buyer_reply"


def test_a_buyer_who_said_solved_is_not_refunded_near_the_deadline() -> None:
    """The buyer has the item and is content: we wait for the withdrawal rather than refund."""
    view, _ = run(
        claim("not_received"), buyer("resolved", at=T0 + timedelta(days=1)), now=T0 + timedelta(days=6, hours=1)
    )
    assert (view.state, view.strategy) == ("awaiting_buyer", "request_withdrawal")


def test_a_buyer_answer_after_the_escalation_still_counts() -> None:
    late = buyer("resolved", at=T0 + timedelta(days=6, hours=12))
    view, steps = run(claim("not_received"), late, now=T0 + timedelta(days=7))
    assert [s.rule for s in steps] == ["not_received_untracked", "deadline_near_no_buyer_reply", "buyer_resolved"]
    assert (view.state, view.strategy) == ("awaiting_buyer", "request_withdrawal")


def test_escalate_only_waits_for_the_buyer() -> None:
    view, _ = run(claim("size"), now=T0 + timedelta(days=30))
    assert view.state == "awaiting_amazon"
    assert escalate(view, T0 + timedelta(days=30), RULES) is None


def test_apply_ignores_other_mail() -> None:
    assert apply(ClaimView(order_id=ORDER), "<x@y>", facts("other"), None, RULES, T0) is None


# --- convergence: the pure replay --------------------------------------------------------------------------------

KINDS = (
    "claim_filed",
    "claim_info_request",
    "claim_granted",
    "claim_denied",
    "claim_withdrawn",
    "buyer_message",
    "amazon_inquiry",
    "return_request",
    "refund_issued",
    "cancellation_request",
    "seller_reply_copy",
    "message_undelivered",
    "other",
)
COMPLAINTS = (None, "not_received", "size", "damaged_on_arrival", "damaged_after_use", "not_as_described", "other")
INTENTS = ("wants_refund", "wants_resend", "resolved", "will_withdraw", "other")
HOURS = st.integers(min_value=-72, max_value=24 * 9)


@st.composite
def a_message(draw: st.DrawFn) -> Facts:
    kind = draw(st.sampled_from(KINDS))
    undated = draw(st.integers(0, 9)) == 0  # now and then a message without a Date
    sent = None if undated else T0 + timedelta(hours=draw(HOURS))
    deadline = None
    if kind in ("claim_filed", "claim_info_request") and sent is not None and draw(st.booleans()):
        deadline = sent + timedelta(hours=draw(st.sampled_from([48, 72, 168])))
    return facts(
        kind,
        at=sent,
        complaint_type=draw(st.sampled_from(COMPLAINTS)),
        deadline_at=deadline,
        reply_channel="email" if kind == "amazon_inquiry" else None,
        reply_address="cs-reply@amazon.com" if kind == "amazon_inquiry" else None,
        buyer_intent=draw(st.sampled_from(INTENTS)) if kind == "buyer_message" else None,
        trusted=draw(st.booleans()) if draw(st.integers(0, 4)) == 0 else True,
        delivered=draw(st.booleans()),
        tracking_number=draw(st.sampled_from([None, "1Z4V82W80312457006"])),
        carrier=draw(st.sampled_from([None, "UPS", "SlowBoat"])),
        buyer_address=draw(st.sampled_from([RELAY, "z9x8c7v6b5n4buy@marketplace.amazon.com"]))
        if kind == "buyer_message"
        else None,
        language=draw(st.sampled_from(["en", "de"])),
    )


SHIPMENTS = st.sampled_from(
    [
        None,
        DELIVERED_UPS,
        Shipment("DHL", "JJD1", date(2026, 10, 29), None),
        Shipment("SlowBoat", "SB1", None, date(2026, 11, 3)),
    ]
)


@settings(max_examples=examples(300), deadline=None)
@given(
    messages=st.lists(a_message(), min_size=1, max_size=8),
    shipment=SHIPMENTS,
    data=st.data(),
    now_hours=st.integers(min_value=0, max_value=24 * 12),
)
def test_replay_ignores_processing_order_and_repeats(
    messages: list[Facts], shipment: Shipment | None, data: st.DataObject, now_hours: int
) -> None:
    now = T0 + timedelta(hours=now_hours)
    keyed = [(f"<m{i}@x>", m) for i, m in enumerate(messages)]
    reference = replay(ORDER, keyed, shipment, now, RULES)
    shuffled = data.draw(st.permutations(keyed))
    repeats = data.draw(st.lists(st.sampled_from(keyed), max_size=4))
    again = replay(ORDER, shuffled + repeats, shipment, now, RULES)
    assert again.claim == reference.claim
    assert again.transitions == reference.transitions


def test_replay_of_the_same_message_twice_counts_once() -> None:
    messages = [("<a@x>", claim("not_received")), ("<b@x>", buyer("other"))]
    once = replay(ORDER, messages, None, NOW, RULES)
    twice = replay(ORDER, [*messages, messages[0], messages[1]], None, NOW, RULES)
    assert (twice.claim, twice.transitions) == (once.claim, once.transitions)
    assert [t.rule for t in twice.transitions] == ["not_received_untracked", "buyer_message"]


# --- convergence: real mail through the understanding, the pure replay ----------------------------------------------

STORIES = {
    "113-8820461-1175320": ["request_withdrawal__claim_not_received.eml", "request_withdrawal__buyer_found_parcel.eml"],
    "111-3346720-5508813": ["info_request__claim_size.eml", "info_request__amazon_more_information_48h.eml"],
    "113-5529047-6618230": ["early_buyer__buyer_arrived_broken.eml", "early_buyer__claim_no_reason.eml"],
    "114-1185530-7762094": ["untrusted__claim_damaged_on_arrival.eml", "untrusted__spoof_claim_withdrawn.eml"],
    "205-6620913-4418357": [
        "escalation_answered__claim_not_received_3_calendar_days.eml",
        "escalation_answered__buyer_still_waiting.eml",
    ],
    "113-0045712-8893326": ["granted__claim_not_received.eml", "granted__amazon_granted.eml"],
}


@pytest.fixture(scope="module")
def understood() -> dict[str, list[tuple[str, Facts]]]:
    from pipeline.message import parse_message
    from pipeline.understanding.understander import Understander

    understander = Understander()
    result = {}
    for order, names in STORIES.items():
        result[order] = [
            (name, understander.understand(parse_message((PLAYBOOK_DATA / name).read_bytes()))) for name in names
        ]
    return result


@pytest.mark.parametrize("order", sorted(STORIES))
def test_real_stories_replay_the_same_in_any_order(understood: dict[str, list[tuple[str, Facts]]], order: str) -> None:
    messages = understood[order]
    now = datetime(2026, 11, 12, 11, tzinfo=UTC)
    forward = replay(order, messages, None, now, RULES)
    backward = replay(order, list(reversed(messages)) + messages[:1], None, now, RULES)
    assert forward.claim == backward.claim and forward.claim.opened
    assert forward.transitions == backward.transitions


# --- convergence: the claim desk on the database -----------------------------------------------------------------

DB_FILES = [
    "relay_link__claim_not_received.eml",
    "relay_link__buyer_where_is_it.eml",
    "relay_link__buyer_arrived_no_order_id.eml",
    "info_request__claim_size.eml",
    "info_request__amazon_more_information_48h.eml",
    "early_buyer__buyer_arrived_broken.eml",
    "early_buyer__claim_no_reason.eml",
    "untrusted__claim_damaged_on_arrival.eml",
    "untrusted__spoof_claim_withdrawn.eml",
    "escalation_answered__claim_not_received_3_calendar_days.eml",
    "escalation_answered__buyer_still_waiting.eml",
    "refund_needed__claim_not_received.eml",
    "refund_needed__buyer_wants_refund.eml",
    "granted__claim_not_received.eml",
    "granted__amazon_granted.eml",
    "untrusted__spoof_claim_filed_lookalike_domain.eml",
]
DB_NOW = datetime(2026, 11, 12, 13, tzinfo=UTC)


def reply_by_reference() -> bytes:
    """A buyer reply naming no order, from a relay address seen nowhere else: only its References link it."""
    from pipeline.testing.dkim import resign, unsign

    raw = unsign((PLAYBOOK_DATA / "relay_link__buyer_arrived_no_order_id.eml").read_bytes())
    return resign(  # Amazon signs its relay's mail: edited, it is signed again
        raw.replace(b"a7s9d1f3g5h7buy@", b"n0r3f3r3nc3sbuy@")
        .replace(b"0100019b22a3b4ca-", b"0100019b22a3b4ff-")
        .replace(
            b"Message-ID: <",
            b"In-Reply-To: <01000197a1c2d3f5-2c3d538e-1b2c-4c5d-8e7f-2a3b4c5d6e74-000000"
            b"@email.amazonses.com>\r\nMessage-ID: <",
            1,
        )
    )


@pytest.fixture(scope="module")
def message_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A SQLite database holding DB_FILES (plus a reply linked only by References) as stored by the poller,
    not processed yet; and a claim desk class that understands each message once for all examples."""
    from pipeline.claims import ClaimDesk
    from pipeline.message import parse_message
    from pipeline.poller import envelope
    from pipeline.store import Store
    from pipeline.understanding.understander import Understander

    path = tmp_path_factory.mktemp("convergence") / "template.db"
    store = Store(f"sqlite:///{path}")
    raws = [(PLAYBOOK_DATA / name).read_bytes() for name in DB_FILES] + [reply_by_reference()]
    with store.session() as session:
        for uid, raw in enumerate(raws, start=1):
            store.add_message(
                session, account="seller@localhost", folder="INBOX", uidvalidity=1, uid=uid, raw=raw, **envelope(raw)
            )
    store.dispose()
    understander = Understander()
    cache: dict[bytes, Facts] = {}

    class CachedDesk(ClaimDesk):
        def understand(self, row: Any) -> Facts:
            if row.raw not in cache:
                cache[row.raw] = self.checked(understander.understand(parse_message(row.raw)), row.raw)
            return cache[row.raw]

    return path, CachedDesk


def desk_settings(db: Path) -> Any:
    """Settings for a claim desk on a SQLite file (no IMAP is used)."""
    from pipeline.config import settings_from_dict

    return settings_from_dict(
        {
            "imap": {"host": "127.0.0.1", "security": "plain", "username": "seller", "password_env": "UNUSED"},
            "seller": {"store_name": "Harbor Goods", "from_address": "claims@harbor-goods.example"},
            "database": {"url": f"sqlite:///{db}"},
        },
        Path("t.toml"),
    )


def desk_outcome(template: Path, desk_class: Any, workdir: Path, order: list[int]) -> dict[str, Any]:
    """Process the stored messages one at a time in the given order; the claims and their wanted drafts."""
    from pipeline.store import Store

    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "pipeline.db"
    shutil.copyfile(template, db)
    config = desk_settings(db)
    store = Store(config.database.url)
    try:
        desk = desk_class(config, store)
        for message_id in order:
            assert desk.process_ids([message_id], DB_NOW) == (1, 0)
        desk.escalate_due(DB_NOW)
        return outcome_of(store)
    finally:
        store.dispose()


def outcome_of(store: Any) -> dict[str, Any]:
    """The claims in a store (fields, events, wanted drafts) and the order each message was linked to."""
    from sqlalchemy import select

    from pipeline.schema import Claim, ClaimEvent, Draft, StoredMessage

    with store.session() as session:
        claims = {}
        for row in session.scalars(select(Claim)):
            events = session.scalars(select(ClaimEvent).where(ClaimEvent.claim_id == row.id).order_by(ClaimEvent.seq))
            drafts = session.scalars(select(Draft).where(Draft.claim_id == row.id, Draft.status == "wanted"))
            claims[row.order_id] = {
                "fields": (
                    row.state,
                    row.strategy,
                    row.complaint_type,
                    row.deadline_at,
                    row.opened_at,
                    row.buyer_address,
                    row.flagged,
                    row.flag_reason,
                    row.language,
                ),
                "events": [(e.kind, e.rule, e.at, e.from_state, e.to_state, e.strategy) for e in events],
                "drafts": sorted((d.step, d.strategy, d.recipient) for d in drafts),
            }
        links = {row.id: row.order_id for row in session.execute(select(StoredMessage.id, StoredMessage.order_id))}
    return {"claims": claims, "links": links}


@pytest.fixture(scope="module")
def reference_outcome(message_store: tuple[Path, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    template, desk_class = message_store
    return desk_outcome(template, desk_class, tmp_path_factory.mktemp("reference"), list(range(1, len(DB_FILES) + 2)))


def test_reference_outcome_is_what_the_playbook_says(reference_outcome: dict[str, Any]) -> None:
    claims = reference_outcome["claims"]
    assert set(claims) == {
        "114-8845120-3390276",
        "111-3346720-5508813",
        "113-5529047-6618230",
        "114-1185530-7762094",
        "205-6620913-4418357",
        "114-6602918-3357140",
        "113-0045712-8893326",
    }  # the spoofed notice opened nothing
    assert claims["114-8845120-3390276"]["fields"][:2] == ("awaiting_buyer", "request_withdrawal")
    assert claims["113-5529047-6618230"]["fields"][:3] == ("awaiting_buyer", "request_withdrawal", "damaged_on_arrival")
    assert claims["113-0045712-8893326"]["fields"][:2] == ("granted", None)
    links = reference_outcome["links"]
    assert links[len(DB_FILES) + 1] == "113-5529047-6618230"  # linked by References only
    assert links[3] == "114-8845120-3390276"  # linked by relay address only


@settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_claim_desk_converges_whatever_the_processing_order(
    message_store: tuple[Path, Any], reference_outcome: dict[str, Any], tmp_path: Path, data: st.DataObject
) -> None:
    template, desk_class = message_store
    ids = list(range(1, len(DB_FILES) + 2))
    order = data.draw(st.permutations(ids), label="order")
    repeats = data.draw(st.lists(st.sampled_from(ids), max_size=5), label="processed again")
    for position, message_id in enumerate(repeats):
        order.insert(
            data.draw(
                st.integers(min_value=order.index(message_id) + 1, max_value=len(order)), label=f"again {position}"
            ),
            message_id,
        )
    workdir = tmp_path / f"run{data.draw(st.integers(0, 10**9), label='dir')}"
    outcome = desk_outcome(template, desk_class, workdir, order)
    assert outcome == reference_outcome


def pooled_outcome(
    template: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch, kill_worker_at: int | None = None
) -> tuple[tuple[int, int], dict[str, Any], int]:
    """process_pending with the understanding in two worker processes, batches of three messages (optionally
    SIGKILLing a worker when the given batch is handed out); (done, failed), the outcome, batches handed out."""
    import os
    import signal

    from pipeline import claims as claims_module
    from pipeline.claims import ClaimDesk
    from pipeline.store import Store

    monkeypatch.setattr(claims_module, "UNDERSTAND_BATCH", 3)
    monkeypatch.setattr(claims_module, "POOL_MIN", 2)
    monkeypatch.setattr(claims_module, "worker_count", lambda: 2)
    handed_out = []

    class KillingDesk(ClaimDesk):
        def _raws(self, ids: list[int]) -> list[tuple[int, bytes]]:
            handed_out.append(ids)
            if len(handed_out) == kill_worker_at:
                assert isinstance(self._workers, claims_module.UnderstandingPool)
                processes = self._workers.executor._processes  # the OOM killer's view of the pool
                os.kill(next(iter(processes)), signal.SIGKILL)
            return super()._raws(ids)

    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "pipeline.db"
    shutil.copyfile(template, db)
    config = desk_settings(db)
    store = Store(config.database.url)
    desk = KillingDesk(config, store)
    try:
        counts = desk.process_pending(DB_NOW)
        desk.escalate_due(DB_NOW)
        return counts, outcome_of(store), len(handed_out)
    finally:
        desk.close()
        store.dispose()


def test_understanding_in_worker_processes_gives_the_same_claims(
    message_store: tuple[Path, Any], reference_outcome: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backfill understands its messages in worker processes; the claims are those of one-by-one processing."""
    template, _ = message_store
    counts, outcome, batches = pooled_outcome(template, tmp_path, monkeypatch)
    assert counts == (len(DB_FILES) + 1, 0)
    assert batches == -(-(len(DB_FILES) + 1) // 3)  # every batch went to the workers
    assert outcome == reference_outcome


def test_a_killed_worker_loses_no_message(
    message_store: tuple[Path, Any], reference_outcome: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker killed mid-backfill (out of memory, a signal): its batches are understood in the main process,
    every message is processed once and the claims are the same."""
    template, _ = message_store
    counts, outcome, batches = pooled_outcome(template, tmp_path, monkeypatch, kill_worker_at=2)
    assert counts == (len(DB_FILES) + 1, 0)
    assert batches < -(-(len(DB_FILES) + 1) // 3)  # after the death the rest was understood here
    assert outcome == reference_outcome


def test_a_reply_to_outside_amazon_never_becomes_the_drafts_recipient() -> None:
    """Amazon's claim mail is answered in Seller Central; a Reply-To pointing elsewhere changes nothing."""
    view, _ = run(claim("size", reply_to="seller-verification@amaz0n-support.test"))
    assert view.amazon_reply_to is None
    info = facts(
        "claim_info_request",
        at=T0 + timedelta(days=1),
        reply_to="verify@example.test",
        deadline_hours=48,
        deadline_at=T0 + timedelta(days=3),
    )
    view, _ = run(claim("size"), info)
    assert view.amazon_reply_to is None
    # only an Amazon address the understanding says reaches a person is ever a recipient
    person = facts(
        "claim_info_request", at=T0 + timedelta(days=1), reply_channel="email", reply_address="claims-team@amazon.com"
    )
    assert run(claim("size"), person)[0].amazon_reply_to == "claims-team@amazon.com"


@pytest.mark.parametrize(
    "carrier", ["UPS Ground", "FedEx Home Delivery", "DHL eCommerce", "Royal Mail Tracked 48", "yun express", "ups"]
)
def test_a_service_name_counts_as_its_carrier(carrier: str) -> None:
    assert RULES.recognizes(carrier)


@pytest.mark.parametrize("carrier", ["Colissimo", "Hermes", "UPSS", "Amazon", ""])
def test_other_carriers_are_not_recognized(carrier: str) -> None:
    assert not RULES.recognizes(carrier)


def test_a_database_outage_leaves_the_message_pending_for_the_next_cycle(
    message_store: tuple[Path, Any], tmp_path: Path
) -> None:
    """A dropped database connection is no fault of the message: it must not be marked failed (and so drop out
    of its claim); it stays pending and the next cycle processes it."""
    from sqlalchemy import select
    from sqlalchemy.exc import OperationalError

    from pipeline.errors import StoreError
    from pipeline.schema import StoredMessage
    from pipeline.store import Store

    template, desk_class = message_store
    db = tmp_path / "pipeline.db"
    shutil.copyfile(template, db)
    config = desk_settings(db)
    outages = [OperationalError("UPDATE claims", {}, Exception("server closed the connection unexpectedly"))]

    class FlakyDesk(desk_class):  # type: ignore[misc, valid-type]
        def link_message(self, session: Any, row: Any, facts: Any = None) -> list[str]:
            if outages:
                raise outages.pop()
            return super().link_message(session, row, facts)

    store = Store(config.database.url)
    try:
        desk = FlakyDesk(config, store)
        with pytest.raises(StoreError, match="database unavailable while processing messages 1-"):
            desk.process_pending(DB_NOW)
        with store.session() as session:
            assert session.get_one(StoredMessage, 1).status == "pending"
        done, failed = desk.process_pending(DB_NOW)
        assert failed == 0 and done == len(DB_FILES) + 1
        with store.session() as session:
            assert set(session.scalars(select(StoredMessage.status))) == {"done"}
    finally:
        store.dispose()


def test_a_batch_that_cannot_be_understood_falls_back_to_one_message_at_a_time(
    message_store: tuple[Path, Any], tmp_path: Path
) -> None:
    """A poll cycle understands its pending messages as one batch; if that fails unexpectedly, every message
    is still understood on its own and processed, none is lost or marked failed for the batch's fault."""
    from sqlalchemy import select

    from pipeline.schema import StoredMessage
    from pipeline.store import Store

    template, desk_class = message_store
    db = tmp_path / "pipeline.db"
    shutil.copyfile(template, db)
    config = desk_settings(db)

    class BrokenBatches(desk_class):  # type: ignore[misc, valid-type]
        def understand_ids(self, ids: list[int]) -> dict[int, Facts]:
            raise RuntimeError("batch broke")

    store = Store(config.database.url)
    try:
        done, failed = BrokenBatches(config, store).process_pending(DB_NOW)
        assert (done, failed) == (len(DB_FILES) + 1, 0)
        with store.session() as session:
            assert set(session.scalars(select(StoredMessage.status))) == {"done"}
            assert None not in set(session.scalars(select(StoredMessage.kind)))
    finally:
        store.dispose()
