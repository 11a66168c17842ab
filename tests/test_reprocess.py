"""`pipeline reprocess` through the CLI: dry run writes nothing, interrupted + resumed equals one run, filters."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from pipeline.config import load_settings
from pipeline.testing.stories import demo_stories as stories

N = len(stories(datetime.now(UTC))[0])  # the demo mailbox's messages
# the buyer's "received it" of the withdrawal story: the 13th message of the demo mailbox
RECEIVED = 13

TABLES = ("messages", "claims", "claim_events", "drafts", "shipments", "mailbox_cursors")
WITHDRAWAL = "113-2000006-0000006"
DELIVERED = "113-2000001-0000001"


def database_state(config: Path) -> dict[str, object]:
    """Everything reprocess could write: row counts, claims, events, drafts, message processing columns."""
    engine = sa.create_engine(load_settings(config).database.url)
    try:
        with engine.connect() as c:
            return {
                "counts": {t: c.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar() for t in TABLES},
                "claims": c.execute(
                    sa.text(
                        "SELECT order_id, state, strategy, flagged, flag_reason, deadline_at, "
                        "updated_at FROM claims ORDER BY order_id"
                    )
                ).all(),
                "events": c.execute(
                    sa.text(
                        "SELECT claim_id, seq, kind, from_state, to_state, rule, reason "
                        "FROM claim_events ORDER BY claim_id, seq"
                    )
                ).all(),
                "drafts": c.execute(sa.text("SELECT claim_id, step, status FROM drafts ORDER BY id")).all(),
                "messages": c.execute(
                    sa.text("SELECT id, status, error, kind, order_id, processed_at FROM messages ORDER BY id")
                ).all(),
            }
    finally:
        engine.dispose()


def claims_result(config: Path, ops_cli) -> dict[str, object]:
    """The claims as the user sees them, with each claim's transitions and drafts (ids left out)."""
    rows = json.loads(ops_cli(config, "claims", "--json").output)
    timelines = {}
    for row in rows:
        data = json.loads(ops_cli(config, "claims", "show", row["order_id"], "--json").output)
        timelines[row["order_id"]] = (
            [(e["at"], e["kind"], e["from"], e["to"], e["rule"], e["reason"]) for e in data["events"]],
            sorted((d["step"], d["strategy"], d["status"], d["to"]) for d in data["drafts"]),
        )
    return {"claims": rows, "timelines": timelines}


@pytest.fixture
def stored_stories(ops_config, ops_store_raw, ops_cli):
    """A factory: a config whose database holds the demo stories as the poller stored them (not processed)."""
    now = datetime.now(UTC)

    def make(*, database: dict[str, object] | None = None, seller: dict[str, object] | None = None) -> Path:
        config = ops_config(database=database, seller=seller)
        mails, shipments = stories(now)
        ops_store_raw(load_settings(config), [raw for _title, raw in mails])
        (config.parent / "shipments.csv").write_text(shipments)
        assert ops_cli(config, "orders", "import", str(config.parent / "shipments.csv")).exit_code == 0
        return config

    return make


def test_reprocess_processes_stored_messages(stored_stories, ops_cli) -> None:
    config = stored_stories()
    result = ops_cli(config, "reprocess")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[-1] == f"{N} messages, 0 failed, {len(lines) - 1} changes"
    assert f"changed: claim {DELIVERED}: new, awaiting_amazon (represent_delivered)" in lines
    assert "changed: claim 113-2000013-0000013: new, refund_needed (no strategy)" in lines
    assert "changed: claim 113-2000010-0000010: new, new (manual_review), flagged" in lines
    again = ops_cli(config, "reprocess")
    assert again.stdout == f"{N} messages, 0 failed, 0 changes\n"  # idempotent


def test_dry_run_writes_nothing(stored_stories, ops_cli, db_url) -> None:
    config = stored_stories(database={"url": db_url})
    before = database_state(config)
    result = ops_cli(config, "reprocess", "--dry-run")
    assert result.exit_code == 0, result.output
    assert database_state(config) == before
    lines = result.stdout.splitlines()
    assert f"would change: claim {DELIVERED}: new, awaiting_amazon (represent_delivered)" in lines
    assert f"would change: draft {WITHDRAWAL} request_withdrawal: none -> wanted" in lines
    assert lines[-1] == f"{N} messages, 0 failed, {len(lines) - 1} changes (dry run: nothing written)"

    # the real run does what the dry run said
    real = ops_cli(config, "reprocess")
    assert [line.replace("changed: ", "would change: ", 1) for line in real.stdout.splitlines()[:-1]] == lines[:-1]


def test_dry_run_after_the_rules_change(stored_stories, ops_cli, db_url) -> None:
    """The everyday use: the seller changes a rule, asks what a re-run would change, and nothing moves yet."""
    config = stored_stories(database={"url": db_url}, seller={"recognized_carriers": ["USPS", "DHL"]})
    assert ops_cli(config, "reprocess").exit_code == 0
    assert (
        json.loads(ops_cli(config, "claims", "show", DELIVERED, "--json").output)["claim"]["strategy"]
        == "offer_refund_or_resend"
    )  # UPS is not recognized in this config
    config.write_text(
        config.read_text().replace(
            'recognized_carriers = ["USPS", "DHL"]', 'recognized_carriers = ["UPS", "USPS", "DHL"]'
        )
    )
    before = database_state(config)
    result = ops_cli(config, "reprocess", "--dry-run")
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        f"would change: claim {DELIVERED}: awaiting_buyer (offer_refund_or_resend) -> "
        "awaiting_amazon (represent_delivered)",
        # UPS delivered before that claim was granted: now a recognized carrier, the grant is worth appealing
        "would change: claim 113-2000017-0000017: granted (-) -> granted (appeal_granted)",
        f"would change: draft {DELIVERED} answer_delivered: none -> wanted",
        f"would change: draft {DELIVERED} offer_refund_or_resend: wanted -> superseded",
        f"would change: draft {DELIVERED} represent_delivered: none -> wanted",
        "would change: draft 113-2000017-0000017 appeal_granted: none -> wanted",
        f"{N} messages, 0 failed, 6 changes (dry run: nothing written)",
    ]
    assert database_state(config) == before
    result = ops_cli(config, "reprocess", "--order", DELIVERED)
    assert result.stdout.splitlines()[-1] == "2 messages, 0 failed, 4 changes"


class Interrupt:
    """Wraps ClaimDesk.process_message: the call after `after` successful ones raises KeyboardInterrupt."""

    def __init__(self, original, after: int) -> None:
        self.original, self.after, self.calls = original, after, 0

    def __call__(self, desk, *args, **kwargs):
        if self.calls == self.after:
            raise KeyboardInterrupt
        self.calls += 1
        return self.original(desk, *args, **kwargs)


def test_interrupted_and_resumed_equals_one_run(stored_stories, ops_cli, monkeypatch, tmp_path) -> None:
    from pipeline.claims import ClaimDesk

    whole = stored_stories()
    assert ops_cli(whole, "reprocess").exit_code == 0
    expected = claims_result(whole, ops_cli)

    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    resumed = stored_stories(database={"url": f"sqlite:///{resumed_dir / 'pipeline.db'}"})
    interrupt = Interrupt(ClaimDesk.process_message, after=7)
    monkeypatch.setattr(ClaimDesk, "process_message", lambda desk, *a, **k: interrupt(desk, *a, **k))
    result = ops_cli(resumed, "reprocess")
    assert result.exit_code == 130
    assert result.stderr.splitlines()[-1] == (
        f"interrupted after 7 of {N} messages; the messages done so far are kept. Run the same command again to finish."
    )
    assert "Traceback" not in result.output
    half = database_state(resumed)
    statuses = [m.status for m in half["messages"]]
    assert (statuses.count("done"), statuses.count("pending")) == (7, N - 7)  # the 8th was rolled back whole
    assert claims_result(resumed, ops_cli) != expected
    monkeypatch.undo()

    result = ops_cli(resumed, "reprocess")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[-1].startswith(f"{N} messages, 0 failed, ")
    assert claims_result(resumed, ops_cli) == expected


def test_sigint_to_a_running_reprocess_then_resume(stored_stories, ops_cli, tmp_path) -> None:
    """A real Ctrl-C (SIGINT to the process) in the middle of a run; the second run finishes the job."""
    whole = stored_stories()
    assert ops_cli(whole, "reprocess").exit_code == 0
    expected = claims_result(whole, ops_cli)

    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    resumed = stored_stories(database={"url": f"sqlite:///{resumed_dir / 'pipeline.db'}"})
    script = (
        "import os, signal, sys\n"
        "from pipeline.claims import ClaimDesk\n"
        "from pipeline.cli import main\n"
        "original, calls = ClaimDesk.process_message, []\n"
        "def process(desk, *args, **kwargs):\n"
        "    calls.append(1)\n"
        "    if len(calls) == 6:\n"
        "        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while this message is being processed\n"
        "    return original(desk, *args, **kwargs)\n"
        "ClaimDesk.process_message = process\n"
        "sys.argv = ['pipeline', '--config', sys.argv[1], 'reprocess']\n"
        "main()\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, str(resumed)], capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 130, run.stderr
    assert f"interrupted after 5 of {N} messages" in run.stderr
    assert "Traceback" not in run.stderr
    statuses = [m.status for m in database_state(resumed)["messages"]]
    assert (statuses.count("done"), statuses.count("pending")) == (5, N - 5)
    assert ops_cli(resumed, "reprocess").exit_code == 0
    assert claims_result(resumed, ops_cli) == expected


def test_dry_run_interrupted_says_nothing_was_written(stored_stories, ops_cli, monkeypatch) -> None:
    from pipeline.claims import ClaimDesk

    config = stored_stories()
    before = database_state(config)
    interrupt = Interrupt(ClaimDesk.process_message, after=3)
    monkeypatch.setattr(ClaimDesk, "process_message", lambda desk, *a, **k: interrupt(desk, *a, **k))
    result = ops_cli(config, "reprocess", "--dry-run")
    assert result.exit_code == 130
    assert result.stderr.splitlines()[-1] == (
        f"interrupted after 3 of {N} messages; nothing was written. Run the same command again to finish."
    )
    assert database_state(config) == before


def test_failed_retries_only_failed_messages(stored_stories, ops_cli, ops_store_raw) -> None:
    config = stored_stories()
    settings = load_settings(config)
    bad = N + 1
    ops_store_raw(settings, [b"Subject: no sender at all\r\n\r\nbody\r\n"])  # message N+1 can never work
    first = ops_cli(config, "reprocess")
    assert first.exit_code == 1  # a failure remains: scripts and timers must see it
    assert first.stdout.splitlines()[-2:-1] == [
        f"failed: message {bad}: no sender address (From header missing or unreadable)"
    ]
    assert first.stdout.splitlines()[-1].startswith(f"{N + 1} messages, 1 failed, ")
    engine = sa.create_engine(settings.database.url)
    with engine.begin() as c:
        # a message that failed earlier (say, a bug since fixed): its claim never saw it
        c.execute(
            sa.text(
                "UPDATE messages SET status = 'failed', error = 'RuntimeError: boom', facts = NULL, "
                f"kind = NULL, order_id = NULL WHERE id = {RECEIVED}"
            )
        )
    assert ops_cli(config, "reprocess", "--order", WITHDRAWAL).exit_code == 0  # replays without that message
    assert (
        json.loads(ops_cli(config, "claims", "show", WITHDRAWAL, "--json").output)["claim"]["strategy"]
        == "offer_refund_or_resend"
    )
    before = database_state(config)

    result = ops_cli(config, "reprocess", "--failed")
    assert result.exit_code == 1  # message N+1 still fails
    lines = result.stdout.splitlines()
    assert (
        f"changed: claim {WITHDRAWAL}: awaiting_buyer (offer_refund_or_resend) -> awaiting_buyer "
        "(request_withdrawal)" in lines
    )
    assert f"failed: message {bad}: no sender address (From header missing or unreadable)" in lines
    assert lines[-1].startswith("2 messages, 1 failed, ")
    after = database_state(config)
    with engine.connect() as c:
        assert c.execute(sa.text(f"SELECT status, error FROM messages WHERE id = {RECEIVED}")).one() == ("done", None)
    engine.dispose()
    untouched = [m for m in before["messages"] if m.id not in (RECEIVED, bad)]
    assert [m for m in after["messages"] if m.id not in (RECEIVED, bad)] == untouched
    assert ops_cli(config, "reprocess", "--failed").stdout.splitlines()[-1].startswith("1 message, 1 failed")


def test_order_filter(stored_stories, ops_cli) -> None:
    config = stored_stories()
    assert ops_cli(config, "reprocess").exit_code == 0
    before = database_state(config)
    result = ops_cli(config, "reprocess", "--order", WITHDRAWAL)
    assert result.exit_code == 0
    assert result.stdout == "3 messages, 0 failed, 0 changes\n"
    after = database_state(config)
    changed = [m.id for m, n in zip(before["messages"], after["messages"], strict=True) if m != n]
    assert changed == [RECEIVED - 2, RECEIVED - 1, RECEIVED]  # only that order's messages were processed again
    assert ops_cli(config, "reprocess", "--order", "111-0000000-0000000").stdout == "0 messages, 0 failed, 0 changes\n"


def test_date_filters(stored_stories, ops_cli) -> None:
    config = stored_stories()
    assert ops_cli(config, "reprocess", "--until", "2000-01-01").stdout == "0 messages, 0 failed, 0 changes\n"
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    result = ops_cli(config, "reprocess", "--since", tomorrow)
    assert result.exit_code == 0
    assert result.stdout.splitlines()[-1].startswith("0 messages")  # every story was sent before tomorrow
    result = ops_cli(config, "reprocess", "--since", "2000-01-01", "--until", "2999-01-01")
    assert result.stdout.splitlines()[-1].startswith(f"{N} messages")


def test_progress_log_lines_when_not_on_a_terminal(stored_stories, ops_cli) -> None:
    result = ops_cli(stored_stories(), "--log-level", "INFO", "reprocess")
    assert result.exit_code == 0
    progress = [line for line in result.stderr.splitlines() if "pipeline.reprocess" in line]
    assert len(progress) == 1
    assert f"reprocessed {N}/{N} messages (" in progress[0]


def test_progress_bar_on_a_terminal(stored_stories, tmp_path) -> None:
    config = stored_stories()
    controller, terminal = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "PIPELINE_CONFIG"} | {"COLUMNS": "120"}
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "--config", str(config), "reprocess"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=terminal,
        env=env,
    )
    os.close(terminal)
    seen = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _w, _x = select.select([controller], [], [], 1)
        if ready:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the other end closed
                break
            if not chunk:
                break
            seen += chunk
        elif process.poll() is not None:
            break
    stdout, _ = process.communicate(timeout=60)
    os.close(controller)
    assert process.returncode == 0
    text = seen.decode("utf-8", "replace")
    assert "reprocessing" in text
    assert f"{N}/{N}" in text
    assert "msg/s" in text
    assert stdout.decode().splitlines()[-1].startswith(f"{N} messages, 0 failed, ")


# --- --from-imap against Dovecot -----------------------------------------------------------------------


def test_from_imap_stores_a_message_the_database_lost(ops_dovecot_config, ops_cli, imap, db_url, tmp_path) -> None:
    now = datetime.now(UTC)
    mails, _shipments = stories(now)
    for _title, raw in mails:
        imap.append("INBOX", raw)
    imap.append("INBOX", b"From: friend@example.com\r\nSubject: lunch?\r\n\r\nnot Amazon\r\n")
    config = ops_dovecot_config()
    config.write_text(config.read_text().replace(f"sqlite:///{tmp_path / 'pipeline.db'}", db_url))
    assert db_url in config.read_text()
    assert ops_cli(config, "poll", "--once").exit_code == 0
    expected = claims_result(config, ops_cli)

    engine = sa.create_engine(load_settings(config).database.url)
    with engine.begin() as c:  # the buyer's "received it" message is lost from the database
        lost = c.execute(
            sa.text(
                "SELECT id FROM messages WHERE kind = 'buyer_message' AND order_id = :o ORDER BY sent_at DESC LIMIT 1"
            ),
            {"o": WITHDRAWAL},
        ).scalar_one()
        c.execute(sa.text("DELETE FROM messages WHERE id = :id"), {"id": lost})
    engine.dispose()
    assert ops_cli(config, "reprocess", "--order", WITHDRAWAL).exit_code == 0
    assert (
        json.loads(ops_cli(config, "claims", "show", WITHDRAWAL, "--json").output)["claim"]["strategy"]
        == "offer_refund_or_resend"
    )

    before = database_state(config)
    dry = ops_cli(config, "reprocess", "--from-imap", "--dry-run")
    assert dry.exit_code == 0
    assert dry.stdout.splitlines()[-1].startswith(f"{N} messages, 1 to fetch from IMAP, 0 failed")
    assert (
        f"would change: claim {WITHDRAWAL}: awaiting_buyer (offer_refund_or_resend) -> awaiting_buyer "
        "(request_withdrawal)" in dry.stdout.splitlines()
    )
    assert database_state(config) == before

    result = ops_cli(config, "reprocess", "--from-imap")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[-1].startswith(f"{N} messages, 1 fetched from IMAP, 0 failed, ")
    assert (
        f"changed: claim {WITHDRAWAL}: awaiting_buyer (offer_refund_or_resend) -> awaiting_buyer "
        "(request_withdrawal)" in lines
    )
    got = claims_result(config, ops_cli)
    assert got["claims"] == expected["claims"]
    again = ops_cli(config, "reprocess", "--from-imap")
    assert again.stdout.splitlines()[-1].startswith(f"{N} messages, 0 fetched from IMAP, 0 failed, 0 changes")
    # the poller stores nothing twice afterwards, and the user's own mail was never stored
    assert ops_cli(config, "poll", "--once").stdout.startswith("0 new, 0 already stored")
