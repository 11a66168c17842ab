"""`pipeline demo`: one story per playbook row (pipeline/testing/stories.py) in a throwaway Dovecot, end to end."""

from __future__ import annotations

import email.policy
import os
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from imapclient import IMAPClient

from pipeline import views
from pipeline.config import Settings, load_settings
from pipeline.testing import dkim as test_key
from pipeline.testing.dovecot import MailUser, ThrowawayDovecot, find_dovecot
from pipeline.testing.stories import SELLER, demo_stories
from pipeline.vocabulary import AMAZON_STRATEGIES

# the timelines the demo prints: a claim whose complaint came from the buyer's earlier message (its notice
# names no reason), a claim closed by a refund after a return request, a granted claim to appeal
SHOWN = ("113-2000001-0000001", "113-2000014-0000014", "113-2000017-0000017")


def _where(strategy: str | None) -> str:
    if strategy in AMAZON_STRATEGIES:
        return "paste it into Seller Central, as its first lines say"
    return "no buyer address known yet: paste it into Seller Central's Contact buyer form"


def run_demo(*, echo: Callable[[str], object], keep: bool = False) -> None:
    """Start Dovecot, fill the mailbox, import shipments, poll once, print the claims and the drafts."""
    from pipeline.service import import_orders, poll_one_pass

    find_dovecot()
    workdir = Path(tempfile.mkdtemp(prefix="pipeline-demo-"))
    workdir.chmod(0o755)  # Dovecot's mail processes run as their own user and must reach the maildirs
    server = ThrowawayDovecot(workdir / "dovecot")
    server.start()
    # the stories are signed with a test DKIM key, as Amazon signs its mail: the checks find its key here
    keys = str(test_key.records_file(workdir, test_key.amazon_domains()))
    previous = os.environ.get("PIPELINE_DKIM_KEYS")
    os.environ["PIPELINE_DKIM_KEYS"] = keys
    try:
        user = server.add_user("seller")
        now = datetime.now(UTC)
        mails, shipments = demo_stories(now)
        _fill_inbox(server, user, mails, echo)
        config = _write_config(workdir, server, user)
        settings = load_settings(config)
        (workdir / "shipments.csv").write_text(shipments)
        report = import_orders(settings, workdir / "shipments.csv")
        echo(f"imported {report.added} shipment records")
        stats = poll_one_pass(settings)
        echo(f"poll: {stats.stored} stored, {stats.processed} processed, {stats.failed} failed\n")
        _print_claims(settings, now, echo)
        _print_drafts(server, user, echo)
        if keep:
            stop = f"python scripts/dovecot.py stop --dir {workdir / 'dovecot'}"
            echo(
                f"\nkept: {workdir} (config {config}); run commands there after `export PIPELINE_DKIM_KEYS={keys}` "
                f"(the demo's signing key); stop Dovecot with: {stop}"
            )
    finally:
        if previous is None:
            os.environ.pop("PIPELINE_DKIM_KEYS", None)
        else:
            os.environ["PIPELINE_DKIM_KEYS"] = previous
        if not keep:
            server.stop()
            shutil.rmtree(workdir, ignore_errors=True)


def _fill_inbox(
    server: ThrowawayDovecot, user: MailUser, mails: list[tuple[str, bytes]], echo: Callable[[str], object]
) -> None:
    """Append the stories' mail to the seller's INBOX and list the stories."""
    with IMAPClient(server.host, port=server.port, ssl=False) as client:
        client.login(user.username, user.password)
        for _title, raw in mails:
            client.append("INBOX", raw)
    echo(f"Dovecot on {server.host}:{server.port}: {len(mails)} Amazon messages in INBOX")
    for title, _raw in mails:
        if title:
            echo(f"  story: {title}")


def _write_config(workdir: Path, server: ThrowawayDovecot, user: MailUser) -> Path:
    """A pipeline.toml (and its password file) for the throwaway Dovecot and a SQLite database in `workdir`."""
    config = workdir / "pipeline.toml"
    (workdir / "password").write_text(user.password)
    config.write_text(
        f'[imap]\nhost = "{server.host}"\nport = {server.port}\nsecurity = "plain"\n'
        f'username = "{user.username}"\npassword_file = "password"\n\n'
        f'[database]\nurl = "sqlite:///pipeline.db"\n\n'
        f'[seller]\nstore_name = "Acme Store"\nfrom_address = "{SELLER}"\n\n[log]\nlevel = "WARNING"\n'
    )
    return config


def _print_claims(settings: Settings, now: datetime, echo: Callable[[str], object]) -> None:
    """The claims table, the timelines of the SHOWN claims and the weekly figures, as the commands print them."""
    from pipeline.queries import claim_rows, claim_timeline, stats

    echo(views.claims_table(claim_rows(settings), now=now, color=None))
    for order in SHOWN:
        echo(f"\n$ pipeline claims show {order}")
        echo(views.claim_timeline(claim_timeline(settings, order), order))
    echo("\n$ pipeline stats --weeks 3")
    echo(views.stats_table(stats(settings, now, weeks=3)))


def _print_drafts(server: ThrowawayDovecot, user: MailUser, echo: Callable[[str], object]) -> None:
    """Every draft in the Drafts folder: strategy, claim, recipient (or where to paste it), subject and text."""
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
