"""`pipeline digest`: one unread summary message in the INBOX, read back over IMAP; the poller ignores it."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline.config import load_settings
from pipeline.digest import subject_for
from pipeline.testing.stories import demo_stories as stories

SELLER = "claims@kestrel-outdoor.example"
# the demo stories that need action within 48 hours, most urgent first: the buyers owed an answer (most of them
# overdue: the stories' buyers wrote days ago and nobody sent the drafts), then the flagged one, then the appeal
OWED = [
    "113-2000013-0000013",
    "113-2000001-0000001",
    "113-2000002-0000002",
    "113-2000003-0000003",
    "113-2000005-0000005",
    "113-2000006-0000006",
    "113-2000010-0000010",
    "113-2000011-0000011",
    "113-2000007-0000007",
    "113-2000015-0000015",
    "113-2000016-0000016",
]
SOON = [*OWED, "113-2000012-0000012", "113-2000017-0000017"]


@pytest.fixture
def story_config(ops_dovecot_config, ops_store_raw, ops_cli) -> Path:
    """Mail_user's config with the demo stories processed in its database (stored directly, not in the INBOX)."""
    config = ops_dovecot_config()
    mails, shipments = stories(datetime.now(UTC))
    ops_store_raw(load_settings(config), [raw for _title, raw in mails])
    (config.parent / "shipments.csv").write_text(shipments)
    assert ops_cli(config, "orders", "import", str(config.parent / "shipments.csv")).exit_code == 0
    assert ops_cli(config, "reprocess").exit_code == 0
    return config


def inbox(imap) -> list[tuple[tuple[bytes, ...], email.message.EmailMessage]]:
    imap.select_folder("INBOX", readonly=True)
    fetched = imap.fetch(imap.search(["ALL"]), [b"FLAGS", b"BODY.PEEK[]"])
    return [
        (data[b"FLAGS"], email.message_from_bytes(data[b"BODY[]"], policy=email.policy.default))
        for _uid, data in sorted(fetched.items())
    ]


def test_digest_in_the_inbox(story_config, ops_cli, imap) -> None:
    result = ops_cli(story_config, "digest")
    assert result.exit_code == 0, result.output
    subject = "pipeline: 13 claims need action in the next 48 hours"
    assert result.output == f"digest of 13 claim(s) put in INBOX: {subject}\n"

    messages = inbox(imap)
    assert len(messages) == 1
    flags, message = messages[0]
    assert b"\\Seen" not in flags  # shows as unread
    assert message["Subject"] == subject
    assert message["From"].addresses[0].addr_spec == SELLER
    assert message["To"].addresses[0].addr_spec == SELLER
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["X-Pipeline-Digest"] == "13"
    assert message["Message-ID"].endswith("@kestrel-outdoor.example>")
    body = message.get_body(("plain",)).get_content().replace("\r\n", "\n")
    first, claims = body.split("A-to-z claims that need action")
    assert first.startswith("Answer these first (the buyer waits; Amazon counts 24 hours):")
    assert [line.split()[0] for line in first.splitlines() if line.startswith("  113-")] == OWED
    assert "  113-2000013-0000013       overdue  (refund_needed)" in first
    listed = [line.split()[0] for line in claims.splitlines() if line.startswith("113-")]
    assert listed == SOON
    blocks = {block.split()[0]: block for block in body.split("\n\n") if block.startswith("113-")}
    assert blocks["113-2000013-0000013"].splitlines()[0] == "113-2000013-0000013  refund_needed"
    assert "    why:       the buyer waits for an answer, deadline soon, refund needed" in blocks["113-2000013-0000013"]
    assert "    strategy:  none" in blocks["113-2000013-0000013"]
    info = blocks["113-2000011-0000011"]
    assert info.splitlines()[0] == "113-2000011-0000011  awaiting_amazon"
    assert "    strategy:  represent_delivered" in info
    assert "    why:       the buyer waits for an answer, deadline soon, flagged" in info
    assert "    flag:      Amazon asks for more information" in info
    assert "    time left: 1d15h" in info or "    time left: 1d16h" in info  # 48 h after the request
    assert "    flag:      the seller's playbook has no rule for 'not as described'" in blocks["113-2000010-0000010"]
    assert "    flag:      reason not in Amazon's mail: check Seller Central" in blocks["113-2000012-0000012"]
    assert (
        "    time left: 2d03h" in blocks["113-2000007-0000007"]
        or "    time left: 2d04h" in blocks["113-2000007-0000007"]
    )
    appeal = blocks["113-2000017-0000017"]
    assert "    why:       appeal" in appeal and "    strategy:  appeal_granted" in appeal
    assert "time left" not in appeal  # the claim's own deadline is history
    assert "113-2000009-0000009" not in body  # closed, nothing to appeal
    assert "Buyer complaints (#) and A-to-z claims (=) per week:" in body


def test_the_poller_ignores_the_digest(story_config, ops_cli, imap) -> None:
    assert ops_cli(story_config, "digest").exit_code == 0
    result = ops_cli(story_config, "poll", "--once")
    assert result.exit_code == 0
    assert result.stdout == "0 new, 0 already stored, 1 not Amazon; 0 processed, 0 failed\n"
    assert len(inbox(imap)) == 1


def test_no_digest_when_nothing_needs_action(ops_dovecot_config, ops_cli, imap) -> None:
    config = ops_dovecot_config()
    result = ops_cli(config, "digest")
    assert result.exit_code == 0
    assert result.output == "no claims need action in the next 48 hours; no digest written\n"
    assert inbox(imap) == []
    result = ops_cli(config, "digest", "--always")
    assert result.output == (
        "digest of 0 claim(s) put in INBOX: pipeline: no claims need action in the next 48 hours\n"
    )
    ((_flags, message),) = inbox(imap)
    assert message.get_body(("plain",)).get_content().startswith("No A-to-z claim needs action in the next 48 hours")


def test_digest_hours_and_print(story_config, ops_cli, imap) -> None:
    result = ops_cli(story_config, "digest", "--hours", "240", "--print")
    assert result.exit_code == 0
    message = email.message_from_string(result.output, policy=email.policy.default)
    assert message["Subject"] == "pipeline: 14 claims need action in the next 240 hours"
    assert "113-2000001-0000001  awaiting_amazon" in message.get_body(("plain",)).get_content()
    assert inbox(imap) == []  # --print writes nothing


def test_digest_with_a_wrong_password(story_config, ops_cli, monkeypatch) -> None:
    monkeypatch.setenv("PIPELINE_IMAP_PASSWORD", "wrong")
    result = ops_cli(story_config, "digest")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: 127.0.0.1: login refused for ")
    assert len(result.stderr.splitlines()) == 1


def test_subjects() -> None:
    assert subject_for(1) == "pipeline: 1 claim needs action in the next 48 hours"
    assert subject_for(3, 24) == "pipeline: 3 claims need action in the next 24 hours"
    assert subject_for(0) == "pipeline: no claims need action in the next 48 hours"
