"""`pipeline check`: the config, the database, the IMAP login, capabilities and folders, one line each."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError

from pipeline.config import Settings
from pipeline.errors import PipelineError
from pipeline.mailbox import Mailbox, connect
from pipeline.service import opened


@dataclass
class CheckLine:
    """One line of `pipeline check`."""

    name: str
    ok: bool
    detail: str


def check(settings: Settings) -> list[CheckLine]:
    """Config, database, IMAP login, capabilities, folders; stops at the first failure that blocks the rest."""
    lines = [CheckLine("config", True, str(settings.source))]
    try:
        with opened(settings) as store:
            store.check()
            lines.append(CheckLine("database", True, f"{store.safe_url} at revision {store.revision()}"))
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
