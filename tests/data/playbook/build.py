#!/usr/bin/env python3
"""Writes the playbook stories (tests/data/playbook/*.eml) in the shapes real Amazon mail has.

A real claim notice names no reason: every story's complaint comes from what the buyer wrote before (or after)
the claim, or from a return request, as it does in a real mailbox. Run it after changing a story:

    python tests/data/playbook/build.py

The .eml files are committed; the tests read them, not this script.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from pipeline.testing.amazon_mail import notice, paragraphs  # noqa: E402
from pipeline.testing.dkim import resign, unsign  # noqa: E402
from pipeline.testing.stories import buyer, claim_decision, claim_filed, claim_info_request  # noqa: E402

SELLER = "Harbor Goods <claims@harbor-goods.example>"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def ses(message_id: str) -> dict[str, str]:
    return {"message_id": message_id}


def with_id(raw: bytes, message_id: str) -> bytes:
    """The message with its Message-ID replaced (the tests refer to some by their id); main() signs it again."""
    head, sep, body = unsign(raw).partition(b"\r\n\r\n")
    lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"message-id:")]
    lines.insert(1, b"Message-ID: " + message_id.encode())
    return b"\r\n".join(lines) + sep + body


def to_seller(raw: bytes) -> bytes:
    return raw.replace(b"To: Acme Store <claims@acme-store.example>", f"To: {SELLER}".encode(), 1)


def german_claim(order_id: str, amount: str, sent: datetime) -> bytes:
    """An A-to-z claim notice on amazon.de (German wording: our guess; the layout is the real Italian one)."""
    body = paragraphs(
        "Guten Tag Harbor Goods GmbH,\n\n"
        f"wir haben einen A-bis-z-Garantieantrag über {amount} € zur Bestellung {order_id} erhalten.\n\n"
        "Was ist die A-bis-z-Garantie?\nDie A-bis-z-Garantie schützt Kunden, die bei Verkäufern kaufen: "
        "rechtzeitige Lieferung und Zustand der Artikel sind abgedeckt.\n\n"
        "Was muss ich tun?\nIm Moment ist nichts zu tun, während unser Team den Antrag prüft. Falls wir weitere "
        "Informationen benötigen, melden wir uns per E-Mail; Sie müssen dann innerhalb von 3 Kalendertagen "
        "antworten.\n\nAmazon.de"
    )
    return notice(
        "amazon.de",
        sender=("A-bis-z-Garantie von Amazon", "atoz-guarantee-no-reply@amazon.de"),
        subject=f"Erstattungsantrag für die Bestellung {order_id} erhalten",
        body_html=body,
        date=sent,
        notification_type="A_Z_CLAIM_RESPONDENT_NOTIFY",
        reply_to="folded",
        to=SELLER,
        seed=f"de{order_id}",
    )


def spoof_claim(order_id: str, sent: datetime, domain: str, message_id: str) -> bytes:
    """A claim notice copied from Amazon's layout but sent from a look-alike domain."""
    raw = claim_filed(order_id, "89.90", sent)
    raw = raw.replace(b"atoz-guarantee-no-reply@amazon.com", f"atoz-guarantee-no-reply@{domain}".encode())
    return with_id(raw, message_id)


def spoof_withdrawn(order_id: str, sent: datetime, domain: str, message_id: str) -> bytes:
    raw = claim_decision(order_id, "0", sent, outcome="withdrawn")
    raw = raw.replace(b"atoz-guarantee-no-reply@amazon.com", f"atoz-guarantee-no-reply@{domain}".encode())
    return with_id(raw, message_id)


def stories() -> dict[str, bytes]:
    """File name -> raw message."""
    b, c, d = buyer, claim_filed, claim_decision
    return {
        # --- one story per row of the playbook table (the world of test_playbook_e2e) ---
        "represent_delivered__buyer_not_arrived.eml": b(
            "113-4410276-3381902",
            "Grace",
            "g7r1a4c9e2x5k8w",
            "Hello, my parcel has not arrived and it has been over a week. Could you look into it?",
            at("2026-11-07T10:05:00+00:00"),
        ),
        "represent_delivered__claim_not_received.eml": with_id(
            c("113-4410276-3381902", "42.50", at("2026-11-09T15:20:11+00:00")),
            "<01000197a1c2d3e4-7f3a1b20-8c4d-4e5f-9a6b-1c2d3e4f5a61-000000@email.amazonses.com>",
        ),
        "offer_refund_or_resend__buyer_not_arrived.eml": b(
            "114-2093381-5520417",
            "Henry",
            "h2e5n8r1y4q7w0z",
            "Still no sign of my order. Where is it?",
            at("2026-11-07T12:00:00+00:00"),
        ),
        "offer_refund_or_resend__claim_not_received_no_tracking.eml": with_id(
            c("114-2093381-5520417", "18.99", at("2026-11-09T16:02:45+00:00")),
            "<01000197a1c2d3e5-2b4c6d8e-1a3b-4c5d-8e7f-2a3b4c5d6e72-000000@email.amazonses.com>",
        ),
        "represent_size__kaeufer_zu_klein_amazon_de.eml": b(
            "302-5518820-4471963",
            "Jonas",
            "j4o7n0a3s6q9w2e",
            "Hallo, die Jacke ist leider zu klein, sie passt an den Schultern nicht.",
            at("2026-11-07T09:10:00+01:00"),
            marketplace="amazon.de",
            subject="Anfrage von Amazon-Kunde Jonas (Bestellung: 302-5518820-4471963)",
            item="Regenjacke, Navy, M",
        ),
        "represent_size__antrag_groesse_amazon_de.eml": with_id(
            german_claim("302-5518820-4471963", "59,00", at("2026-11-09T10:14:37+01:00")),
            "<0102019ce230a4ab-51c2d7e8-9f01-4a2b-8c3d-4e5f60718293-000000@eu-west-1.amazonses.com>",
        ),
        "persuade_withdraw_damaged__buyer_arrived_broken.eml": b(
            "111-7730915-2264408",
            "Olivia",
            "o1l4i7v0i3a6k9m",
            "The lamp arrived broken, the glass shade was shattered inside the box.",
            at("2026-11-07T14:30:00+00:00"),
            item="Glass Table Lamp, 40 cm",
        ),
        "persuade_withdraw_damaged__claim_damaged_on_arrival.eml": with_id(
            c("111-7730915-2264408", "38.50", at("2026-11-09T17:45:03+00:00"), action_required=True),
            "<01000197a1c2d3e6-3c5d7e9f-2b4c-4d6e-9f80-3b4c5d6e7f83-000000@email.amazonses.com>",
        ),
        "represent_misuse__buyer_broke_after_use.eml": b(
            "112-3381046-9917725",
            "Ethan",
            "e3t6h9a2n5q8w1r",
            "The handle worked fine for two months, then it cracked. Not good enough.",
            at("2026-11-08T08:00:00+00:00"),
        ),
        "represent_misuse__claim_damaged_after_use.eml": with_id(
            c("112-3381046-9917725", "24.99", at("2026-11-10T09:12:56+00:00")),
            "<01000197a1c2d3e7-4d6e8fa0-3c5d-4e7f-a091-4c5d6e7f8094-000000@email.amazonses.com>",
        ),
        "request_withdrawal__buyer_not_arrived.eml": b(
            "113-8820461-1175320",
            "Maria",
            "k3m9x2q7v1w8abc",
            "My order has not arrived yet, can you check with the carrier?",
            at("2026-11-07T16:20:00+00:00"),
        ),
        "request_withdrawal__claim_not_received.eml": with_id(
            c("113-8820461-1175320", "31.00", at("2026-11-09T12:30:00+00:00")),
            "<01000197a1c2d3e8-5e7f90b1-4d6e-4f80-b1a2-5d6e7f8091a5-000000@email.amazonses.com>",
        ),
        "request_withdrawal__buyer_found_parcel.eml": with_id(
            b(
                "113-8820461-1175320",
                "Maria",
                "k3m9x2q7v1w8abc",
                "Hello, good news: the package was at my "
                "neighbour's house the whole time. I have it now and everything is fine, thank you!",
                at("2026-11-10T08:41:19+00:00"),
                subject="RE: Re: Inquiry from Amazon customer Maria (Order: 113-8820461-1175320)",
            ),
            "<0100019b22a3b4c5-6f8091c2-5e7f-4091-c2b3-6e7f8091a2b6-000000@email.amazonses.com>",
        ),
        "will_withdraw__buyer_arrived_cracked.eml": b(
            "111-2274019-6605318",
            "Priya",
            "r5t8y2u4i6o9buy",
            "The mirror came with a crack across the glass. Please send a new one.",
            at("2026-11-07T18:00:00+00:00"),
        ),
        "will_withdraw__claim_damaged_on_arrival.eml": with_id(
            c("111-2274019-6605318", "64.00", at("2026-11-09T18:30:00+00:00")),
            "<01000197a1c2d3f3-0a1b316c-f809-4a3b-6c5d-08192a3b4c52-000000@email.amazonses.com>",
        ),
        "will_withdraw__buyer_will_withdraw.eml": with_id(
            b(
                "111-2274019-6605318",
                "Priya",
                "r5t8y2u4i6o9buy",
                "Thank you for the quick replacement, it came "
                "today in perfect condition. I will withdraw the claim tonight.",
                at("2026-11-10T20:05:33+00:00"),
            ),
            "<0100019b22a3b4c7-8192b3e4-7091-42b3-e4d5-8091a2b3c4d9-000000@email.amazonses.com>",
        ),
        "refund_needed__claim_not_received.eml": with_id(
            c("114-6602918-3357140", "27.99", at("2026-11-09T13:05:44+00:00")),
            "<01000197a1c2d3e9-6f8091c2-5e7f-4091-c2b3-6e7f8091a2b7-000000@email.amazonses.com>",
        ),
        "refund_needed__buyer_wants_refund.eml": with_id(
            b(
                "114-6602918-3357140",
                "Tom",
                "p9w2zr4t6y1ubuy",
                "My order never arrived. I don't want to wait any longer. Please refund my money.",
                at("2026-11-10T19:22:08+00:00"),
            ),
            "<0100019b22a3b4c6-7091a2d3-6f80-41a2-d3c4-7f8091a2b3c8-000000@email.amazonses.com>",
        ),
        "resolved_withdrawn__buyer_too_small.eml": b(
            "111-5502384-7719026",
            "Lucy",
            "l6u9c2y5q8w1e4r",
            "These boots are too small, I cannot get my foot in.",
            at("2026-11-07T11:00:00+00:00"),
            item="Hiking Boots, 38",
        ),
        "resolved_withdrawn__claim_size.eml": with_id(
            c("111-5502384-7719026", "79.00", at("2026-11-09T11:11:11+00:00")),
            "<01000197a1c2d3ea-7091a2d3-6f80-41a2-d3c4-7f8091a2b3c9-000000@email.amazonses.com>",
        ),
        "resolved_withdrawn__amazon_claim_withdrawn.eml": with_id(
            d("111-5502384-7719026", "79.00", at("2026-11-10T10:00:00+00:00"), outcome="withdrawn"),
            "<01000197a1c2d3eb-8192b3e4-7091-42b3-e4d5-8091a2b3c4da-000000@email.amazonses.com>",
        ),
        "resolved_denied__buyer_not_arrived.eml": b(
            "112-9920475-6630184",
            "Noah",
            "n8o1a4h7q0w3e6r",
            "Nothing has been delivered to me yet.",
            at("2026-11-07T09:00:00+00:00"),
        ),
        "resolved_denied__claim_not_received.eml": with_id(
            c("112-9920475-6630184", "45.00", at("2026-11-09T09:30:27+00:00")),
            "<01000197a1c2d3ec-92a3c4f5-8192-43c4-f5e6-91a2b3c4d5eb-000000@email.amazonses.com>",
        ),
        "resolved_denied__amazon_decided_in_your_favour.eml": with_id(
            d("112-9920475-6630184", "45.00", at("2026-11-10T14:35:10+00:00"), outcome="denied"),
            "<01000197a1c2d3ed-a3b4d506-92a3-44d5-06f7-a2b3c4d5e6fc-000000@email.amazonses.com>",
        ),
        "granted__buyer_not_arrived.eml": b(
            "113-0045712-8893326",
            "Zoe",
            "z1o4e7q0w3r6t9y",
            "My package never came. What now?",
            at("2026-11-07T08:30:00+00:00"),
        ),
        "granted__claim_not_received.eml": with_id(
            c("113-0045712-8893326", "52.00", at("2026-11-09T08:15:00+00:00")),
            "<01000197a1c2d3ee-b4c5e617-a3b4-45e6-1708-b3c4d5e6f70d-000000@email.amazonses.com>",
        ),
        "granted__amazon_granted.eml": with_id(
            d("113-0045712-8893326", "52.00", at("2026-11-10T16:48:31+00:00"), outcome="granted"),
            "<01000197a1c2d3ef-c5d6f728-b4c5-46f7-2819-c4d5e6f7081e-000000@email.amazonses.com>",
        ),
        "manual_review__buyer_not_as_pictured.eml": b(
            "114-7720351-0064429",
            "Isla",
            "i4s7l0a3q6w9e2r",
            "The rug looks nothing like the picture on the listing, the colours are completely different.",
            at("2026-11-08T07:00:00+00:00"),
        ),
        "manual_review__claim_not_as_described.eml": with_id(
            c("114-7720351-0064429", "120.00", at("2026-11-10T07:55:12+00:00")),
            "<01000197a1c2d3f0-d6e70839-c5d6-4708-392a-d5e6f708192f-000000@email.amazonses.com>",
        ),
        "manual_review__claim_no_reason.eml": with_id(
            c("112-6610394-2287105", "15.00", at("2026-11-10T08:20:40+00:00")),
            "<01000197a1c2d3f1-e7f8194a-d6e7-4819-4a3b-e6f708192a30-000000@email.amazonses.com>",
        ),
        "info_request__buyer_too_big.eml": b(
            "111-3346720-5508813",
            "Ruby",
            "r7u0b3y6q9w2e5t",
            "The dress runs large, it is far too big on me.",
            at("2026-11-07T13:00:00+00:00"),
            item="Summer Dress, S",
        ),
        "info_request__claim_size.eml": with_id(
            c("111-3346720-5508813", "49.00", at("2026-11-09T14:00:00+00:00")),
            "<01000197a1c2d3f2-f809205b-e7f8-492a-5b4c-f708192a3b41-000000@email.amazonses.com>",
        ),
        "info_request__amazon_more_information_48h.eml": with_id(
            claim_info_request("111-3346720-5508813", at("2026-11-10T11:41:30-08:00"), hours=48),
            "<0100019f205d87eb-29aedb40-5484-4e45-b5f7-3346720abcde-000000@email.amazonses.com>",
        ),
        "untrusted__spoof_claim_filed_lookalike_domain.eml": spoof_claim(
            "113-9902214-4410583",
            at("2026-11-10T06:12:00+00:00"),
            "amazon-claims-support.net",
            "<20261110061200.4471@amazon-claims-support.net>",
        ),
        "untrusted__buyer_arrived_dented.eml": b(
            "114-1185530-7762094",
            "Leo",
            "l9e2o5q8w1e4r7t",
            "The kettle arrived dented on one side.",
            at("2026-11-07T17:00:00+00:00"),
        ),
        "untrusted__claim_damaged_on_arrival.eml": with_id(
            c("114-1185530-7762094", "33.00", at("2026-11-09T10:40:00+00:00")),
            "<01000197a1c2d3f4-1b2c427d-0a1b-4b4c-7d6e-192a3b4c5d63-000000@email.amazonses.com>",
        ),
        "untrusted__spoof_claim_withdrawn.eml": spoof_withdrawn(
            "114-1185530-7762094",
            at("2026-11-10T22:10:00+00:00"),
            "amazon.support-center.example",
            "<20261110221000.9913@amazon.support-center.example>",
        ),
        # --- stories of single tests ---
        "early_buyer__buyer_arrived_broken.eml": with_id(
            b(
                "113-5529047-6618230",
                "Daniel",
                "d4f6g8h1j3k5buy",
                "The ceramic vase arrived broken, it was in "
                "pieces inside the box when I opened the parcel. What can you do about this?",
                at("2026-11-07T09:30:00+00:00"),
            ),
            "<0100019b22a3b4c8-92a3c4f5-8192-43c4-f5e6-91a2b3c4d5ea-000000@email.amazonses.com>",
        ),
        "early_buyer__claim_no_reason.eml": with_id(
            c("113-5529047-6618230", "36.00", at("2026-11-09T10:00:00+00:00")),
            "<01000197a1c2d3f5-2c3d538e-1b2c-4c5d-8e7f-2a3b4c5d6e74-000000@email.amazonses.com>",
        ),
        "escalation__buyer_not_arrived_uk.eml": b(
            "205-3318047-7729016",
            "Amelia",
            "a3m6e9l2i5a8q1w",
            "My parcel still hasn't arrived.",
            at("2026-11-07T12:00:00+00:00"),
            marketplace="amazon.co.uk",
        ),
        "escalation__claim_not_received_3_calendar_days.eml": with_id(
            c("205-3318047-7729016", "19.99", at("2026-11-09T12:00:00+00:00"), marketplace="amazon.co.uk"),
            "<01000197a1c2d3f7-4e5f75a0-3d4e-4e7f-a091-4c5d6e7f8096-000000@email.amazonses.com>",
        ),
        "escalation_answered__buyer_not_arrived_uk.eml": b(
            "205-6620913-4418357",
            "Oliver",
            "o2p4q6r8s1t3buy",
            "Hi, my order has not arrived yet.",
            at("2026-11-07T12:30:00+00:00"),
            marketplace="amazon.co.uk",
        ),
        "escalation_answered__claim_not_received_3_calendar_days.eml": with_id(
            c("205-6620913-4418357", "22.50", at("2026-11-09T12:00:00+00:00"), marketplace="amazon.co.uk"),
            "<01000197a1c2d3f8-5f6086b1-4e5f-4f80-b1a2-5d6e7f8091a7-000000@email.amazonses.com>",
        ),
        "escalation_answered__buyer_still_waiting.eml": with_id(
            b(
                "205-6620913-4418357",
                "Oliver",
                "o2p4q6r8s1t3buy",
                "Thanks for getting back to me. I am at home all "
                "week, could you tell me which courier it was sent with?",
                at("2026-11-10T09:45:00+00:00"),
                marketplace="amazon.co.uk",
            ),
            "<0100019b22a3b4cb-c5d6f728-b4c5-46f7-2819-c4d5e6f7081d-000000@email.amazonses.com>",
        ),
        "relay_link__claim_not_received.eml": with_id(
            c("114-8845120-3390276", "26.00", at("2026-11-09T09:00:00+00:00")),
            "<01000197a1c2d3f6-3d4e649f-2c3d-4d6e-9f80-3b4c5d6e7f85-000000@email.amazonses.com>",
        ),
        "relay_link__buyer_where_is_it.eml": with_id(
            b(
                "114-8845120-3390276",
                "Alex",
                "a7s9d1f3g5h7buy",
                "Hi, my order still has not arrived. Can you check with the carrier where it is?",
                at("2026-11-09T11:30:00+00:00"),
            ),
            "<0100019b22a3b4c9-a3b4d506-92a3-44d5-06f7-a2b3c4d5e6fb-000000@email.amazonses.com>",
        ),
        "relay_link__buyer_arrived_no_order_id.eml": with_id(
            b(
                None,
                "Alex",
                "a7s9d1f3g5h7buy",
                "Never mind, it finally arrived this morning. Everything is fine, thank you!",
                at("2026-11-10T15:10:00+00:00"),
                subject="Inquiry from Amazon customer Alex",
            ),
            "<0100019b22a3b4ca-b4c5e617-a3b4-45e6-1708-b3c4d5e6f70c-000000@email.amazonses.com>",
        ),
        "reimport__buyer_not_arrived.eml": b(
            "112-4471920-3318265",
            "Mia",
            "m5i8a1q4w7e0r3t",
            "I have not received my order.",
            at("2026-11-07T16:00:00+00:00"),
        ),
        "reimport__claim_not_received.eml": with_id(
            c("112-4471920-3318265", "29.00", at("2026-11-09T16:30:00+00:00")),
            "<01000197a1c2d3f9-607197c2-5f60-4091-c2b3-6e7f8091a2b8-000000@email.amazonses.com>",
        ),
        "missing_delivery_date__buyer_says_delivered.eml": b(
            "113-7765012-0093351",
            "Jack",
            "j8a1c4k7q0w3e6r",
            "UPS tracking 1Z4V82W80312457006 says it was delivered but I never received it.",
            at("2026-11-07T13:30:00+00:00"),
        ),
        "missing_delivery_date__claim_tracking_shows_delivered.eml": with_id(
            c("113-7765012-0093351", "41.00", at("2026-11-09T13:30:00+00:00")),
            "<01000197a1c2d3fa-7182a8d3-6071-41a2-d3c4-7f8091a2b3c9-000000@email.amazonses.com>",
        ),
        "injection__buyer_not_arrived.eml": b(
            "114-3302618-5570281",
            "Mallory",
            "m1a2l3l4o5r6buy",
            "Where is my order? It has not arrived.",
            at("2026-11-07T10:30:00+00:00"),
        ),
        "injection__claim_not_received.eml": with_id(
            c("114-3302618-5570281", "21.00", at("2026-11-09T10:30:00+00:00")),
            "<01000197a1c2d3fb-8293b9e4-7182-42b3-e4d5-8091a2b3c4da-000000@email.amazonses.com>",
        ),
        "buyer_language__buyer_writes_english_on_amazon_de.eml": with_id(
            b(
                "304-5561092-8837410",
                "Liam",
                "l1i2a3m4b5u6buy",
                "Hello, sorry for writing in English. The kettle "
                "arrived broken: the lid hinge was snapped and the glass\nwindow was cracked when I took it out of "
                "the box. What can you do about this?",
                at("2026-03-04T19:02:11+00:00"),
                marketplace="amazon.de",
                subject="Anfrage von Amazon-Kunde Liam (Bestellung: 304-5561092-8837410)",
                item="Wasserkocher, Glas",
            ),
            "<0102019b33c4d5e6-1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d-000000@eu-west-1.amazonses.com>",
        ),
        "buyer_language__antrag_amazon_de.eml": german_claim(
            "304-5561092-8837410", "39,90", at("2026-03-05T08:00:00+01:00")
        ),
    }


def main() -> int:
    written = stories()
    for old in HERE.glob("*.eml"):
        if old.name not in written and old.name != "injection__buyer_name_bcc_subject_template.eml":
            old.unlink()
    for name, raw in written.items():
        # signed again after the edits (To, Message-ID): Amazon's signature covers them
        (HERE / name).write_bytes(resign(to_seller(raw)))
    print(f"wrote {len(written)} stories to {HERE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
