"""Tracking numbers: which carrier a number's format implies, and the check digits that prove it is one."""

from __future__ import annotations

import re

_S10 = re.compile(r"[A-Z]{2}\d{9}[A-Z]{2}")
# carriers of the formats in models/xx/entities.jsonl (TRACKING rule values)
FORMAT_CARRIERS = {
    "usps": "USPS",
    "fedex": "FedEx",
    "dhl": "DHL",
    "yunexpress": "YunExpress",
    "amazon": "Amazon Logistics",
    "yanwen": "Yanwen",
    "4px": "4PX",
}
# S10 numbers name the country of the post that took the parcel in
S10_CARRIERS = {"CN": "China Post", "GB": "Royal Mail"}


def tracking_carrier(number: str, fmt: str) -> str | None:
    """The carrier a tracking number's format implies ("unknown" when it names none; None when its check digit
    is wrong)."""
    if fmt == "ups":
        return "UPS" if ups_check_ok(number) else None
    if fmt == "s10":
        if not s10_check_ok(number):
            return None
        return S10_CARRIERS.get(number[-2:], "unknown")
    return FORMAT_CARRIERS.get(fmt, "unknown")


def ups_check_ok(number: str) -> bool:
    """UPS 1Z numbers: mod-10 check over the 15 characters after '1Z'."""
    body = number[2:]
    if len(body) != 16 or not body.isalnum():
        return False
    digits = [int(c) if c.isdigit() else (ord(c) - 63) % 10 for c in body[:15]]
    total = sum(d if i % 2 == 0 else 2 * d for i, d in enumerate(digits))
    return (10 - total % 10) % 10 == int(body[15]) if body[15].isdigit() else False


def s10_check_ok(number: str) -> bool:
    """UPU S10 numbers (AA123456785CN): mod-11 check over the 8 serial digits."""
    if not _S10.fullmatch(number):
        return False
    serial, check = number[2:10], int(number[10])
    total = sum(int(d) * w for d, w in zip(serial, (8, 6, 4, 2, 3, 5, 9, 7), strict=True))
    expected = 11 - total % 11
    expected = 0 if expected == 10 else 5 if expected == 11 else expected
    return expected == check
