"""`pipeline check`: the config, the database, the IMAP login, capabilities and folders, one line each."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from pipeline import trust
from pipeline.config import Settings
from pipeline.errors import PipelineError
from pipeline.mailbox import Mailbox, connect
from pipeline.schema import StoredMessage
from pipeline.service import opened
from pipeline.store import Store

RECENT = 50  # the latest Amazon messages whose proof `pipeline check` looks at


@dataclass
class CheckLine:
    """One line of `pipeline check`."""

    name: str
    ok: bool
    detail: str
    warning: bool = False  # ok, but worth the seller's attention


def check(settings: Settings) -> list[CheckLine]:
    """Config, database, IMAP login, capabilities, folders; stops at the first failure that blocks the rest."""
    lines = [CheckLine("config", True, str(settings.source))]
    try:
        with opened(settings) as store:
            store.check()
            lines.append(CheckLine("database", True, f"{store.safe_url} at revision {store.revision()}"))
            lines.append(trust_line(settings, store))
    except PipelineError as exc:
        lines.append(CheckLine("database", False, str(exc)))
    except (OSError, SQLAlchemyError) as exc:  # e.g. the SQLite file's folder cannot be created
        lines.append(CheckLine("database", False, f"{type(exc).__name__}: {exc}"))
    try:
        mailbox: Mailbox = connect(settings.imap)
    except PipelineError as exc:
        lines.append(CheckLine("imap login", False, str(exc)))
        return lines
    with mailbox:
        lines.append(
            CheckLine(
                "imap login",
                True,
                f"{settings.imap.username} on {settings.imap.host}:"
                f"{settings.imap.effective_port} ({settings.imap.security})",
            )
        )
        caps = [c for c in ("IDLE", "UIDPLUS", "SPECIAL-USE") if mailbox.has(c)]
        missing = [c for c in ("IDLE", "UIDPLUS", "SPECIAL-USE") if not mailbox.has(c)]
        lines.append(
            CheckLine(
                "capabilities",
                True,
                " ".join(caps) + (f" (missing: {' '.join(missing)}; handled without)" if missing else ""),
            )
        )
        for folder in settings.imap.watched_folders:
            try:
                state = mailbox.select(folder)
                lines.append(CheckLine(f"folder {folder}", True, f"UIDVALIDITY {state.uidvalidity}"))
            except PipelineError as exc:
                lines.append(CheckLine(f"folder {folder}", False, str(exc)))
        try:
            lines.append(CheckLine("drafts folder", True, mailbox.drafts_folder()))
        except PipelineError as exc:
            lines.append(CheckLine("drafts folder", False, str(exc)))
    return lines


def trust_line(settings: Settings, store: Store, recent: int = RECENT) -> CheckLine:
    """Which trust mode applies, how much of the recent Amazon mail carries proof, and the servers whose
    Authentication-Results it carries (to list in [trust] authserv_ids)."""
    mode, trusted_ids = settings.trust.mode, settings.trust.authserv_ids
    with store.session() as session:
        raws = list(
            session.scalars(
                select(StoredMessage.raw)
                .where(StoredMessage.kind.is_not(None), StoredMessage.facts.is_not(None))
                .order_by(StoredMessage.id.desc())
                .limit(recent)
            )
        )
    verdicts = [trust.verdict(raw, trusted_ids) for raw in raws if raw]
    proven = sum(v.verified for v in verdicts)
    seen = Counter(i for v in verdicts for i in v.authserv_ids)
    unlisted = [i for i, _ in seen.most_common() if i not in trusted_ids and i != "x-ms-exchange"]
    hint = f"; servers seen: {', '.join(unlisted)} (add yours to [trust] authserv_ids)" if unlisted else ""
    what = f"{mode} mode: {proven} of the {len(verdicts)} latest Amazon messages carry proof (DKIM or a trusted server)"
    if not verdicts:
        return CheckLine("trust", True, f"{mode} mode; no Amazon mail stored yet to check")
    if mode == "strict" and proven == 0:
        return CheckLine(
            "trust",
            True,
            f"{what}: none could be verified, so none may decide a claim (DNS unreachable? set [trust] "
            f'authserv_ids, or mode = "lenient"){hint}',
            warning=True,
        )
    return CheckLine("trust", True, what + hint)
