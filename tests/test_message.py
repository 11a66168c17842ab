"""pipeline.message: MIME decoding, HTML to text, the buyer's words between Amazon's markers, quotes removed."""

from __future__ import annotations

from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path
from typing import Any

import pytest
from conftest import make_mail

from pipeline.errors import MessageError, PipelineError
from pipeline.message import (
    is_amazon_domain,
    marketplace_of,
    parse_message,
    sender_words,
    strip_quoted,
)


def mail(
    body: str,
    *,
    sender: str = "Jane - Amazon Marketplace <abc123@marketplace.amazon.com>",
    subject: str = "Inquiry from Amazon customer Jane (Order: 111-2233445-5566778)",
    **options: Any,
) -> bytes:
    """A one-part message as raw bytes."""
    return make_mail(
        body,
        sender=sender,
        subject=subject,
        date="Tue, 03 Mar 2026 10:12:00 +0000",
        message_id="<m1@example.com>",
        **options,
    )


def buyer_body(words: str, begin: str = "Begin message", end: str = "End message") -> str:
    return (
        f"Order ID 111-2233445-5566778:\n1 of Item\n\n------------- {begin} -------------\n\n{words}\n\n"
        f"------------- {end} -------------\n\nTo reply, reply to this e-mail."
    )


# --- malformed input --------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"", b"   \r\n  ", b"this is not an email at all", b"Subject: no sender\r\n\r\nbody"])
def test_malformed_message_raises_message_error(raw: bytes) -> None:
    with pytest.raises(MessageError):
        parse_message(raw)


def test_message_error_is_a_pipeline_error() -> None:
    assert issubclass(MessageError, PipelineError)


# --- body text --------------------------------------------------------------------------------------


def test_html_only_mail_becomes_text_with_table_cells_and_entities() -> None:
    html = (
        "<html><body><p>Hello,</p><table><tr><td>Claim amount</td><td>&#36;34.99</td></tr>"
        "<tr><td>Claim reason</td><td>Item not received</td></tr></table>"
        "<p>Tracking says it was delivered &amp; signed&nbsp;for.</p></body></html>"
    )
    parsed = parse_message(
        mail(
            html,
            subtype="html",
            sender="atoz-guarantee-no-reply@amazon.com",
            subject="Claim received on order 111-2233445-5566778",
        )
    )
    assert "Claim reason" in parsed.text and "Item not received" in parsed.text
    assert "$34.99" in parsed.text
    assert "delivered & signed for" in parsed.text
    assert "<td>" not in parsed.text


def test_plain_part_is_preferred_over_html() -> None:
    message = MIMEMultipart("alternative")
    message["From"] = "atoz-guarantee-no-reply@amazon.com"
    message["Subject"] = "Claim received"
    message.attach(MIMEText("plain words", "plain"))
    message.attach(MIMEText("<p>html words</p>", "html"))
    assert parse_message(message.as_bytes()).text == "plain words"


def test_iso_2022_jp_7bit_body_is_decoded() -> None:
    body = "注文したのは黒色なのですが、白色の商品が届きました。"
    raw = mail(
        buyer_body(body, "メッセージはここから", "メッセージはここまで"),
        charset="iso-2022-jp",
        sender="abc@marketplace.amazon.co.jp",
        subject="注文と違う色の商品が届きました",
    )
    parsed = parse_message(raw)
    assert body in parsed.text
    assert parsed.new_text == body
    assert parsed.subject == "注文と違う色の商品が届きました"


def test_latin1_body_and_rfc2047_subject_are_decoded() -> None:
    raw = mail(
        buyer_body("Die Größe passt nicht, bitte um Erstattung."),
        charset="iso-8859-1",
        sender="=?utf-8?q?J=C3=BCrgen?= <x@marketplace.amazon.de>",
        subject="Anfrage von Amazon-Kunde Jürgen (Bestellung: 303-2640718-5517293)",
        headers={},
    )
    parsed = parse_message(raw)
    assert "Größe passt nicht" in parsed.new_text
    assert parsed.subject == "Anfrage von Amazon-Kunde Jürgen (Bestellung: 303-2640718-5517293)"
    assert parsed.sender == "x@marketplace.amazon.de"


# --- the buyer's own words ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("begin", "end"),
    [
        ("Begin message", "End message"),
        ("Anfang der Nachricht", "Ende der Nachricht"),
        ("Début du message", "Fin du message"),
        ("Messaggio:", "Fine messaggio"),
        ("Inizio messaggio", "Fine messaggio"),
        ("Iniciar mensaje", "Finalizar mensaje"),
        ("メッセージはここから", "メッセージはここまで"),
    ],
)
def test_buyer_words_between_locale_markers(begin: str, end: str) -> None:
    words, had_markers = sender_words(buyer_body("The words of the buyer.", begin, end))
    assert had_markers
    assert words == "The words of the buyer."


def test_without_markers_the_whole_text_counts() -> None:
    assert sender_words("Just a note.") == ("Just a note.", False)


@pytest.mark.parametrize(
    "quote",
    [
        "On Tue, 3 Mar 2026 at 10:12, Acme Store <claims@example.com> wrote:\n> Sorry it arrived broken.",
        "-----Original Message-----\nFrom: Acme Store\nSent: Tuesday\nSorry it arrived broken.",
        "Am 03.03.2026 um 10:12 schrieb Acme Store:\n> Es tut uns leid, dass der Artikel kaputt ankam.",
        "Le mar. 3 mars 2026 à 10:12, Acme Store a écrit :\n> Désolés, l'article est arrivé cassé.",
        "Il giorno mar 3 mar 2026 alle 10:12 Acme Store ha scritto:\n> Ci dispiace, è arrivato rotto.",
        "El mar, 3 mar 2026 a las 10:12, Acme Store escribió:\n> Sentimos que llegara roto.",
        "2026年3月3日(火) 10:12 Acme Store <claims@example.com>:\n> 破損していたとのこと、申し訳ありません。",
    ],
)
def test_quoted_earlier_mail_is_removed(quote: str) -> None:
    assert strip_quoted(f"All good now, thanks!\n\n{quote}") == "All good now, thanks!"


def test_quoted_old_complaint_is_not_in_the_new_text() -> None:
    body = buyer_body(
        "All good now, the new one came in one piece.\n\n"
        "On Mon, 2 Mar 2026 at 09:00, Acme Store <claims@example.com> wrote:\n"
        "> So sorry it arrived broken, we will send a replacement (Royal Mail RR161433728GB)."
    )
    parsed = parse_message(mail(body))
    assert parsed.new_text == "All good now, the new one came in one piece."
    assert "broken" in parsed.text  # the full text keeps everything


# --- senders and marketplaces -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("domain", "amazon"),
    [
        ("amazon.com", True),
        ("marketplace.amazon.de", True),
        ("amazon.co.jp", True),
        ("amazon.fr.reclamations-vendeurs.com", False),
        ("amazon.com.example-secure.co", False),
        ("amaz0n-support.net", False),
        ("notamazon.com", False),
    ],
)
def test_amazon_domains(domain: str, amazon: bool) -> None:
    assert is_amazon_domain(domain) is amazon


def test_marketplace_from_header_else_sender_domain() -> None:
    with_header = parse_message(
        mail("x", sender="atoz-guarantee-no-reply@amazon.com", headers={"X-Marketplace-ID": "A1PA6795UKMFR9"})
    )
    assert marketplace_of(with_header) == "amazon.de"
    from_domain = parse_message(mail("x", sender="atoz-guarantee-no-reply@amazon.co.uk"))
    assert marketplace_of(from_domain) == "amazon.co.uk"
    spoof = parse_message(
        mail("x", sender="atoz@amazon.com.example-secure.co", headers={"X-Marketplace-ID": "ATVPDKIKX0DER"})
    )
    assert spoof.marketplace_id == "ATVPDKIKX0DER"
    assert is_amazon_domain(spoof.sender_domain) is False


def test_broken_mime_structure_is_an_error_not_a_guess() -> None:
    raw = (Path(__file__).parent / "data" / "poller" / "malformed_amazon.eml").read_bytes()
    with pytest.raises(MessageError, match="broken MIME structure"):
        parse_message(raw)
