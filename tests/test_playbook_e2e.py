"""The playbook end to end: mail in Dovecot, `pipeline poll --once`, then `pipeline claims --json` and `claims show`.

Every row of the playbook table (README.md, "The playbook") has a story in tests/data/playbook (one .eml per
message, named "<row>__<what it is>.eml"). The shared `playbook_world` holds them all with their dates moved next to now
and is polled once through the CLI. Where time matters (deadlines) a test has its own mailbox and runs
`pipeline.service.poll_one_pass` with a fixed clock instead.
"""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import pytest
from conftest import PLAYBOOK_DATA, DeskEnv

# row, order, state, strategy, complaint, flagged, rule of the last transition, words of its reason
ROWS = [
    (
        "not received, tracking delivered",
        "113-4410276-3381902",
        "awaiting_amazon",
        "represent_delivered",
        "not_received",
        False,
        "not_received_delivered",
        "UPS tracking 1Z4V82W80312457006 shows delivered on 2026-11-03",
    ),
    (
        "not received, no tracking",
        "114-2093381-5520417",
        "awaiting_buyer",
        "offer_refund_or_resend",
        "not_received",
        False,
        "not_received_untracked",
        "not received and no tracking",
    ),
    (
        "size (amazon.de)",
        "302-5518820-4471963",
        "awaiting_amazon",
        "represent_size",
        "size",
        False,
        "size_stated_in_listing",
        "the listing states the size",
    ),
    (
        "damaged on arrival",
        "111-7730915-2264408",
        "awaiting_buyer",
        "persuade_withdraw_damaged",
        "damaged_on_arrival",
        False,
        "damaged_on_arrival",
        "offer a fix and ask the buyer to withdraw",
    ),
    (
        "damaged after use",
        "112-3381046-9917725",
        "awaiting_amazon",
        "represent_misuse",
        "damaged_after_use",
        False,
        "damaged_after_use",
        "damaged after a period of use",
    ),
    (
        "buyer says solved",
        "113-8820461-1175320",
        "awaiting_buyer",
        "request_withdrawal",
        "not_received",
        False,
        "buyer_resolved",
        "ask them to withdraw the claim",
    ),
    (
        "buyer will withdraw",
        "111-2274019-6605318",
        "awaiting_amazon",
        "request_withdrawal",
        "damaged_on_arrival",
        False,
        "buyer_will_withdraw",
        "they will withdraw the claim",
    ),
    (
        "buyer wants refund",
        "114-6602918-3357140",
        "refund_needed",
        None,
        "not_received",
        False,
        "buyer_wants_refund",
        "buyer asks for a refund",
    ),
    (
        "Amazon: withdrawn",
        "111-5502384-7719026",
        "resolved",
        None,
        "size",
        False,
        "claim_withdrawn",
        "the buyer withdrew the claim",
    ),
    (
        "Amazon: decided in the seller's favour",
        "112-9920475-6630184",
        "resolved",
        None,
        "not_received",
        False,
        "claim_denied",
        "closed the claim in the seller's favour",
    ),
    (
        "Amazon: granted",
        "113-0045712-8893326",
        "granted",
        None,
        "not_received",
        False,
        "claim_granted",
        "Amazon granted the claim",
    ),
    (
        "not as described",
        "114-7720351-0064429",
        "new",
        "manual_review",
        "not_as_described",
        True,
        "manual_review",
        "no rule for 'not as described'",
    ),
    (
        "reason not in Amazon's mail",
        "112-6610394-2287105",
        "new",
        "manual_review",
        None,
        True,
        "manual_review",
        "reason not in Amazon's mail: check Seller Central",
    ),
    (
        "Amazon asks for more information",
        "111-3346720-5508813",
        "awaiting_amazon",
        "represent_size",
        "size",
        True,
        "info_request",
        "Amazon asks for more information (round 1)",
    ),
]
ROW_IDS = [row[0] for row in ROWS]
# the claim notice of each row and the deadline it states
NOTICES = {
    "113-4410276-3381902": ("represent_delivered__claim_not_received.eml", timedelta(hours=72)),
    "114-2093381-5520417": ("offer_refund_or_resend__claim_not_received_no_tracking.eml", timedelta(hours=72)),
    "302-5518820-4471963": ("represent_size__antrag_groesse_amazon_de.eml", timedelta(hours=72)),
    "111-7730915-2264408": ("persuade_withdraw_damaged__claim_damaged_on_arrival.eml", timedelta(hours=72)),
    "112-3381046-9917725": ("represent_misuse__claim_damaged_after_use.eml", timedelta(hours=72)),
    "113-8820461-1175320": ("request_withdrawal__claim_not_received.eml", timedelta(hours=72)),
    "111-2274019-6605318": ("will_withdraw__claim_damaged_on_arrival.eml", timedelta(hours=72)),
    "114-6602918-3357140": ("refund_needed__claim_not_received.eml", timedelta(hours=72)),
    "111-5502384-7719026": ("resolved_withdrawn__claim_size.eml", timedelta(hours=72)),
    "112-9920475-6630184": ("resolved_denied__claim_not_received.eml", timedelta(hours=72)),
    "113-0045712-8893326": ("granted__claim_not_received.eml", timedelta(hours=72)),
    "114-7720351-0064429": ("manual_review__claim_not_as_described.eml", timedelta(hours=72)),
    "112-6610394-2287105": ("manual_review__claim_no_reason.eml", timedelta(hours=72)),
    # the request for more information moves the deadline to what it states: 48 hours from its own Date
    "111-3346720-5508813": ("info_request__amazon_more_information_48h.eml", timedelta(hours=48)),
}


def sent(name: str) -> datetime:
    """The Date header of a test message, in UTC."""
    raw = (PLAYBOOK_DATA / name).read_bytes()
    header = next(line for line in raw.decode("utf-8").splitlines() if line.lower().startswith("date:"))
    return email.utils.parsedate_to_datetime(header.split(":", 1)[1].strip()).astimezone(UTC)


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def events(env: DeskEnv, order_id: str, kind: str | None = None) -> list[dict[str, Any]]:
    return [e for e in env.timeline(order_id)["events"] if kind is None or e["kind"] == kind]


# --- every row of the playbook table ------------------------------------------------------------------


@pytest.fixture(scope="module")
def world_claims(playbook_world: DeskEnv) -> dict[str, dict[str, Any]]:
    return {c["order_id"]: c for c in playbook_world.claims()}


@pytest.mark.parametrize(
    ("row", "order", "state", "strategy", "complaint", "flagged", "rule", "reason"), ROWS, ids=ROW_IDS
)
def test_claims_json_shows_each_rows_state_and_strategy(
    world_claims: dict[str, dict[str, Any]],
    row: str,
    order: str,
    state: str,
    strategy: str | None,
    complaint: str | None,
    flagged: bool,
    rule: str,
    reason: str,
) -> None:
    claim = world_claims[order]
    assert (claim["state"], claim["strategy"], claim["complaint_type"]) == (state, strategy, complaint), row
    assert claim["flagged"] is flagged


@pytest.mark.parametrize(
    ("row", "order", "state", "strategy", "complaint", "flagged", "rule", "reason"), ROWS, ids=ROW_IDS
)
def test_claims_show_gives_the_rule_and_reason(
    playbook_world: DeskEnv,
    row: str,
    order: str,
    state: str,
    strategy: str | None,
    complaint: str | None,
    flagged: bool,
    rule: str,
    reason: str,
) -> None:
    transitions = [e for e in events(playbook_world, order) if e["kind"] in ("transition", "escalation", "flag")]
    assert transitions[-1]["rule"] == rule, row
    assert reason in transitions[-1]["reason"]
    assert transitions[-1]["to"] == state
    text = playbook_world.show(order)
    assert text.startswith(f"claim {order}: {state} ({strategy or 'no strategy'})")
    assert f"{rule}: " in text and reason in text


@pytest.mark.parametrize("order", sorted(NOTICES))
def test_deadline_is_counted_from_the_notifications_date(
    playbook_world: DeskEnv, world_claims: dict[str, dict[str, Any]], order: str
) -> None:
    name, period = NOTICES[order]
    assert world_claims[order]["deadline_at"] == iso(sent(name) + playbook_world.shift + period)


def test_json_carries_the_design_fields(world_claims: dict[str, dict[str, Any]]) -> None:
    delivered = world_claims["113-4410276-3381902"]
    assert delivered["tracking_number"] == "1Z4V82W80312457006"
    assert delivered["carrier"] == "UPS"
    assert delivered["marketplace"] == "amazon.com"
    assert world_claims["302-5518820-4471963"]["marketplace"] == "amazon.de"
    assert world_claims["113-8820461-1175320"]["buyer_address"] == "k3m9x2q7v1w8abc@marketplace.amazon.com"
    assert world_claims["114-2093381-5520417"]["buyer_address"] == "h2e5n8r1y4q7w0z@marketplace.amazon.com"
    assert world_claims["112-6610394-2287105"]["buyer_address"] is None  # no buyer message at all
    for claim in world_claims.values():
        assert claim["opened_at"].endswith("Z") and claim["deadline_at"].endswith("Z")


def test_state_filter_of_claims(playbook_world: DeskEnv) -> None:
    import json

    rows = json.loads(playbook_world.cli("claims", "--state", "refund_needed", "--json").output)
    assert [r["order_id"] for r in rows] == ["114-6602918-3357140"]


# --- who may open and close a claim ------------------------------------------------------------------------


def test_untrusted_sender_cannot_open_a_claim(playbook_world: DeskEnv, world_claims: dict[str, dict[str, Any]]) -> None:
    assert "113-9902214-4410583" not in world_claims
    text = playbook_world.show("113-9902214-4410583")
    assert "no claim: only messages that cannot open one" in text
    assert not playbook_world.drafts("113-9902214-4410583")


def test_untrusted_sender_cannot_close_a_claim(
    playbook_world: DeskEnv, world_claims: dict[str, dict[str, Any]]
) -> None:
    claim = world_claims["114-1185530-7762094"]
    assert (claim["state"], claim["strategy"]) == ("awaiting_buyer", "persuade_withdraw_damaged")
    assert claim["flagged"] is True
    assert "amazon.support-center.example" in claim["flag_reason"]
    flags = events(playbook_world, "114-1185530-7762094", "flag")
    assert [e["rule"] for e in flags] == ["untrusted_sender"]
    assert "untrusted_sender" in playbook_world.show("114-1185530-7762094")


def test_untrusted_buyer_lookalike_cannot_steer_a_claim(desk_env: DeskEnv) -> None:
    desk_env.append("offer_refund_or_resend__buyer_not_arrived.eml")
    desk_env.append("offer_refund_or_resend__claim_not_received_no_tracking.eml")
    raw = (
        desk_env.eml("request_withdrawal__buyer_found_parcel.eml")
        .replace(b"k3m9x2q7v1w8abc@marketplace.amazon.com", b"k3m9x2q7v1w8abc@marketplace.amazon.com.evil.test")
        .replace(b"113-8820461-1175320", b"114-2093381-5520417")
        .replace(b"MIME-Version", b"X-Marketplace-ID: ATVPDKIKX0DER\nMIME-Version", 1)
    )  # forged, so the poller takes it
    desk_env.append(raw)
    desk_env.poll(clock=datetime(2026, 11, 11, 12, tzinfo=UTC))
    claim = desk_env.claim("114-2093381-5520417")
    assert (claim["state"], claim["strategy"]) == ("awaiting_buyer", "offer_refund_or_resend")
    assert claim["buyer_address"] == "h2e5n8r1y4q7w0z@marketplace.amazon.com" and claim["flagged"] is True
    assert "marketplace.amazon.com.evil.test" in claim["flag_reason"]
    assert [d["To"] for d in desk_env.drafts("114-2093381-5520417")] == ["h2e5n8r1y4q7w0z@marketplace.amazon.com"]


# --- deadlines ---------------------------------------------------------------------------------------------

UK_CLAIM = "escalation__claim_not_received_3_calendar_days.eml"  # sent 2026-11-09 12:00 UTC, 3 calendar days
UK_ORDER = "205-3318047-7729016"
ANSWERED_ORDER = "205-6620913-4418357"


def test_deadline_escalation_with_a_fixed_clock(desk_env: DeskEnv) -> None:
    desk_env.append("escalation__buyer_not_arrived_uk.eml")
    desk_env.append(UK_CLAIM)
    deadline = datetime(2026, 11, 12, 12, tzinfo=UTC)  # Date + 72 h: the notice's own words, not response_days
    margin = timedelta(hours=24)

    desk_env.poll(clock=deadline - margin - timedelta(minutes=1))
    claim = desk_env.claim(UK_ORDER)
    assert (claim["state"], claim["strategy"], claim["deadline_at"]) == (
        "awaiting_buyer",
        "offer_refund_or_resend",
        "2026-11-12T12:00:00Z",
    )

    desk_env.poll(clock=deadline - margin + timedelta(minutes=1))  # no new mail: the cycle still checks
    claim = desk_env.claim(UK_ORDER)
    assert (claim["state"], claim["strategy"]) == ("refund_needed", None)
    escalation = events(desk_env, UK_ORDER, "escalation")
    assert [(e["from"], e["to"], e["rule"]) for e in escalation] == [
        ("awaiting_buyer", "refund_needed", "deadline_near_no_buyer_reply")
    ]
    # dated when the rule became true, so a later replay writes the same history
    assert escalation[0]["at"] == "2026-11-11T12:00:00Z"
    text = desk_env.show(UK_ORDER)
    assert "deadline_near_no_buyer_reply: no buyer reply and less than 24 h left" in text

    desk_env.poll(clock=deadline + timedelta(days=2))  # nothing more happens, and nothing twice
    assert len(events(desk_env, UK_ORDER, "escalation")) == 1


def test_a_question_from_the_buyer_does_not_stop_the_escalation(desk_env: DeskEnv) -> None:
    """The buyer wrote back, but only to ask which courier it was: nothing is settled, so the refund alarm
    still goes off before the deadline."""
    desk_env.append("escalation_answered__buyer_not_arrived_uk.eml")
    desk_env.append("escalation_answered__claim_not_received_3_calendar_days.eml")
    desk_env.append("escalation_answered__buyer_still_waiting.eml")
    desk_env.poll(clock=datetime(2026, 11, 12, 11, tzinfo=UTC))  # an hour before the deadline
    claim = desk_env.claim(ANSWERED_ORDER)
    assert (claim["state"], claim["strategy"]) == ("refund_needed", None)
    assert claim["buyer_address"] == "o2p4q6r8s1t3buy@marketplace.amazon.co.uk"
    assert len(events(desk_env, ANSWERED_ORDER, "escalation")) == 1


def test_escalation_margin_comes_from_the_config(make_desk_env) -> None:
    env = make_desk_env(seller={"refund_margin_hours": 48})
    env.append("escalation__buyer_not_arrived_uk.eml")
    env.append(UK_CLAIM)
    env.poll(clock=datetime(2026, 11, 10, 12, 30, tzinfo=UTC))  # 47.5 h before the deadline
    assert env.claim(UK_ORDER)["state"] == "refund_needed"
    assert "less than 48 h left" in env.show(UK_ORDER)


def test_backfill_months_later_computes_the_same_deadline(desk_env: DeskEnv) -> None:
    desk_env.append("represent_misuse__buyer_broke_after_use.eml")
    desk_env.append("represent_misuse__claim_damaged_after_use.eml")
    desk_env.poll(clock=datetime(2027, 3, 1, tzinfo=UTC))
    claim = desk_env.claim("112-3381046-9917725")
    assert claim["deadline_at"] == "2026-11-13T09:12:56Z"
    assert claim["opened_at"] == "2026-11-10T09:12:56Z"
    # a backfill must not fill Drafts with replies to claims Amazon decided long ago
    assert desk_env.drafts("112-3381046-9917725") == []
    assert claim["flagged"] and claim["flag_reason"].startswith("deadline passed on 2026-11-13 09:12 UTC")


# --- linking ---------------------------------------------------------------------------------------------

EARLY_ORDER = "113-5529047-6618230"


@pytest.mark.parametrize("separate_polls", [True, False], ids=["arrives-first", "dated-first"])
def test_early_buyer_message_fills_the_claim(desk_env: DeskEnv, separate_polls: bool) -> None:
    if separate_polls:
        desk_env.append("early_buyer__buyer_arrived_broken.eml")
        desk_env.poll(clock=datetime(2026, 11, 7, 10, tzinfo=UTC))
        # no claim yet, but the complaint is answered at once: that answer is what Amazon reads later
        case = desk_env.claim(EARLY_ORDER)
        assert (case["state"], case["strategy"], case["opened_at"]) == ("buyer_contact", "answer_damaged", None)
        assert [d["X-Pipeline-Strategy"] for d in desk_env.drafts(EARLY_ORDER)] == ["answer_damaged"]
        desk_env.append("early_buyer__claim_no_reason.eml")
    else:  # the claim arrives first, the buyer's older message after it
        desk_env.append("early_buyer__claim_no_reason.eml")
        desk_env.append("early_buyer__buyer_arrived_broken.eml")
    desk_env.poll(clock=datetime(2026, 11, 9, 11, tzinfo=UTC))
    claim = desk_env.claim(EARLY_ORDER)
    # the notice gives no reason; the buyer's earlier words do
    assert (claim["state"], claim["strategy"], claim["complaint_type"]) == (
        "awaiting_buyer",
        "persuade_withdraw_damaged",
        "damaged_on_arrival",
    )
    assert claim["buyer_address"] == "d4f6g8h1j3k5buy@marketplace.amazon.com"
    assert claim["opened_at"] == "2026-11-09T10:00:00Z"  # the claim's date, not the buyer's
    steps = [e["rule"] for e in events(desk_env, EARLY_ORDER) if e["kind"] == "transition"]
    assert steps == ["answer_damaged", "damaged_on_arrival"]
    drafts = desk_env.drafts(EARLY_ORDER)  # the claim's draft replaced the untouched answer
    assert [(d["X-Pipeline-Strategy"], d["To"]) for d in drafts] == [
        ("persuade_withdraw_damaged", "d4f6g8h1j3k5buy@marketplace.amazon.com")
    ]


RELAY_ORDER = "114-8845120-3390276"


@pytest.mark.parametrize("unlinked_first", [False, True], ids=["in-order", "no-order-id-processed-first"])
def test_buyer_message_without_order_id_is_linked_by_relay_address(desk_env: DeskEnv, unlinked_first: bool) -> None:
    clock = datetime(2026, 11, 10, 16, tzinfo=UTC)
    if unlinked_first:
        desk_env.append("relay_link__buyer_arrived_no_order_id.eml")
        desk_env.poll(clock=clock)
        assert desk_env.claims() == []
    desk_env.append("relay_link__claim_not_received.eml")
    desk_env.append("relay_link__buyer_where_is_it.eml")
    if not unlinked_first:
        desk_env.append("relay_link__buyer_arrived_no_order_id.eml")
    desk_env.poll(clock=clock)
    claim = desk_env.claim(RELAY_ORDER)
    assert (claim["state"], claim["strategy"]) == ("awaiting_buyer", "request_withdrawal")
    timeline = desk_env.timeline(RELAY_ORDER)
    assert [m["subject"] for m in timeline["messages"]] == [
        "Claim received on order 114-8845120-3390276",
        "Inquiry from Amazon customer Alex (Order: 114-8845120-3390276)",
        "Inquiry from Amazon customer Alex",  # no order ID anywhere in it
    ]
    assert [e["rule"] for e in timeline["events"] if e["kind"] == "transition"][-1] == "buyer_resolved"
    [draft] = desk_env.drafts(RELAY_ORDER)
    assert draft["To"] == "a7s9d1f3g5h7buy@marketplace.amazon.com"


IRT_ORDER = "114-2093381-5520417"


def test_buyer_reply_linked_by_in_reply_to_our_draft(desk_env: DeskEnv) -> None:
    desk_env.append("offer_refund_or_resend__buyer_not_arrived.eml")
    desk_env.append("offer_refund_or_resend__claim_not_received_no_tracking.eml")
    desk_env.poll(clock=datetime(2026, 11, 9, 17, tzinfo=UTC))
    [draft] = desk_env.drafts(IRT_ORDER)
    # the seller pasted the draft into "Contact buyer"; the buyer answers from a relay address never seen,
    # naming no order: only the threading header tells which claim it belongs to
    reply = EmailMessage()
    reply["From"] = '"Sam - Amazon Marketplace" <s8d7f6g5h4j3buy@marketplace.amazon.com>'
    reply["To"] = "claims@harbor-goods.example"
    reply["Subject"] = "Re: your message"
    reply["Date"] = "Wed, 11 Nov 2026 09:00:00 +0000"
    reply["Message-ID"] = "<0100019b99aa88bb-reply-1@email.amazonses.com>"
    reply["In-Reply-To"] = draft["Message-ID"]
    reply["References"] = draft["Message-ID"]
    reply.set_content(
        "------------- Begin message -------------\n\nIt arrived today, everything is fine. "
        "Thank you!\n\n------------- End message -------------\n"
    )
    desk_env.append(reply.as_bytes())
    desk_env.poll(clock=datetime(2026, 11, 11, 10, tzinfo=UTC))
    claim = desk_env.claim(IRT_ORDER)
    assert (claim["state"], claim["strategy"]) == ("awaiting_buyer", "request_withdrawal")
    assert claim["buyer_address"] == "s8d7f6g5h4j3buy@marketplace.amazon.com"


@pytest.mark.parametrize("reply_first", [False, True], ids=["in-order", "reply-processed-first"])
def test_message_linked_by_references_to_a_stored_message(desk_env: DeskEnv, reply_first: bool) -> None:
    notice = desk_env.eml("relay_link__claim_not_received.eml")
    notice_id = email.message_from_bytes(notice)["Message-ID"]
    reply = desk_env.eml("relay_link__buyer_arrived_no_order_id.eml").replace(
        b"Message-ID: <",
        b"In-Reply-To: " + notice_id.encode() + b"\nReferences: " + notice_id.encode() + b"\nMessage-ID: <",
        1,
    )
    clock = datetime(2026, 11, 10, 16, tzinfo=UTC)
    if reply_first:
        desk_env.append(reply)
        desk_env.poll(clock=clock)
        desk_env.append(notice)
    else:
        desk_env.append(notice)
        desk_env.append(reply)
    desk_env.poll(clock=clock)
    claim = desk_env.claim(RELAY_ORDER)
    assert (claim["state"], claim["strategy"]) == ("awaiting_buyer", "request_withdrawal")
    assert len(desk_env.timeline(RELAY_ORDER)["messages"]) == 2


# --- shipment facts -----------------------------------------------------------------------------------

REIMPORT_ORDER = "112-4471920-3318265"
SHIPMENTS_V1 = (
    "order_id,carrier,tracking_number,ship_date,delivered_date\n"
    f"{REIMPORT_ORDER},DHL,JJD000390007827123456,2026-10-28,\n"
    "112-447192-3318265,DHL,JJD000390007827123457,2026-10-28,\n"  # line 3: not an order ID
    "113-1000001-2000002,USPS,9400111899223854712068,2026-10-30,yesterday\n"  # line 4: not a date
    "113-1000003-2000004,USPS,9400111899223854712075,2026-10-30,2026-11-04\n"
)
SHIPMENTS_V2 = (
    "order_id\tcarrier\ttracking_number\tship_date\tdelivered_date\n"
    f"{REIMPORT_ORDER}\tDHL\tJJD000390007827123456\t2026-10-28\t2026-11-02\n"
)


def test_reimported_delivery_date_moves_the_claim_to_represent_delivered(desk_env: DeskEnv) -> None:
    v1 = desk_env.workdir / "shipments.csv"
    v1.write_text(SHIPMENTS_V1, encoding="utf-8")
    result = desk_env.cli("orders", "import", str(v1))
    assert result.output.splitlines()[-1] == "2 added, 0 updated, 0 unchanged, 2 skipped"
    assert f"{v1}:3: skipped: order_id '112-447192-3318265'" in result.output
    assert f"{v1}:4: skipped: delivered_date 'yesterday' is not an ISO 8601 date" in result.output

    desk_env.append("reimport__buyer_not_arrived.eml")
    desk_env.append("reimport__claim_not_received.eml")
    desk_env.poll(clock=datetime(2026, 11, 9, 17, tzinfo=UTC))
    claim = desk_env.claim(REIMPORT_ORDER)
    assert (claim["state"], claim["strategy"]) == ("awaiting_buyer", "offer_refund_or_resend")
    assert (claim["carrier"], claim["tracking_number"]) == ("DHL", "JJD000390007827123456")
    assert "tracking does not show delivered" in desk_env.show(REIMPORT_ORDER)

    v2 = desk_env.workdir / "shipments-later.tsv"
    v2.write_text(SHIPMENTS_V2, encoding="utf-8")
    result = desk_env.cli("orders", "import", str(v2))
    assert result.output.splitlines()[-1] == "0 added, 1 updated, 0 unchanged, 0 skipped"
    desk_env.poll(clock=datetime(2026, 11, 10, 9, tzinfo=UTC))
    claim = desk_env.claim(REIMPORT_ORDER)
    assert (claim["state"], claim["strategy"], claim["delivered_on"]) == (
        "awaiting_amazon",
        "represent_delivered",
        "2026-11-02",
    )

    # the same file again changes nothing and adds no row
    result = desk_env.cli("orders", "import", str(v2))
    assert result.output.splitlines()[-1] == "0 added, 0 updated, 1 unchanged, 0 skipped"
    from sqlalchemy import func, select

    from pipeline.schema import Shipment
    from pipeline.store import Store

    store = Store(desk_env.settings.database.url)
    try:
        with store.session() as session:
            assert session.scalar(select(func.count()).select_from(Shipment)) == 2
    finally:
        store.dispose()

    # the untouched offer to the buyer was taken out: now the buyer is told where the parcel was delivered,
    # and Amazon that it was
    answer, draft = desk_env.drafts(REIMPORT_ORDER)
    assert answer["X-Pipeline-Strategy"] == "answer_delivered" and "JJD000390007827123456" in answer.body
    assert "offer_refund_or_resend" in desk_env.show(REIMPORT_ORDER).split("drafts:")[1].split("\n")[1]
    assert draft["X-Pipeline-Strategy"] == "represent_delivered"
    assert "JJD000390007827123456" in draft.body and "November 2, 2026" in draft.body


def test_an_unrecognized_carrier_is_not_represented(desk_env: DeskEnv) -> None:
    csv = desk_env.workdir / "shipments.csv"
    csv.write_text(
        "order-id\tcarrier-code\tcarrier-name\ttracking-number\tship-date\tdelivered_date\n"
        f"{REIMPORT_ORDER}\tOther\tSlowBoat Parcel\tSB123456789\t2026-10-28\t2026-11-02\n",
        encoding="utf-8",
    )
    desk_env.cli("orders", "import", str(csv))
    desk_env.append("reimport__buyer_not_arrived.eml")
    desk_env.append("reimport__claim_not_received.eml")
    desk_env.poll(clock=datetime(2026, 11, 9, 17, tzinfo=UTC))
    claim = desk_env.claim(REIMPORT_ORDER)
    assert (claim["state"], claim["strategy"], claim["carrier"]) == (
        "awaiting_buyer",
        "offer_refund_or_resend",
        "SlowBoat Parcel",
    )
    assert "carrier SlowBoat Parcel not recognized by Amazon" in desk_env.show(REIMPORT_ORDER)


# --- doing it again changes nothing -----------------------------------------------------------------------


def test_polling_again_changes_nothing(make_desk_env) -> None:
    env = make_desk_env()
    for name in (
        "request_withdrawal__claim_not_received.eml",
        "request_withdrawal__buyer_found_parcel.eml",
        "info_request__claim_size.eml",
        "info_request__amazon_more_information_48h.eml",
    ):
        env.append(name)
    clock = datetime(2026, 11, 12, tzinfo=UTC)
    env.poll(clock=clock)
    first = (env.claims(), [env.timeline(c["order_id"]) for c in env.claims()])
    env.poll(clock=clock)
    assert (env.claims(), [env.timeline(c["order_id"]) for c in env.claims()]) == first


def test_a_forged_amazon_withdrawal_cannot_close_a_claim(desk_env: DeskEnv) -> None:
    """From: atoz-guarantee-no-reply@amazon.com, but the seller's server says DMARC failed: the claim stays open."""
    desk_env.append("offer_refund_or_resend__buyer_not_arrived.eml")
    desk_env.append("offer_refund_or_resend__claim_not_received_no_tracking.eml")
    forged = (
        (PLAYBOOK_DATA / "resolved_withdrawn__amazon_claim_withdrawn.eml")
        .read_bytes()
        .replace(b"111-5502384-7719026", b"114-2093381-5520417")
    )
    forged = (
        b"Authentication-Results: mx.harbor-goods.example; spf=fail smtp.mailfrom=amazon.com;"
        b" dkim=none; dmarc=fail header.from=amazon.com\r\n" + forged
    )
    desk_env.append(forged)
    desk_env.poll(clock=datetime(2026, 11, 11, 12, tzinfo=UTC))
    claim = desk_env.claim("114-2093381-5520417")
    assert (claim["state"], claim["strategy"]) == ("awaiting_buyer", "offer_refund_or_resend")
    assert claim["flagged"] is True and "not Amazon" in desk_env.show("114-2093381-5520417")
