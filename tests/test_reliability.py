"""Never fooled, never doubled, never silent, on a real Dovecot: trust by proof, one writer per mailbox, drafts
that follow their claim, no message lost to a reused Message-ID, failures in plain sight, hostile mail.

Amazon mail built by pipeline.testing is signed with the test DKIM key, whose records PIPELINE_DKIM_KEYS
publishes to every process of the session (tests/conftest.py): "unsigned" below means its signature is taken off.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import stat
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import DeskEnv, _pg_create_database, _pg_drop_database, _pg_url

from pipeline.testing import stories
from pipeline.testing.dkim import resign, unsign

PIPELINE = str(Path(sys.executable).parent / "pipeline")  # the installed command, as a user runs it
T0 = datetime(2026, 11, 9, 10, tzinfo=UTC)
HOUR = timedelta(hours=1)
ORDER = "113-6100001-0000001"


def open_claim(env: DeskEnv, order: str = ORDER) -> None:
    """A buyer who complains and the claim that follows: awaiting_buyer with an offer to refund or resend."""
    env.append(stories.buyer(order, "Dana", "d3v8q1z6y2k9m4b7c5n0", "My order has still not arrived.", T0 - 30 * HOUR))
    env.append(stories.claim_filed(order, "24.99", T0))
    env.poll(clock=T0 + HOUR)
    claim = env.claim(order)
    assert claim is not None and (claim["state"], claim["strategy"]) == ("awaiting_buyer", "offer_refund_or_resend")


def withdrawal(order: str = ORDER) -> bytes:
    return stories.claim_decision(order, "24.99", T0 + 5 * HOUR, outcome="withdrawn")


# --- 1. trust by proof -----------------------------------------------------------------------------------


def test_a_forged_withdrawal_changes_nothing_in_strict_mode(desk_env: DeskEnv) -> None:
    """From atoz-guarantee-no-reply@amazon.com, no Authentication-Results, no signature: the usual forgery."""
    open_claim(desk_env)
    desk_env.append(unsign(withdrawal()))
    desk_env.poll(clock=T0 + 6 * HOUR)
    claim = desk_env.claim(ORDER)
    assert (claim["state"], claim["strategy"]) == ("awaiting_buyer", "offer_refund_or_resend")
    assert claim["flagged"] and claim["flag_reason"].startswith("unverified: nothing proves Amazon sent the")
    assert [e["rule"] for e in desk_env.timeline(ORDER)["events"]][-1] == "unverified_ignored"
    assert [d["X-Pipeline-Strategy"] for d in desk_env.drafts(ORDER)] == ["offer_refund_or_resend"]
    # and the refund alarm still rings before the deadline
    desk_env.poll(clock=T0 + 60 * HOUR)
    assert desk_env.claim(ORDER)["state"] == "refund_needed"


def test_a_signed_withdrawal_closes_the_claim(desk_env: DeskEnv) -> None:
    open_claim(desk_env)
    desk_env.append(withdrawal())
    desk_env.poll(clock=T0 + 6 * HOUR)
    claim = desk_env.claim(ORDER)
    assert (claim["state"], claim["flagged"]) == ("resolved", False)
    assert desk_env.drafts(ORDER) == []  # the untouched offer left with the claim


def test_lenient_mode_believes_the_sender_domain(make_desk_env) -> None:
    """For servers that give no proof and networks without DNS: today's behaviour, chosen on purpose."""
    env = make_desk_env(trust={"mode": "lenient"})
    open_claim(env)
    env.append(unsign(withdrawal()))
    env.poll(clock=T0 + 6 * HOUR)
    assert env.claim(ORDER)["state"] == "resolved"


def test_an_unverified_claim_notice_opens_a_flagged_claim(desk_env: DeskEnv) -> None:
    desk_env.append(unsign(stories.claim_filed(ORDER, "24.99", T0)))
    desk_env.poll(clock=T0 + HOUR)
    claim = desk_env.claim(ORDER)
    assert claim["state"] == "new" and claim["flagged"]
    assert "unverified: nothing proves Amazon sent the claim_filed" in claim["flag_reason"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Authentication-Results", "mx.harbor-goods.example; spf=fail smtp.mailfrom=amazon.com; dkim=permerror"),
        ("ARC-Authentication-Results", "i=1; mx.google.com; dmarc=fail header.from=amazon.com"),
        ("X-MS-Exchange-Authentication-Results", "spf=pass smtp.mailfrom=amazon.com; dmarc=fail action=none"),
    ],
)
def test_a_failing_verdict_stops_even_a_signed_withdrawal(desk_env: DeskEnv, name: str, value: str) -> None:
    open_claim(desk_env)
    desk_env.append(f"{name}: {value}\r\n".encode() + withdrawal())
    desk_env.poll(clock=T0 + 6 * HOUR)
    claim = desk_env.claim(ORDER)
    assert claim["state"] == "awaiting_buyer" and claim["flagged"]
    assert [e["rule"] for e in desk_env.timeline(ORDER)["events"]][-1] == "untrusted_sender"


def test_a_trusted_servers_pass_is_proof(make_desk_env) -> None:
    env = make_desk_env(trust={"authserv_ids": ["mx.harbor-goods.example"]})
    open_claim(env)
    verdict = "mx.harbor-goods.example; spf=pass smtp.mailfrom=amazonses.com; dkim=pass header.d=amazon.com"
    env.append(f"Authentication-Results: {verdict}\r\n".encode() + unsign(withdrawal()))
    env.poll(clock=T0 + 6 * HOUR)
    assert env.claim(ORDER)["state"] == "resolved"


# --- 2. one writer per mailbox ------------------------------------------------------------------------------


def _poll_process(env: DeskEnv) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PIPELINE, "--config", str(env.config), "poll", "--once"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PIPELINE_NOW": (T0 + HOUR).isoformat()},
    )


def _fill_for_drafts(env: DeskEnv, count: int) -> None:
    for i in range(count):
        order = f"113-62000{i:02d}-00000{i:02d}"
        env.append(stories.buyer(order, f"B{i}", f"r{i:02d}x7q2w9e4t1y6u3", "It never arrived.", T0 - 30 * HOUR))
        env.append(stories.claim_filed(order, "24.99", T0))


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> object:
    if request.param == "sqlite":
        yield None
        return
    request.getfixturevalue("pg_url")
    name = _pg_create_database("pipeline_lock_")
    try:
        yield _pg_url(name)
    finally:
        _pg_drop_database(name)


def test_two_pollers_started_together_write_each_draft_once(make_desk_env, database: str | None) -> None:
    env = make_desk_env(database=database)
    _fill_for_drafts(env, 12)
    first, second = _poll_process(env), _poll_process(env)
    outcomes = [(*process.communicate(timeout=300), process.returncode) for process in (first, second)]
    codes = sorted(code for _out, _err, code in outcomes)
    busy = [err for _out, err, code in outcomes if code != 0]
    assert codes in ([0, 0], [0, 1]), outcomes
    for err in busy:  # the one that lost says so in one line
        assert err.strip().startswith("Error: another `pipeline poll` is working on mailbox"), err
        assert len(err.strip().splitlines()) == 1
    copies = Counter((d["X-Pipeline-Claim"], d["X-Pipeline-Step"]) for d in env.drafts())
    assert len(copies) == 12 and set(copies.values()) == {1}, copies


def test_a_duplicate_draft_is_removed_at_the_next_poll(desk_env: DeskEnv) -> None:
    """However it got there (a lost lock, a restored backup), a second copy of a step's draft goes."""
    open_claim(desk_env)
    [draft] = desk_env.drafts(ORDER)
    copy = draft.raw.replace(draft["Message-ID"].encode(), b"<pipeline.copy0000000000@harbor-goods.example>")
    desk_env.append(copy, folder="Drafts", flags=(b"\\Draft", b"\\Seen"))
    edited = copy.replace(b"<pipeline.copy0000000000@", b"<pipeline.edit0000000000@").replace(
        b"Dear Dana,", b"Hello Dana, and sorry again,"
    )
    desk_env.append(edited, folder="Drafts", flags=(b"\\Draft", b"\\Seen"))
    desk_env.poll(clock=T0 + 2 * HOUR)
    kept = sorted(d["Message-ID"] for d in desk_env.drafts(ORDER))
    assert kept == sorted([draft["Message-ID"], "<pipeline.edit0000000000@harbor-goods.example>"])
    assert "1 duplicate offer_refund_or_resend draft(s) removed" in desk_env.show(ORDER)


def test_a_daemon_stands_by_while_another_poller_holds_the_mailbox(desk_env: DeskEnv) -> None:
    from pipeline.lock import MailboxLock
    from pipeline.service import account_of
    from pipeline.store import Store

    store = Store(desk_env.settings.database.url)
    holder = MailboxLock(store, account_of(desk_env.settings))
    assert holder.hold()
    try:
        daemon = subprocess.Popen(
            [PIPELINE, "--config", str(desk_env.config), "--log-level", "INFO", "poll"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(4)
        assert daemon.poll() is None  # waiting, not failing
        desk_env.append(stories.claim_filed(ORDER, "24.99", T0))
        time.sleep(2)
        assert desk_env.claims() == []  # nothing written while another holds the mailbox
        holder.release()  # the holder goes away: the daemon takes over
        deadline = time.monotonic() + 30
        while desk_env.claim(ORDER) is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert desk_env.claim(ORDER) is not None
    finally:
        holder.release()
        daemon.terminate()
        _out, err = daemon.communicate(timeout=30)
        store.dispose()
    assert "standing by" in err and "took the mailbox" in err


# --- 4. a reused Message-ID --------------------------------------------------------------------------------


def test_two_messages_sharing_a_message_id_are_both_stored(desk_env: DeskEnv) -> None:
    """A real withdrawal whose Message-ID was already used by the claim notice is stored and acted on."""
    open_claim(desk_env)
    known = str(email.message_from_bytes(stories.claim_filed(ORDER, "24.99", T0))["Message-ID"])
    own = str(email.message_from_bytes(withdrawal())["Message-ID"])
    reused = resign(unsign(withdrawal()).replace(own.encode(), known.encode(), 1))
    assert email.message_from_bytes(reused)["Message-ID"] == known
    desk_env.append(reused)
    desk_env.poll(clock=T0 + 6 * HOUR)
    kinds = [m["kind"] for m in desk_env.timeline(ORDER)["messages"]]
    assert sorted(kinds) == ["buyer_message", "claim_filed", "claim_withdrawn"]
    assert desk_env.claim(ORDER)["state"] == "resolved"


# --- 5. failures in plain sight ----------------------------------------------------------------------------

BROKEN = (
    b"From: atoz-guarantee-no-reply@amazon.com\r\nTo: claims@harbor-goods.example\r\n"
    b"Subject: Claim received on order 113-6300001-0000001\r\nDate: Mon, 09 Nov 2026 10:00:00 +0000\r\n"
    b"Message-ID: <broken-1@amazon.com>\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/alternative; boundary="never-there"\r\n\r\n'
    b"We received an A-to-z Guarantee claim on order 113-6300001-0000001.\r\n"
)


def test_a_message_that_cannot_be_read_is_in_claims_and_the_digest(desk_env: DeskEnv) -> None:
    desk_env.append(BROKEN)
    desk_env.poll(clock=T0)
    shown = desk_env.cli("claims").output
    assert shown.rstrip().splitlines()[-1] == (
        "1 message could not be read (they mention 113-6300001-0000001): see `pipeline claims --failed`, "
        "retry with `pipeline reprocess --failed`"
    )
    [failed] = json.loads(desk_env.cli("claims", "--failed", "--json").output)
    assert failed["order_ids"] == ["113-6300001-0000001"] and "broken MIME structure" in failed["error"]
    assert "broken MIME structure" in desk_env.cli("claims", "--failed").output
    digest = email.message_from_string(desk_env.cli("digest", "--print").output, policy=email.policy.default)
    assert digest["Subject"] == "pipeline: no claims need action in the next 48 hours; 1 message could not be read"
    assert "1 message could not be read (pipeline claims --failed):" in digest.get_content()
    retried = desk_env.cli("reprocess", "--failed", expect=1)
    assert retried.output.splitlines()[-1].startswith("1 message, 1 failed")


def test_inspect_of_a_huge_message_is_cut_not_a_traceback(tmp_path: Path, ops_cli) -> None:
    path = tmp_path / "huge.eml"
    path.write_bytes(
        b"From: Kim - Amazon Marketplace <k1m2x3q4w5e6r7t@marketplace.amazon.com>\r\nTo: a@b.example\r\n"
        b"Subject: Inquiry from Amazon customer Kim (Order: 112-0497765-4469792)\r\n\r\n"
        b"------------- Begin message -------------\r\n\r\n"
        + b"where is my parcel? it never arrived. " * 40_000
        + b"\r\n\r\n------------- End message -------------\r\n"
    )
    result = ops_cli(None, "inspect", str(path))
    assert result.exit_code == 0, result.output
    assert "cut: read the first 100000 of" in result.output
    assert "complaint_type: not_received" in result.output


# --- 6. the database file is private ------------------------------------------------------------------------


def test_the_sqlite_database_and_its_folder_are_private(desk_env: DeskEnv, tmp_path: Path) -> None:
    from pipeline.store import Store

    path = tmp_path / "new-folder" / "pipeline.db"
    old = os.umask(0o022)  # as a shell usually has it
    try:
        Store(f"sqlite:///{path}").dispose()
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


# --- 7. hostile mail ---------------------------------------------------------------------------------------


def _bomb() -> bytes:
    bomb = email.message.EmailMessage()
    bomb["From"], bomb["To"] = "atoz-guarantee-no-reply@amazon.com", "claims@harbor-goods.example"
    bomb["Subject"], bomb["Date"] = "Claim received on order 113-6400002-0000002", "Mon, 09 Nov 2026 10:00:00 +0000"
    bomb["Message-ID"] = "<bomb-1@amazon.com>"
    bomb.set_content("<html><body>" + "&amp;&lt;&#x41;" * 1_000_000 + "</body></html>", subtype="html")
    return bomb.as_bytes()


def test_a_15_mb_html_entity_bomb_is_read_within_5_seconds() -> None:
    from pipeline.message import parse_message
    from pipeline.understanding import Understander

    understander = Understander.shared()
    understander.model("en")  # the model is built once per process, not per message
    raw = _bomb()
    assert len(raw) > 15_000_000
    started = time.monotonic()
    facts = understander.understand(parse_message(raw))
    assert time.monotonic() - started < 5
    assert facts.kind == "claim_filed" and "cut" in facts.evidence


def test_the_daemon_takes_in_a_25_mb_message_under_400_mb(desk_env: DeskEnv) -> None:
    big = email.message.EmailMessage()
    big["From"], big["To"] = "atoz-guarantee-no-reply@amazon.com", "claims@harbor-goods.example"
    big["Subject"], big["Date"] = "Claim received on order 113-6400001-0000001", "Mon, 09 Nov 2026 10:00:00 +0000"
    big["Message-ID"] = "<big-1@amazon.com>"
    big.set_content("We received an A-to-z Guarantee claim. " + "x" * 25_000_000)
    desk_env.append(big.as_bytes())
    started = time.monotonic()
    # a process of its own runs the poll, so that its children's peak is the poll's alone
    measure = (
        "import resource, subprocess, sys; "
        "run = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "sys.stderr.write(run.stderr); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(run.returncode)"
    )
    run = subprocess.run(
        [sys.executable, "-c", measure, PIPELINE, "--config", str(desk_env.config), "poll", "--once"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PIPELINE_NOW": (T0 + HOUR).isoformat()},
        check=False,
    )
    seconds = time.monotonic() - started
    peak_mb = int(run.stdout.split()[-1]) / 1024
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert peak_mb < 400, f"peak RSS {peak_mb:.0f} MB"
    assert seconds < 60, f"{seconds:.1f} s"
    assert len(desk_env.timeline("113-6400001-0000001")["messages"]) == 1  # read (or kept as failed), never lost


def test_check_says_how_much_amazon_mail_carries_proof(desk_env: DeskEnv) -> None:
    open_claim(desk_env)  # two signed messages
    verdict = "mx.harbor-goods.example; dkim=pass header.d=amazon.com"
    desk_env.append(f"Authentication-Results: {verdict}\r\n".encode() + unsign(withdrawal()))
    desk_env.poll(clock=T0 + 6 * HOUR)
    out = desk_env.cli("check").output
    [line] = [line for line in out.splitlines() if " trust: " in line]
    assert line == (
        "ok   trust: strict mode: 2 of the 3 latest Amazon messages carry proof (DKIM or a trusted server); "
        "servers seen: mx.harbor-goods.example (add yours to [trust] authserv_ids)"
    )


def test_check_warns_when_no_amazon_mail_can_be_verified(desk_env: DeskEnv) -> None:
    desk_env.append(unsign(stories.claim_filed(ORDER, "24.99", T0)))
    desk_env.poll(clock=T0 + HOUR)
    result = desk_env.cli("check")
    [line] = [line for line in result.output.splitlines() if " trust: " in line]
    assert line.startswith("warn trust: strict mode: 0 of the 1 latest Amazon messages carry proof")
    assert "none could be verified, so none may decide a claim" in line


# --- 3. drafts follow their claim ------------------------------------------------------------------------


def _edit_the_draft(env: DeskEnv, order: str) -> None:
    """What a mail client does when a person edits a draft: the old copy goes, an edited one is saved."""
    with env.imap() as client:
        client.select_folder("Drafts")
        [uid] = client.search(["HEADER", "X-Pipeline-Claim", order])
        raw = client.fetch([uid], [b"BODY.PEEK[]"])[uid][b"BODY[]"]
        client.delete_messages([uid])
        client.expunge()
        client.append(
            "Drafts", raw.replace(b"Dear Dana,", b"Dear Dana, (P.S. a new one is on its way)"), flags=[b"\\Draft"]
        )


def test_a_decided_claim_leaves_no_untouched_draft_and_flags_an_edited_one(make_desk_env) -> None:
    untouched, edited = make_desk_env(), make_desk_env()
    for env in (untouched, edited):
        open_claim(env)
    _edit_the_draft(edited, ORDER)
    for env in (untouched, edited):
        env.append(withdrawal())
        env.poll(clock=T0 + 6 * HOUR)
    assert untouched.drafts(ORDER) == [] and untouched.claim(ORDER)["flagged"] is False
    [kept] = edited.drafts(ORDER)
    assert "P.S. a new one is on its way" in kept.body
    claim = edited.claim(ORDER)
    assert (claim["state"], claim["flagged"]) == ("resolved", True)
    assert claim["flag_reason"] == "the claim was decided: do not send the edited offer_refund_or_resend draft"
    assert "do not send the edited offer_refund_or_resend draft" in edited.cli("claims").output
    assert "do not send the edited" in edited.cli("digest", "--print").output


def test_a_crash_right_after_our_own_delete_is_not_taken_for_an_edit(desk_env: DeskEnv) -> None:
    """The pipeline records that it is about to delete before it deletes: a crash in between is no 'edit'."""
    from sqlalchemy import select

    from pipeline.schema import Claim, Draft
    from pipeline.store import Store

    open_claim(desk_env)
    desk_env.append(withdrawal())
    store = Store(desk_env.settings.database.url)
    try:
        desk_env.cli("reprocess", "--from-imap")  # stored and decided, no drafts touched: its draft is to retire
        with store.session() as session:
            [draft] = session.scalars(
                select(Draft).join(Draft.claim).where(Claim.order_id == ORDER, Draft.status == "retiring")
            )
            draft.status = "deleting"  # the state the pipeline commits just before its IMAP delete
        with desk_env.imap() as client:  # ... the delete went through, then the process died
            client.select_folder("Drafts")
            client.delete_messages(client.search(["HEADER", "X-Pipeline-Claim", ORDER]))
            client.expunge()
    finally:
        store.dispose()
    desk_env.poll(clock=T0 + 6 * HOUR)
    rules = [e["kind"] for e in desk_env.timeline(ORDER)["events"]]
    assert "draft_edited" not in rules and "draft_replaced" in rules
