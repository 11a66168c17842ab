"""Amazon mail of every kind, in English, for the demo, the tests and the benchmarks (built with amazon_mail).

Each function returns the raw bytes of one message in the shape tests/data/corpus/README.md describes for amazon.com or
amazon.co.uk; the sentences are ours. `demo_stories()` is the demo's mailbox: one story per playbook row.
"""

from __future__ import annotations

import html
from datetime import datetime, timedelta

from pipeline.testing.amazon_mail import buyer_message, notice, paragraphs, table

SELLER = "claims@acme-store.example"
SELLER_LEGAL_NAME = "Acme Store LLC"
ATOZ = ("", "atoz-guarantee-no-reply@amazon.com")
SELLER_CENTRAL = ("Amazon Seller Central Communications (do not reply)", "donotreply@amazon.com")
_TO = f"Acme Store <{SELLER}>"
_SYMBOL = {"amazon.com": "$", "amazon.co.uk": "£", "amazon.ca": "$"}


def claim_filed(
    order_id: str, amount: str, sent: datetime, *, marketplace: str = "amazon.com", action_required: bool = False
) -> bytes:
    """An A-to-z claim notice as Amazon really sends it: the amount and 3 calendar days, no reason."""
    symbol = _SYMBOL.get(marketplace, "$")
    subject = f"{'Action required: ' if action_required else ''}Claim received on order {order_id}"
    body = paragraphs(
        f"Hello {SELLER_LEGAL_NAME},\n\n"
        f"We received an A-to-z Guarantee claim of {symbol}{amount} on order {order_id}.\n\n"
        "What is the A-to-z Guarantee?\nThe A-to-z Guarantee protects customers who buy items sold and shipped by "
        "independent sellers: both the delivery on time and the condition of the item are covered. When a "
        "customer and a seller cannot settle a problem between them, the customer may ask us to step in.\n\n"
        "What should I do?\nNo action is needed right now while our team reviews the claim. We will e-mail you "
        "and the customer when we decide. If we need more information during the review we will contact you by "
        "e-mail; you must respond within 3 calendar days.\n\n"
        f"For more about the A-to-z Guarantee and how to avoid claims, visit this page:\n"
        f"https://sellercentral.{marketplace}/help/hub/reference/external/G27951\n\n"
        f"How did we do?\nhttps://www.{marketplace}/gp/help/survey?p=A2K7TZ&k=hy\n\n"
        f"Amazon.{marketplace.removeprefix('amazon.')}"
    )
    return notice(
        marketplace,
        sender=ATOZ,
        subject=subject,
        body_html=body,
        date=sent,
        to=_TO,
        notification_type="A_Z_CLAIM_RESPONDENT_NOTIFY",
        reply_to="folded",
        seed=f"filed{order_id}",
    )


def claim_info_request(order_id: str, sent: datetime, *, hours: int = 48, marketplace: str = "amazon.com") -> bytes:
    """Amazon asking for more information on a claim (the format is our guess: no real one seen)."""
    body = paragraphs(
        f"Hello {SELLER_LEGAL_NAME},\n\n"
        f"We are reviewing the A-to-z Guarantee claim on order {order_id} and need more information from you "
        "before we decide it.\n\n"
        "Please send us the carrier and tracking ID of the shipment, and proof of delivery if you have it.\n\n"
        f"Respond in Seller Central within {hours} hours. The response box takes no attachments: send documents "
        "to the buyer through Buyer-Seller Messaging and say so in your response.\n\n"
        f"Amazon.{marketplace.removeprefix('amazon.')}"
    )
    return notice(
        marketplace,
        sender=ATOZ,
        subject=f"Action required: Information needed for claim on order {order_id}",
        body_html=body,
        date=sent,
        to=_TO,
        seed=f"info{order_id}{sent.isoformat()}",
    )


def claim_decision(
    order_id: str, amount: str, sent: datetime, *, outcome: str, marketplace: str = "amazon.com"
) -> bytes:
    """A claim decision: "granted" (the seller pays), "denied" (in the seller's favour) or "withdrawn"."""
    symbol = _SYMBOL.get(marketplace, "$")
    text = {
        "granted": f"We have granted an A-to-z Guarantee claim of {symbol}{amount} on the order {order_id}. The "
        "amount has been charged to your seller account.\n\nIf you disagree, you can appeal within 30 "
        "calendar days in Seller Central.",
        "denied": f"We have reviewed the A-to-z Guarantee claim on the order {order_id} and decided it in your "
        "favor. No amount will be charged to your account.",
        "withdrawn": f"The buyer has withdrawn the A-to-z Guarantee claim on order {order_id}. No action is "
        "needed from you.",
    }[outcome]
    subject = (
        f"Claim withdrawn on order {order_id}" if outcome == "withdrawn" else f"Claim decision on order {order_id}"
    )
    body = paragraphs(f"Hello {SELLER_LEGAL_NAME},\n\n{text}\n\nAmazon.{marketplace.removeprefix('amazon.')}")
    return notice(
        marketplace,
        sender=ATOZ,
        subject=subject,
        body_html=body,
        date=sent,
        to=_TO,
        notification_type="A_Z_CLAIM_RESPONDENT_CLOSE",
        seed=f"{outcome}{order_id}",
    )


def buyer(
    order_id: str | None,
    name: str,
    relay: str,
    words: str,
    sent: datetime,
    *,
    subject: str | None = None,
    item: str = "Stainless Steel Water Bottle, 750 ml",
    marketplace: str = "amazon.com",
    in_reply_to: str | None = None,
) -> bytes:
    """A buyer's message relayed by Amazon."""
    subject = subject or f"Inquiry from Amazon customer {name}" + (f" (Order: {order_id})" if order_id else "")
    return buyer_message(
        marketplace,
        relay=relay,
        buyer_name=name,
        subject=subject,
        words=words,
        date=sent,
        order_id=order_id,
        item=item,
        asin="B0DEMO4417" if order_id else None,
        to=_TO,
        in_reply_to=in_reply_to,
        seed=f"{relay}{sent.isoformat()}",
    )


def return_request(
    order_id: str,
    sent: datetime,
    *,
    reason: str,
    comment: str,
    carrier: str,
    tracking: str,
    item: str = "Stainless Steel Water Bottle, 750 ml",
    marketplace: str = "amazon.com",
) -> bytes:
    """A return authorization notice: the reason, the customer's comment, the return parcel's tracking."""
    rows = table(
        ["Item in order", "ASIN", "SKU", "Return quantity", "Return reason", "Customer's comments"],
        [[item, "B0DEMO4417", "ACME-750-SS", "1", reason, comment]],
    )
    body = (
        paragraphs(f"Hello {SELLER_LEGAL_NAME},\n\nA customer asked to return the items below. Here are the details:")
        + f"<ul><li><b>Order ID:</b> {order_id}</li><li><b>Return request date:</b> {sent:%Y-%m-%d}</li>"
        "<li><b>Return policy check:</b> Within policy</li>"
        "<li><b>Authorization:</b> Authorized automatically by Amazon</li></ul>"
        + rows
        + "<ol><li><b>Find the request on Manage Returns</b></li>"
        "<li><b>Contact the customer if you need more information</b></li>"
        "<li><b>Track the return shipment</b><ul>"
        f"<li>Return shipping carrier: {html.escape(carrier)}</li><li>Tracking ID: {html.escape(tracking)}</li>"
        "</ul></li></ol>"
        + paragraphs("Thanks,\nAmazon Services")
        + '<p style="font-size:0.765em">Note: this e-mail comes from a notification-only address that cannot '
        "receive e-mail. Please do not reply.</p>"
    )
    return notice(
        marketplace,
        sender=SELLER_CENTRAL,
        subject=f"Return authorization notification for order {order_id}",
        body_html=body,
        date=sent,
        to=_TO,
        notification_type="RETURN_REQUEST",
        seed=f"return{order_id}",
    )


def refund_issued(
    order_id: str,
    amount: str,
    buyer_name: str,
    sent: datetime,
    *,
    marketplace: str = "amazon.com",
    currency: str = "USD",
) -> bytes:
    """A refund notice (the first of the two real layouts)."""
    rows = table(
        [
            "Item in order",
            "ASIN",
            "SKU",
            "Return quantity",
            "Item price refund",
            "Outbound shipping refund",
            "Refund reason",
        ],
        [["Stainless Steel Water Bottle, 750 ml", "B0DEMO4417", "ACME-750-SS", "1", amount, "0", "Customer return"]],
    )
    body = (
        paragraphs(
            f"Hello {SELLER_LEGAL_NAME},\n\nWe initiated a refund of {currency} {amount} to "
            f"{buyer_name} for the following items:"
        )
        + f"<ul><li><b>Order ID:</b> {order_id}</li><li><b>Fulfillment network:</b> Seller fulfilled</li></ul>"
        + rows
        + paragraphs("Your seller account will be charged accordingly.\n\nRegards,\nAmazon Services")
    )
    return notice(
        marketplace,
        sender=SELLER_CENTRAL,
        subject=f"Refund initiated for order {order_id}",
        body_html=body,
        date=sent,
        to=_TO,
        notification_type="REFUND_ISSUED",
        list_unsubscribe=True,
        seed=f"refund{order_id}",
    )


def amazon_inquiry(
    order_id: str,
    sent: datetime,
    *,
    reason: str,
    details: str,
    item: str = "Stainless Steel Water Bottle, 750 ml",
    marketplace: str = "amazon.com",
) -> bytes:
    """Amazon customer service asking the seller for a buyer (the sender's address is our guess)."""
    body = paragraphs(
        "Hello,\n\nWe've been contacted by a customer regarding the order identified below.\n\n"
        f"Order#: {order_id}\nItem: {item}\nReason: {reason}\nDetails: {details}\n\n"
        "Please reply to this e-mail with the information we can pass on to the customer.\n\n"
        f"Sincerely,\nCustomer Service\nAmazon.{marketplace.removeprefix('amazon.')}"
    )
    return notice(
        marketplace,
        sender=(f"Amazon.{marketplace.removeprefix('amazon.')}", f"cs-reply@{marketplace}"),
        subject="An inquiry from one of our customers",
        body_html=body,
        date=sent,
        to=_TO,
        reply_to=None,
        layout="simple",
        marketplace_header=False,
        seed=f"inquiry{order_id}",
    )


def cancellation_request(order_id: str, buyer_name: str, sent: datetime, *, marketplace: str = "amazon.com") -> bytes:
    """A buyer asking to cancel (BRC_SELLER_NOTIFICATION; the English subject is reported, the layout real, it)."""
    rows = table(
        ["Order ID", "Item", "Quantity", "Reason"],
        [[order_id, "Stainless Steel Water Bottle, 750 ml", "1", "No longer needed"]],
    )
    body = (
        paragraphs(f"Hello {SELLER_LEGAL_NAME},\n\nThe customer has asked to cancel the order below.")
        + rows
        + paragraphs(
            'If the order has not shipped yet, cancel it in Manage Orders with the reason "Buyer '
            'canceled". If it has already shipped, ask the customer to refuse the delivery or to '
            "request a return.\n\nAmazon Services"
        )
    )
    return notice(
        marketplace,
        sender=("Amazon Seller Central Notifications (do not reply)", "donotreply@amazon.com"),
        subject=f"Order cancellation request from Amazon customer {buyer_name}",
        body_html=body,
        date=sent,
        to=_TO,
        notification_type="BRC_SELLER_NOTIFICATION",
        layout="simple",
        seed=f"cancel{order_id}",
    )


def seller_reply_copy(
    buyer_name: str, words: str, sent: datetime, *, order_id: str | None = None, marketplace: str = "amazon.com"
) -> bytes:
    """Amazon's copy of a reply the seller sent from Seller Central (reported: often no order ID, no relay)."""
    head = f"Order: {order_id}\n\n" if order_id else ""
    body = paragraphs(
        f"Hello,\n\nHere is a copy of the e-mail that you sent to {buyer_name}.\n\n{head}"
        f"------------- Begin message -------------\n\n{words}\n\n"
        "------------- End message -------------"
    )
    return notice(
        marketplace,
        sender=SELLER_CENTRAL,
        subject=f"Your e-mail to {buyer_name}",
        body_html=body,
        date=sent,
        to=_TO,
        notification_type="BBC_MESSAGE_CONFIRMATION_TO_MERCHANT",
        seed=f"copy{buyer_name}{sent.isoformat()}",
    )


def message_undelivered(
    order_id: str,
    buyer_first_name: str,
    sent: datetime,
    *,
    when_sent: datetime,
    quoted: str = "",
    marketplace: str = "amazon.com",
) -> bytes:
    """Amazon saying the buyer did not get the seller's message (BUYER_OPTED_OUT_BSM_MESSAGES, real layout, it)."""
    place = marketplace.removeprefix("amazon.")
    quote = f"\n\nYour message:\n{quoted}" if quoted else ""
    body = paragraphs(
        f"Hello,\n\nThe message you sent to {buyer_first_name} on {when_sent:%B %d, %Y} [{order_id}] was not "
        "delivered: the buyer chose not to receive messages that are not needed to complete the order.\n\n"
        "If the message is needed to complete the order, send it again with [Important] in the subject."
        f"{quote}\n\nAmazon.{place}"
    )
    return notice(
        marketplace,
        sender=(f"Amazon.{place}", "auto-communication@amazon.com"),
        subject="Your message to the buyer was not delivered.",
        body_html=body,
        date=sent,
        to=_TO,
        notification_type="BUYER_OPTED_OUT_BSM_MESSAGES",
        layout="simple",
        seed=f"undelivered{order_id}",
    )


def demo_stories(now: datetime) -> tuple[list[tuple[str, bytes]], str]:
    """The demo mailbox: (story title, raw message) in arrival order, and the shipments CSV to import."""
    day = timedelta(days=1)
    t = now - timedelta(hours=20)  # Amazon gives 3 calendar days: filed 20 hours ago, 52 hours are left
    mails = [*_claim_stories(now, t), *_notice_stories(now, t), *_before_and_after_stories(now)]
    shipments = (
        "order_id,carrier,tracking_number,ship_date,delivered_date\n"
        f"113-2000001-0000001,UPS,1Z999AA10123456784,{(now - 9 * day).date()},{(now - 6 * day).date()}\n"
        f"113-2000011-0000011,USPS,9400111899223344556677,{(now - 9 * day).date()},"
        f"{(now - 6 * day).date()}\n"
        f"113-2000017-0000017,UPS,1Z999AA10123456791,{(now - 16 * day).date()},{(now - 13 * day).date()}\n"
    )
    return mails, shipments


def _claim_stories(now: datetime, t: datetime) -> list[tuple[str, bytes]]:
    """One story per row of the playbook table."""
    return [*_not_received_stories(t), *_complaint_stories(t), *_buyer_settles_stories(t), *_amazon_decides_stories(t)]


def _not_received_stories(t: datetime) -> list[tuple[str, bytes]]:
    """Not received: tracking that shows delivered, and no tracking."""
    day = timedelta(days=1)
    before = t - 3 * day
    return [
        (
            "not received, tracking shows delivered -> represent_delivered (pasted into Seller Central)",
            buyer(
                "113-2000001-0000001",
                "Kevin",
                "k7p2m9x4d1w8n3q6r5t0",
                "Hi, the tracking says my bottle was delivered but there is nothing here. Where is it?",
                before,
                subject="Package didn't arrive",
            ),
        ),
        ("", claim_filed("113-2000001-0000001", "24.99", t)),
        (
            "not received, no tracking -> offer_refund_or_resend",
            buyer(
                "113-2000002-0000002",
                "Dana",
                "d3v8q1z6y2k9m4b7c5n0",
                "It has been four weeks and my order has still not arrived. Please look into it.",
                before,
            ),
        ),
        ("", claim_filed("113-2000002-0000002", "24.99", t, action_required=True)),
    ]


def _complaint_stories(t: datetime) -> list[tuple[str, bytes]]:
    """The size and the two kinds of damage, each with its own row of the playbook."""
    day = timedelta(days=1)
    before = t - 3 * day
    return [
        (
            "size -> represent_size",
            buyer(
                "113-2000003-0000003",
                "Priya",
                "p4r7i2y9a1x6w3e8u5k0",
                "The jacket is too small, it does not fit at all across the shoulders.",
                before,
                item="Rain Jacket, Navy, M",
            ),
        ),
        ("", claim_filed("113-2000003-0000003", "59.00", t)),
        (
            "damaged on arrival (from the return request) -> persuade_withdraw_damaged",
            return_request(
                "113-2000004-0000004",
                before,
                reason="Product damaged, but shipping box OK",
                comment="The glass of the lamp was shattered when I opened the box.",
                carrier="UPS",
                tracking="1ZR7W8420312887604",
                item="Glass Table Lamp, 40 cm",
            ),
        ),
        ("", claim_filed("113-2000004-0000004", "38.50", t)),
        (
            "damaged after use -> represent_misuse",
            buyer(
                "113-2000005-0000005",
                "Tom",
                "t0m5k8w2q9r1z4x7c3v6",
                "Worked fine for two months, then the handle cracked.",
                before,
            ),
        ),
        ("", claim_filed("113-2000005-0000005", "24.99", t)),
    ]


def _buyer_settles_stories(t: datetime) -> list[tuple[str, bytes]]:
    """The buyer settles it: the problem is solved, or they want their money back."""
    day, hour = timedelta(days=1), timedelta(hours=1)
    later = t + 12 * hour  # what happened since
    before = t - 3 * day
    return [
        (
            "the buyer says it is solved -> request_withdrawal",
            buyer(
                "113-2000006-0000006",
                "Maria",
                "m2a9r4i7a1x8k3q6w5z0",
                "My parcel never arrived, can you check?",
                before,
            ),
        ),
        ("", claim_filed("113-2000006-0000006", "24.99", t)),
        (
            "",
            buyer(
                "113-2000006-0000006",
                "Maria",
                "m2a9r4i7a1x8k3q6w5z0",
                "Good news, I received it today! Everything is fine, thank you.",
                later,
            ),
        ),
        (
            "the buyer wants a refund -> refund_needed",
            buyer(
                "113-2000007-0000007",
                "Sam",
                "s5a8m1q4w7e2r9t6y3u0",
                "Nothing has come. I don't want to wait any longer, please refund my money.",
                later,
            ),
        ),
        ("", claim_filed("113-2000007-0000007", "24.99", t)),
    ]


def _amazon_decides_stories(t: datetime) -> list[tuple[str, bytes]]:
    """Amazon closes the claim (withdrawn, granted), a complaint with no rule, and Amazon asking for more."""
    day, hour = timedelta(days=1), timedelta(hours=1)
    later = t + 12 * hour  # what happened since
    before = t - 3 * day
    return [
        ("withdrawn by the buyer -> resolved", claim_filed("113-2000008-0000008", "24.99", t - 3 * day)),
        ("", claim_decision("113-2000008-0000008", "24.99", t, outcome="withdrawn")),
        ("granted by Amazon -> granted", claim_filed("113-2000009-0000009", "24.99", t - 5 * day)),
        ("", claim_decision("113-2000009-0000009", "24.99", t, outcome="granted")),
        (
            "not as described -> manual_review (flagged)",
            buyer(
                "113-2000010-0000010",
                "Lee",
                "l3e6e9q2w5r8t1y4u7i0",
                "This looks nothing like the picture on the listing.",
                before,
            ),
        ),
        ("", claim_filed("113-2000010-0000010", "24.99", t)),
        (
            "Amazon asks for more information -> represent_delivered again, 48 h (flagged)",
            buyer(
                "113-2000011-0000011",
                "Ana",
                "a1n4a7q0w3e6r9t2y5u8",
                "It never came, the tracking says delivered.",
                before,
            ),
        ),
        ("", claim_filed("113-2000011-0000011", "24.99", t)),
        ("", claim_info_request("113-2000011-0000011", later, hours=48)),
    ]


def _notice_stories(now: datetime, t: datetime) -> list[tuple[str, bytes]]:
    """Claims without a reason, the refund alarm, a refund, answers before any claim, customer service."""
    day, hour = timedelta(days=1), timedelta(hours=1)
    later = t + 12 * hour
    before = t - 3 * day
    return [
        (
            "no reason anywhere -> manual_review: reason not in Amazon's mail (flagged)",
            claim_filed("113-2000012-0000012", "24.99", t),
        ),
        (
            "no buyer reply and the deadline is near -> refund_needed",
            buyer(
                "113-2000013-0000013",
                "Ivy",
                "i9v2y5q8w1e4r7t0y3u6",
                "Where is my order? It has not arrived.",
                now - 7 * day,
            ),
        ),
        ("", claim_filed("113-2000013-0000013", "24.99", now - 3 * day + 3 * hour)),
        (
            "refunded before the deadline -> refunded (return request and refund on the timeline)",
            return_request(
                "113-2000014-0000014",
                before,
                reason="Item defective or doesn't work",
                comment="It arrived with a dent and leaks from the lid.",
                carrier="USPS",
                tracking="9405511899561234567890",
            ),
        ),
        ("", claim_filed("113-2000014-0000014", "24.99", t)),
        ("", refund_issued("113-2000014-0000014", "24.99", "Chris", later)),
        (
            "won before the claim: the buyer's complaint answered at once -> buyer_contact (answer_damaged)",
            buyer(
                "113-2000015-0000015",
                "Noor",
                "n0o3r6q9w2e5r8t1y4u7",
                "The bottle arrived with a big dent in it. Not happy.",
                later,
            ),
        ),
        (
            "Amazon customer service asks for a buyer -> a reply to them by e-mail (answer_size)",
            amazon_inquiry(
                "113-2000016-0000016",
                later,
                reason="Wrong size",
                details="The customer says the jacket is too small and asks how to exchange it.",
            ),
        ),
    ]


def _before_and_after_stories(now: datetime) -> list[tuple[str, bytes]]:
    """A complaint settled before it became a claim, and a claim granted although the parcel was delivered."""
    day, hour = timedelta(days=1), timedelta(hours=1)
    complained = now - 4 * day
    granted = now - 2 * day
    return [
        (
            "won before the claim: answered within the hour (Amazon's copy of the reply), the buyer is happy "
            "-> resolved, no claim",
            buyer(
                "113-2000018-0000018",
                "Ravi",
                "r4v1q8w2e6t3y9u5i0o7",
                "The lid of my bottle arrived cracked.",
                complained,
            ),
        ),
        (
            "",
            seller_reply_copy(
                "Ravi", "So sorry! A new lid is on its way today, tracking to follow.", complained + hour
            ),
        ),
        (
            "",
            buyer(
                "113-2000018-0000018",
                "Ravi",
                "r4v1q8w2e6t3y9u5i0o7",
                "The new lid came, all good now. Thanks!",
                complained + 2 * day,
            ),
        ),
        (
            "granted although UPS delivered before the claim -> appeal_granted (Seller Central, 30 days)",
            buyer("113-2000017-0000017", "Ines", "i7n3e9s5q1w8e4r2t6y0", "My order never arrived.", now - 12 * day),
        ),
        ("", claim_filed("113-2000017-0000017", "24.99", now - 11 * day)),
        ("", claim_decision("113-2000017-0000017", "24.99", granted, outcome="granted")),
    ]
