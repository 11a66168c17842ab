"""A DKIM test key: sign test and demo mail as Amazon would, and the DNS record that verifies it.

The key is for tests only: it is published nowhere, so mail signed with it verifies only where
PIPELINE_DKIM_KEYS points at records_file() (pipeline.trust), never against real DNS.
"""

from __future__ import annotations

import email
import email.utils
import json
import time
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import dkim

from pipeline.marketplaces import AMAZON_TLDS, is_amazon_domain

SELECTOR = "pipeline-test"
# the signed headers Amazon's own signatures cover (From first: it is what proves the sender)
SIGNED_HEADERS = (b"from", b"to", b"subject", b"date", b"message-id", b"reply-to", b"mime-version", b"content-type")
PRIVATE_KEY = b"""-----BEGIN RSA PRIVATE KEY-----
MIIEowIBAAKCAQEA0RM/nRseLaxjqVv7XJOQdWuKIO0xxV2MrdslKquRi0L6gwcr
G4Ffn9O+6VFiTXxWo3LqSy67QOpEbuLpjC3u9O1d7x/2UvBoJMopPCuIE3nNy/Iv
bslnlD5takjr1V6Mn4UuzuFNojeMpr0dCAcHIg7SoYRXoPEjrLi252GErKnQsRD3
u2Nr/Vs5dCaPSfGYMh8GuHJnHSf9LgO9rbY534ZmDQVyLOX8nQnbG5yZ462Xbnj9
kpEM7AOLZGy1fnz9okrL7/VprgaPRcRCoeSPrs0uRX5QMBd070zFzfyq/HsxUSdC
Ml1bknXxnxTggGlMmpEoR+KWC+Wa+EmUi83+GQIDAQABAoIBAAtVsNAypSsyumB3
JSR6t402HFH2qgkaLkNKqzQqAwT6x5wM6nBeTjHbB/GcQOkUgZnw4/TZfrthN/6O
/LxlzRuoNrx9Dhym/e5oq12guorbwqV45stpzdzCman2dBqoOpV3YfdDTbMqscxk
WkuSHffht9eb1ihaimWVygy3Q7scjKXP422U98USupziDki1lYmOaRUlySl4q0/i
V9FEr0lj/gAtU885zTysHRftUo21dFCyp//onEVhT0eGjlRc9N/iqjyIiRkRIhZx
TCkhpFEkwDkTy8U0vDv5Jk+BaROWc3wvWUAosBvMBYj58Rekirx+uuGZfred1zBK
T7UQa6UCgYEA6/hrWpZ+BQSmgoMb1gt64jrk21f451UPb9vKDxCZ0IPAmgYPYCQu
lVN0Ma1rhoT/vsDk6gAusaOWJsUWslyTgzp+zhtYCrc37vYR5ZOuDVdByTxB4i5w
+SqX1EDPxteYuqL4GENpAKaPM5FEs/VgPkxcBKnVEYKH512y4dWLDlsCgYEA4tJn
IK1C+N+YkKNSZzGl4w9eSxyKDHrwy4i4qKlS17yEokwJBWKXz7p26aAqaYqhTsKM
LCw+LHMvKjNFKZ0sCXCMXGuUZBvAx/hqDVXYvMqbODt0bMgLZXQNnm21dZ3kw5X8
n8YIlRq5whbJCTIT6Iw155MS5hYv5ANjU0nQd5sCgYEAmhueeQYJ/VsBKAFaP5s1
wOP3rOyySNp7f3FKcDZGTjCNq8nDZuWaarmbDAqXS742jCzME6rU0/zjRiS3Yvsk
97JPOGoRQMZRyEV6gLXHGT1gYH1zBbWQ4JmZmOxPBiytuU5PuwDjZaJhqar49JKP
LYCPJBiKZ6oY+dhuyCC/dTsCgYB0WsCiZ58KchEeaVm1LCfP0atqVoqOmmZ50nn/
s1SW7NMROnYKOChuXFXxxMLc/0t+Tph/dHa0cKYKPODG1ySm9wBZzKoDrKT5L/qf
OqGDP1/euckgoIIQGjd+RQMoAcY/euprv7fZXStbYDrip7jEu2BPmgfA1jLdAcvr
BtuU7wKBgFegNzxtDLNkRC6dc0hW002Pbhg42cJzXpLn1GVY5Dg3oNKPILUN/kMV
Dt35wpcueG8D+94PyBSn7Wq3aTHoldFFTJ14YBEhnZ/0kpSyRniZH/LVOVkxpZBH
eDkKiHLk/DIhAeZIKGEYzmNl8MbUmsTYYjcQq08VvF9RoI7uldx/
-----END RSA PRIVATE KEY-----
"""
PUBLIC_KEY = (
    "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA0RM/nRseLaxjqVv7XJOQdWuKIO0xxV2MrdslKquRi0L6gwcrG4Ffn9O+"
    "6VFiTXxWo3LqSy67QOpEbuLpjC3u9O1d7x/2UvBoJMopPCuIE3nNy/IvbslnlD5takjr1V6Mn4UuzuFNojeMpr0dCAcHIg7SoYRX"
    "oPEjrLi252GErKnQsRD3u2Nr/Vs5dCaPSfGYMh8GuHJnHSf9LgO9rbY534ZmDQVyLOX8nQnbG5yZ462Xbnj9kpEM7AOLZGy1fnz9"
    "okrL7/VprgaPRcRCoeSPrs0uRX5QMBd070zFzfyq/HsxUSdCMl1bknXxnxTggGlMmpEoR+KWC+Wa+EmUi83+GQIDAQAB"
)


def sign(raw: bytes, domain: str, at: datetime | None = None) -> bytes:
    """The message with a DKIM-Signature of `domain` (selector pipeline-test) in front, signed at `at` (the
    signature's t= tag; now when None), so the same message is signed the same way every time."""
    clock = SimpleNamespace(time=lambda: at.timestamp()) if at is not None else time
    with mock.patch.object(dkim, "time", clock):
        signature = dkim.sign(
            raw, SELECTOR.encode(), domain.encode(), PRIVATE_KEY, include_headers=list(SIGNED_HEADERS)
        )
    return bytes(signature) + raw


def resign(raw: bytes) -> bytes:
    """The message signed again after its headers were edited: old signatures dropped, a new one for the From
    domain when it is Amazon's, dated by the Date header."""
    unsigned = unsign(raw)
    parsed = email.message_from_bytes(unsigned)
    domain = email.utils.parseaddr(str(parsed.get("From", "")))[1].rpartition("@")[2].lower()
    if not is_amazon_domain(domain):
        return unsigned
    date = email.utils.parsedate_to_datetime(str(parsed["Date"])) if parsed.get("Date") else None
    return sign(unsigned, domain, date)


def unsign(raw: bytes) -> bytes:
    """The message without its DKIM-Signature headers."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    kept: list[bytes] = []
    dropping = False
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and dropping:
            continue
        dropping = line.lower().startswith(b"dkim-signature:")
        if not dropping:
            kept.append(line)
    return b"\r\n".join(kept) + sep + body


def amazon_domains() -> tuple[str, ...]:
    """Every domain Amazon's mail comes from: amazon.<tld> and marketplace.amazon.<tld> of each marketplace."""
    return tuple(f"{prefix}amazon.{tld}" for tld in AMAZON_TLDS for prefix in ("", "marketplace.", "m.marketplace."))


def records(domains: tuple[str, ...]) -> dict[str, str]:
    """The TXT records that verify the test key for these domains."""
    return {f"{SELECTOR}._domainkey.{d}": f"v=DKIM1; k=rsa; p={PUBLIC_KEY}" for d in domains}


def records_file(folder: Path, domains: tuple[str, ...]) -> Path:
    """Write records() as the JSON file PIPELINE_DKIM_KEYS reads; return its path."""
    path = folder / "dkim-test-keys.json"
    path.write_text(json.dumps(records(domains), indent=1), encoding="utf-8")
    return path
