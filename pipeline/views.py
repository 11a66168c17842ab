"""Everything the pipeline shows a person, rendered from plain data (no database or mail access here).

The claims table, one claim's timeline, what `inspect` understood, the digest's text: callers pass the data."""

from __future__ import annotations

import textwrap
from datetime import datetime
from typing import Any

import click

from pipeline.vocabulary import CLOSED_STATES

STATE_COLOURS = {
    "new": "cyan",
    "buyer_contact": "cyan",
    "awaiting_buyer": "yellow",
    "awaiting_amazon": "blue",
    "refund_needed": "red",
    "refunded": "green",
    "resolved": "green",
    "granted": "magenta",
}


def time_left(deadline_at: datetime | str | None, now: datetime) -> str:
    """Time left to a deadline, short: `4d23h`, `5h07m`, `overdue`; empty without a deadline."""
    if deadline_at is None:
        return ""
    if isinstance(deadline_at, str):
        deadline_at = datetime.fromisoformat(deadline_at.replace("Z", "+00:00"))
    seconds = int((deadline_at - now).total_seconds())
    if seconds < 0:
        return "overdue"
    days, rest = divmod(seconds, 86400)
    if days:
        return f"{days}d{rest // 3600:02d}h"
    return f"{rest // 3600}h{rest % 3600 // 60:02d}m"


def claims_table(rows: list[dict[str, Any]], *, now: datetime, color: bool | None) -> str:
    """The claims table: order, state (coloured on a terminal), the time left to answer the buyer (ANSWER) and
    to Amazon's deadline or the appeal's last day (LEFT), complaint, strategy, flag."""
    if not rows:
        return "no claims"
    lines = [f"{'ORDER':<20} {'STATE':<16} {'ANSWER':>7} {'LEFT':>7}  {'COMPLAINT':<19} {'STRATEGY':<26} NOTE"]
    for row in rows:
        closed = row["state"] in CLOSED_STATES
        left = time_left(row.get("appeal_due_at"), now) if closed else time_left(row["deadline_at"], now)
        answer = "" if closed else time_left(row.get("reply_due_at"), now)
        state = click.style(f"{row['state']:<16}", fg=STATE_COLOURS.get(row["state"]))
        note = row["flag_reason"] if row["flagged"] else ""
        line = (
            f"{row['order_id']:<20} {state} {answer:>7} {left:>7}  {row['complaint_type'] or '-':<19} "
            f"{row['strategy'] or '-':<26} {note}"
        ).rstrip()
        lines.append(line if color is not False else click.unstyle(line))
    return "\n".join(lines)


def failed_footer(failures: list[dict[str, Any]]) -> str:
    """The line under the claims table when some messages could not be read."""
    orders = list(dict.fromkeys(o for f in failures for o in f["order_ids"]))
    mention = f" (they mention {', '.join(orders[:5])}{', …' if len(orders) > 5 else ''})" if orders else ""
    return (
        f"\n{count(len(failures), 'message')} could not be read{mention}: "
        "see `pipeline claims --failed`, retry with `pipeline reprocess --failed`"
    )


def failed_table(failures: list[dict[str, Any]]) -> str:
    """`pipeline claims --failed`: each message that could not be read, with its error."""
    if not failures:
        return "every stored message was read"
    lines = []
    for failure in failures:
        orders = ", ".join(failure["order_ids"]) or "no order ID"
        lines.append(f"message {failure['id']}  {failure['at'] or '?'}  {failure['sender'] or '?'}  [{orders}]")
        lines.append(f"  subject: {failure['subject'] or '-'}")
        lines.append(f"  error:   {failure['error']}")
    return "\n".join(lines)


def claim_timeline(data: dict[str, Any], order_id: str) -> str:
    """`pipeline claims show`: the claim, its messages with their facts, its timeline and its drafts."""
    lines = []
    claim = data["claim"]
    if claim:
        lines.append(
            f"claim {claim['order_id']}: {claim['state']} ({claim['strategy'] or 'no strategy'}), "
            f"complaint {claim['complaint_type'] or '-'}, deadline {claim['deadline_at'] or '-'}"
        )
        if claim["flagged"]:
            lines.append(f"  flagged: {claim['flag_reason']}")
    else:
        lines.append(
            f"order {order_id}: no claim: only messages that cannot open one (Amazon's notices, "
            "questions without a complaint, or mail that did not really come from Amazon)"
        )
    lines.append("messages:")
    for m in data["messages"]:
        facts = ", ".join(f"{k}={v}" for k, v in m["facts"].items() if v not in (None, False))
        lines.append(
            f"  {m['at'] or '?'}  {m['kind'] or m['status']:<18} {m['subject']}"
            + (f"  [{facts}]" if facts else "")
            + (f"  FAILED: {m['error']}" if m["status"] == "failed" else "")
        )
    if data.get("stated"):
        lines.append("stated by the seller (pipeline claims set):")
        lines.extend(f"  {st['at']}  {st['field']}: {st['value']}" for st in data["stated"])
    lines.append("timeline:")
    for e in data["events"]:
        arrow = f"{e['from'] or '-'} -> {e['to'] or '-'}" if e["from"] != e["to"] else (e["to"] or "-")
        lines.append(f"  {e['at']}  {e['kind']:<13} {arrow:<34} {e['rule']}: {e['reason']}")
    lines.append("drafts:")
    for d in data["drafts"] or []:
        where = d["to"] or ("Seller Central" if d.get("audience") == "amazon" else "(no address yet)")
        lines.append(
            f"  {d['strategy']:<26} {d['status']:<10} to {where} ({d['language']})"
            + (f"  error: {d['error']}" if d["error"] else "")
        )
    if not data["drafts"]:
        lines.append("  none")
    return "\n".join(lines)


def digest_body(
    rows: list[dict[str, Any]], now: datetime, hours: int, failures: list[dict[str, Any]] | None = None
) -> str:
    """The digest's plain text: order ID, state, strategy, time left and why each claim is listed; then the
    messages that could not be read."""
    stamp = now.strftime("%Y-%m-%d %H:%M UTC")
    unread = _digest_failures(failures or [])
    if not rows:
        return f"No A-to-z claim needs action in the next {hours} hours.\n(as of {stamp})\n" + unread
    lines = _answer_first(rows, now)
    lines += [f"A-to-z claims that need action in the next {hours} hours,", f"most urgent first (as of {stamp}):", ""]
    for row in rows:
        left = time_left(row["deadline_at"], now) or "no deadline"
        deadline = str(row["deadline_at"] or "").replace("T", " ")[:16]
        lines.append(f"{row['order_id']}  {row['state']}")
        if row["state"] not in CLOSED_STATES:
            lines.append(f"    time left: {left}" + (f" (deadline {deadline} UTC)" if deadline else ""))
        if row.get("reply_due_at"):
            lines.append(f"    answer:    {_left(row['reply_due_at'], now)} to answer the buyer")
        if row.get("appeal_due_at") and row["state"] == "granted":
            lines.append(f"    appeal:    by {str(row['appeal_due_at'])[:10]} ({time_left(row['appeal_due_at'], now)})")
        lines.append(f"    strategy:  {row['strategy'] or 'none'}")
        lines.append(f"    why:       {row['why']}")
        if row["flagged"] and row["flag_reason"]:
            lines += textwrap.wrap(
                f"flag:      {row['flag_reason']}", width=72, initial_indent="    ", subsequent_indent=" " * 15
            )
        lines.append("")
    lines += [
        "Reply drafts, where the playbook has one, are waiting in your",
        "Drafts folder. A claim's whole story: pipeline claims show ORDER_ID",
    ]
    return "\n".join(lines) + "\n" + unread + "\n-- \nwritten by pipeline digest; nothing was sent to anyone\n"


def _answer_first(rows: list[dict[str, Any]], now: datetime) -> list[str]:
    """The digest's first lines: the buyers owed an answer, soonest due first (Amazon counts 24 hours, and an
    unanswered buyer may file a claim after 48)."""
    owed = sorted((row for row in rows if row.get("reply_due_at")), key=lambda row: str(row["reply_due_at"]))
    if not owed:
        return []
    lines = ["Answer these first (the buyer waits; Amazon counts 24 hours):", ""]
    for row in owed:
        lines.append(f"  {row['order_id']}  {_left(row['reply_due_at'], now):>12}  ({row['state']})")
    return [*lines, ""]


def _left(when: str | datetime, now: datetime) -> str:
    """`5h07m left`, or `overdue`."""
    left = time_left(when, now)
    return left if left == "overdue" else f"{left} left"


def _digest_failures(failures: list[dict[str, Any]]) -> str:
    """The digest's section on messages that could not be read (empty when there are none)."""
    if not failures:
        return ""
    lines = ["", f"{count(len(failures), 'message')} could not be read (pipeline claims --failed):", ""]
    for failure in failures:
        orders = ", ".join(failure["order_ids"]) or "no order ID"
        lines.append(f"{failure['at'] or '?'}  {failure['sender'] or '?'}  [{orders}]")
        lines += textwrap.wrap(f"error: {failure['error']}", width=72, initial_indent="    ", subsequent_indent="    ")
    return "\n".join(lines) + "\n"


# --- pipeline inspect ---------------------------------------------------------------------------

# The facts shown, in this order (the `inspect --json` keys).
FIELDS = (
    "kind",
    "notification_type",
    "order_id",
    "complaint_type",
    "buyer_intent",
    "tracking_number",
    "carrier",
    "delivered",
    "delivered_on",
    "deadline_hours",
    "deadline_at",
    "amount",
    "currency",
    "return_reason",
    "return_carrier",
    "return_tracking_number",
    "marketplace",
    "language",
    "trusted",
    "verified",
    "reply_channel",
    "reply_address",
)
CONTEXT = ("subject", "sender", "sent_at", "buyer_address", "buyer_name")


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
    cut = evidence.get("cut")
    if cut:
        lines.append(f"cut: {cut.get('text', '')}")
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


# --- pipeline reprocess ------------------------------------------------------------------------


def reprocess_report(result: Any, *, dry_run: bool, from_imap: bool) -> str:
    """What a reprocess run changed (or would change), its failures, and a count line."""
    lines = [f"{'would change' if dry_run else 'changed'}: {line}" for line in result.changes]
    lines += [
        f"{'would fail' if dry_run else 'failed'}: message {message_id}: {error}"
        for message_id, error in result.failures
    ]
    fetched = f", {result.fetched} {'to fetch' if dry_run else 'fetched'} from IMAP" if from_imap else ""
    lines.append(
        f"{count(result.messages, 'message')}{fetched}, {result.failed} failed, "
        f"{count(len(result.changes), 'change')}" + (" (dry run: nothing written)" if dry_run else "")
    )
    return "\n".join(lines)


def count(number: int, noun: str) -> str:
    """ "1 message", "3 messages"."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


# --- pipeline stats ---------------------------------------------------------------------------------------

STATS_COLUMNS = (
    ("complaints", "COMPLAINTS"),
    ("answered_in_24h", "IN 24H"),
    ("claims_filed", "CLAIMS"),
    ("prevented", "PREVENTED"),
    ("won", "WON"),
    ("refunded", "REFUNDED"),
    ("granted", "GRANTED"),
    ("orders", "ORDERS"),
)


def stats_table(rows: list[dict[str, Any]]) -> str:
    """`pipeline stats`: one line per week, the claim rate last."""
    header = f"{'WEEK':<9} {'FROM':<10} " + " ".join(f"{title:>10}" for _, title in STATS_COLUMNS) + "  CLAIM RATE"
    lines = [header]
    for row in rows:
        rate = f"{row['claim_rate'] * 100:.2f} %" if row["claim_rate"] is not None else "-"
        counts = " ".join(f"{row[key]:>10}" for key, _ in STATS_COLUMNS)
        lines.append(f"{row['week']:<9} {row['from']:<10} {counts}  {rate:>10}")
    total = {key: sum(row[key] for row in rows) for key, _ in STATS_COLUMNS}
    lines.append(f"{'total':<20} " + " ".join(f"{total[key]:>10}" for key, _ in STATS_COLUMNS))
    return "\n".join(lines)


def stats_chart(rows: list[dict[str, Any]], width: int = 30) -> str:
    """The digest's chart: per week, buyer complaints (#) and the claims filed (=) as bars."""
    top = max([1, *(max(row["complaints"], row["claims_filed"]) for row in rows)])
    lines = ["Buyer complaints (#) and A-to-z claims (=) per week:", ""]
    for row in rows:
        complaints = "#" * round(row["complaints"] * width / top)
        claims = "=" * round(row["claims_filed"] * width / top)
        lines.append(f"{row['week']}  {complaints:<{width}} {row['complaints']:>3}")
        lines.append(f"{'':<8}  {claims:<{width}} {row['claims_filed']:>3}")
    return "\n".join(lines)
