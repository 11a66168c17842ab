"""Imports shipment facts from the seller's CSV/TSV (our columns or Amazon's shipment-confirmation names)."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

from sqlalchemy.orm import Session

from pipeline.errors import ImportRowError, PipelineError
from pipeline.schema import Shipment
from pipeline.store import utcnow

ORDER_ID = re.compile(r"^(?:\d{3}|D01)-\d{7}-\d{7}$")
# our column -> the names accepted for it (ours first, then Amazon's shipment-confirmation names);
# header names are compared lower-cased, with spaces and hyphens read as underscores
COLUMNS = {
    "order_id": ("order_id", "amazon_order_id"),
    "carrier": ("carrier", "carrier_name", "carrier_code"),
    "tracking_number": ("tracking_number",),
    "ship_date": ("ship_date",),
    "delivered_date": ("delivered_date", "delivery_date"),
}
# Amazon's carrier-code for "the carrier is named in carrier-name"
OTHER_CARRIER = {"other", "others", ""}


@dataclass
class ImportReport:
    """What an import did: rows added or updated, and the rows skipped with their line and reason."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)
    order_ids: list[str] = field(default_factory=list)


def read_rows(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The header and (line number, row) pairs of a CSV or TSV file (the delimiter is sniffed)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise PipelineError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise PipelineError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise PipelineError(f"{path}: cannot read: {exc.strerror}") from None
    first = text.split("\n", 1)[0]
    delimiter = "\t" if first.count("\t") >= max(1, first.count(",")) else ","
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    header = [normal_column(h) for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    rows = [(reader.line_num, {k: (v or "").strip() for k, v in row.items() if k}) for row in reader]
    return header, rows


def normal_column(name: str) -> str:
    """A header name as compared: lower case, spaces and hyphens as underscores ("Order-ID" -> "order_id")."""
    return re.sub(r"[\s\-]+", "_", (name or "").strip().lower())


def column_map(header: list[str], path: Path) -> dict[str, str]:
    """Which file column feeds each of our fields; PipelineError when order_id is missing."""
    mapping = {}
    for ours, names in COLUMNS.items():
        found = next((n for n in names if n in header), None)
        if found:
            mapping[ours] = found
    if "order_id" not in mapping:
        raise PipelineError(
            f"{path}: no order_id column (expected order_id, order-id or amazon-order-id); "
            f"found: {', '.join(header) or 'nothing'}"
        )
    return mapping


def parse_row(row: dict[str, str], mapping: dict[str, str]) -> dict[str, object]:
    """One row's values, validated; ImportRowError says what is wrong."""
    order_id = row.get(mapping["order_id"], "")
    if not ORDER_ID.match(order_id):
        raise ImportRowError(f"order_id {order_id!r} is not an Amazon order ID (123-1234567-1234567)")
    values: dict[str, object] = {"order_id": order_id}
    if "carrier" in mapping:
        values["carrier"] = _carrier(row, mapping)
    if "tracking_number" in mapping:
        values["tracking_number"] = re.sub(r"\s+", "", row.get(mapping["tracking_number"], "")).upper() or None
    for name in ("carrier", "tracking_number"):
        value = values.get(name)
        if isinstance(value, str) and len(value) > 64:
            raise ImportRowError(f"{name} {value[:20]!r}… is longer than 64 characters")
    for name in ("ship_date", "delivered_date"):
        if name in mapping:
            values[name] = _date(row.get(mapping[name], ""), name)
    shipped, delivered = values.get("ship_date"), values.get("delivered_date")
    if isinstance(shipped, date) and isinstance(delivered, date) and delivered < shipped:
        raise ImportRowError(f"delivered_date {delivered.isoformat()} is before ship_date {shipped.isoformat()}")
    return values


def _carrier(row: dict[str, str], mapping: dict[str, str]) -> str | None:
    """Our `carrier`, else Amazon's carrier-name when given (it names the carrier when the code is "Other"),
    else the carrier-code."""
    if mapping["carrier"] == "carrier":
        return row.get("carrier") or None
    name, code = row.get("carrier_name", ""), row.get("carrier_code", "")
    if name:
        return name
    return None if code.casefold() in OTHER_CARRIER else code


def _date(value: str, name: str) -> date | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).date()
    except ValueError:
        raise ImportRowError(f"{name} {value!r} is not an ISO 8601 date (YYYY-MM-DD)") from None


def import_shipments(session: Session, path: Path) -> ImportReport:
    """Insert or update shipment facts, one row at a time; bad rows are skipped and reported."""
    header, rows = read_rows(path)
    mapping = column_map(header, path)
    report = ImportReport()
    for line, row in rows:
        if not any(row.values()):
            continue
        try:
            values = parse_row(row, mapping)
        except ImportRowError as exc:
            report.skipped.append((line, str(exc)))
            continue
        existing = session.get(Shipment, values["order_id"])
        if existing is None:
            session.add(Shipment(updated_at=utcnow(), **values))
            report.added += 1
        else:
            changed = False
            for key, value in values.items():
                # an empty cell means "unknown", never "forget what we knew"
                if key != "order_id" and value is not None and getattr(existing, key) != value:
                    setattr(existing, key, value)
                    changed = True
            if changed:
                existing.updated_at = utcnow()
            report.updated += changed
            report.unchanged += not changed
        session.flush()
        report.order_ids.append(str(values["order_id"]))
    return report
