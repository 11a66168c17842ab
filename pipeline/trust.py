"""Whether Amazon really sent a message: a DKIM signature of Amazon's we verify, or a trusted server's pass.

Anyone can write `From: atoz-guarantee-no-reply@amazon.com`. Proof is a DKIM signature whose `d=` is an Amazon
domain, that covers the From header, and that verifies against the key Amazon publishes in DNS (dkimpy); or an
Authentication-Results / ARC-Authentication-Results header with `dkim=pass` or `dmarc=pass` for an Amazon domain,
written by a server the seller trusts (`[trust] authserv_ids`: anyone can add such a header, only the seller's
own server's count). Any failure verdict anywhere (fail, softfail, permerror; our own DKIM check too) takes trust
away. Amazon SES signs everyone's mail with `d=amazonses.com`: that is never proof.

Tests and the demo sign their mail with a test key and point PIPELINE_DKIM_KEYS at a JSON file of the DNS
TXT records to use instead of DNS ({"selector._domainkey.domain": "v=DKIM1; k=rsa; p=..."}).
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import dkim
import dkim.dnsplug

from pipeline.marketplaces import is_amazon_domain
from pipeline.understanding.facts import Evidence, Facts

log = logging.getLogger(__name__)

AUTH_HEADERS = ("Authentication-Results", "ARC-Authentication-Results", "X-MS-Exchange-Authentication-Results")
FAILING = frozenset({"fail", "softfail", "permerror"})
DNS_TIMEOUT = 5
_VERDICT = re.compile(r"\b(dkim|spf|dmarc|arc)\s*=\s*([a-z]+)\b", re.IGNORECASE)
_PROPERTY = re.compile(r"\b(header\.(?:d|i|from))\s*=\s*\"?@?([^\s;\"()]+)", re.IGNORECASE)
Resolver = Callable[..., bytes | None]


@dataclass(frozen=True)
class Verdict:
    """What the checks say of a message: `failure` (a verdict that takes trust away) or `proof` (Amazon sent it)."""

    proof: str | None = None  # "dkim: d=amazon.com s=…" or "authentication-results: mx.example.com dkim=pass …"
    failure: str | None = None  # the failing verdict, as written
    authserv_ids: tuple[str, ...] = ()  # the servers whose results the message carries (for `pipeline check`)

    @property
    def verified(self) -> bool:
        """Positive proof and no failure."""
        return self.proof is not None and self.failure is None


@dataclass(frozen=True)
class Result:
    """One method's result in one authentication header."""

    header: str
    authserv_id: str
    method: str
    result: str
    properties: dict[str, str]
    text: str


def verdict(raw: bytes, authserv_ids: tuple[str, ...] = (), resolver: Resolver | None = None) -> Verdict:
    """Check a message's authentication headers and its DKIM signatures (see the module docstring)."""
    headers = _header_block(raw)
    results = authentication_results(headers)
    seen = tuple(sorted({r.authserv_id for r in results if r.authserv_id}))
    failure = next((f"{r.header}: {r.text}" for r in results if r.result in FAILING), None)
    dkim_proof, dkim_failure = check_dkim(raw, headers, resolver or default_resolver())
    failure = failure or dkim_failure
    if failure:
        return Verdict(failure=_one_line(failure)[:300], authserv_ids=seen)
    proof = dkim_proof or _reported_pass(results, authserv_ids)
    return Verdict(proof=proof, authserv_ids=seen)


def apply(facts: Facts, raw: bytes, authserv_ids: tuple[str, ...] = (), resolver: Resolver | None = None) -> Facts:
    """The facts with the checks' word: `verified` with its proof as evidence, or trust taken away by a failure.

    Mail not from an Amazon domain (or already failed by a receiving server) is not checked further.
    """
    if not facts.trusted:
        return facts
    found = verdict(raw, authserv_ids, resolver)
    evidence = dict(facts.evidence)
    if found.failure:
        evidence["trusted"] = Evidence("trust-check", found.failure)
        return replace(facts, trusted=False, verified=False, evidence=evidence)
    if found.proof:
        evidence["verified"] = Evidence(found.proof.partition(":")[0], found.proof.partition(": ")[2])
        return replace(facts, verified=True, evidence=evidence)
    return replace(facts, verified=False)


def header_failure(values: list[tuple[str, str]]) -> str | None:
    """The first failing verdict among (header name, value) pairs, as `name: value`, or None."""
    results = authentication_results(values)
    return next((_one_line(f"{r.header}: {r.text}")[:300] for r in results if r.result in FAILING), None)


def authentication_results(headers: list[tuple[str, str]]) -> list[Result]:
    """Every method result of the Authentication-Results headers (and their ARC and Exchange kin)."""
    found = []
    for name, value in headers:
        if name.lower() not in {h.lower() for h in AUTH_HEADERS}:
            continue
        text = _one_line(value)
        authserv_id = _authserv_id(name, text)
        for segment in text.split(";"):
            match = _VERDICT.search(segment)
            if match is None:
                continue
            properties = {k.lower(): v.lower().strip(".") for k, v in _PROPERTY.findall(segment)}
            found.append(
                Result(name, authserv_id, match.group(1).lower(), match.group(2).lower(), properties, segment.strip())
            )
    return found


def check_dkim(raw: bytes, headers: list[tuple[str, str]], resolver: Resolver) -> tuple[str | None, str | None]:
    """(proof, failure) from the DKIM signatures of Amazon domains that cover From; others are ignored."""
    signatures = [value for name, value in headers if name.lower() == "dkim-signature"]
    for index, value in enumerate(signatures):
        try:
            tags = dkim.util.parse_tag_value(re.sub(r"\s+", "", value).encode("ascii", "replace"))
        except dkim.util.InvalidTagValueList:
            continue
        domain = tags.get(b"d", b"").decode("ascii", "replace").lower()
        signed = {h.strip().lower() for h in tags.get(b"h", b"").decode("ascii", "replace").split(":")}
        if not is_amazon_domain(domain) or "from" not in signed:
            continue
        selector = tags.get(b"s", b"").decode("ascii", "replace")
        where = f"d={domain} s={selector}"
        if not resolver(f"{selector}._domainkey.{domain}.".encode()):
            log.debug("DKIM %s: no key published (rotated, or no DNS): no proof either way", where)
            continue
        try:
            good = dkim.DKIM(raw).verify(idx=index, dnsfunc=resolver)
        except (dkim.KeyFormatError, dkim.DnsTimeoutError, dkim.UnknownKeyTypeError) as exc:
            log.debug("DKIM %s: no key to check with: %s", where, exc)
            continue  # no key (rotated, or no DNS): no proof either way
        except dkim.DKIMException as exc:
            return None, f"our DKIM check: {where}: {exc}"
        if not good:
            return None, f"our DKIM check: {where}: the signature does not match"
        return f"dkim: {where}", None
    return None, None


def default_resolver() -> Resolver:
    """DNS TXT lookups for DKIM keys, cached for the process; PIPELINE_DKIM_KEYS replaces DNS (tests, demo)."""
    pinned = os.environ.get("PIPELINE_DKIM_KEYS")
    if pinned:
        return _pinned(pinned)
    return _cached_dns


# --- internals ------------------------------------------------------------------------------------------

_cache: dict[str, bytes | None] = {}
_cache_lock = threading.Lock()


def _cached_dns(name: bytes | str, timeout: int = DNS_TIMEOUT) -> bytes | None:
    key = name.decode() if isinstance(name, bytes) else name
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    found: bytes | None
    try:
        found = dkim.dnsplug.get_txt(name, timeout=min(timeout, DNS_TIMEOUT))
    except Exception as exc:  # no network, no resolver: no key, so no proof (never a failure)
        log.debug("DNS lookup of %s failed: %s", key, exc)
        found = None
    with _cache_lock:
        _cache[key] = found
    return found


def _pinned(path: str) -> Resolver:
    try:
        records = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("PIPELINE_DKIM_KEYS=%s cannot be read: %s", path, exc)
        records = {}

    def lookup(name: bytes | str, timeout: int = DNS_TIMEOUT) -> bytes | None:
        key = (name.decode() if isinstance(name, bytes) else name).rstrip(".")
        value = records.get(key)
        return str(value).encode() if isinstance(value, str) else None

    return lookup


def _reported_pass(results: list[Result], authserv_ids: tuple[str, ...]) -> str | None:
    trusted = {i.lower() for i in authserv_ids}
    for r in results:
        if r.authserv_id.lower() not in trusted or r.result != "pass":
            continue
        domain = (
            r.properties.get("header.d") or r.properties.get("header.i")
            if r.method == "dkim"
            else (r.properties.get("header.from") if r.method == "dmarc" else None)
        )
        if domain and is_amazon_domain(domain.rpartition("@")[2]):
            return f"authentication-results: {r.authserv_id} {r.method}=pass {domain}"
    return None


def _authserv_id(name: str, value: str) -> str:
    """The server that wrote the results (RFC 8601's authserv-id); ARC's instance tag comes first."""
    if name.lower() == "x-ms-exchange-authentication-results":
        return "x-ms-exchange"
    parts = [p.strip() for p in value.split(";")]
    if name.lower() == "arc-authentication-results" and parts and parts[0].lower().startswith("i="):
        parts = parts[1:]
    first = parts[0] if parts else ""
    return "" if "=" in first else first.split()[0] if first else ""


def _header_block(raw: bytes) -> list[tuple[str, str]]:
    end = raw.find(b"\r\n\r\n")
    end = raw.find(b"\n\n") if end < 0 else end
    head = raw if end < 0 else raw[: end + 2]
    parsed = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head)
    return [(name, str(value)) for name, value in parsed.items()]


def _one_line(text: str) -> str:
    return " ".join(str(text).split())
