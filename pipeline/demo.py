"""`pipeline demo`: one story per playbook rule in a throwaway Dovecot mailbox, run end to end."""

from __future__ import annotations

import email.policy
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

from imapclient import IMAPClient

from pipeline.config import load_settings
from pipeline.dovecot import ThrowawayDovecot, ensure_installed

SELLER = "claims@acme-store.example"


def claim_notice(order_id: str, reason: str, comment: str, sent: datetime, *, days: int = 7) -> bytes:
    """An A-to-z claim notification as Amazon.com sends it (plain-text variant)."""
    body = (f"Dear Seller,\n\nA buyer has filed an A-to-z Guarantee claim on order {order_id}.\n\n"
            f"Claim reason: {reason}\nBuyer's comment: \"{comment}\"\nClaim amount: $24.99\n\n"
            f"Please respond within {days} days in Seller Central.\n\nAmazon Services\n")
    return _mail("atoz-guarantee-no-reply@amazon.com", f"Claim received on order {order_id}", body, sent,
                 reply_to=f"atoz-guarantee-reply+{order_id[-7:]}@amazon.com",
                 extra={"X-Space-Notification-Type": "A_Z_CLAIM_RESPONDENT_NOTIFY",
                        "X-Marketplace-ID": "ATVPDKIKX0DER"})


def decision(order_id: str, subject: str, text: str, sent: datetime) -> bytes:
    """A claim decision or withdrawal notice."""
    return _mail("atoz-guarantee-no-reply@amazon.com", subject, f"Dear Seller,\n\n{text}\n\nAmazon Services\n",
                 sent, extra={"X-Marketplace-ID": "ATVPDKIKX0DER"})


def info_request(order_id: str, sent: datetime, *, hours: int) -> bytes:
    """Amazon asking for more information on an open claim, with a new deadline."""
    body = (f"Dear Seller,\n\nWe need more information about the A-to-z Guarantee claim on order {order_id}. "
            f"Please provide proof of delivery within {hours} hours in Seller Central.\n\nAmazon Services\n")
    return _mail("atoz-guarantee-no-reply@amazon.com", f"Action required: Claim on order {order_id}", body, sent,
                 reply_to=f"atoz-guarantee-reply+{order_id[-7:]}@amazon.com",
                 extra={"X-Space-Notification-Type": "A_Z_CLAIM_RESPONDENT_NOTIFY",
                        "X-Marketplace-ID": "ATVPDKIKX0DER"})


def buyer_message(order_id: str, name: str, relay: str, text: str, sent: datetime) -> bytes:
    """A buyer message relayed by Amazon, the buyer's words between the markers."""
    body = (f"Order ID: {order_id}\n\n------------- Begin message -------------\n\n{text}\n\n"
            f"------------- End message -------------\n")
    return _mail(f"{relay}@marketplace.amazon.com", f"Inquiry from Amazon customer {name} (Order: {order_id})",
                 body, sent, name=f"{name} - Amazon Marketplace")


def _mail(sender: str, subject: str, body: str, sent: datetime, *, name: str = "", reply_to: str | None = None,
          extra: dict[str, str] | None = None) -> bytes:
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = f'"{name}" <{sender}>' if name else sender
    message["To"] = SELLER
    message["Subject"] = subject
    message["Date"] = format_datetime(sent)
    message["Message-ID"] = make_msgid(domain="demo.amazon.com")
    if reply_to:
        message["Reply-To"] = reply_to
    for key, value in (extra or {}).items():
        message[key] = value
    message.set_content(body)
    return message.as_bytes()


def stories(now: datetime) -> tuple[list[tuple[str, bytes]], str]:
    """(story title, raw message) in arrival order, and the shipments CSV the seller would import."""
    day, hour = timedelta(days=1), timedelta(hours=1)
    t = now - 2 * day
    mails = [
        ("not received, tracking delivered -> represent_delivered",
         claim_notice("113-2000001-0000001", "Item not received", "My package never arrived.", t)),
        ("not received, no tracking -> offer_refund_or_resend",
         claim_notice("113-2000002-0000002", "Item not received", "Still waiting after 4 weeks.", t)),
        ("size -> represent_size",
         claim_notice("113-2000003-0000003", "Wrong size", "The jacket is too small, it does not fit.", t)),
        ("damaged on arrival -> persuade_withdraw_damaged",
         claim_notice("113-2000004-0000004", "Item damaged", "The lamp arrived broken, glass shattered in the box.",
                      t)),
        ("damaged after use -> represent_misuse",
         claim_notice("113-2000005-0000005", "Item defective", "Worked fine for two months, then the handle cracked.",
                      t)),
        ("buyer solved -> request_withdrawal",
         claim_notice("113-2000006-0000006", "Item not received", "Nothing has arrived yet.", t)),
        ("", buyer_message("113-2000006-0000006", "Maria", "k2x7qv8d9m3nbuyer", "Good news, I received it today! "
                           "Everything is fine, thank you.", t + day)),
        ("buyer wants refund -> refund_needed",
         claim_notice("113-2000007-0000007", "Item not received", "Never came.", t)),
        ("", buyer_message("113-2000007-0000007", "Tom", "p9w2zr4t6y1ubuyer", "I don't want to wait any longer. "
                           "Please refund my money.", t + day)),
        ("buyer withdrew -> resolved",
         claim_notice("113-2000008-0000008", "Item not received", "Where is my parcel?", t - 3 * day)),
        ("", decision("113-2000008-0000008", "Claim withdrawn on order 113-2000008-0000008",
                      "The buyer has withdrawn the A-to-z Guarantee claim on order 113-2000008-0000008.", t)),
        ("Amazon granted -> granted",
         claim_notice("113-2000009-0000009", "Item not received", "Lost in transit.", t - 5 * day)),
        ("", decision("113-2000009-0000009", "Claim decision on order 113-2000009-0000009",
                      "We have granted an A-to-z Guarantee claim of $24.99 on order 113-2000009-0000009.", t)),
        ("not as described -> manual_review (flagged)",
         claim_notice("113-2000010-0000010", "Item not as described", "Looks nothing like the picture.", t)),
        ("Amazon asks for more information -> represent_delivered again, 48 h deadline (flagged)",
         claim_notice("113-2000011-0000011", "Item not received", "It never came.", t)),
        ("", info_request("113-2000011-0000011", t + day, hours=48)),
        ("unclear complaint -> manual_review (flagged)",
         claim_notice("113-2000012-0000012", "Other", "Please call me about this order.", t)),
        ("no buyer reply and the deadline is near -> refund_needed",
         claim_notice("113-2000013-0000013", "Item not received", "Where is it?", now - 6 * day - 3 * hour)),
    ]
    shipments = ("order_id,carrier,tracking_number,ship_date,delivered_date\n"
                 f"113-2000001-0000001,UPS,1Z999AA10123456784,{(now - 9 * day).date()},{(now - 5 * day).date()}\n"
                 f"113-2000011-0000011,USPS,9400111899223344556677,{(now - 9 * day).date()},"
                 f"{(now - 5 * day).date()}\n")
    return [(title, raw) for title, raw in mails], shipments


def run_demo(*, echo: Callable[[str], object], keep: bool = False) -> None:
    """Start Dovecot, fill the mailbox, import shipments, poll once, print the claims and the drafts."""
    from pipeline.cli import format_claims
    from pipeline.service import claim_rows, import_orders, poll_one_pass

    ensure_installed()
    workdir = Path(tempfile.mkdtemp(prefix="pipeline-demo-"))
    workdir.chmod(0o755)  # Dovecot's mail processes run as their own user and must reach the maildirs
    server = ThrowawayDovecot(workdir / "dovecot")
    server.start()
    try:
        user = server.add_user("seller")
        now = datetime.now(UTC)
        mails, shipments = stories(now)
        with IMAPClient(server.host, port=server.port, ssl=False) as client:
            client.login(user.username, user.password)
            for _title, raw in mails:
                client.append("INBOX", raw)
        echo(f"Dovecot on {server.host}:{server.port}: {len(mails)} Amazon messages in INBOX")
        for title, _raw in mails:
            if title:
                echo(f"  story: {title}")
        config = workdir / "pipeline.toml"
        (workdir / "password").write_text(user.password)
        config.write_text(
            f'[imap]\nhost = "{server.host}"\nport = {server.port}\nsecurity = "plain"\n'
            f'username = "{user.username}"\npassword_file = "password"\n\n'
            f'[database]\nurl = "sqlite:///pipeline.db"\n\n'
            f'[seller]\nstore_name = "Acme Store"\nfrom_address = "{SELLER}"\n\n[log]\nlevel = "WARNING"\n')
        settings = load_settings(config)
        (workdir / "shipments.csv").write_text(shipments)
        report = import_orders(settings, workdir / "shipments.csv")
        echo(f"imported {report.added} shipment records")
        stats = poll_one_pass(settings)
        echo(f"poll: {stats.stored} stored, {stats.processed} processed, {stats.failed} failed\n")
        echo(format_claims(claim_rows(settings), now=now, color=None))
        echo("\nDrafts folder (review, edit and send these from your mail client):")
        with IMAPClient(server.host, port=server.port, ssl=False) as client:
            client.login(user.username, user.password)
            client.select_folder("Drafts", readonly=True)
            uids = client.search(["ALL"])
            for uid, data in client.fetch(uids, [b"BODY.PEEK[]"]).items():
                draft = email.message_from_bytes(data[b"BODY[]"], policy=email.policy.default)
                body = draft.get_body(("plain",))
                text = body.get_content() if body is not None else ""
                echo(f"\n--- draft {uid}: {draft['X-Pipeline-Strategy']} for {draft['X-Pipeline-Claim']}")
                echo(f"To: {draft['To'] or '(no address yet: paste into Contact buyer)'}")
                echo(f"Subject: {draft['Subject']}")
                echo(text.strip())
        if keep:
            echo(f"\nkept: {workdir} (config {config}); stop Dovecot with: "
                 f"python scripts/dovecot.py stop --dir {workdir / 'dovecot'}")
    finally:
        if not keep:
            server.stop()
            shutil.rmtree(workdir, ignore_errors=True)
