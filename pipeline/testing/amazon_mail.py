"""Builds mail in the shapes Amazon really sends (tests/data/corpus/README.md), written in our own words, for tests and the demo.

What is real here is the *structure*: the header sets (`X-Space-Notification-Type`, `X-Marketplace-ID`, SES
Message-IDs, a Reply-To equal to the no-reply From, sometimes folded or empty), the HTML-only Seller Central
layout with its header block (`data-space-header`), footer block (`data-space-footer`: "report a problem" link,
help and preferences links, copyright, Amazon's legal address with its share capital) and `SPC-…` watermark,
and the buyer-message frame (a first line, `# <order>:`, the buyer's words between marker lines of 13 hyphens,
the "resolve case" / "report" links and the retention notice). The sentences are ours; where Amazon's wording in
a language is not known, the frame text is our guess (tests/data/corpus/README.md says which).

Callers write the part that differs between messages (the notice's own paragraphs, the buyer's words) and get
the finished RFC 5322 bytes back.
"""

from __future__ import annotations

import email.policy
import hashlib
import html
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from pipeline.marketplaces import is_amazon_domain
from pipeline.testing import dkim as test_key

__all__ = [
    "MARKETPLACES",
    "Marketplace",
    "buyer_message",
    "notice",
    "paragraphs",
    "ses_message_id",
    "table",
]


@dataclass(frozen=True)
class Marketplace:
    """One Amazon marketplace as its mail shows it."""

    domain: str  # amazon.it
    marketplace_id: str  # X-Marketplace-ID
    language: str
    ses_host: str  # the SES host of its Message-IDs
    ses_prefix: str  # how those Message-IDs begin
    watermark: str  # SPC-EUAmazon, SPC-USAmazon, SPC-JPAmazon

    @property
    def tld(self) -> str:
        """`it`, `co.uk`, …"""
        return self.domain.removeprefix("amazon.")

    @property
    def seller_central(self) -> str:
        """https://sellercentral.amazon.<tld>"""
        return f"https://sellercentral.{self.domain}"


MARKETPLACES = {
    "amazon.com": Marketplace("amazon.com", "ATVPDKIKX0DER", "en", "email.amazonses.com", "0100019", "SPC-USAmazon"),
    "amazon.ca": Marketplace("amazon.ca", "A2EUQ1WTGCTBG2", "en", "email.amazonses.com", "0100019", "SPC-USAmazon"),
    "amazon.co.uk": Marketplace(
        "amazon.co.uk", "A1F83G8C2ARO7P", "en", "eu-west-1.amazonses.com", "0102019", "SPC-EUAmazon"
    ),
    "amazon.de": Marketplace("amazon.de", "A1PA6795UKMFR9", "de", "eu-west-1.amazonses.com", "0102019", "SPC-EUAmazon"),
    "amazon.fr": Marketplace("amazon.fr", "A13V1IB3VIYZZH", "fr", "eu-west-1.amazonses.com", "0102019", "SPC-EUAmazon"),
    "amazon.it": Marketplace("amazon.it", "APJ6JRA9NG5V4", "it", "eu-west-1.amazonses.com", "0102019", "SPC-EUAmazon"),
    "amazon.es": Marketplace("amazon.es", "A1RKKUPIHCS9HS", "es", "eu-west-1.amazonses.com", "0102019", "SPC-EUAmazon"),
    "amazon.co.jp": Marketplace(
        "amazon.co.jp", "A1VC38T7YXB528", "ja", "us-west-2.amazonses.com", "0101019", "SPC-JPAmazon"
    ),
}

# The Seller Central footer, in our words, per language: (report a problem, questions, preferences, copyright).
_FOOTER = {
    "en": (
        "Report a problem with this e-mail",
        "Questions? Please visit:",
        "To change your e-mail preferences go to:",
        "Notification Preferences",
        "Copyright 2026 Amazon.com, Inc. or its affiliates. All rights reserved.",
    ),
    "de": (
        "Problem mit dieser E-Mail melden",
        "Bei Fragen besuchen Sie bitte:",
        "Ihre E-Mail-Einstellungen ändern Sie hier:",
        "Benachrichtigungseinstellungen",
        "Copyright 2026 Amazon.com, Inc. oder Tochtergesellschaften. Alle Rechte vorbehalten.",
    ),
    "fr": (
        "Signaler un problème avec cet e-mail",
        "Pour toute question, consultez :",
        "Pour modifier vos préférences d'e-mail, rendez-vous sur :",
        "Préférences de notification",
        "Copyright 2026 Amazon.com, Inc. ou ses filiales. Tous droits réservés.",
    ),
    "it": (
        "Segnala un problema con questa e-mail",
        "Se hai domande, visita:",
        "Per cambiare le preferenze e-mail vai a:",
        "Preferenze di notifica",
        "Copyright 2026 Amazon.com, Inc. o società affiliate. Tutti i diritti riservati.",
    ),
    "es": (
        "Informar de un problema con este correo electrónico",
        "Si tienes alguna pregunta, visita:",
        "Para cambiar tus preferencias de correo electrónico, ve a:",
        "Preferencias de notificación",
        "Copyright 2026 Amazon.com, Inc. o sus filiales. Todos los derechos reservados.",
    ),
    "ja": (
        "このEメールに関する問題を報告",
        "ご不明な点は次のページをご覧ください:",
        "Eメールの設定を変更するには:",
        "通知設定",
        "Copyright 2026 Amazon.com, Inc. またはその関連会社。All rights reserved.",
    ),
}
# Amazon's legal address block (public company facts; the share capital is an amount that is no claim amount).
_LEGAL = {
    "amazon.com": ["Amazon.com, 410 Terry Avenue North, Seattle, WA 98109-5210"],
    "amazon.ca": ["Amazon.com.ca ULC, 40 King Street West, Suite 4700, Toronto, Ontario M5H 3Y2"],
    "amazon.co.uk": [
        "Amazon EU S.à r.l.",
        "38 avenue John F. Kennedy,",
        "L-1855 Luxembourg,",
        "Registered in Luxembourg: B-101818,",
        "Share capital: EUR 165,833,",
        "Business licence number: 134248,",
        "VAT number LU 20260743.",
    ],
    "amazon.de": [
        "Amazon EU S.à r.l.",
        "38 avenue John F. Kennedy,",
        "L-1855 Luxemburg,",
        "Handelsregister Luxemburg: B-101818,",
        "Stammkapital: 165.833 EUR,",
        "Gewerbegenehmigung Nr. 134248,",
        "USt-IdNr. LU 20260743.",
    ],
    "amazon.fr": [
        "Amazon EU S.à r.l.",
        "38 avenue John F. Kennedy,",
        "L-1855 Luxembourg,",
        "Immatriculée au Luxembourg sous le numéro B-101818,",
        "au capital de 165 833 EUR,",
        "Autorisation d'établissement n° 134248,",
        "TVA LU 20260743.",
    ],
    "amazon.it": [
        "Amazon EU S.à r.l.",
        "38 avenue John F. Kennedy,",
        "L-1855 Lussemburgo,",
        "Numero di registrazione in Lussemburgo: B-101818,",
        "Capitale Sociale 165.833 EUR,",
        "Licenza commerciale n. 134248,",
        "Partita IVA LU 20260743.",
    ],
    "amazon.es": [
        "Amazon EU S.à r.l.",
        "38 avenue John F. Kennedy,",
        "L-1855 Luxemburgo,",
        "Registro Mercantil de Luxemburgo: B-101818,",
        "Capital social: 165.833 EUR,",
        "Licencia comercial n.º 134248,",
        "NIF LU 20260743.",
    ],
    "amazon.co.jp": ["アマゾンジャパン合同会社", "〒153-0064 東京都目黒区下目黒1-8-1"],
}

# The buyer-message frame per language: first line, (begin, end) markers new and old, footer labels
# (helpful?, resolve case, report suspicious activity), retention notice.
_BUYER_FRAME = {
    "en": (
        "You have received a message.",
        ("Message:", "End message"),
        ("Begin message", "End message"),
        ("Was this email helpful?", "Resolve case", "Report suspicious activity"),
        "Important: To help resolve disputes and keep buying and selling safe, Amazon keeps the messages "
        "buyers and sellers exchange through Amazon for two years, this one included. Messages that do not "
        "pass our filters are not delivered.",
    ),
    "de": (
        "Sie haben eine Nachricht erhalten.",
        ("Anfang der Nachricht", "Ende der Nachricht"),
        ("Anfang der Nachricht", "Ende der Nachricht"),
        ("War diese E-Mail hilfreich?", "Fall lösen", "Verdächtige Aktivität melden"),
        "Hinweis: Damit Streitfälle geklärt werden können und Käufe sicher bleiben, bewahrt Amazon alle "
        "Nachrichten zwischen Käufern und Verkäufern zwei Jahre lang auf, auch diese. Nachrichten, die unsere "
        "Filter nicht passieren, werden nicht zugestellt.",
    ),
    "fr": (
        "Vous avez reçu un message.",
        ("Message:", "Fin du message"),
        ("Début du message", "Fin du message"),
        ("Cet e-mail vous a-t-il été utile ?", "Résoudre le cas", "Signaler une activité suspecte"),
        "Remarque : pour aider à régler les litiges et garder les achats sûrs, Amazon conserve pendant deux "
        "ans les messages échangés entre acheteurs et vendeurs, celui-ci compris. Les messages qui ne passent "
        "pas nos filtres ne sont pas transmis.",
    ),
    "it": (
        "Hai ricevuto un messaggio.",
        ("Messaggio:", "Fine messaggio"),
        ("Inizio messaggio", "Fine messaggio"),
        ("Questa e-mail è stata utile?", "Risolvi caso", "Segnala attività sospetta"),
        "Nota: per aiutare a risolvere le controversie e rendere sicuri gli acquisti, Amazon conserva per due "
        "anni i messaggi scambiati tra acquirenti e venditori, compreso questo. I messaggi che non superano i "
        "nostri filtri non vengono recapitati.",
    ),
    "es": (
        "Has recibido un mensaje.",
        ("Iniciar mensaje", "Finalizar mensaje"),
        ("Iniciar mensaje", "Finalizar mensaje"),
        ("¿Te ha resultado útil este correo electrónico?", "Resolver caso", "Informar de actividad sospechosa"),
        "Aviso: para ayudar a resolver disputas y mantener la seguridad de las compras, Amazon conserva durante "
        "dos años los mensajes entre compradores y vendedores, incluido este. Los mensajes que no superan "
        "nuestros filtros no se entregan.",
    ),
    "ja": (
        "メッセージを受信しました。",
        ("メッセージ:", "メッセージはここまで"),
        ("メッセージはここから", "メッセージはここまで"),
        ("このEメールは役に立ちましたか?", "ケースを解決", "不審なアクティビティを報告"),
        "ご注意: 紛争の解決と安全な取引のため、Amazonを通じて購入者と出品者がやり取りしたメッセージ(このメッセージを"
        "含む)は2年間保管されます。フィルターを通過しないメッセージは配信されません。",
    ),
}
MARKER_HYPHENS = "-" * 13
_PRE_STYLE = "font-family:monospace;white-space:pre-wrap;font-size:14px"


def ses_message_id(seed: str, marketplace: Marketplace) -> str:
    """A Message-ID shaped like Amazon SES's (`<0102019…-000000@eu-west-1.amazonses.com>`), fixed by `seed`."""
    digest = hashlib.sha256(seed.encode()).hexdigest()
    head = marketplace.ses_prefix + digest[:9]
    return (
        f"<{head}-{digest[9:17]}-{digest[17:21]}-{digest[21:25]}-{digest[25:29]}-{digest[29:41]}-000000"
        f"@{marketplace.ses_host}>"
    )


def paragraphs(text: str) -> str:
    """Plain text as Amazon's HTML writes it: blank lines end paragraphs, single newlines become <br>."""
    blocks = [block.strip() for block in text.strip().split("\n\n") if block.strip()]
    return "\n".join(
        "<p>" + "<br>\n".join(html.escape(line) for line in block.split("\n")) + "</p>" for block in blocks
    )


def table(header: list[str], rows: list[list[str]]) -> str:
    """A bordered table with a header row, as in return, refund and cancellation notices."""
    cell = '<p style="font-size:0.765em">{}</p>'
    head = "".join(f"<th>{cell.format(html.escape(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell.format(html.escape(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f'<table cellspacing="0" cellpadding="10" border="1"><tbody><tr>{head}</tr>{body}</tbody></table>'


def notice(
    marketplace: str,
    *,
    sender: tuple[str, str],
    subject: str,
    body_html: str,
    date: datetime | str,
    notification_type: str | None = None,
    to: str = "Acme Store <claims@example.com>",
    reply_to: str | None = "same",
    layout: str = "space",
    preview: str | None = None,
    seed: str | None = None,
    message_id: str | None = None,
    list_unsubscribe: bool = False,
    marketplace_header: bool = True,
    cte: str = "quoted-printable",
    extra_headers: dict[str, str] | None = None,
    sign: bool = True,
) -> bytes:
    """A Seller Central / A-to-z notice: multipart/alternative holding only a text/html part.

    `sender` is (display name, address); `reply_to` "same" repeats the From, "folded" repeats it on a second
    header line, "empty" leaves the header empty, None leaves it out, anything else is used as written.
    `layout` "space" wraps the body in the header block, the footer block (data-space-footer) and the
    watermark; "simple" is the bare table layout of cancellation and opt-out notices. `sign` adds a DKIM
    signature of the sender's domain made with the test key (pipeline.testing.dkim), when it is Amazon's.
    """
    place = MARKETPLACES[marketplace]
    when = _date(date)
    seed = seed or f"{marketplace}|{subject}|{when.isoformat()}"
    content = (
        _space_layout(place, body_html, notification_type, preview, seed)
        if layout == "space"
        else _simple_layout(body_html, preview)
    )
    message = _message(sender, to, subject, when, message_id or ses_message_id(seed, place))
    _set_reply_to(message, sender, reply_to)
    message.set_content(content, subtype="html", charset="utf-8", cte=cte)
    message.make_alternative()  # a multipart/alternative holding only the HTML part, as Amazon sends it
    if marketplace_header:
        message["X-Marketplace-ID"] = place.marketplace_id
    if notification_type:
        message["X-Space-Notification-Type"] = notification_type
    if list_unsubscribe:
        message["List-Unsubscribe"] = (
            f"<{place.seller_central}/notifications/preferences/optout/header-one-click?optoutId={_token(seed, 36)}>"
        )
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    for name, value in (extra_headers or {}).items():
        message[name] = value
    return _signed(_shape_reply_to(_bytes(message, seed), reply_to), sender[1], when, sign)


def buyer_message(
    marketplace: str,
    *,
    relay: str,
    buyer_name: str,
    subject: str,
    words: str,
    date: datetime | str,
    order_id: str | None = None,
    item: str | None = None,
    asin: str | None = None,
    markers: str = "new",
    parts: tuple[str, ...] = ("plain", "html"),
    notification_header: bool = True,
    to: str = "Acme Store <claims@example.com>",
    seed: str | None = None,
    message_id: str | None = None,
    in_reply_to: str | None = None,
    references: tuple[str, ...] = (),
    charset: str = "utf-8",
    cte: str = "quoted-printable",
    display_name: str | None = None,
    sign: bool = True,
) -> bytes:
    """A buyer's message relayed by Amazon: From and Reply-To the relay address, the words between markers.

    `relay` is the relay address's local part (random lower-case letters and digits) or a whole address;
    `markers` "new" or "old" picks the marker generation; `parts` which of text/plain and text/html to send
    (the HTML part holds the words in one <pre>).
    """
    place = MARKETPLACES[marketplace]
    when = _date(date)
    seed = seed or f"{relay}|{subject}|{when.isoformat()}"
    address = relay if "@" in relay else f"{relay}@marketplace.{place.domain}"
    first, new, old, labels, retention = _BUYER_FRAME[place.language]
    begin, end = new if markers == "new" else old
    head = _buyer_head(first, order_id, item, asin)
    links = _buyer_links(place, seed)
    sender = (display_name if display_name is not None else buyer_name, address)
    message = _message(sender, to, subject, when, message_id or ses_message_id(seed, place))
    message["Reply-To"] = address
    if in_reply_to:
        message["In-Reply-To"] = in_reply_to
        message["References"] = " ".join([*references, in_reply_to])
    if notification_header:
        message["X-Space-Notification-Type"] = "BBC_MESSAGE_SENT_TO_MERCHANT"
        message["X-Marketplace-ID"] = place.marketplace_id
    plain = _buyer_plain(head, begin, end, words, labels, links, place, marketplace, retention, seed)
    html_body = _buyer_html(head, begin, end, words, labels, links, place, marketplace, retention, seed)
    _set_parts(message, plain, html_body, parts, charset, cte)
    return _signed(_bytes(message, seed), address, when, sign)


# --- internals ------------------------------------------------------------------------------------


def _signed(raw: bytes, sender: str, when: datetime, sign: bool) -> bytes:
    """Signed with the test DKIM key for the sender's domain, as Amazon signs its mail (pipeline.testing.dkim);
    mail from a domain that is not Amazon's is left unsigned."""
    domain = sender.rpartition("@")[2].lower()
    if not sign or not is_amazon_domain(domain):
        return raw
    return test_key.sign(raw, domain, when)


def _date(value: datetime | str) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _message(sender: tuple[str, str], to: str, subject: str, when: datetime, message_id: str) -> EmailMessage:
    message = EmailMessage(policy=email.policy.SMTP)
    message["Date"] = format_datetime(when)
    message["From"] = _address(sender)
    message["To"] = to
    message["Message-ID"] = message_id
    message["Subject"] = subject
    return message


def _address(sender: tuple[str, str]) -> Address | str:
    """A From/Reply-To value the email package encodes right (a display name with accents and parentheses
    written by hand would come out broken)."""
    name, address = sender
    if not name:
        return address
    local, _, domain = address.rpartition("@")
    return Address(display_name=name, username=local, domain=domain)


def _bytes(message: EmailMessage, seed: str) -> bytes:
    """The message's bytes, its MIME boundaries made from `seed`: the same message is the same bytes every time."""
    for index, part in enumerate(message.walk()):
        if part.is_multipart():
            part.set_boundary(f"===============_{_digits(seed + str(index), 19)}==")
    return message.as_bytes(policy=email.policy.SMTP.clone(max_line_length=998))


def _token(seed: str, length: int) -> str:
    return hashlib.sha256(("t" + seed).encode()).hexdigest()[:length]


def _digits(seed: str, length: int) -> str:
    return str(int(hashlib.sha256(("d" + seed).encode()).hexdigest(), 16))[:length]


def _space_layout(
    place: Marketplace, body_html: str, notification_type: str | None, preview: str | None, seed: str
) -> str:
    report, questions, preferences, preferences_label, copyright_line = _FOOTER[place.language]
    kind = f"&amp;communicationName={notification_type}" if notification_type else ""
    topic = f"?nt={notification_type}&amp;" if notification_type else "?"
    legal = "<br>\n".join(html.escape(line) for line in _LEGAL[place.domain])
    hidden = (
        '<div style="display:none;font-size:1px;line-height:1px;max-height:0px;max-width:0px;opacity:0;'
        f'overflow:hidden;mso-hide:all;">{html.escape(preview or "")}</div>'
    )
    return f"""<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN" "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">
<html xmlns="http://www.w3.org/1999/xhtml">
<head><meta http-equiv="Content-Type" content="text/html; charset=UTF-8"><title></title>
<style type="text/css">p{{text-align:left;}} body{{background-color:#e4e3e4;}}</style></head>
<body style="body">
<center class="wrapper" style="width:100%;table-layout:fixed;background-color:#e4e3e4;">
<div class="webkit" style="max-width:600px;margin:0 auto;">
<table border="0" cellpadding="0" cellspacing="0" class="templateContainer" style="width:100%;max-width:600px;" data-space-header>
<tbody><tr><td>
{hidden}
<table class="one-column" border="0" cellpadding="0" cellspacing="0" width="100%" data-space-sc-header><tbody><tr>
<td class="templateHeader" valign="top" style="padding:20px 0;padding-left:40px;background-color:#2a323a;">
<img alt="" src="https://m.media-amazon.com/images/G/01/SPACE/logo-selling_coach.png" width="200"></td>
</tr></tbody></table>
</td></tr></tbody></table>
<table border="0" cellpadding="0" cellspacing="0" class="templateContainer" width="100%" style="width:100%;max-width:600px;background-color:#ffffff;">
<tbody><tr><td valign="top" class="endrTextContent">
{body_html}
</td></tr></tbody></table>
<table border="0" cellpadding="0" cellspacing="0" class="templateContainer" width="100%" style="width:100%;max-width:600px;" data-space-footer data-space-sc-footer>
<tbody><tr><td valign="top" class="templateLowerBody" style="background-color:#2a323a;">
<center style="margin-top:20px;"><a href="{place.seller_central}/notifications/feedback?deliveryId={_digits(seed, 16)}{kind}&amp;deliveryChannel=EMAIL">{html.escape(report)}</a></center>
<p style="text-align:center;color:#ffffff;font-size:13px;">{html.escape(questions)} <a href="{place.seller_central}/nms/sellermobile/redirect/{_token(seed, 8)}{topic}n=1" metric="help">Seller Central</a><br><br>
{html.escape(preferences)} <a href="{place.seller_central}/notifications/preferences/ref=id_notifpref_dnav_xx_" metric="optout">{html.escape(preferences_label)}</a><br><br>
{html.escape(copyright_line)}<br>
{legal}<br></p>
</td></tr></tbody></table>
</div></center>
<img src="{place.seller_central}/nms/img/{_token(seed, 12)}?n=1" height="1" width="1" border="0" alt="">
<div id="spc-watermark"><p style="font-size:10px;color:#a2a2a2;">{place.watermark}-{_digits(seed, 16)}</p></div>
</body></html>
"""


def _simple_layout(body_html: str, preview: str | None) -> str:
    hidden = (
        '<div style="display:none;font-size:1px;max-height:0px;overflow:hidden;mso-hide:all;">'
        f"{html.escape(preview)}</div>\n"
        if preview
        else ""
    )
    return f"""<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN" "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">
<html xmlns="http://www.w3.org/1999/xhtml">
<head><meta http-equiv="Content-Type" content="text/html; charset=UTF-8">
<style type="text/css">p{{text-align:left;font-family:'Amazon Ember';}}</style></head>
<body>
{hidden}<table border="0" cellpadding="0" cellspacing="0" class="templateContainer" width="100%"><tbody><tr><td>
<table class="one-column"><tbody><tr valign="top"><td valign="top" class="endrTextContent" dir="auto">
{body_html}
</td></tr></tbody></table>
</td></tr></tbody></table>
</body></html>
"""


def _set_reply_to(message: EmailMessage, sender: tuple[str, str], reply_to: str | None) -> None:
    """The notice's Reply-To header as `notice` describes it ("empty" is written "<>" here, emptied in the bytes)."""
    if reply_to in ("same", "folded"):
        message["Reply-To"] = _address(sender)
    elif reply_to == "empty":
        message["Reply-To"] = "<>"
    elif reply_to:
        message["Reply-To"] = reply_to


def _shape_reply_to(raw: bytes, reply_to: str | None) -> bytes:
    """The Reply-To line in the finished bytes for "folded" and "empty", which the email package does not write."""
    if reply_to == "folded":  # the value on a second line, as some real notices have it
        return raw.replace(b"\r\nReply-To: ", b"\r\nReply-To: \r\n\t", 1)
    if reply_to == "empty":
        return raw.replace(b"\r\nReply-To: <>\r\n", b"\r\nReply-To: \r\n", 1)
    return raw


def _buyer_head(first: str, order_id: str | None, item: str | None, asin: str | None) -> list[str]:
    """The lines above a buyer's words: the frame's first line, then the order and its item when there is one."""
    head = [first, ""]
    if order_id:
        head.append(f"# {order_id}:")
        if item:
            head.append(f"1 / {item}" + (f" [ASIN: {asin}]" if asin else ""))
        head.append("")
    return head


def _buyer_plain(
    head: list[str],
    begin: str,
    end: str,
    words: str,
    labels: tuple[str, ...],
    links: list[str],
    place: Marketplace,
    marketplace: str,
    retention: str,
    seed: str,
) -> str:
    """The text/plain part of a buyer message: the head, the words between the markers, the footer links, the
    copyright and legal line, the retention notice and the watermark."""
    lines = [*head, f"{MARKER_HYPHENS} {begin} {MARKER_HYPHENS}", "", words.strip(), ""]
    lines += [f"{MARKER_HYPHENS} {end} {MARKER_HYPHENS}", ""]
    for label, url in zip(labels, links, strict=True):
        lines += [label, url, ""]
    lines += ["-" * 26, "", _FOOTER[place.language][4] + " " + " ".join(_LEGAL[marketplace][:1]), ""]
    lines += [retention, "", f"{place.watermark}-{_digits(seed, 16)}", ""]
    return "\n".join(lines)


def _set_parts(
    message: EmailMessage, plain: str, html_body: str, parts: tuple[str, ...], charset: str, cte: str
) -> None:
    """Give the message the parts asked for: text/plain, text/html, or both as alternatives."""
    if parts == ("plain",):
        message.set_content(plain, charset=charset, cte=cte)
    elif parts == ("html",):
        message.set_content(html_body, subtype="html", charset=charset, cte=cte)
    else:
        message.set_content(plain, charset=charset, cte=cte)
        message.add_alternative(html_body, subtype="html", charset=charset, cte=cte)


def _buyer_links(place: Marketplace, seed: str) -> list[str]:
    token = _token(seed, 20).upper()
    return [
        f"{place.seller_central}/gp/satisfaction/survey-form.html?ie=UTF8&HMDName=NotificationBusEmailHMD"
        "&customAttribute1Value=BBC_MESSAGE_SENT_TO_MERCHANT",
        f"{place.seller_central}/messaging/no-response-needed?t={token[:20]}&m={_token(seed + 'm', 20).upper()}"
        f"&mp={place.marketplace_id}&s=1",
        f"https://www.{place.domain}/messaging/{_digits(seed, 19)}?marketplaceId={place.marketplace_id}"
        "&ref_=bsm_email_report&report=true",
    ]


def _buyer_html(
    head: list[str],
    begin: str,
    end: str,
    words: str,
    labels: tuple[str, ...],
    links: list[str],
    place: Marketplace,
    marketplace: str,
    retention: str,
    seed: str,
) -> str:
    top = "<br>\n".join(html.escape(line) for line in head if line)
    footer = "<br>\n".join(
        f'<a href="{html.escape(url)}">{html.escape(label)}</a>' for label, url in zip(labels, links, strict=True)
    )
    return f"""<html><head><meta http-equiv="Content-Type" content="text/html; charset=UTF-8"></head>
<body><table width="600" border="0" cellpadding="0" cellspacing="0"><tbody><tr><td>
<p>{top}</p>
<p>{MARKER_HYPHENS} {html.escape(begin)} {MARKER_HYPHENS}</p>
<pre style="{_PRE_STYLE}">{html.escape(words.strip())}</pre>
<p>{MARKER_HYPHENS} {html.escape(end)} {MARKER_HYPHENS}</p>
<p>{footer}</p>
<p style="font-size:11px;color:#666">{html.escape(_FOOTER[place.language][4])} {html.escape(_LEGAL[marketplace][0])}</p>
<p style="font-size:11px;color:#666">{html.escape(retention)}</p>
<p style="font-size:10px;color:#a2a2a2">{place.watermark}-{_digits(seed, 16)}</p>
</td></tr></tbody></table></body></html>
"""
