#!/usr/bin/env python3
"""Backfill speed end to end: `pipeline poll --once` over a big mailbox beside a raw IMAP fetch of the same mail.

Builds the mailbox in a throwaway Dovecot (10 % Amazon mail of every kind, in its real formats, among 16 KB
newsletters; or only Amazon mail), then in one run measures:

- the baseline: imapclient's own `UID FETCH BODY.PEEK[]` of the whole mailbox, in batches;
- `pipeline poll --once` (a fresh process, as a user runs it) on a fresh database, for SQLite and PostgreSQL,
  with its peak RSS and where its time went (pipeline.timing's stages);
- with `--baseline REF`, the same poll by the code of another git revision (checked out in a temporary
  worktree), on the same mailbox: the before/after of a change.

    python scripts/bench_backfill.py                          # 20,000 messages, 10 % Amazon
    python scripts/bench_backfill.py --all-amazon --messages 5000
    python scripts/bench_backfill.py --messages 2000 --baseline 75c9452 --databases sqlite

PostgreSQL is the local one (127.0.0.1:5432, trust auth); each run creates and drops its own database.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.testing import dkim as test_key  # noqa: E402
from pipeline.testing import stories  # noqa: E402
from pipeline.testing.dovecot import MailUser, ThrowawayDovecot  # noqa: E402

POSTGRES_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
APPEND_CHUNK = 200
FETCH_BATCH = 500

# What the child process runs: one pass of the pipeline under test, then its figures as JSON on stdout.
CHILD = """
import json, resource, sys, time
started = time.perf_counter()
from pipeline.config import load_settings
from pipeline.service import poll_one_pass
settings = load_settings(sys.argv[1])
imported = time.perf_counter()
stats = poll_one_pass(settings)
done = time.perf_counter()
try:
    from pipeline.timing import totals
    stages = {name: [seconds, count] for name, (seconds, count) in totals().items()}
except ImportError:
    stages = {}
print(json.dumps({"startup": imported - started, "poll": done - imported, "stored": stats.stored,
                  "processed": stats.processed, "failed": stats.failed, "seen": stats.seen,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "worker_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, "stages": stages}))
"""


# --- the mailbox ---------------------------------------------------------------------------------------


def amazon_story(index: int, when: datetime) -> list[bytes]:
    """One order's mail: a buyer message or return, the claim, and what follows; every kind appears in turn."""
    order = f"113-{4000000 + index:07d}-{index * 7919 % 10_000_000:07d}"
    name, relay = f"Buyer{index}", f"b{index:07d}x{index * 31 % 99991:05d}q"
    hour = timedelta(hours=1)
    complaint = [
        "My order never arrived, where is it?",
        "The bottle arrived with a big dent. Not happy.",
        "It is too small, the size is wrong.",
        "It broke after two months of use.",
        "Where is my parcel? Please refund me.",
        "Received it today, all good, thanks!",
    ][index % 6]
    mails = [stories.buyer(order, name, relay, complaint, when)]
    variant = index % 8
    if variant == 1:
        mails[0] = stories.return_request(
            order,
            when,
            reason="Item defective or doesn't work",
            comment="It leaks from the lid.",
            carrier="UPS",
            tracking="1ZR7W8420312887604",
        )
    mails.append(stories.claim_filed(order, "24.99", when + 20 * hour))
    follow = {
        0: lambda: stories.claim_decision(order, "24.99", when + 60 * hour, outcome="withdrawn"),
        1: lambda: stories.refund_issued(order, "24.99", name, when + 30 * hour),
        2: lambda: stories.claim_decision(order, "24.99", when + 70 * hour, outcome="granted"),
        3: lambda: stories.claim_info_request(order, when + 30 * hour),
        4: lambda: stories.message_undelivered(order, name, when + 25 * hour, when_sent=when + 22 * hour),
        5: lambda: stories.seller_reply_copy(name, "Sorry for the trouble: a new one left today.", when + 24 * hour),
        6: lambda: stories.cancellation_request(order, name, when + 2 * hour),
        7: lambda: stories.amazon_inquiry(
            order, when + 3 * hour, reason="Wrong size", details="The customer asks how to exchange it."
        ),
    }[variant]
    mails.append(follow())
    return mails


def newsletter(index: int, when: datetime, chance: random.Random) -> bytes:
    """A 16 KB HTML newsletter from a shop that is not Amazon."""
    from email.message import EmailMessage
    from email.utils import format_datetime

    words = [
        "offer",
        "sale",
        "new",
        "season",
        "colours",
        "free",
        "delivery",
        "today",
        "only",
        "members",
        "discover",
        "collection",
        "garden",
        "kitchen",
        "outdoor",
        "best",
        "sellers",
        "gift",
        "ideas",
        "week",
    ]
    paragraphs = []
    while sum(len(p) for p in paragraphs) < 15_000:
        sentence = " ".join(chance.choice(words) for _ in range(chance.randint(12, 30)))
        paragraphs.append(f'<tr><td style="padding:8px;font-family:Arial"><p>{sentence.capitalize()}.</p></td></tr>')
    message = EmailMessage()
    message["From"] = f"Shop {index % 37} <news@shop{index % 37}.example>"
    message["To"] = "claims@acme-store.example"
    message["Subject"] = f"This week's offers #{index}"
    message["Date"] = format_datetime(when)
    message["Message-ID"] = f"<news-{index}@shop{index % 37}.example>"
    message.set_content("This newsletter is best read as HTML.")
    message.add_alternative("<html><body><table>" + "".join(paragraphs) + "</table></body></html>", subtype="html")
    return message.as_bytes()


def mailbox_messages(count: int, all_amazon: bool, seed: int = 7) -> Iterator[bytes]:
    """`count` messages in date order: Amazon stories (3 messages each) among newsletters, or only Amazon."""
    chance = random.Random(seed)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    amazon_share = 1.0 if all_amazon else 0.10
    made = story = 0
    while made < count:
        when = start + timedelta(minutes=17 * made)
        if chance.random() < amazon_share / 3 * (3 if all_amazon else 1):
            for raw in amazon_story(story, when)[: count - made]:
                yield raw
                made += 1
            story += 1
        else:
            yield newsletter(made, when, chance)
            made += 1


def fill(server: ThrowawayDovecot, user: MailUser, messages: Iterator[bytes]) -> tuple[int, int]:
    """APPEND the messages in chunks (MULTIAPPEND); return (count, bytes)."""
    from imapclient import IMAPClient

    count = size = 0
    client = IMAPClient(server.host, port=server.port, ssl=False, timeout=120)
    client.login(user.username, user.password)
    chunk: list[bytes] = []
    for raw in messages:
        chunk.append(raw)
        count, size = count + 1, size + len(raw)
        if len(chunk) == APPEND_CHUNK:
            client.multiappend("INBOX", chunk)
            chunk = []
    if chunk:
        client.multiappend("INBOX", chunk)
    client.logout()
    return count, size


# --- the measurements ----------------------------------------------------------------------------------


def raw_fetch(server: ThrowawayDovecot, user: MailUser) -> tuple[int, float]:
    """imapclient's UID FETCH BODY.PEEK[] of the whole INBOX in batches: (messages, seconds)."""
    from imapclient import IMAPClient

    started = time.perf_counter()
    client = IMAPClient(server.host, port=server.port, ssl=False, timeout=120)
    client.login(user.username, user.password)
    client.select_folder("INBOX", readonly=True)
    uids = client.search(["ALL"])
    fetched = 0
    for first in range(0, len(uids), FETCH_BATCH):
        fetched += len(client.fetch(uids[first : first + FETCH_BATCH], [b"BODY.PEEK[]"]))
    client.logout()
    return fetched, time.perf_counter() - started


def run_pipeline(tree: Path, server: ThrowawayDovecot, user: MailUser, url: str, workdir: Path) -> dict[str, object]:
    """`poll --once` of the code in `tree`, in its own process, on the database at `url`."""
    secret = workdir / "password"
    secret.write_text(user.password, encoding="utf-8")
    secret.chmod(0o600)
    config = workdir / "pipeline.toml"
    config.write_text(
        f'[imap]\nhost = "{server.host}"\nport = {server.port}\nsecurity = "plain"\nusername = "{user.username}"\n'
        f'password_file = "{secret}"\ntimeout = 120\n\n[database]\nurl = "{url}"\n\n'
        '[seller]\nstore_name = "Acme Store"\nfrom_address = "claims@acme-store.example"\n\n'
        '[log]\nlevel = "WARNING"\n',
        encoding="utf-8",
    )
    # the mail is signed with the test DKIM key: its records stand in for Amazon's DNS, as real mail verifies
    keys = test_key.records_file(workdir, test_key.amazon_domains())
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(config)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(tree), "PIPELINE_DKIM_KEYS": str(keys)},
        cwd=workdir,
        check=False,
    )
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"the pipeline in {tree} failed:\n{result.stderr[-3000:]}")
    figures: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    figures["wall"] = wall
    return figures


def fresh_database(kind: str, workdir: Path, label: str) -> tuple[str, object]:
    """A URL of an empty database, and what drop_database needs to remove it."""
    if kind == "sqlite":
        return f"sqlite:///{workdir / f'{label}.db'}", None
    import sqlalchemy

    name = f"bench_{label}_{os.getpid()}"
    admin = sqlalchemy.create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}"'))
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return POSTGRES_ADMIN.rsplit("/", 1)[0] + f"/{name}", name


def drop_database(handle: object) -> None:
    if handle is None:
        return
    import sqlalchemy

    admin = sqlalchemy.create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{handle}" WITH (FORCE)'))
    admin.dispose()


def baseline_tree(ref: str, folder: Path) -> Path:
    """A worktree of `ref` to run the older code from."""
    target = folder / f"baseline-{ref}"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(target), ref], check=True, capture_output=True
    )
    return target


# --- the report ----------------------------------------------------------------------------------------


def report(label: str, count: int, figures: dict[str, object], raw_rate: float) -> list[str]:
    wall = float(figures["wall"])  # type: ignore[arg-type]
    rate = count / wall
    lines = [
        f"{label:<34} {rate:9.0f} msg/s  {rate / raw_rate:6.2f}x  {float(figures['rss_mb']):6.0f} MB  "  # type: ignore[arg-type]
        f"(largest worker {float(figures.get('worker_rss_mb') or 0):.0f} MB; poll"  # type: ignore[arg-type]
        f" {figures['poll']:.1f} s + start {figures['startup']:.1f} s; stored {figures['stored']}, "
        f"processed {figures['processed']}, failed {figures['failed']})"
    ]
    stages = figures.get("stages") or {}
    if stages:
        parts = [f"{name} {seconds:.1f} s" for name, (seconds, _n) in stages.items() if seconds >= 0.05]  # type: ignore[union-attr]
        lines.append(f"{'':<34} stages: " + ", ".join(parts))
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--all-amazon", action="store_true", help="only Amazon mail (the worst case)")
    parser.add_argument("--databases", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    parser.add_argument("--baseline", metavar="REF", help="also run the code of this git revision")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-backfill-") as temp, ThrowawayDovecot() as server:
        folder = Path(temp)
        user = server.add_user()
        started = time.perf_counter()
        count, size = fill(server, user, mailbox_messages(args.messages, args.all_amazon))
        print(
            f"mailbox: {count} messages, {size / 1e6:.0f} MB, {'all Amazon' if args.all_amazon else '10 % Amazon'}"
            f" (built in {time.perf_counter() - started:.0f} s)"
        )
        fetched, seconds = raw_fetch(server, user)
        raw_rate = fetched / seconds
        print(f"{'raw fetch (imapclient BODY.PEEK[])':<34} {raw_rate:9.0f} msg/s  {1:6.2f}x")
        trees = [("this checkout", ROOT)]
        if args.baseline:
            trees.insert(0, (f"baseline {args.baseline}", baseline_tree(args.baseline, folder)))
        for kind in args.databases.split(","):
            for label, tree in trees:
                work = folder / f"{kind}-{len(label)}-{label.split()[-1]}"
                work.mkdir()
                url, handle = fresh_database(kind, work, "run")
                try:
                    figures = run_pipeline(tree, server, user, url, work)
                finally:
                    drop_database(handle)
                print("\n".join(report(f"pipeline {label}, {kind}", count, figures, raw_rate)))
        if args.baseline:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(trees[0][1])],
                check=False,
                capture_output=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
