"""`pipeline demo`: the real thing (its own throwaway Dovecot), one story per playbook row."""

from __future__ import annotations

import os
import re
import shutil
import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline.vocabulary import STATES, STRATEGIES

pytestmark = [pytest.mark.slow, pytest.mark.server]  # `pipeline demo` starts its own Dovecot


@pytest.fixture(scope="module")
def dovecot_available() -> None:
    from pipeline.testing.dovecot import DovecotError, find_dovecot

    try:
        find_dovecot()
    except DovecotError as error:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Dovecot is not available for the demo: {error} (CI=true: not skipping)", pytrace=False)
        pytest.skip(f"Dovecot is not available for the demo: {error}")


def table_rows(output: str) -> list[list[str]]:
    """The claims table of the demo's output: [order, state, …] per claim."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["ORDER", "STATE"])
    rows = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        rows.append(line.split())
    return rows


def test_demo(dovecot_available, ops_cli) -> None:
    from pipeline.testing.stories import demo_stories

    count = len(demo_stories(datetime.now(UTC))[0])
    result = ops_cli(None, "demo")
    assert result.exit_code == 0, result.output
    out = result.output
    port = int(re.search(rf"^Dovecot on 127\.0\.0\.1:(\d+): {count} Amazon messages in INBOX$", out, re.M).group(1))
    assert f"poll: {count} stored, {count} processed, 0 failed" in out

    rows = table_rows(out)
    assert len(rows) == 18
    states = {row[1] for row in rows}
    assert states == set(STATES)
    strategies = {word for row in rows for word in row[2:] if word in STRATEGIES}
    assert strategies == set(STRATEGIES) - {"answer_delivered", "answer_after_use"}  # those stand beside others
    by_order = {row[0]: row for row in rows}
    assert by_order["113-2000007-0000007"][1] == "refund_needed"  # the buyer asked for a refund
    assert by_order["113-2000013-0000013"][1] == "refund_needed"  # no answer, deadline near
    assert by_order["113-2000008-0000008"][1] == "resolved"
    assert by_order["113-2000009-0000009"][1] == "granted"
    assert by_order["113-2000014-0000014"][1] == "refunded"
    assert (
        by_order["113-2000015-0000015"][1] == "buyer_contact"
        and "damaged_on_arrival" in by_order["113-2000015-0000015"]
    )
    assert by_order["113-2000018-0000018"][1] == "resolved"  # won before the claim: none was filed
    assert by_order["113-2000017-0000017"][1:3] == ["granted", by_order["113-2000017-0000017"][2]]
    assert "appeal_granted" in by_order["113-2000017-0000017"]
    assert "Amazon asks for more information" in " ".join(by_order["113-2000011-0000011"])
    assert "reason not in Amazon's mail: check Seller Central" in " ".join(by_order["113-2000012-0000012"])
    assert rows[0][0] == "113-2000013-0000013"  # the most urgent first: 3 hours to the refund alarm's deadline

    # a claim whose notice names no reason: the complaint came from the buyer's earlier message
    shown = out.split("$ pipeline claims show 113-2000001-0000001")[1].split("$ pipeline claims show")[0]
    assert "complaint not_received" in shown and "buyer_message      Package didn't arrive" in shown
    # a return request and a refund on the timeline, and the claim refunded
    refunded = out.split("$ pipeline claims show 113-2000014-0000014")[1].split("$ pipeline claims show")[0]
    assert "return_request" in refunded and "refund_issued" in refunded
    assert "awaiting_buyer -> refunded" in refunded
    # a claim granted although UPS delivered before it: appealed in Seller Central within 30 days
    appealed = out.split("$ pipeline claims show 113-2000017-0000017")[1].split("$ pipeline stats")[0]
    assert "appeal_granted: Amazon granted the claim, but UPS delivered it on" in appealed
    assert "appeal_granted             written    to Seller Central (en)" in appealed
    stats = out.split("$ pipeline stats --weeks 3")[1].split("Drafts folder")[0]
    assert stats.splitlines()[1].split()[:2] == ["WEEK", "FROM"]

    drafts = re.findall(r"^--- draft \d+: (\w+) for (\S+)$", out, re.M)
    assert ("represent_delivered", "113-2000001-0000001") in drafts
    assert ("answer_size", "113-2000016-0000016") in drafts  # Amazon customer service, by e-mail
    seller_central = out.split("--- draft")[[s for s, _o in drafts].index("represent_delivered") + 1]
    assert "To: (none: paste it into Seller Central, as its first lines say)" in seller_central
    assert "Subject: Respond to Amazon: 113-2000001-0000001" in seller_central
    assert "Subject: Appeal decision: 113-2000017-0000017" in out
    assert "=== Answer in Seller Central: paste the text below the line ===" in seller_central
    assert "https://sellercentral.amazon.com > Performance > A-to-z Guarantee Claims" in seller_central
    assert "To: cs-reply@amazon.com" in out
    assert "1Z999AA10123456784" in out  # the tracking number made it into the draft
    assert "atoz-guarantee" not in out.split("Drafts folder")[1]  # no draft to a no-reply address

    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass  # the demo's Dovecot is gone


def test_demo_keep_leaves_a_usable_setup(dovecot_available, ops_cli) -> None:
    from pipeline.testing.dovecot import ThrowawayDovecot

    result = ops_cli(None, "demo", "--keep")
    assert result.exit_code == 0, result.output
    kept = re.search(
        r"^kept: (\S+) \(config (\S+)\); run commands there after `export PIPELINE_DKIM_KEYS=(\S+)` "
        r"\(the demo's signing key\); stop Dovecot with: python scripts/dovecot.py stop --dir (\S+)$",
        result.output,
        re.M,
    )
    assert kept, result.output
    workdir, config, keys, dovecot_dir = (Path(g) for g in kept.groups())
    assert keys.is_file() and keys.parent == workdir
    try:
        claims = ops_cli(config, "claims", "--state", "granted")
        assert claims.exit_code == 0
        granted = [line.split()[:2] for line in claims.output.splitlines()[1:]]
        assert granted == [["113-2000017-0000017", "granted"], ["113-2000009-0000009", "granted"]]  # the appeal first
        check = ops_cli(config, "check")
        assert check.exit_code == 0, check.output
    finally:
        ThrowawayDovecot.attach(dovecot_dir).stop()
        shutil.rmtree(workdir, ignore_errors=True)
