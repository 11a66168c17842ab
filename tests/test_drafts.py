"""Reply drafts: rendered from the templates, threaded, addressed, in Drafts once; read back over IMAP from Dovecot."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import PLAYBOOK_DATA, DeskEnv, DeskMail

from pipeline.drafts import (
    DraftRenderer,
    DraftRequest,
    build_message,
    fingerprint,
    format_date,
    greeting_name,
    header_text,
    reply_subject,
    safe_message_id,
)
from pipeline.errors import DraftError
from pipeline.vocabulary import STRATEGIES

SELLER = "claims@harbor-goods.example"
NOW = datetime(2026, 11, 10, 9, 30, tzinfo=UTC)

# --- rendering and the MIME message (no server) ---------------------------------------------------------

DRAFTING = [s for s in STRATEGIES if s != "manual_review"]
FULL_CONTEXT: dict[str, object] = {
    "store_name": "Harbor Goods",
    "order_id": "113-4410276-3381902",
    "marketplace": "amazon.com",
    "info_request": False,
    "deadline": "November 16, 2026",
    "buyer_name": "Maria",
    "tracking_number": "1Z4V82W80312457006",
    "carrier": "UPS",
    "delivery_date": "November 3, 2026",
}


@pytest.mark.parametrize("language", ["en", "de", "fr", "it", "es"])
@pytest.mark.parametrize("strategy", DRAFTING)
def test_every_drafting_strategy_has_a_template_in_five_languages(strategy: str, language: str) -> None:
    renderer = DraftRenderer()
    assert renderer.language_for(strategy, language) == language
    body = renderer.render(strategy, language, FULL_CONTEXT)
    assert "113-4410276-3381902" in body and "Harbor Goods" in body
    assert "{{" not in body and "{%" not in body
    assert "\n\n\n" not in body and body.endswith("\n") and not body.endswith("\n\n")
    if strategy == "represent_delivered":
        assert "1Z4V82W80312457006" in body and "November 3, 2026" in body


@pytest.mark.parametrize("strategy", ["offer_refund_or_resend", "persuade_withdraw_damaged", "request_withdrawal"])
def test_buyer_templates_greet_by_name_only_when_known(strategy: str) -> None:
    renderer = DraftRenderer()
    assert "Maria" in renderer.render(strategy, "en", FULL_CONTEXT)
    generic = renderer.render(strategy, "en", {**FULL_CONTEXT, "buyer_name": None})
    assert generic.startswith("Dear Customer,")


def test_a_missing_required_value_fails_the_draft() -> None:
    renderer = DraftRenderer()
    with pytest.raises(DraftError, match="delivery_date"):
        renderer.render("represent_delivered", "en", {**FULL_CONTEXT, "delivery_date": None})


def test_values_from_mail_are_never_template_code() -> None:
    body = DraftRenderer().render("request_withdrawal", "en", {**FULL_CONTEXT, "buyer_name": "{{ 7*7 }}"})
    assert "{{ 7*7 }}" in body and "49" not in body


def test_user_templates_dir_overrides_single_files(tmp_path: Path) -> None:
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "represent_misuse.txt.j2").write_text("Ours: {{ order_id }}\n", encoding="utf-8")
    renderer = DraftRenderer(tmp_path)
    assert renderer.render("represent_misuse", "en", FULL_CONTEXT) == "Ours: 113-4410276-3381902\n"
    assert "Ours" not in renderer.render("represent_size", "en", FULL_CONTEXT)  # the rest stays bundled


def test_draft_language_falls_back_to_english() -> None:
    renderer = DraftRenderer()
    assert renderer.language_for("represent_size", "ja") == "en"
    assert renderer.language_for("represent_size", None) == "en"


@pytest.mark.parametrize(
    ("original", "expected"),
    [
        ("Claim received on order 111-1111111-1111111", "Re: Claim received on order 111-1111111-1111111"),
        ("Re: Inquiry from Amazon customer Jane", "Re: Inquiry from Amazon customer Jane"),
        ("RE: Re: re:Inquiry", "Re: Inquiry"),
        ("AW: Antwort: Frage", "Re: Antwort: Frage"),
        ("Aw: WG: Frage", "Re: Frage"),
        ("Fwd: Re[2]: x", "Re: x"),
        ("R: Richiesta", "Re: Richiesta"),
        ("TR: Réf. commande", "Re: Réf. commande"),
        ("", "Re: "),
    ],
)
def test_reply_subject_never_doubles_the_prefix(original: str, expected: str) -> None:
    assert reply_subject(original) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Inquiry {{ 7*7 }}", "Inquiry {{ 7*7 }}"),
        ("a\r\nBcc: x@evil.test", "a Bcc: x@evil.test"),
        ("=?utf-8?q?Hi=0D=0ABcc=3A_x=40evil.test?=", "Hi Bcc: x@evil.test"),
        ("=?utf-8?b?PT91dGYtOD9xP2E9MEQ9MEFCY2M6X3hAZXZpbC50ZXN0Pz0=?=", "a Bcc: x@evil.test"),  # encoded twice
        ("plain =?bogus", "plain = ?bogus"),
    ],
)
def test_header_text_from_mail_is_one_inert_line(value: str, expected: str) -> None:
    assert header_text(value) == expected


def test_greeting_name_only_for_plain_names() -> None:
    assert greeting_name("José R.") == "José R."
    assert greeting_name("Anne-Marie O'Brien") == "Anne-Marie O'Brien"
    for bad in (
        "Jane\r\nBcc: x@evil.test",
        "=?utf-8?q?Mallory=0D=0ABcc=3A_x=40evil=2Etest?=",
        "{{ 7*7 }}",
        "x" * 61,
        "",
        None,
        "visit https://evil.test",
    ):
        assert greeting_name(bad) is None


def test_safe_message_id() -> None:
    assert safe_message_id("<0100019b@email.amazonses.com>") == "<0100019b@email.amazonses.com>"
    for bad in ("<a\r\nBcc: x@y>", "<=?utf-8?q?a=0D=0ABcc=3A_x?=@x>", "no-brackets@x", "<a b@x>", None, "<>"):
        assert safe_message_id(bad) is None


def request(**changes: Any) -> DraftRequest:
    values: dict[str, Any] = {
        "order_id": "113-4410276-3381902",
        "strategy": "represent_delivered",
        "language": "en",
        "recipient": "atoz-guarantee-reply+Kd83hQpZ2w@amazon.com",
        "parent_subject": "Claim received on order 113-4410276-3381902",
        "parent_message_id": "<parent@email.amazonses.com>",
        "parent_references": ("<root@x.example>",),
        "context": {},
    }
    values.update(changes)
    return DraftRequest(**values)


def parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)


def test_build_message_headers() -> None:
    rendered = build_message(
        request(), "Grüße aus dem Lager\n", from_address=SELLER, store_name="Harbor Goods", now=NOW
    )
    message = parse(rendered.raw)
    assert message["From"] == "Harbor Goods <claims@harbor-goods.example>"
    assert message["To"] == "atoz-guarantee-reply+Kd83hQpZ2w@amazon.com"
    assert message["Subject"] == "Re: Claim received on order 113-4410276-3381902"
    assert message["In-Reply-To"] == "<parent@email.amazonses.com>"
    assert message["References"] == "<root@x.example> <parent@email.amazonses.com>"
    assert message["Message-ID"] == rendered.message_id and rendered.message_id.endswith("@harbor-goods.example>")
    assert message["X-Pipeline-Claim"] == "113-4410276-3381902"
    assert message["X-Pipeline-Strategy"] == "represent_delivered"
    assert message.get_content_type() == "text/plain" and message.get_content_charset() == "utf-8"
    assert message.get_content().replace("\r\n", "\n") == "Grüße aus dem Lager\n"
    assert f"\r\nMessage-ID: {rendered.message_id}\r\n".encode() in rendered.raw  # one line, never folded
    assert rendered.body_sha256 == fingerprint(rendered.raw)
    other = build_message(request(), "x\n", from_address=SELLER, store_name="Harbor Goods", now=NOW)
    assert other.message_id != rendered.message_id


def test_no_recipient_no_to_header() -> None:
    message = parse(build_message(request(recipient=None), "x\n", from_address=SELLER, store_name="S", now=NOW).raw)
    assert "To" not in message


@pytest.mark.parametrize(
    "changes",
    [
        {"parent_subject": "=?utf-8?q?Hi=0D=0ABcc=3A_x=40evil.test?="},
        {"parent_subject": "x\r\nBcc: x@evil.test"},
        {"parent_message_id": "<=?utf-8?q?a=0D=0ABcc=3A_x=40e?=@x>"},
        {"parent_references": ("<=?utf-8?q?b=0D=0ACc=3A_x=40e?=@x>", "<ok@x>")},
        {"parent_message_id": "<a@x>\r\nBcc: x@evil.test"},
    ],
)
def test_text_from_mail_never_adds_a_header(changes: dict[str, Any]) -> None:
    rendered = build_message(request(**changes), "x\n", from_address=SELLER, store_name="Harbor Goods", now=NOW)
    message = parse(rendered.raw)
    assert {k.lower() for k in message} <= {
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "in-reply-to",
        "references",
        "x-pipeline-claim",
        "x-pipeline-strategy",
        "content-type",
        "content-transfer-encoding",
        "mime-version",
    }
    for name in ("Bcc", "Cc"):
        assert name not in message
    assert b"\nBcc" not in rendered.raw and b"\nCc:" not in rendered.raw
    assert len(message.get_all("To")) == 1


@pytest.mark.parametrize(
    "recipient",
    [
        "=?utf-8?q?a=0D=0ABcc=3A_x?=@evil.test",
        "a@b.test, c@evil.test",
        "Name <a@b.test>",
        "a@b.test\r\nBcc: c@evil.test",
        "not-an-address",
    ],
)
def test_a_recipient_that_is_not_one_plain_address_fails_the_draft(recipient: str) -> None:
    with pytest.raises(DraftError, match="not a plain email address"):
        build_message(request(recipient=recipient), "x\n", from_address=SELLER, store_name="S", now=NOW)


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        ("en", "November 3, 2026"),
        ("de", "3. November 2026"),
        ("fr", "3 novembre 2026"),
        ("it", "3 novembre 2026"),
        ("es", "3 de noviembre de 2026"),
    ],
)
def test_dates_are_written_the_languages_way(language: str, expected: str) -> None:
    assert format_date(date(2026, 11, 3), language) == expected
    assert format_date(None, language) is None


# --- against Dovecot: every drafting row of the playbook -----------------------------------------------------

# order, strategy, recipient (None: no To), subject, file answered, language, words the body holds. Answers
# to Amazon are pasted into Seller Central: no To, a "Respond to Amazon" subject, where to paste on top.
SC = "=== Answer in Seller Central: paste the text below the line ==="
DRAFT_ROWS = [
    (
        "113-4410276-3381902",
        "answer_delivered",
        "g7r1a4c9e2x5k8w@marketplace.amazon.com",
        "Re: Inquiry from Amazon customer Grace (Order: 113-4410276-3381902)",
        "represent_delivered__buyer_not_arrived.eml",
        "en",
        ["Dear Grace,", "1Z4V82W80312457006", "November 3, 2026", "https://www.ups.com/track?tracknum="],
    ),
    (
        "113-4410276-3381902",
        "represent_delivered",
        None,
        "Respond to Amazon: 113-4410276-3381902",
        "represent_delivered__claim_not_received.eml",
        "en",
        [
            SC,
            "https://sellercentral.amazon.com > Performance > A-to-z Guarantee Claims",
            "1Z4V82W80312457006",
            "November 3, 2026",
        ],
    ),
    (
        "114-2093381-5520417",
        "offer_refund_or_resend",
        "h2e5n8r1y4q7w0z@marketplace.amazon.com",
        "Re: Inquiry from Amazon customer Henry (Order: 114-2093381-5520417)",
        "offer_refund_or_resend__buyer_not_arrived.eml",
        "en",
        ["Dear Henry,"],
    ),
    (
        "302-5518820-4471963",
        "answer_size",
        "j4o7n0a3s6q9w2e@marketplace.amazon.de",
        "Re: Anfrage von Amazon-Kunde Jonas (Bestellung: 302-5518820-4471963)",
        "represent_size__kaeufer_zu_klein_amazon_de.eml",
        "de",
        ["Guten Tag Jonas,", "Größentabelle"],
    ),
    (
        "302-5518820-4471963",
        "represent_size",
        None,
        "Amazon antworten: 302-5518820-4471963",
        "represent_size__antrag_groesse_amazon_de.eml",
        "de",
        ["=== Antwort in Seller Central", "https://sellercentral.amazon.de", "amazon.de"],
    ),
    (
        "111-7730915-2264408",
        "persuade_withdraw_damaged",
        "o1l4i7v0i3a6k9m@marketplace.amazon.com",
        "Re: Inquiry from Amazon customer Olivia (Order: 111-7730915-2264408)",
        "persuade_withdraw_damaged__buyer_arrived_broken.eml",
        "en",
        ["Dear Olivia,", "withdraw"],
    ),
    (
        "112-3381046-9917725",
        "answer_after_use",
        "e3t6h9a2n5q8w1r@marketplace.amazon.com",
        "Re: Inquiry from Amazon customer Ethan (Order: 112-3381046-9917725)",
        "represent_misuse__buyer_broke_after_use.eml",
        "en",
        ["Dear Ethan,", "[GOODWILL OFFER:"],
    ),
    (
        "112-3381046-9917725",
        "represent_misuse",
        None,
        "Respond to Amazon: 112-3381046-9917725",
        "represent_misuse__claim_damaged_after_use.eml",
        "en",
        [SC],
    ),
    (
        "113-8820461-1175320",
        "request_withdrawal",
        "k3m9x2q7v1w8abc@marketplace.amazon.com",
        "Re: Inquiry from Amazon customer Maria (Order: 113-8820461-1175320)",
        "request_withdrawal__buyer_found_parcel.eml",
        "en",
        ["Dear Maria,", "Your Orders", "Withdraw claim"],
    ),
    (
        "111-2274019-6605318",
        "request_withdrawal",
        "r5t8y2u4i6o9buy@marketplace.amazon.com",
        "Re: Inquiry from Amazon customer Priya (Order: 111-2274019-6605318)",
        "will_withdraw__buyer_will_withdraw.eml",
        "en",
        ["Dear Priya,", "Withdraw claim"],
    ),
    (
        "111-3346720-5508813",
        "answer_size",
        "r7u0b3y6q9w2e5t@marketplace.amazon.com",
        "Re: Inquiry from Amazon customer Ruby (Order: 111-3346720-5508813)",
        "info_request__buyer_too_big.eml",
        "en",
        ["Dear Ruby,", "size chart"],
    ),
    (
        "111-3346720-5508813",
        "represent_size",
        None,
        "Respond to Amazon: 111-3346720-5508813",
        "info_request__amazon_more_information_48h.eml",
        "en",
        [SC, "As requested"],
    ),
    (
        "114-1185530-7762094",
        "persuade_withdraw_damaged",
        "l9e2o5q8w1e4r7t@marketplace.amazon.com",
        "Re: Inquiry from Amazon customer Leo (Order: 114-1185530-7762094)",
        "untrusted__buyer_arrived_dented.eml",
        "en",
        [],
    ),
]
SIGN_OFF = {
    "en": "Kind regards,",
    "de": "Mit freundlichen Grüßen",
    "fr": "Cordialement,",
    "it": "Cordiali saluti,",
    "es": "Atentamente,",
}
NO_DRAFT = [
    "114-6602918-3357140",
    "111-5502384-7719026",
    "112-9920475-6630184",
    "113-0045712-8893326",
    "114-7720351-0064429",
    "112-6610394-2287105",
    "113-9902214-4410583",
]


def parent_of(name: str) -> email.message.EmailMessage:
    return parse((PLAYBOOK_DATA / name).read_bytes())


@pytest.fixture(scope="module")
def world_drafts(playbook_world: DeskEnv) -> list[DeskMail]:
    return playbook_world.drafts()


@pytest.mark.parametrize(
    ("order", "strategy", "recipient", "subject", "parent", "language", "words"),
    DRAFT_ROWS,
    ids=[f"{row[1]}-{row[0]}" for row in DRAFT_ROWS],
)
def test_each_drafting_row_has_one_right_draft(
    world_drafts: list[DeskMail],
    order: str,
    strategy: str,
    recipient: str | None,
    subject: str,
    parent: str,
    language: str,
    words: list[str],
) -> None:
    [draft] = [d for d in world_drafts if d["X-Pipeline-Claim"] == order and d["X-Pipeline-Strategy"] == strategy]
    assert draft["To"] == recipient
    assert draft["From"] == "Harbor Goods <claims@harbor-goods.example>"
    assert draft["Subject"] == subject and "Re: Re:" not in draft["Subject"]
    answered = parent_of(parent)
    assert draft["In-Reply-To"] == answered["Message-ID"]
    assert draft["References"].split()[-1] == answered["Message-ID"]
    assert draft["Message-ID"] != answered["Message-ID"] and draft["Message-ID"].endswith("@harbor-goods.example>")
    assert {b"\\Draft", b"\\Seen"} <= set(draft.flags)
    assert draft.message.get_content_type() == "text/plain" and draft.message.get_content_charset() == "utf-8"
    body = draft.body
    assert order in body
    assert SIGN_OFF[language] in body
    assert "Harbor Goods" in body
    for word in words:
        assert word in body
    assert "{{" not in body


def test_message_ids_of_drafts_are_fresh(world_drafts: list[DeskMail]) -> None:
    ids = [d["Message-ID"] for d in world_drafts]
    assert len(ids) == len(set(ids)) == len(DRAFT_ROWS)
    inbox = {parse((PLAYBOOK_DATA / name).read_bytes())["Message-ID"] for name in PLAYBOOK_DATA.glob("*.eml")}
    assert not inbox & set(ids)


@pytest.mark.parametrize("order", NO_DRAFT)
def test_rows_without_a_draft_have_none(world_drafts: list[DeskMail], order: str) -> None:
    assert not [d for d in world_drafts if d["X-Pipeline-Claim"] == order]


def test_german_claim_gets_a_german_draft(world_drafts: list[DeskMail], playbook_world: DeskEnv) -> None:
    drafts = [d for d in world_drafts if d["X-Pipeline-Claim"] == "302-5518820-4471963"]
    assert len(drafts) == 2 and all("Mit freundlichen Grüßen" in d.body for d in drafts)
    assert playbook_world.claim("302-5518820-4471963")["language"] == "de"
    assert "(de)" in playbook_world.show("302-5518820-4471963")


def test_thread_references_puts_each_draft_under_its_parent(
    playbook_world: DeskEnv, world_drafts: list[DeskMail]
) -> None:
    parents = {(row[0], row[1]): parent_of(row[4])["Message-ID"] for row in DRAFT_ROWS}
    with playbook_world.imap() as client:
        folder = "ThreadCheck"
        client.create_folder(folder)
        try:
            client.select_folder("INBOX")
            client.copy(client.search(["ALL"]), folder)  # the messages answered, with the rest of the inbox
            client.select_folder("Drafts")
            client.copy(client.search(["ALL"]), folder)
            client.select_folder(folder, readonly=True)
            ids = {
                uid: data[b"BODY[HEADER.FIELDS (MESSAGE-ID X-PIPELINE-CLAIM)]"]
                for uid, data in client.fetch(
                    client.search(["ALL"]), [b"BODY.PEEK[HEADER.FIELDS (MESSAGE-ID X-PIPELINE-CLAIM)]"]
                ).items()
            }
            threads = client.thread(algorithm="REFERENCES")
        finally:
            client.close_folder()
            client.delete_folder(folder)

    def flat(node: Any) -> list[int]:
        return [node] if isinstance(node, int) else [uid for child in node for uid in flat(child)]

    by_mid = {re.search(rb"<[^>]+>", header).group(0).decode(): uid for uid, header in ids.items()}
    thread_of = {uid: i for i, thread in enumerate(threads) for uid in flat(thread)}
    for draft in world_drafts:
        key = (draft["X-Pipeline-Claim"], draft["X-Pipeline-Strategy"])
        assert thread_of[by_mid[draft["Message-ID"]]] == thread_of[by_mid[parents[key]]], key


def test_running_again_adds_no_draft(playbook_world: DeskEnv, world_drafts: list[DeskMail]) -> None:
    before = [(d["Message-ID"], d.uid) for d in world_drafts]
    claims = playbook_world.claims()
    playbook_world.poll()
    result = playbook_world.cli("orders", "import", str(PLAYBOOK_DATA / "shipments.csv"))
    assert result.output.splitlines()[-1] == "0 added, 0 updated, 1 unchanged, 0 skipped"
    playbook_world.poll()
    assert [(d["Message-ID"], d.uid) for d in playbook_world.drafts()] == before
    assert playbook_world.claims() == claims


# --- against Dovecot: changes, edits, sent replies ------------------------------------------------------------

OFFER_ORDER = "114-2093381-5520417"
OFFER_BUYER = "offer_refund_or_resend__buyer_not_arrived.eml"
OFFER_CLAIM = "offer_refund_or_resend__claim_not_received_no_tracking.eml"
DELIVERED_CSV = (
    "order_id,carrier,tracking_number,ship_date,delivered_date\n"
    f"{OFFER_ORDER},USPS,9400111899223854712068,2026-10-30,2026-11-04\n"
)


def events(env: DeskEnv, order: str, kind: str) -> list[dict[str, Any]]:
    return [e for e in env.timeline(order)["events"] if e["kind"] == kind]


def offer_then_delivered(env: DeskEnv, between: Any = None) -> None:
    """A claim drafted as offer_refund_or_resend, then (after `between`) moved to represent_delivered."""
    env.append(OFFER_BUYER)
    env.append(OFFER_CLAIM)
    env.poll(clock=NOW)
    assert [d["X-Pipeline-Strategy"] for d in env.drafts(OFFER_ORDER)] == ["offer_refund_or_resend"]
    if between is not None:
        between()
    csv = env.workdir / "delivered.csv"
    csv.write_text(DELIVERED_CSV, encoding="utf-8")
    env.cli("orders", "import", str(csv))
    env.poll(clock=NOW + timedelta(hours=1))
    assert env.claim(OFFER_ORDER)["strategy"] == "represent_delivered"


def test_strategy_change_replaces_the_untouched_draft(desk_env: DeskEnv) -> None:
    offer_then_delivered(desk_env)
    answer, draft = desk_env.drafts(OFFER_ORDER)
    assert (answer["X-Pipeline-Strategy"], draft["X-Pipeline-Strategy"]) == ("answer_delivered", "represent_delivered")
    assert draft["To"] is None and draft["Subject"] == f"Respond to Amazon: {OFFER_ORDER}"
    assert "9400111899223854712068" in draft.body and "November 4, 2026" in draft.body
    assert [e["rule"] for e in events(desk_env, OFFER_ORDER, "draft_replaced")] == ["draft_replaced"]
    statuses = [(d["strategy"], d["status"]) for d in desk_env.timeline(OFFER_ORDER)["drafts"]]
    assert statuses == [
        ("offer_refund_or_resend", "replaced"),
        ("answer_delivered", "written"),
        ("represent_delivered", "written"),
    ]


def take_draft(client: Any) -> bytes:
    """Remove our draft of OFFER_ORDER from Drafts, as a mail client does before saving or sending it; its bytes."""
    client.select_folder("Drafts")
    [uid] = client.search(["HEADER", "X-Pipeline-Claim", OFFER_ORDER])
    raw = client.fetch([uid], [b"BODY.PEEK[]"])[uid][b"BODY[]"]
    client.delete_messages([uid])
    client.expunge()
    return raw


def edit_draft(env: DeskEnv, *, keep_message_id: bool) -> None:
    """What a mail client does when a person edits a draft: the old copy goes, an edited one is saved."""
    with env.imap() as client:
        raw = take_draft(client)
        message = parse(raw)
        edited = email.message.EmailMessage()
        for name in ("From", "Subject", "In-Reply-To", "References", "X-Pipeline-Claim", "X-Pipeline-Strategy"):
            edited[name] = message[name]
        edited["Message-ID"] = message["Message-ID"] if keep_message_id else "<edited-1@client.example>"
        edited.set_content(message.get_content() + "\nP.S. We have already sent a replacement.\n")
        client.append("Drafts", edited.as_bytes(), flags=[b"\\Draft", b"\\Seen"])


@pytest.mark.parametrize("keep_message_id", [False, True], ids=["new-message-id", "same-message-id"])
def test_an_edited_draft_is_kept_and_recorded(desk_env: DeskEnv, keep_message_id: bool) -> None:
    offer_then_delivered(desk_env, lambda: edit_draft(desk_env, keep_message_id=keep_message_id))
    drafts = desk_env.drafts(OFFER_ORDER)
    assert sorted(d["X-Pipeline-Strategy"] for d in drafts) == [
        "answer_delivered",
        "offer_refund_or_resend",
        "represent_delivered",
    ]
    edited = next(d for d in drafts if d["X-Pipeline-Strategy"] == "offer_refund_or_resend")
    assert "P.S. We have already sent a replacement." in edited.body
    assert len(events(desk_env, OFFER_ORDER, "draft_edited")) == 1
    assert not events(desk_env, OFFER_ORDER, "draft_replaced")
    assert "draft_edited" in desk_env.show(OFFER_ORDER)


def attach_to_draft(env: DeskEnv) -> None:
    """A person adds a Cc and the size chart, text untouched; the client re-saves under the same Message-ID."""
    with env.imap() as client:
        message = parse(take_draft(client))
        message["Cc"] = "partner@harbor-goods.example"
        message.add_attachment(b"\x89PNG\r\n\x1a\n", maintype="image", subtype="png", filename="size-chart.png")
        client.append("Drafts", message.as_bytes(), flags=[b"\\Draft", b"\\Seen"])


def test_a_draft_with_an_attachment_added_is_not_untouched(desk_env: DeskEnv) -> None:
    offer_then_delivered(desk_env, lambda: attach_to_draft(desk_env))
    drafts = desk_env.drafts(OFFER_ORDER)
    assert sorted(d["X-Pipeline-Strategy"] for d in drafts) == [
        "answer_delivered",
        "offer_refund_or_resend",
        "represent_delivered",
    ]
    assert len(events(desk_env, OFFER_ORDER, "draft_edited")) == 1
    assert not events(desk_env, OFFER_ORDER, "draft_replaced")


def test_a_removed_draft_is_noticed_on_the_next_poll(desk_env: DeskEnv) -> None:
    desk_env.append(OFFER_BUYER)
    desk_env.append(OFFER_CLAIM)
    desk_env.poll(clock=NOW)
    edit_draft(desk_env, keep_message_id=False)
    desk_env.poll(clock=NOW + timedelta(minutes=5))
    assert len(events(desk_env, OFFER_ORDER, "draft_edited")) == 1
    desk_env.poll(clock=NOW + timedelta(minutes=10))  # recorded once
    assert len(events(desk_env, OFFER_ORDER, "draft_edited")) == 1


def send_draft(env: DeskEnv) -> None:
    """What a mail client does on Send: the draft leaves Drafts, a copy (our headers kept) lands in Sent."""
    with env.imap() as client:
        raw = take_draft(client)
        sent = raw.replace(b"Message-ID: <", b"Message-ID: <sent-", 1)
        client.append("Sent", sent, flags=[b"\\Seen"])


def test_a_sent_reply_is_recorded(desk_env: DeskEnv) -> None:
    offer_then_delivered(desk_env, lambda: send_draft(desk_env))
    assert [e["rule"] for e in events(desk_env, OFFER_ORDER, "reply_sent")] == ["reply_sent"]
    assert not events(desk_env, OFFER_ORDER, "draft_edited")
    assert [d["X-Pipeline-Strategy"] for d in desk_env.drafts(OFFER_ORDER)] == [
        "answer_delivered",
        "represent_delivered",
    ]
    statuses = {d["strategy"]: d["status"] for d in desk_env.timeline(OFFER_ORDER)["drafts"]}
    assert statuses == {
        "offer_refund_or_resend": "sent",
        "answer_delivered": "written",
        "represent_delivered": "written",
    }


def test_a_reply_in_sent_is_found_by_in_reply_to(desk_env: DeskEnv) -> None:
    desk_env.append(OFFER_BUYER)
    desk_env.append(OFFER_CLAIM)
    desk_env.poll(clock=NOW)
    with desk_env.imap() as client:  # a client that drops our own headers but keeps the threading
        message = parse(take_draft(client))
        sent = email.message.EmailMessage()
        for name in ("From", "Subject", "In-Reply-To", "References"):
            sent[name] = message[name]
        sent["Message-ID"] = "<sent-2@client.example>"
        sent.set_content(message.get_content())
        client.append("Sent", sent.as_bytes(), flags=[b"\\Seen"])
    desk_env.poll(clock=NOW + timedelta(minutes=5))
    assert len(events(desk_env, OFFER_ORDER, "reply_sent")) == 1


# --- against Dovecot: clean drafts from hostile mail, missing values, templates, folders -------------------------

INJECTION_ORDER = "114-3302618-5570281"


def test_buyer_name_and_subject_from_mail_make_a_clean_draft(desk_env: DeskEnv) -> None:
    desk_env.append("injection__buyer_not_arrived.eml")
    desk_env.append("injection__claim_not_received.eml")
    desk_env.append("injection__buyer_name_bcc_subject_template.eml")
    desk_env.poll(clock=NOW)
    [draft] = desk_env.drafts(INJECTION_ORDER)
    assert draft["X-Pipeline-Strategy"] == "request_withdrawal"
    assert "Bcc" not in draft.message and "Cc" not in draft.message
    assert draft.message.get_all("To") == ["m1a2l3l4o5r6buy@marketplace.amazon.com"]
    header_lines = re.split(rb"\r?\n\r?\n", draft.raw, maxsplit=1)[0].splitlines()
    assert not [line for line in header_lines if line.lower().startswith((b"bcc", b"cc"))]
    assert "{{ 7*7 }}" in draft["Subject"] and "49" not in draft["Subject"]
    assert draft["Subject"].startswith("Re: Inquiry from Amazon customer {{ 7*7 }}")
    assert draft.body.startswith("Dear Mallory,")  # the hostile "name" is no name: the earlier, clean one
    assert "evil.test" not in draft.body and "49" not in draft.body


MISSING_ORDER = "113-7765012-0093351"


def test_a_missing_template_value_fails_the_draft_and_flags_the_claim(desk_env: DeskEnv) -> None:
    # the buyer's own words say tracking shows delivered, but give no date: represent_delivered needs one
    desk_env.append("missing_delivery_date__buyer_says_delivered.eml")
    desk_env.append("missing_delivery_date__claim_tracking_shows_delivered.eml")
    desk_env.poll(clock=NOW)
    claim = desk_env.claim(MISSING_ORDER)
    assert claim["strategy"] == "represent_delivered"
    assert claim["flagged"] is True and "delivery_date" in claim["flag_reason"]
    # the answer to the buyer needs no date and is written; the representation is not
    assert [d["X-Pipeline-Strategy"] for d in desk_env.drafts(MISSING_ORDER)] == ["answer_delivered"]
    [failed] = [d for d in desk_env.timeline(MISSING_ORDER)["drafts"] if d["strategy"] == "represent_delivered"]
    assert failed["status"] == "failed" and "delivery_date" in failed["error"]
    assert [e["kind"] for e in events(desk_env, MISSING_ORDER, "draft_failed")] == ["draft_failed"]

    # a later message replays the claim: it stays flagged, and the draft is not tried again for nothing
    question = desk_env.eml("relay_link__buyer_where_is_it.eml").replace(b"114-8845120-3390276", MISSING_ORDER.encode())
    desk_env.append(question)
    desk_env.poll(clock=NOW + timedelta(hours=1))
    claim = desk_env.claim(MISSING_ORDER)
    assert claim["flagged"] is True and "delivery_date" in claim["flag_reason"]
    assert len(events(desk_env, MISSING_ORDER, "draft_failed")) == 1

    # the delivery date arrives with the seller's shipment records: the draft is written, the flag goes
    csv = desk_env.workdir / "shipments.csv"
    csv.write_text(
        f"order_id,carrier,tracking_number,ship_date,delivered_date\n"
        f"{MISSING_ORDER},UPS,1ZA8E5960348210005,2026-10-30,2026-11-05\n",
        encoding="utf-8",
    )
    desk_env.cli("orders", "import", str(csv))
    desk_env.poll(clock=NOW + timedelta(hours=2))
    [draft] = [d for d in desk_env.drafts(MISSING_ORDER) if d["X-Pipeline-Strategy"] == "represent_delivered"]
    assert "November 5, 2026" in draft.body and "1ZA8E5960348210005" in draft.body
    assert desk_env.claim(MISSING_ORDER)["flagged"] is False


def test_users_templates_dir_is_used_for_the_file_it_overrides(make_desk_env, tmp_path: Path) -> None:
    own = tmp_path / "my-templates" / "en"
    own.mkdir(parents=True)
    (own / "represent_misuse.txt.j2").write_text(
        "Hello A-to-z team,\n\nOur own words about order {{ order_id }}.\n\n{{ store_name }}\n", encoding="utf-8"
    )
    env = make_desk_env(drafts={"templates_dir": str(tmp_path / "my-templates")})
    for name in (
        "represent_misuse__buyer_broke_after_use.eml",
        "represent_misuse__claim_damaged_after_use.eml",
        OFFER_BUYER,
        OFFER_CLAIM,
    ):
        env.append(name)
    env.poll(clock=NOW)
    [misuse] = [d for d in env.drafts("112-3381046-9917725") if d["X-Pipeline-Strategy"] == "represent_misuse"]
    assert misuse.body.endswith(
        "Hello A-to-z team,\n\nOur own words about order 112-3381046-9917725.\n\nHarbor Goods\n"
    )
    [offer] = env.drafts(OFFER_ORDER)
    assert "Kind regards," in offer.body  # not overridden: the bundled template


def test_configured_drafts_folder_with_a_non_ascii_name(make_desk_env) -> None:
    env = make_desk_env(imap={"drafts": "Entwürfe"})
    with env.imap() as client:
        client.create_folder("Entwürfe")  # sent as modified UTF-7: Entw&APw-rfe
        assert "Entwürfe" in {name for _flags, _delim, name in client.list_folders()}
    env.append(OFFER_BUYER)
    env.append(OFFER_CLAIM)
    env.poll(clock=NOW)
    assert [d["X-Pipeline-Claim"] for d in env.drafts(folder="Entwürfe")] == [OFFER_ORDER]
    assert env.drafts(folder="Drafts") == []
    env.poll(clock=NOW + timedelta(minutes=1))
    assert len(env.drafts(folder="Entwürfe")) == 1


def test_a_missing_configured_drafts_folder_is_a_clear_error(make_desk_env) -> None:
    env = make_desk_env(imap={"drafts": "Brouillons"})
    env.append("represent_misuse__buyer_broke_after_use.eml")
    env.append("represent_misuse__claim_damaged_after_use.eml")
    env.now = NOW  # the claim's deadline is still ahead: a draft is wanted
    result = env.cli("poll", "--once", expect=None)
    assert result.exit_code != 0
    assert "folder 'Brouillons' does not exist" in result.output
    assert "Traceback" not in result.output
    # the mail itself was taken in and understood; the draft waits for the folder
    assert env.claim("112-3381046-9917725")["strategy"] == "represent_misuse"
    with env.imap() as client:
        client.create_folder("Brouillons")
    env.poll()
    assert [d["X-Pipeline-Claim"] for d in env.drafts(folder="Brouillons")] == ["112-3381046-9917725"] * 2
    assert env.drafts(folder="Drafts") == []


def set_draft_status(env: DeskEnv, order: str, status: str) -> None:
    from sqlalchemy import select

    from pipeline.schema import Claim, Draft
    from pipeline.store import Store

    store = Store(env.settings.database.url)
    try:
        with store.session() as session:
            claim_id = session.scalar(select(Claim.id).where(Claim.order_id == order))
            for draft in session.scalars(select(Draft).where(Draft.claim_id == claim_id)):
                draft.status = status
    finally:
        store.dispose()


DAMAGED_ORDER = "111-7730915-2264408"
DAMAGED_STORY = (
    "persuade_withdraw_damaged__buyer_arrived_broken.eml",
    "persuade_withdraw_damaged__claim_damaged_on_arrival.eml",
)


def test_a_crash_after_the_append_does_not_double_the_draft(desk_env: DeskEnv) -> None:
    for name in DAMAGED_STORY:
        desk_env.append(name)
    desk_env.poll(clock=NOW)
    [first] = desk_env.drafts(DAMAGED_ORDER)
    # the APPEND went through, but the run died before recording it: the draft is still "wanted"
    set_draft_status(desk_env, DAMAGED_ORDER, "wanted")
    desk_env.poll(clock=NOW + timedelta(minutes=1))
    assert [(d.uid, d["Message-ID"]) for d in desk_env.drafts(DAMAGED_ORDER)] == [(first.uid, first["Message-ID"])]
    assert [
        row["status"]
        for row in desk_env.timeline(DAMAGED_ORDER)["drafts"]
        if row["strategy"] == "persuade_withdraw_damaged"
    ] == ["written"]


def test_a_crash_before_the_append_writes_the_draft_once(desk_env: DeskEnv) -> None:
    for name in DAMAGED_STORY:
        desk_env.append(name)
    desk_env.poll(clock=NOW)
    [first] = desk_env.drafts(DAMAGED_ORDER)
    with desk_env.imap() as client:  # as if the APPEND never happened
        client.select_folder("Drafts")
        client.delete_messages([first.uid])
        client.expunge()
    set_draft_status(desk_env, DAMAGED_ORDER, "wanted")
    desk_env.poll(clock=NOW + timedelta(minutes=1))
    [again] = desk_env.drafts(DAMAGED_ORDER)
    assert again["Message-ID"] == first["Message-ID"] and again.body == first.body


def test_an_info_request_replaces_the_untouched_representation(desk_env: DeskEnv) -> None:
    desk_env.append("info_request__buyer_too_big.eml")
    desk_env.append("info_request__claim_size.eml")
    desk_env.poll(clock=datetime(2026, 11, 9, 15, tzinfo=UTC))
    answer, first = desk_env.drafts("111-3346720-5508813")
    assert (answer["X-Pipeline-Strategy"], first["X-Pipeline-Strategy"]) == ("answer_size", "represent_size")
    assert first["To"] is None and first["Subject"] == "Respond to Amazon: 111-3346720-5508813"
    desk_env.append("info_request__amazon_more_information_48h.eml")
    desk_env.poll(clock=datetime(2026, 11, 10, 20, tzinfo=UTC))
    kept, draft = desk_env.drafts("111-3346720-5508813")
    assert kept["Message-ID"] == answer["Message-ID"]  # the answer to the buyer stays
    info = parent_of("info_request__amazon_more_information_48h.eml")
    assert draft["To"] is None and draft["In-Reply-To"] == info["Message-ID"]
    assert draft["Subject"] == "Respond to Amazon: 111-3346720-5508813"
    assert draft["Message-ID"] != first["Message-ID"]
    assert "As requested, here is the information" in draft.body
    assert "As requested" not in first.body
    claim = desk_env.claim("111-3346720-5508813")
    assert claim["flagged"] is True and claim["deadline_at"] == "2026-11-12T19:41:30Z"
    steps = [(d["step"], d["status"]) for d in desk_env.timeline("111-3346720-5508813")["drafts"]]
    assert steps == [("answer_size", "written"), ("represent_size", "replaced"), ("represent_size#info1", "written")]


def test_drafts_speak_the_marketplaces_language(desk_env: DeskEnv) -> None:
    # an English-speaking buyer on amazon.de wrote first; Amazon's notice comes in German: the drafts follow
    # the marketplace (the seller reviews the German text and may rewrite it)
    desk_env.append("buyer_language__buyer_writes_english_on_amazon_de.eml")
    desk_env.append("buyer_language__antrag_amazon_de.eml")
    desk_env.poll(clock=datetime(2026, 3, 6, tzinfo=UTC))
    claim = desk_env.claim("304-5561092-8837410")
    assert (claim["strategy"], claim["language"], claim["marketplace"]) == (
        "persuade_withdraw_damaged",
        "de",
        "amazon.de",
    )
    [draft] = desk_env.drafts("304-5561092-8837410")
    assert draft["To"] == "l1i2a3m4b5u6buy@marketplace.amazon.de"
    assert draft.body.startswith("Guten Tag Liam,") and "Mit freundlichen Grüßen" in draft.body
    assert draft["Subject"] == "Re: Anfrage von Amazon-Kunde Liam (Bestellung: 304-5561092-8837410)"


def test_long_message_ids_are_written_as_they_are() -> None:
    """SES Message-IDs are longer than a folded header line: folding would turn them into RFC 2047 encoded
    words, which no client reads as a reference (the draft would leave its thread)."""
    parent = "<01000197a1c2d3e4-7f3a1b20-8c4d-4e5f-9a6b-1c2d3e4f5a61-000000@email.amazonses.com>"
    earlier = "<0102019a38bd84ff-dc6fbbe7-4105-c6c8-73b5-7b0764575d73-000000@eu-west-1.amazonses.com>"
    rendered = build_message(
        request(parent_message_id=parent, parent_references=(earlier,)),
        "x\n",
        from_address=SELLER,
        store_name="S",
        now=NOW,
    )
    assert f"\r\nIn-Reply-To: {parent}\r\n".encode() in rendered.raw
    assert f"\r\nReferences: {earlier} {parent}\r\n".encode() in rendered.raw
    assert b"=?utf-8?" not in rendered.raw.split(b"\r\n\r\n")[0]
