"""pipeline.trust: proof that Amazon sent a message (our DKIM check, a trusted server's pass) and what takes it away.

Mail is signed with the test key of pipeline.testing.dkim; the DNS records that verify it come from the JSON
file PIPELINE_DKIM_KEYS names, exactly as the daemon reads them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline import trust
from pipeline.message import parse_message
from pipeline.testing import dkim as test_key
from pipeline.testing import stories
from pipeline.understanding import Understander

SENT = datetime(2026, 11, 3, 9, 30, tzinfo=UTC)
ORDER = "113-5120044-7719305"
AUTHSERV = ("mx.acme-store.example",)


@pytest.fixture
def keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = test_key.records_file(tmp_path, ("amazon.com", "marketplace.amazon.com", "amazon.de"))
    monkeypatch.setenv("PIPELINE_DKIM_KEYS", str(path))
    return path


def withdrawn() -> bytes:
    """An unsigned withdrawal (the builders sign Amazon's mail: the signature is taken off)."""
    return test_key.unsign(stories.claim_decision(ORDER, "24.99", SENT, outcome="withdrawn"))


def with_header(raw: bytes, name: str, value: str) -> bytes:
    return f"{name}: {value}\r\n".encode() + raw


# --- proof -----------------------------------------------------------------------------------------------


def test_our_dkim_check_of_amazons_signature_is_proof(keys: Path) -> None:
    found = trust.verdict(test_key.sign(withdrawn(), "amazon.com"))
    assert found.verified and found.proof == "dkim: d=amazon.com s=pipeline-test"


def test_no_signature_and_no_results_is_no_proof(keys: Path) -> None:
    found = trust.verdict(withdrawn())
    assert (found.verified, found.proof, found.failure) == (False, None, None)


def test_amazon_ses_signs_for_everyone_so_its_signature_proves_nothing(
    keys: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIPELINE_DKIM_KEYS", str(test_key.records_file(tmp_path, ("amazonses.com",))))
    assert trust.verdict(test_key.sign(withdrawn(), "amazonses.com")).proof is None


def test_a_signature_that_leaves_from_out_proves_nothing(keys: Path) -> None:
    """(dkimpy will not sign so: the h= list is edited after signing; such a signature is never checked.)"""
    signed = test_key.sign(withdrawn(), "amazon.com")
    assert b"h=from : " in signed
    found = trust.verdict(signed.replace(b"h=from : ", b"h=", 1))
    assert (found.proof, found.failure) == (None, None)


def test_a_rotated_key_is_no_proof_and_no_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Old mail signed with a key Amazon no longer publishes: nothing to check it with."""
    monkeypatch.setenv("PIPELINE_DKIM_KEYS", str(test_key.records_file(tmp_path, ("amazon.de",))))
    found = trust.verdict(test_key.sign(withdrawn(), "amazon.com"))
    assert (found.proof, found.failure) == (None, None)


def test_a_trusted_servers_pass_is_proof_and_anyone_elses_is_not(keys: Path) -> None:
    raw = with_header(
        withdrawn(),
        "Authentication-Results",
        "mx.acme-store.example; spf=pass smtp.mailfrom=amazonses.com; dkim=pass header.d=amazon.com "
        "header.s=224i4yxa5dv7c2xz3womw6peuasteono; dmarc=pass (p=QUARANTINE) header.from=amazon.com",
    )
    assert trust.verdict(raw, AUTHSERV).proof == "authentication-results: mx.acme-store.example dkim=pass amazon.com"
    assert trust.verdict(raw, ("mx.other.example",)).proof is None
    assert trust.verdict(raw).authserv_ids == AUTHSERV  # what `pipeline check` suggests


def test_a_pass_for_another_domain_is_no_proof(keys: Path) -> None:
    raw = with_header(
        withdrawn(),
        "Authentication-Results",
        "mx.acme-store.example; dkim=pass header.d=amaz0n-support.net; dmarc=pass header.from=amaz0n-support.net",
    )
    assert trust.verdict(raw, AUTHSERV).proof is None


# --- what takes trust away ------------------------------------------------------------------------------

FAILURES = [
    ("Authentication-Results", "mx.acme-store.example; spf=fail smtp.mailfrom=amazon.com; dkim=permerror"),
    ("Authentication-Results", "mx.acme-store.example; spf=softfail smtp.mailfrom=amazon.com; dkim=temperror"),
    ("Authentication-Results", "mx.acme-store.example; spf=fail smtp.mailfrom=amazon.com"),
    ("Authentication-Results", "mx.acme-store.example; dmarc=permerror header.from=amazon.com"),
    ("ARC-Authentication-Results", "i=1; mx.google.com; dkim=none; spf=pass; dmarc=fail header.from=amazon.com"),
    (
        "X-MS-Exchange-Authentication-Results",
        "spf=pass (sender IP is 54.240.1.1) smtp.mailfrom=amazon.com; "
        "dkim=none (message not signed) header.d=none;dmarc=fail action=none header.from=amazon.com;",
    ),
]


@pytest.mark.parametrize(("name", "value"), FAILURES, ids=[f"{n}:{v[:40]}" for n, v in FAILURES])
def test_every_failing_verdict_takes_trust_away(keys: Path, name: str, value: str) -> None:
    """Even next to a signature that verifies, and from a server nobody listed."""
    found = trust.verdict(with_header(test_key.sign(withdrawn(), "amazon.com"), name, value))
    assert not found.verified and found.failure is not None and name in found.failure
    facts = Understander().understand(parse_message(with_header(withdrawn(), name, value)))
    assert facts.trusted is False


def test_a_signature_that_does_not_match_is_a_failure(keys: Path) -> None:
    tampered = test_key.sign(withdrawn(), "amazon.com").replace(b"has withdrawn", b"has not withdrawn")
    found = trust.verdict(tampered)
    assert found.failure is not None and found.failure.startswith("our DKIM check: d=amazon.com")


# --- the facts ------------------------------------------------------------------------------------------


def test_apply_sets_verified_with_its_evidence(keys: Path) -> None:
    raw = test_key.sign(withdrawn(), "amazon.com")
    facts = trust.apply(Understander().understand(parse_message(raw)), raw)
    assert (facts.trusted, facts.verified) == (True, True)
    assert facts.evidence["verified"].rule == "dkim"
    unsigned = trust.apply(Understander().understand(parse_message(withdrawn())), withdrawn())
    assert (unsigned.trusted, unsigned.verified) == (True, False)


def test_apply_takes_trust_away_on_our_own_failed_check(keys: Path) -> None:
    tampered = test_key.sign(withdrawn(), "amazon.com").replace(b"has withdrawn", b"has not withdrawn")
    facts = trust.apply(Understander().understand(parse_message(tampered)), tampered)
    assert (facts.trusted, facts.verified) == (False, False)
    assert facts.evidence["trusted"].rule == "trust-check"


def test_mail_not_from_amazon_is_not_checked(keys: Path) -> None:
    raw = withdrawn().replace(b"atoz-guarantee-no-reply@amazon.com", b"claims@amaz0n-support.net")
    facts = trust.apply(Understander().understand(parse_message(raw)), raw)
    assert (facts.trusted, facts.verified) == (False, False)
    assert "verified" not in facts.evidence
