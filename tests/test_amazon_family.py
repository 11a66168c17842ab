"""Amazon's whole family of mail on a real Dovecot: every notice kept on its order, none opening a claim,
refunds closing the loop, undelivered messages marked important, the seller's own statements, and answers
sent where Amazon listens. The messages are built in Amazon's real formats by pipeline.testing.stories.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from conftest import DeskEnv

from pipeline.testing import stories

T0 = datetime(2026, 11, 9, 10, tzinfo=UTC)
HOUR = timedelta(hours=1)


def rules(env: DeskEnv, order_id: str) -> list[str]:
    return [e["rule"] for e in env.timeline(order_id)["events"]]


# --- 3. every notice is kept on its order; only Amazon's claim mail opens a claim ---------------------------


def test_notices_are_kept_on_their_order_and_open_no_claim(desk_env: DeskEnv) -> None:
    desk_env.append(
        stories.return_request(
            "113-3000001-0000001",
            T0,
            reason="No longer needed",
            comment="Ordered two by mistake.",
            carrier="USPS",
            tracking="9405511899561234567890",
        )
    )
    desk_env.append(stories.refund_issued("113-3000002-0000002", "24.99", "Chris", T0))
    desk_env.append(stories.cancellation_request("113-3000003-0000003", "Robin", T0))
    desk_env.append(
        stories.message_undelivered(
            "113-3000004-0000004", "Kai", T0, when_sent=T0 - 2 * HOUR, quoted="It was damaged, please refund me."
        )
    )
    desk_env.poll(clock=T0 + HOUR)
    assert desk_env.claims() == []
    expected = {
        "113-3000001-0000001": ("return_request", "return_reason=No longer needed"),
        "113-3000002-0000002": ("refund_issued", "amount=24.99, currency=USD"),
        "113-3000003-0000003": ("cancellation_request", "Order cancellation request from Amazon customer Robin"),
        "113-3000004-0000004": ("message_undelivered", "Your message to the buyer was not delivered."),
    }
    for order, (kind, words) in expected.items():
        timeline = desk_env.timeline(order)
        assert [m["kind"] for m in timeline["messages"]] == [kind], order
        assert timeline["claim"] is None and timeline["events"] == [], order
        text = desk_env.show(order)
        assert text.startswith(f"order {order}: no claim"), text
        assert words in text, order
    # the undelivered notice quotes the seller's words: no complaint, no intent taken from them
    [undelivered] = desk_env.timeline("113-3000004-0000004")["messages"]
    assert undelivered["facts"]["complaint_type"] is None and undelivered["facts"]["buyer_intent"] is None


def test_a_return_tracking_number_is_never_our_shipment(desk_env: DeskEnv) -> None:
    desk_env.append(
        stories.return_request(
            "113-3000005-0000005",
            T0 - 24 * HOUR,
            reason="Item arrived damaged",
            comment="Cracked lid.",
            carrier="UPS",
            tracking="1ZR7W8420312887604",
        )
    )
    desk_env.append(stories.claim_filed("113-3000005-0000005", "24.99", T0))
    desk_env.poll(clock=T0 + HOUR)
    claim = desk_env.claim("113-3000005-0000005")
    assert claim["complaint_type"] == "damaged_on_arrival"  # from the return request: the notice gives none
    assert claim["tracking_number"] is None and claim["carrier"] is None
    [message] = [m for m in desk_env.timeline("113-3000005-0000005")["messages"] if m["kind"] == "return_request"]
    assert message["facts"]["return_tracking_number"] == "1ZR7W8420312887604"


# --- 7. a refund closes the loop ------------------------------------------------------------------------


def test_a_refund_closes_the_claim_and_stops_the_alarm(desk_env: DeskEnv) -> None:
    order = "113-3000006-0000006"
    desk_env.append(
        stories.buyer(
            order,
            "Dana",
            "d3v8q1z6y2k9m4b7c5n0",
            "It has been four weeks and my order has still not arrived.",
            T0 - 30 * HOUR,
        )
    )
    desk_env.append(stories.claim_filed(order, "24.99", T0))
    desk_env.poll(clock=T0 + HOUR)
    claim = desk_env.claim(order)
    assert (claim["state"], claim["strategy"]) == ("awaiting_buyer", "offer_refund_or_resend")
    assert [d["X-Pipeline-Strategy"] for d in desk_env.drafts(order)] == ["offer_refund_or_resend"]

    desk_env.append(stories.refund_issued(order, "24.99", "Dana", T0 + 5 * HOUR))
    desk_env.poll(clock=T0 + 6 * HOUR)
    claim = desk_env.claim(order)
    assert (claim["state"], claim["strategy"], claim["flagged"]) == ("refunded", None, False)
    assert rules(desk_env, order)[-2:] == ["refund_issued", "draft_replaced"]
    assert desk_env.drafts(order) == []  # the untouched offer is no longer needed

    desk_env.poll(clock=T0 + 71 * HOUR)  # past the refund alarm's margin: nothing rings for a refunded claim
    assert "escalation" not in [e["kind"] for e in desk_env.timeline(order)["events"]]
    assert desk_env.claim(order)["state"] == "refunded"


# --- 3. the buyer did not get our message: the next draft is marked important ---------------------------


def test_an_undelivered_message_marks_the_next_buyer_draft_important(desk_env: DeskEnv) -> None:
    order = "113-3000007-0000007"
    desk_env.append(
        stories.buyer(order, "Kai", "k4a1i8q2w5e7r3t9y6u0", "The bottle arrived with a big dent in it.", T0 - 30 * HOUR)
    )
    desk_env.append(stories.claim_filed(order, "24.99", T0))
    desk_env.poll(clock=T0 + HOUR)
    [first] = desk_env.drafts(order)
    assert first["X-Pipeline-Strategy"] == "persuade_withdraw_damaged"
    assert not first["Subject"].startswith("[Important]")

    desk_env.append(stories.message_undelivered(order, "Kai", T0 + 3 * HOUR, when_sent=T0 + 2 * HOUR))
    desk_env.poll(clock=T0 + 4 * HOUR)
    claim = desk_env.claim(order)
    assert claim["flagged"] and "resend it marked important" in claim["flag_reason"]
    # the untouched draft is replaced by the same answer, marked as Amazon advises
    [important] = desk_env.drafts(order)
    assert important["Subject"] == "[Important] Re: Inquiry from Amazon customer Kai (Order: 113-3000007-0000007)"
    assert important["To"] == "k4a1i8q2w5e7r3t9y6u0@marketplace.amazon.com"
    assert important["X-Pipeline-Strategy"] == "persuade_withdraw_damaged"


# --- 3. Amazon's copy of the seller's reply is linked by the buyer's name ---------------------------------


@pytest.mark.parametrize("copy_first", [False, True], ids=["buyer-first", "copy-first"])
def test_a_copy_of_the_sellers_reply_is_linked_by_buyer_name(desk_env: DeskEnv, copy_first: bool) -> None:
    order = "113-3000008-0000008"
    buyer = stories.buyer(order, "Dana Whitfield", "w2h8i1t4f7i0e3l6d9x5", "Where is my order? It has not arrived.", T0)
    copy = stories.seller_reply_copy(
        "Dana Whitfield", "Sorry for the wait: a new bottle left today, UPS 1Z999AA10123456784.", T0 + 2 * HOUR
    )
    other = stories.buyer("113-3000009-0000009", "Sam Ortiz", "s9o8r7t6i5z4q3w2e1r0", "Still nothing here.", T0)
    for raw in [copy, buyer, other] if copy_first else [buyer, other, copy]:
        desk_env.append(raw)
        if copy_first:
            desk_env.poll(clock=T0 + 3 * HOUR)
    desk_env.poll(clock=T0 + 3 * HOUR)
    timeline = desk_env.timeline(order)
    assert [m["kind"] for m in timeline["messages"]] == ["buyer_message", "seller_reply_copy"]
    assert "seller_replied" in [e["rule"] for e in timeline["events"]]
    assert "seller_reply_copy" not in [m["kind"] for m in desk_env.timeline("113-3000009-0000009")["messages"]]
    # our words about the parcel are no new fact about it
    assert desk_env.claim(order)["tracking_number"] is None


# --- 3/6. Amazon customer service invites a reply by e-mail ------------------------------------------------


def test_amazon_customer_service_gets_a_reply_draft_by_email(desk_env: DeskEnv) -> None:
    order = "113-3000010-0000010"
    desk_env.append(
        stories.amazon_inquiry(
            order,
            T0,
            reason="Wrong size",
            details="The customer says the jacket is too small and asks how to exchange it.",
        )
    )
    desk_env.poll(clock=T0 + HOUR)
    case = desk_env.claim(order)
    assert (case["state"], case["strategy"], case["opened_at"]) == ("buyer_contact", "answer_size", None)
    [draft] = desk_env.drafts(order)
    assert draft["To"] == "cs-reply@amazon.com"
    assert draft["Subject"] == "Re: An inquiry from one of our customers"
    assert "Seller Central" not in draft.body.splitlines()[0]


# --- 4/5/6. a claim without a reason, the seller's statement, the Seller Central answer --------------------


def test_the_seller_states_what_amazons_mail_does_not_say(desk_env: DeskEnv) -> None:
    order = "113-3000011-0000011"
    desk_env.append(stories.claim_filed(order, "24.99", T0))
    desk_env.poll(clock=T0 + HOUR)
    claim = desk_env.claim(order)
    assert (claim["state"], claim["strategy"], claim["complaint_type"]) == ("new", "manual_review", None)
    assert claim["flag_reason"] == (
        "reason not in Amazon's mail: check Seller Central, then state it with "
        f"`pipeline claims set {order} --complaint TYPE`"
    )
    assert desk_env.drafts(order) == []

    result = desk_env.cli(
        "claims",
        "set",
        order,
        "--complaint",
        "not_received",
        "--carrier",
        "UPS",
        "--tracking",
        "1Z999AA10123456784",
        "--delivered",
        "2026-11-05",
    )
    assert result.output.startswith(
        f"{order}: stated complaint not_received, carrier UPS, tracking 1Z999AA10123456784, delivered 2026-11-05"
    )
    desk_env.poll(clock=T0 + 2 * HOUR)
    claim = desk_env.claim(order)
    assert (claim["state"], claim["strategy"], claim["complaint_type"], claim["flagged"]) == (
        "awaiting_amazon",
        "represent_delivered",
        "not_received",
        False,
    )
    assert (claim["carrier"], claim["tracking_number"], claim["delivered_on"]) == (
        "UPS",
        "1Z999AA10123456784",
        "2026-11-05",
    )
    assert "stated by the seller" in desk_env.show(order)

    # the answer goes to Seller Central: no recipient, the marketplace's words, where to paste it
    [draft] = desk_env.drafts(order)
    assert draft["To"] is None
    assert draft["Subject"] == f"Respond to Amazon: {order}"
    head = draft.body.split("\n\n")[0]
    assert "https://sellercentral.amazon.com > Performance > A-to-z Guarantee Claims" in head
    assert "Respond to Amazon" in head and "Buyer-Seller Messaging" in draft.body

    # the statement is an event of the order: reprocess replays it like a message
    desk_env.cli("reprocess")
    assert desk_env.claim(order)["strategy"] == "represent_delivered"

    desk_env.cli("claims", "set", order, "--clear")
    desk_env.poll(clock=T0 + 3 * HOUR)
    claim = desk_env.claim(order)
    assert (claim["strategy"], claim["complaint_type"]) == ("manual_review", None)


def test_the_sellers_word_wins_over_the_buyers(desk_env: DeskEnv) -> None:
    order = "113-3000012-0000012"
    desk_env.append(stories.buyer(order, "Lee", "l3e6e9q2w5r8t1y4u7i0", "It never arrived.", T0 - 30 * HOUR))
    desk_env.append(stories.claim_filed(order, "24.99", T0))
    desk_env.poll(clock=T0 + HOUR)
    assert desk_env.claim(order)["complaint_type"] == "not_received"
    desk_env.cli("claims", "set", order, "--complaint", "size", "--note", "buyer phoned: it came, too small")
    desk_env.poll(clock=T0 + 2 * HOUR)
    claim = desk_env.claim(order)
    assert (claim["complaint_type"], claim["strategy"]) == ("size", "represent_size")
    assert "buyer phoned: it came, too small" in desk_env.show(order)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--complaint", "broken"),
            "'broken' is not one of 'not_received', 'size', 'damaged_on_arrival', "
            "'damaged_after_use', 'not_as_described', 'other'",
        ),
        (("--delivered", "2026-13-01"), "'2026-13-01' is not a date (YYYY-MM-DD)"),
        (("--carrier", " "), "must not be empty"),
        ((), "state at least one of --complaint, --carrier, --tracking, --delivered, --note, --answered, or --clear"),
    ],
)
def test_claims_set_bad_values_are_one_line_errors(desk_env: DeskEnv, args: tuple[str, ...], message: str) -> None:
    result = desk_env.cli("claims", "set", "113-3000013-0000013", *args, expect=2)
    assert message in result.output
    assert "Traceback" not in result.output
    shown = desk_env.cli("claims", "show", "113-3000013-0000013", expect=1)  # nothing was stated
    assert shown.output == "Error: no claim and no message for order 113-3000013-0000013\n"


def test_claims_set_rejects_a_bad_order_id(desk_env: DeskEnv) -> None:
    result = desk_env.cli("claims", "set", "113-300-1", "--complaint", "size", expect=2)
    assert "'113-300-1' is not an Amazon order ID (like 111-2233445-5566778)" in result.output


def test_a_statement_before_any_mail_waits_for_the_claim(desk_env: DeskEnv) -> None:
    order = "113-3000014-0000014"
    result = desk_env.cli("claims", "set", order, "--complaint", "size")
    assert result.output.strip() == f"{order}: stated complaint size; no claim yet: kept for when one comes"
    assert "  complaint: size" in desk_env.show(order)
    desk_env.append(stories.claim_filed(order, "59.00", T0))
    desk_env.poll(clock=T0 + HOUR)
    assert desk_env.claim(order)["strategy"] == "represent_size"


# --- 8. the marketplace from X-Marketplace-ID first, and the draft language with it -------------------------


def test_the_marketplace_header_wins_over_the_sender_domain(desk_env: DeskEnv) -> None:
    """Seller Central notices of every marketplace come from donotreply@amazon.com: the header tells which."""
    order = "302-3000015-0000015"
    desk_env.append(
        stories.return_request(
            order,
            T0 - 24 * HOUR,
            reason="Zu klein",
            comment="Passt nicht.",
            carrier="DHL",
            tracking="JJD000390007827123456",
            marketplace="amazon.de",
        )
    )
    desk_env.poll(clock=T0)
    [message] = desk_env.timeline(order)["messages"]
    assert message["sender"] == "donotreply@amazon.com"
    assert message["facts"]["marketplace"] == "amazon.de"
