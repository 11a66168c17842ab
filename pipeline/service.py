"""Wires the stages together for the commands: the store, the claim desk with its drafts, the poller, the clock."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from pipeline import queries
from pipeline.claims import ClaimDesk
from pipeline.config import Settings
from pipeline.drafts import DraftSync
from pipeline.errors import ConfigError
from pipeline.lock import MailboxLock
from pipeline.poller import Poller, PollStats
from pipeline.schema import Claim, SellerStatement
from pipeline.shipments import ImportReport, import_shipments
from pipeline.store import Store, opened_store, utcnow

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]


def now() -> datetime:
    """The current time, UTC. PIPELINE_NOW (ISO 8601) fixes it: the playbook's one injectable clock, for tests
    and for what-if runs ("which claims need a refund on Friday?")."""
    fixed = os.environ.get("PIPELINE_NOW")
    if not fixed:
        return utcnow()
    try:
        value = datetime.fromisoformat(fixed.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"PIPELINE_NOW: {fixed!r} is not an ISO 8601 time (2026-11-26T09:00:00Z)") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def opened(settings: Settings) -> AbstractContextManager[Store]:
    """The configured database, migrated, closed afterwards."""
    return opened_store(settings.database.url)


def make_desk(settings: Settings, store: Store) -> ClaimDesk:
    """The claim desk with its draft writer."""
    return ClaimDesk(settings, store, drafts=DraftSync(settings, store))


def account_of(settings: Settings) -> str:
    """The mailbox's name as the cursors and the lock know it: user@host (Mailbox.account)."""
    return f"{settings.imap.username}@{settings.imap.host}"


def poll_one_pass(settings: Settings, *, clock: Clock = now) -> PollStats:
    """`pipeline poll --once`: one pass over the watched folders, processing and drafts included. Gives up with
    MailboxBusyError when another poller holds the mailbox."""
    with opened(settings) as store:
        lock = MailboxLock(store, account_of(settings))
        if not lock.hold():
            raise lock.busy_error()
        desk = make_desk(settings, store)
        try:
            return Poller(settings, store, desk, clock=clock).poll_once()
        finally:
            desk.close()
            lock.release()


def poll_forever(settings: Settings, *, metrics_port: int | None = None, clock: Clock = now) -> None:
    """`pipeline poll`: the daemon, until SIGTERM/SIGINT."""
    from pipeline.metrics import Metrics

    with opened(settings) as store:
        metrics = Metrics(store, metrics_port) if metrics_port else None
        lock = MailboxLock(store, account_of(settings))
        desk = make_desk(settings, store)
        try:
            poller = Poller(settings, store, desk, clock=clock, metrics=metrics, guard=lock.hold)
            if metrics:
                metrics.attach(poller)
                log.info("serving metrics on http://127.0.0.1:%d/metrics", metrics.port)
            poller.run()
        finally:
            desk.close()
            lock.release()
            if metrics:
                metrics.close()


def import_orders(settings: Settings, path: Path, *, clock: Clock = now) -> ImportReport:
    """`pipeline orders import`: store shipment facts, then replay the claims they touch."""
    with opened(settings) as store:
        with store.session() as session:
            report = import_shipments(session, path)
        desk = ClaimDesk(settings, store)
        with store.session() as session:
            desk.replay_all(
                session,
                clock(),
                [o for o in report.order_ids if session.scalar(select(Claim.id).where(Claim.order_id == o))],
            )
        return report


def state_facts(
    settings: Settings, order_id: str, values: dict[str, str], *, clear: bool = False, clock: Clock = now
) -> dict[str, Any]:
    """`pipeline claims set`: record facts the seller states (they win over mail), or clear them; replay the
    order's claim. Returns the claim as `claims --json` shows it (None when the order has no claim yet)."""
    at = clock()
    with opened(settings) as store:
        with store.session() as session:
            if clear:
                for row in session.scalars(
                    select(SellerStatement).where(
                        SellerStatement.order_id == order_id, SellerStatement.cleared_at.is_(None)
                    )
                ):
                    row.cleared_at = at
            for name, value in values.items():
                session.add(SellerStatement(order_id=order_id, field=name, value=value, stated_at=at))
        desk = ClaimDesk(settings, store)
        with store.session() as session:
            claim = desk.replay_claim(session, order_id, at)
            return queries.claim_dict(claim) if claim is not None else {"order_id": order_id, "state": None}
