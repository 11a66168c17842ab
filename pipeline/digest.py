"""`pipeline digest`: one summary message in the INBOX listing the claims that need action soon.

The seller already lives in the mail client, so the digest goes where they look: an unread message in the
INBOX, from and to the seller's own address. Its sender is not Amazon, so the poller ignores it.
"""

from __future__ import annotations

import email.policy
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid

from sqlalchemy import and_, or_, select

from pipeline import views
from pipeline.config import Settings
from pipeline.mailbox import connect
from pipeline.queries import claim_dict, failed_messages, stats, urgency
from pipeline.schema import Claim
from pipeline.service import opened
from pipeline.store import utcnow
from pipeline.vocabulary import CLOSED_STATES

DIGEST_HEADER = "X-Pipeline-Digest"
DEFAULT_HOURS = 48
STATS_WEEKS = 8  # the weeks the digest's chart shows


@dataclass(frozen=True)
class Digest:
    """The claims that need action and the message that lists them."""

    rows: list[dict[str, object]]
    subject: str
    message: EmailMessage
    failures: list[dict[str, object]] = field(default_factory=list)

    @property
    def count(self) -> int:
        """How many claims the digest lists."""
        return len(self.rows)

    @property
    def worth_sending(self) -> bool:
        """Whether anything needs the seller: a claim, or a message that could not be read."""
        return bool(self.rows or self.failures)


def claims_needing_action(settings: Settings, now: datetime, hours: int = DEFAULT_HOURS) -> list[dict[str, object]]:
    """Open claims whose deadline or owed answer is within `hours` (or past), that need a refund, or that are
    flagged; granted claims to appeal; and closed claims that are flagged (an edited draft of a decided claim
    must not be sent)."""
    horizon = now + timedelta(hours=hours)
    with opened(settings) as store, store.session() as session:
        claims = session.scalars(
            select(Claim).where(
                or_(
                    and_(
                        Claim.state.not_in(CLOSED_STATES),
                        or_(
                            Claim.deadline_at <= horizon,
                            Claim.reply_due_at <= horizon,
                            Claim.state == "refund_needed",
                        ),
                    ),
                    Claim.flagged.is_(True),
                    Claim.appeal_due_at > now,
                )
            )
        )
        rows = [claim_dict(claim) for claim in claims]
    for row in rows:
        row["why"] = _why(row, horizon)
    return sorted(rows, key=urgency)


def _why(row: dict[str, object], horizon: datetime) -> str:
    reasons = []
    due = row.get("reply_due_at")
    if isinstance(due, str) and datetime.fromisoformat(due.replace("Z", "+00:00")) <= horizon:
        reasons.append("the buyer waits for an answer")
    deadline = row["deadline_at"] if row["state"] not in CLOSED_STATES else None
    if isinstance(deadline, str) and datetime.fromisoformat(deadline.replace("Z", "+00:00")) <= horizon:
        reasons.append("deadline soon")
    if row.get("appeal_due_at") and row["state"] == "granted":
        reasons.append("appeal")
    if row["state"] == "refund_needed":
        reasons.append("refund needed")
    if row["flagged"]:
        reasons.append("flagged")
    return ", ".join(reasons)


def subject_for(count: int, hours: int = DEFAULT_HOURS, failed: int = 0) -> str:
    """`pipeline: 3 claims need action in the next 48 hours` (`; 1 message could not be read`)."""
    unread = f"; {views.count(failed, 'message')} could not be read" if failed else ""
    if count == 0:
        return f"pipeline: no claims need action in the next {hours} hours{unread}"
    noun, verb = ("claim", "needs") if count == 1 else ("claims", "need")
    return f"pipeline: {count} {noun} {verb} action in the next {hours} hours{unread}"


def body_for(
    rows: list[dict[str, object]],
    now: datetime,
    hours: int = DEFAULT_HOURS,
    failures: Sequence[dict[str, object]] = (),
) -> str:
    """The plain-text list (views.digest_body)."""
    return views.digest_body(rows, now, hours, list(failures))


def build_digest(settings: Settings, *, now: datetime | None = None, hours: int = DEFAULT_HOURS) -> Digest:
    """The digest message for the claims needing action now (addressed from and to the seller)."""
    now = now or utcnow()
    rows = claims_needing_action(settings, now, hours)
    failures: list[dict[str, object]] = list(failed_messages(settings))
    weekly = stats(settings, now, weeks=STATS_WEEKS)
    subject = subject_for(len(rows), hours, len(failures))
    seller = settings.seller
    message = EmailMessage(policy=email.policy.SMTP)
    domain = seller.from_address.rpartition("@")[2]
    message["From"] = formataddr((f"{seller.store_name} (pipeline)", seller.from_address))
    message["To"] = formataddr((seller.store_name, seller.from_address))
    message["Subject"] = subject
    message["Date"] = format_datetime(now)
    message["Message-ID"] = make_msgid("pipeline-digest", domain=domain or None)
    message["Auto-Submitted"] = "auto-generated"
    message[DIGEST_HEADER] = str(len(rows))
    message.set_content(body_for(rows, now, hours, failures) + "\n" + views.stats_chart(weekly) + "\n", charset="utf-8")
    return Digest(rows, subject, message, failures)


def append_digest(settings: Settings, digest: Digest, *, now: datetime | None = None) -> str:
    """APPEND the digest to the inbox with no flags (it shows as unread); return the folder name."""
    folder = settings.imap.inbox
    with connect(settings.imap) as mailbox:
        mailbox.append(folder, digest.message.as_bytes(), flags=(), when=now)
    return folder
