"""`pipeline inspect FILE.eml [--json]`: what the pipeline understands of one message, with the evidence."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from pipeline.errors import MessageError
from pipeline.message import parse_message
from pipeline.understanding.understander import Understander

# The facts shown, in this order (DESIGN.md's `inspect --json` keys first).
FIELDS = ("kind", "notification_type", "order_id", "complaint_type", "buyer_intent", "tracking_number", "carrier",
          "delivered", "delivered_on", "deadline_hours", "deadline_at", "amount", "currency", "return_reason",
          "return_carrier", "return_tracking_number", "marketplace", "language", "trusted", "reply_channel",
          "reply_address")
CONTEXT = ("subject", "sender", "sent_at", "buyer_address", "buyer_name")


@lru_cache(maxsize=4)
def _understander(models_dir: str | None, response_days: int) -> Understander:
    return Understander(models_dir, response_days=response_days)


def inspect_file(path: Path, *, response_days: int = 7, models_dir: str | None = None) -> dict[str, Any]:
    """The `inspect --json` object of one message file: every fact (null when not found) and its evidence.

    Raises MessageError when the file cannot be read or is not an email.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise MessageError(f"cannot read {path}: {exc.strerror or exc}") from None
    message = parse_message(raw)
    facts = _understander(str(models_dir) if models_dir else None, response_days).understand(message)
    data = facts.to_json()
    data["file"] = str(path)
    return data


def format_inspect(data: dict[str, Any]) -> str:
    """The human-readable form: one `field: value` line per fact, its evidence in brackets."""
    evidence = data.get("evidence") or {}
    lines = []
    for field in FIELDS:
        line = f"{field}: {_show(data.get(field))}"
        found = evidence.get(field)
        if found:
            line += f"  [{found.get('rule', '')}: {_quote(found.get('text', ''))}]"
        lines.append(line)
    lines.append("")
    lines.extend(f"{field}: {_show(data.get(field))}" for field in CONTEXT if field in data)
    region = evidence.get("region")
    if region:
        lines.append(f"read: {region.get('rule', '').removeprefix('region:')}  [{_quote(region.get('text', ''))}]")
    return "\n".join(lines)


def _show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _quote(text: str) -> str:
    text = " ".join(str(text).split())
    if len(text) > 80:
        text = text[:77] + "..."
    return '"' + text.replace('"', '\\"') + '"'
