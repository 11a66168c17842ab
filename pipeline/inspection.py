"""`pipeline inspect FILE.eml`: read one message file and understand it (views.format_inspect shows it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline import trust
from pipeline.errors import MessageError
from pipeline.message import parse_message
from pipeline.understanding.understander import Understander


def inspect_file(
    path: Path, *, response_days: int = 7, models_dir: str | None = None, authserv_ids: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The `inspect --json` object of one message file: every fact (null when not found) and its evidence.

    Raises MessageError when the file cannot be read or is not an email.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise MessageError(f"cannot read {path}: {exc.strerror or exc}") from None
    message = parse_message(raw)
    understander = Understander.shared(str(models_dir) if models_dir else None, response_days=response_days)
    facts = trust.apply(understander.understand(message), raw, authserv_ids)
    data = facts.to_json()
    data["file"] = str(path)
    return data
