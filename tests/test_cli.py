"""The command line: help everywhere, exact output of the views, clean errors, log formats, no secrets in logs."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

import click
import pytest
from imapclient import IMAPClient

from pipeline.cli import cli
from pipeline.config import load_settings
from pipeline.testing.stories import demo_stories as stories
from pipeline.vocabulary import STATES, STRATEGIES

DESIGN_CLAIM_KEYS = {
    "order_id",
    "state",
    "complaint_type",
    "strategy",
    "marketplace",
    "opened_at",
    "deadline_at",
    "buyer_address",
    "tracking_number",
    "carrier",
}
ORDER = "113-2000001-0000001"


def all_commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    """Every command and subcommand of the group, with the words that invoke it."""
    found = []
    for name, command in sorted(group.commands.items()):
        found.append(((*path, name), command))
        if isinstance(command, click.Group):
            found += all_commands(command, (*path, name))
    return found


COMMANDS = all_commands(cli)


def test_the_walk_finds_the_documented_commands() -> None:
    names = {" ".join(path) for path, _command in COMMANDS}
    assert {
        "init",
        "db",
        "db upgrade",
        "poll",
        "inspect",
        "claims",
        "claims show",
        "orders",
        "orders import",
        "reprocess",
        "check",
        "demo",
        "digest",
    } <= names


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[" ".join(p) for p, _c in COMMANDS])
def test_every_command_has_help(ops_cli, path: tuple[str, ...], command: click.Command) -> None:
    assert command.help and command.help.strip(), f"pipeline {' '.join(path)} has no docstring"
    result = ops_cli(None, *path, "--help")
    assert result.exit_code == 0
    assert result.output.startswith(f"Usage: pipeline {' '.join(path)} ")
    first_line = command.help.strip().splitlines()[0]
    assert " ".join(first_line.split()) in " ".join(result.output.split())  # help wraps long lines
    for param in command.params:
        if isinstance(param, click.Option) and param.name != "help":
            assert param.help, f"pipeline {' '.join(path)} {param.opts[0]} has no help text"


def test_top_level_help_and_version(ops_cli) -> None:
    result = ops_cli(None, "--help")
    assert result.exit_code == 0
    assert "A-to-z claim desk for Amazon sellers" in result.output
    for path, _command in COMMANDS:
        if len(path) == 1:
            assert path[0] in result.output
    assert ops_cli(None, "-h").output == result.output
    version = ops_cli(None, "--version")
    assert version.exit_code == 0
    assert version.output.startswith("pipeline, version ")


# --- claims -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def story_database(tmp_path_factory) -> Path:
    """A SQLite database holding the demo stories, processed (stored as the poller would, then reprocessed)."""
    from pipeline.config import settings_from_dict
    from pipeline.poller import envelope
    from pipeline.reprocess import reprocess
    from pipeline.service import import_orders
    from pipeline.store import Store

    folder = tmp_path_factory.mktemp("stories")
    settings = settings_from_dict(
        {
            "imap": {"host": "imap.invalid", "username": "u", "password_env": "UNUSED"},
            "seller": {"store_name": "Kestrel Outdoor", "from_address": "claims@kestrel-outdoor.example"},
            "database": {"url": f"sqlite:///{folder / 'stories.db'}"},
        },
        folder / "pipeline.toml",
    )
    mails, shipments = stories(datetime.now(UTC))
    store = Store(settings.database.url)
    with store.session() as session:
        for uid, (_title, raw) in enumerate(mails, start=1):
            store.add_message(session, account="a", folder="INBOX", uidvalidity=1, uid=uid, raw=raw, **envelope(raw))
    store.dispose()
    (folder / "shipments.csv").write_text(shipments)
    import_orders(settings, folder / "shipments.csv")
    assert reprocess(settings).failed == 0
    return folder / "stories.db"


@pytest.fixture
def story_config(ops_config, story_database, tmp_path) -> Path:
    """A config whose database is a copy of story_database."""
    shutil.copy(story_database, tmp_path / "pipeline.db")
    return ops_config()


def test_claims_on_an_empty_database(ops_config, ops_cli) -> None:
    result = ops_cli(ops_config(), "claims")
    assert result.exit_code == 0
    assert result.output == "no claims\n"
    assert ops_cli(ops_config(), "claims", "--json").output == "[]\n"


def test_a_bad_pipeline_now_is_a_one_line_error(ops_config, ops_cli) -> None:
    result = ops_cli(ops_config(), "claims", env={"PIPELINE_NOW": "next friday"})
    assert result.exit_code == 2
    assert result.output == ("Error: PIPELINE_NOW: 'next friday' is not an ISO 8601 time (2026-11-26T09:00:00Z)\n")


def test_claims_json_has_the_design_keys(story_config, ops_cli) -> None:
    result = ops_cli(story_config, "claims", "--json")
    assert result.exit_code == 0
    rows = json.loads(result.output)
    assert len(rows) == 18
    for row in rows:
        assert set(row) >= DESIGN_CLAIM_KEYS
        assert row["state"] in STATES
        assert row["strategy"] is None or row["strategy"] in STRATEGIES
        for key in ("opened_at", "deadline_at"):
            if row["state"] == "buyer_contact" or row["order_id"] == "113-2000018-0000018":  # cases before claims
                assert row[key] is None
                continue
            assert row[key].endswith("Z")
            assert datetime.fromisoformat(row[key].replace("Z", "+00:00")).tzinfo is not None
    delivered = next(r for r in rows if r["order_id"] == ORDER)
    assert {
        "state": "awaiting_amazon",
        "strategy": "represent_delivered",
        "complaint_type": "not_received",
        "marketplace": "amazon.com",
        "tracking_number": "1Z999AA10123456784",
        "carrier": "UPS",
        "buyer_address": "k7p2m9x4d1w8n3q6r5t0@marketplace.amazon.com",
    }.items() <= delivered.items()
    no_reason = next(r for r in rows if r["order_id"] == "113-2000012-0000012")
    assert (no_reason["complaint_type"], no_reason["buyer_address"], no_reason["flagged"]) == (None, None, True)


def test_claims_table_sorted_by_urgency(story_config, ops_cli) -> None:
    result = ops_cli(story_config, "claims")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split() == ["ORDER", "STATE", "ANSWER", "LEFT", "COMPLAINT", "STRATEGY", "NOTE"]
    rows = json.loads(ops_cli(story_config, "claims", "--json").output)
    assert [line.split()[0] for line in lines[1:]] == [r["order_id"] for r in rows]

    def first_due(row: dict) -> str:  # what comes first: the answer owed to the buyer, or Amazon's deadline
        keys = (
            ("appeal_due_at",)
            if row["state"] in ("resolved", "granted", "refunded")
            else ("reply_due_at", "deadline_at")
        )
        return min((row[key] for key in keys if row[key]), default="~")

    closed = [r["state"] in ("resolved", "granted", "refunded") and not r["appeal_due_at"] for r in rows]
    assert closed == sorted(closed)  # open ones, and appeals, first
    open_rows = [r for r, done in zip(rows, closed, strict=True) if not done]
    assert [first_due(r) for r in open_rows] == sorted(first_due(r) for r in open_rows)
    assert {r["state"] for r in rows[-4:]} == {"granted", "resolved", "refunded"}  # closed claims last
    owed = [line.split() for line in lines[1:] if line.split()[2] == "overdue"]
    assert owed and all(row[3] != "overdue" for row in owed)  # ANSWER overdue, claim deadline still ahead
    assert "\x1b[" not in result.output


def test_claims_table_colours_states_on_a_terminal(story_config, ops_cli) -> None:
    result = ops_cli(story_config, "claims", color=True)
    assert result.exit_code == 0
    assert click.style(f"{'refund_needed':<16}", fg="red") in result.output
    assert click.style(f"{'awaiting_amazon':<16}", fg="blue") in result.output
    assert click.style(f"{'resolved':<16}", fg="green") in result.output
    assert click.unstyle(result.output) == ops_cli(story_config, "claims").output


def test_claims_state_filter(story_config, ops_cli) -> None:
    result = ops_cli(story_config, "claims", "--state", "awaiting_amazon")
    assert result.exit_code == 0
    states = {line.split()[1] for line in result.output.splitlines()[1:]}
    assert states == {"awaiting_amazon"}
    assert len(result.output.splitlines()) == 1 + 4
    rows = json.loads(ops_cli(story_config, "claims", "--state", "refund_needed", "--json").output)
    assert sorted(r["order_id"] for r in rows) == ["113-2000007-0000007", "113-2000013-0000013"]
    bad = ops_cli(story_config, "claims", "--state", "open")
    assert bad.exit_code == 2
    assert "Invalid value for '--state'" in bad.stderr


def test_claims_show(story_config, ops_cli) -> None:
    result = ops_cli(story_config, "claims", "show", "113-2000006-0000006")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].startswith(
        "claim 113-2000006-0000006: awaiting_buyer (request_withdrawal), complaint not_received, deadline "
    )
    assert lines[1] == "messages:"
    assert "buyer_message" in lines[2] and "complaint_type=not_received" in lines[2]
    assert "claim_filed" in lines[3]
    assert "buyer_message" in lines[4] and "buyer_intent=resolved" in lines[4]
    assert "timeline:" in lines
    assert any("- -> buyer_contact" in line and "answer_not_received" in line for line in lines)
    assert any("buyer_contact -> awaiting_buyer" in line and "not_received_untracked" in line for line in lines)
    assert any("awaiting_buyer" in line and "buyer_resolved" in line for line in lines)
    drafts = lines[lines.index("drafts:") + 1 :]
    assert any(line.split()[:2] == ["request_withdrawal", "wanted"] for line in drafts)
    data = json.loads(ops_cli(story_config, "claims", "show", "113-2000006-0000006", "--json").output)
    assert set(data) == {"claim", "messages", "stated", "events", "drafts"}
    assert data["claim"]["order_id"] == "113-2000006-0000006"


def test_claims_show_unknown_order(ops_config, ops_cli) -> None:
    result = ops_cli(ops_config(), "claims", "show", "111-0000000-0000000")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == "Error: no claim and no message for order 111-0000000-0000000\n"


# --- orders import ------------------------------------------------------------------------------------


def test_orders_import(ops_config, ops_cli, tmp_path) -> None:
    path = ops_config()
    csv = tmp_path / "shipments.csv"
    csv.write_text(
        "order_id,carrier,tracking_number,ship_date,delivered_date\n"
        "111-1111111-1111111,UPS,1Z999AA10123456784,2026-01-02,2026-01-05\n"
        "not-an-order,UPS,1Z999AA10123456784,2026-01-02,\n"
    )
    result = ops_cli(path, "orders", "import", str(csv))
    assert result.exit_code == 0
    assert result.stdout == "1 added, 0 updated, 0 unchanged, 1 skipped\n"
    assert result.stderr.startswith(f"{csv}:3: skipped: ")
    again = ops_cli(path, "orders", "import", str(csv))
    assert again.stdout == "0 added, 0 updated, 1 unchanged, 1 skipped\n"


def test_orders_import_amazon_columns_tsv(ops_config, ops_cli, tmp_path) -> None:
    tsv = tmp_path / "confirm.txt"
    tsv.write_text(
        "order-id\tcarrier-code\ttracking-number\tship-date\n"
        "111-1111111-1111111\tUSPS\t9400111899223344556677\t2026-01-02\n"
    )
    result = ops_cli(ops_config(), "orders", "import", str(tsv))
    assert result.exit_code == 0
    assert result.output == "1 added, 0 updated, 0 unchanged, 0 skipped\n"


def test_orders_import_missing_file(ops_config, ops_cli, tmp_path) -> None:
    result = ops_cli(ops_config(), "orders", "import", str(tmp_path / "nope.csv"))
    assert result.exit_code == 1
    assert result.stderr == f"Error: {tmp_path / 'nope.csv'}: no such file\n"


# --- poll and logs ------------------------------------------------------------------------------------

SECRET_BODY_MARKER = "ZEBRA-7731-private-body-text"


def amazon_claim(order_id: str = "114-3000001-0000001", comment: str = "It never arrived.") -> bytes:
    message = EmailMessage()
    message["From"] = "atoz-guarantee-no-reply@amazon.com"
    message["To"] = "claims@kestrel-outdoor.example"
    message["Subject"] = f"Claim received on order {order_id}"
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = f"<claim-{order_id}@amazon.com>"
    message["X-Marketplace-ID"] = "ATVPDKIKX0DER"
    message.set_content(
        f"A buyer has filed an A-to-z Guarantee claim on order {order_id}.\n"
        f'Claim reason: Item not received\nBuyer\'s comment: "{comment}"\n'
        "Please respond within 7 days.\n"
    )
    return message.as_bytes()


def test_poll_once(ops_dovecot_config, ops_cli, imap) -> None:
    imap.append("INBOX", amazon_claim())
    path = ops_dovecot_config()
    result = ops_cli(path, "poll", "--once")
    assert result.exit_code == 0, result.output
    assert result.stdout == "1 new, 0 already stored, 0 not Amazon; 1 processed, 0 failed\n"
    again = ops_cli(path, "poll", "--once")
    assert again.stdout == "0 new, 0 already stored, 0 not Amazon; 0 processed, 0 failed\n"


def test_poll_once_with_a_wrong_password(ops_dovecot_config, ops_cli, monkeypatch, mail_user) -> None:
    path = ops_dovecot_config()
    monkeypatch.setenv("PIPELINE_IMAP_PASSWORD", "wrong-" + mail_user.password)
    result = ops_cli(path, "poll", "--once")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"Error: 127.0.0.1: login refused for {mail_user.username} (check the password or token)"
    ]
    assert "Traceback" not in result.output
    assert mail_user.password not in result.output


def test_poll_once_unreachable_server(ops_config, ops_cli) -> None:
    result = ops_cli(ops_config(imap={"host": "127.0.0.1", "port": 1, "security": "ssl"}), "poll", "--once")
    assert result.exit_code == 1
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("Error: cannot connect to 127.0.0.1:1: ")


def test_log_format_json(ops_dovecot_config, ops_cli, imap) -> None:
    imap.append("INBOX", amazon_claim())
    result = ops_cli(ops_dovecot_config(), "--log-format", "json", "--log-level", "DEBUG", "poll", "--once")
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert lines
    records = [json.loads(line) for line in lines]
    for record in records:
        assert {"time", "level", "logger", "message"} <= set(record)
        assert record["time"].endswith("+00:00")
    assert any(r["level"] == "INFO" and r["message"].startswith("stored message uid=1") for r in records)


def test_log_format_text(ops_dovecot_config, ops_cli, imap) -> None:
    imap.append("INBOX", amazon_claim())
    result = ops_cli(ops_dovecot_config(), "--log-format", "text", "poll", "--once")
    assert result.exit_code == 0
    assert any(
        " INFO    pipeline.poller: stored message uid=1 folder=INBOX" in line for line in result.stderr.splitlines()
    )


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_logs_hold_no_secret_and_no_body(ops_dovecot_config, ops_cli, imap, mail_user, level) -> None:
    imap.append("INBOX", amazon_claim(comment=f"{SECRET_BODY_MARKER} please call me"))
    imap.append("INBOX", amazon_claim("114-3000002-0000002", comment="short"))
    path = ops_dovecot_config()
    outputs = [
        ops_cli(path, "--log-level", level, *args).output
        for args in (
            ("--log-format", "text", "poll", "--once"),
            ("--log-format", "json", "reprocess"),
            ("--log-format", "text", "check"),
        )
    ]
    assert "stored message uid=1" in outputs[0]  # the logs were captured
    assert "reprocessed 2/2 messages" in outputs[1]
    for output in outputs:
        assert mail_user.password not in output
        if level == "INFO":
            assert SECRET_BODY_MARKER not in output


def test_bad_date_option(ops_config, ops_cli) -> None:
    result = ops_cli(ops_config(), "reprocess", "--since", "last week")
    assert result.exit_code == 2
    assert "Invalid value for --since: 'last week' is not an ISO 8601 date (YYYY-MM-DD)" in result.stderr


# --- metrics ------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def scrape(port: int) -> dict[str, float]:
    """The samples of /metrics as {'name{labels}': value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def wait_for(condition, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except OSError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.2)


def test_metrics_of_a_poller(ops_dovecot_config, imap) -> None:
    """Poller + Metrics in-process against Dovecot: the four families, with values from the database."""
    from pipeline.metrics import Metrics
    from pipeline.poller import Poller
    from pipeline.service import make_desk
    from pipeline.store import Store

    imap.append("INBOX", amazon_claim())
    settings = load_settings(ops_dovecot_config())
    store = Store(settings.database.url)
    metrics = Metrics(store, 0)
    try:
        before = scrape(metrics.port)
        assert before['pipeline_claims{state="awaiting_buyer"}'] == 0
        assert math.isnan(before["pipeline_seconds_since_last_poll"])
        poller = Poller(settings, store, make_desk(settings, store), metrics=metrics)
        metrics.attach(poller)
        stats = poller.poll_once()
        assert stats.stored == 1
        after = scrape(metrics.port)
        assert after['pipeline_messages{status="done"}'] == 1
        assert after['pipeline_messages{status="failed"}'] == 0
        assert after['pipeline_claims{state="awaiting_buyer"}'] == 1
        assert after['pipeline_claims{state="granted"}'] == 0
        assert 0 <= after["pipeline_seconds_since_last_poll"] < 30
        assert after["pipeline_reconnects_total"] == 0
        assert after["pipeline_messages_stored_total"] == 1
        # time per stage: the poll fetched, stored, parsed, understood and replayed this message
        for name in ("fetch", "store", "parse", "understand", "replay"):
            assert after[f'pipeline_stage_seconds_total{{stage="{name}"}}'] > before.get(
                f'pipeline_stage_seconds_total{{stage="{name}"}}', 0
            ), name
        assert after['pipeline_stage_items_total{stage="understand"}'] >= 1
    finally:
        metrics.close()
        store.dispose()


def test_poll_metrics_port(ops_dovecot_config, dovecot, mail_user, imap) -> None:
    """The daemon with --metrics-port: serves Prometheus text, counts a reconnect, stops cleanly on SIGTERM."""
    imap.append("INBOX", amazon_claim())
    port = free_port()
    config = ops_dovecot_config()
    env = {k: v for k, v in os.environ.items() if k != "PIPELINE_CONFIG"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from pipeline.cli import main; main()",
            "--config",
            str(config),
            "--log-format",
            "json",
            "poll",
            "--metrics-port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        first = wait_for(
            lambda: (lambda s: s if s.get('pipeline_messages{status="done"}') == 1 else None)(scrape(port))
        )
        assert first['pipeline_claims{state="awaiting_buyer"}'] == 1
        assert first["pipeline_seconds_since_last_poll"] < 30
        assert first["pipeline_reconnects_total"] == 0
        assert dovecot.kick(mail_user.username)
        wait_for(lambda: scrape(port)["pipeline_reconnects_total"] >= 1)
        with IMAPClient(dovecot.host, port=dovecot.port, ssl=False) as client:  # the kick dropped `imap` too
            client.login(mail_user.username, mail_user.password)
            client.append("INBOX", amazon_claim("114-3000009-0000009"))
        wait_for(lambda: scrape(port)['pipeline_messages{status="done"}'] == 2)
    finally:
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    records = [json.loads(line) for line in err.splitlines()]
    assert any(r["message"] == f"serving metrics on http://127.0.0.1:{port}/metrics" for r in records)
    assert any(r["message"].startswith("connection lost") for r in records)
    assert records[-1]["message"] == "stopped"
    with pytest.raises(OSError):
        scrape(port)


def test_metrics_port_in_use(ops_dovecot_config, ops_cli) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = ops_cli(ops_dovecot_config(), "poll", "--metrics-port", str(port))
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [f"Error: cannot serve metrics on 127.0.0.1:{port}: Address already in use"]


# --- inspect ------------------------------------------------------------------------------------------

DESIGN_INSPECT_KEYS = {
    "kind",
    "order_id",
    "complaint_type",
    "buyer_intent",
    "tracking_number",
    "carrier",
    "deadline_at",
    "marketplace",
    "language",
    "trusted",
    "evidence",
}


def test_inspect_json(ops_cli, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # no pipeline.toml here: inspect works without a config
    eml = tmp_path / "claim.eml"
    eml.write_bytes(amazon_claim("114-3000001-0000001"))
    result = ops_cli(None, "inspect", "--json", str(eml))
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) >= DESIGN_INSPECT_KEYS
    assert data["kind"] == "claim_filed"
    assert data["order_id"] == "114-3000001-0000001"
    assert data["complaint_type"] == "not_received"
    assert data["buyer_intent"] is None
    assert data["tracking_number"] is None
    assert data["trusted"] is True
    assert data["language"] == "en"
    assert data["marketplace"] == "amazon.com"
    assert data["deadline_at"].endswith("Z")
    assert data["evidence"]


def test_inspect_text_and_spoofed_sender(ops_cli, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    eml = tmp_path / "spoof.eml"
    eml.write_bytes(amazon_claim().replace(b"atoz-guarantee-no-reply@amazon.com", b"atoz@amazon-claims.example"))
    result = ops_cli(None, "inspect", str(eml))
    assert result.exit_code == 0, result.output
    assert "114-3000001-0000001" in result.stdout
    assert json.loads(ops_cli(None, "inspect", "--json", str(eml)).stdout)["trusted"] is False


def test_inspect_missing_file(ops_cli, tmp_path) -> None:
    result = ops_cli(None, "inspect", str(tmp_path / "nope.eml"))
    assert result.exit_code == 2
    assert "does not exist" in result.stderr
