"""`pipeline demo`: one story per playbook row (pipeline/testing/stories.py) in a throwaway Dovecot, end to end."""

from __future__ import annotations

import email.policy
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from imapclient import IMAPClient

from pipeline import views
from pipeline.config import load_settings
from pipeline.testing.dovecot import ThrowawayDovecot, find_dovecot
from pipeline.testing.stories import SELLER, demo_stories
from pipeline.vocabulary import AMAZON_STRATEGIES

# the timelines the demo prints: a claim whose complaint came from the buyer's earlier message (its notice
# names no reason), and a claim closed by a refund after a return request
SHOWN = ("113-2000001-0000001", "113-2000014-0000014")


def _where(strategy: str | None) -> str:
    if strategy in AMAZON_STRATEGIES:
        return "paste it into Seller Central, as its first lines say"
    return "no buyer address known yet: paste it into Seller Central's Contact buyer form"


def run_demo(*, echo: Callable[[str], object], keep: bool = False) -> None:
    """Start Dovecot, fill the mailbox, import shipments, poll once, print the claims and the drafts."""
    from pipeline.queries import claim_rows, claim_timeline
    from pipeline.service import import_orders, poll_one_pass

    find_dovecot()
    workdir = Path(tempfile.mkdtemp(prefix="pipeline-demo-"))
    workdir.chmod(0o755)  # Dovecot's mail processes run as their own user and must reach the maildirs
    server = ThrowawayDovecot(workdir / "dovecot")
    server.start()
    try:
        user = server.add_user("seller")
        now = datetime.now(UTC)
        mails, shipments = demo_stories(now)
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
            f'[seller]\nstore_name = "Acme Store"\nfrom_address = "{SELLER}"\n\n[log]\nlevel = "WARNING"\n'
        )
        settings = load_settings(config)
        (workdir / "shipments.csv").write_text(shipments)
        report = import_orders(settings, workdir / "shipments.csv")
        echo(f"imported {report.added} shipment records")
        stats = poll_one_pass(settings)
        echo(f"poll: {stats.stored} stored, {stats.processed} processed, {stats.failed} failed\n")
        echo(views.claims_table(claim_rows(settings), now=now, color=None))
        for order in SHOWN:
            echo(f"\n$ pipeline claims show {order}")
            echo(views.claim_timeline(claim_timeline(settings, order), order))
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
                echo(f"To: {draft['To'] or '(none: ' + _where(draft['X-Pipeline-Strategy']) + ')'}")
                echo(f"Subject: {draft['Subject']}")
                echo(text.strip())
        if keep:
            echo(
                f"\nkept: {workdir} (config {config}); stop Dovecot with: "
                f"python scripts/dovecot.py stop --dir {workdir / 'dovecot'}"
            )
    finally:
        if not keep:
            server.stop()
            shutil.rmtree(workdir, ignore_errors=True)
