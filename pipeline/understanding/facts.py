"""What the understanding stage found in one message: Facts and the Evidence behind each fact (no spaCy here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, NamedTuple


class Evidence(NamedTuple):
    """Why a fact was found: the rule (its stable id, or a structural source such as a header) and the text."""

    rule: str
    text: str


@dataclass
class Facts:
    """Everything the pipeline understood of one message. A fact that was not found is None."""

    kind: str
    order_id: str | None
    complaint_type: str | None
    buyer_intent: str | None
    tracking_number: str | None
    carrier: str | None
    delivered: bool
    deadline_hours: int | None
    deadline_at: datetime | None
    amount: str | None
    currency: str | None
    marketplace: str | None
    language: str
    trusted: bool
    sent_at: datetime | None
    sender: str
    reply_to: str | None
    buyer_address: str | None
    buyer_name: str | None
    subject: str
    message_id: str | None
    in_reply_to: str | None
    references: tuple[str, ...]
    evidence: dict[str, Evidence] = field(default_factory=dict)
    delivered_on: date | None = None  # the delivery date the text gives with "tracking shows delivered"
    notification_type: str | None = None  # X-Space-Notification-Type as written
    return_carrier: str | None = None  # the buyer's return parcel: never our shipment
    return_tracking_number: str | None = None
    return_reason: str | None = None  # Amazon's return reason as written
    reply_channel: str | None = None  # "email" (reply_address reaches a person) | "seller_central" | None
    reply_address: str | None = None
    verified: bool = False  # proof that Amazon sent it (pipeline.trust): DKIM, or a trusted server's pass

    def to_json(self) -> dict[str, Any]:
        """The facts as JSON-ready values (dates in ISO 8601 UTC); the keys of `pipeline inspect --json`."""
        # the fields one level deep (asdict would deep-copy every value; these are immutable or rebuilt below)
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        for key in ("deadline_at", "sent_at"):
            data[key] = iso(data[key])
        data["delivered_on"] = self.delivered_on.isoformat() if self.delivered_on else None
        data["references"] = list(self.references)
        data["evidence"] = {k: {"rule": v.rule, "text": v.text} for k, v in self.evidence.items()}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Facts:
        """Rebuild Facts from to_json output (as stored with each message; keys added later default to None)."""
        known = cls.__dataclass_fields__
        values = {key: value for key, value in data.items() if key in known}
        for key in ("deadline_at", "sent_at"):
            values[key] = datetime.fromisoformat(values[key]) if values.get(key) else None
        values["delivered_on"] = date.fromisoformat(values["delivered_on"]) if values.get("delivered_on") else None
        values["references"] = tuple(values.get("references") or ())
        values["evidence"] = {k: Evidence(**v) for k, v in (values.get("evidence") or {}).items()}
        return cls(**values)


def iso(value: datetime | None) -> str | None:
    """A datetime as ISO 8601 with `Z` for UTC, or None."""
    return value.replace(microsecond=0).isoformat().replace("+00:00", "Z") if value else None
