"""The `pipeline` command line: parses arguments, calls into the package, turns our errors into messages."""

from __future__ import annotations

import functools
import json
import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from pipeline import __version__, views
from pipeline.config import DEFAULT_CONFIG, Settings, load_settings, write_sample
from pipeline.errors import ConfigError, PipelineError
from pipeline.logs import setup_logging
from pipeline.understanding.text import ORDER_ID
from pipeline.vocabulary import COMPLAINTS, STATES

F = TypeVar("F", bound=Callable[..., Any])


class PipelineClickError(click.ClickException):
    """A PipelineError shown as `Error: …` with the error's own exit code."""

    def __init__(self, error: PipelineError) -> None:
        super().__init__(str(error))
        self.exit_code = error.exit_code  # type: ignore[misc]  # click reads it per instance


def reports_errors(func: F) -> F:
    """Turn PipelineError into a one-line message and its exit code: no traceback for user mistakes."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except PipelineError as exc:
            raise PipelineClickError(exc) from None

    return wrapper  # type: ignore[return-value]


class Context:
    """What every command shares: where the config is, loaded on first use."""

    def __init__(self, config_path: Path, log_level: str | None, log_format: str | None) -> None:
        self.config_path = config_path
        self.log_level = log_level
        self.log_format = log_format
        self._settings: Settings | None = None

    def settings(self) -> Settings:
        """The validated settings; logging is configured from them on first use."""
        if self._settings is None:
            self._settings = load_settings(self.config_path)
            setup_logging(self.log_level or self._settings.log.level, self.log_format or self._settings.log.format)
        return self._settings


pass_context = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_CONFIG,
    show_default=True,
    envvar="PIPELINE_CONFIG",
    help="Config file (TOML). Env: PIPELINE_CONFIG.",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    envvar="PIPELINE_LOG_LEVEL",
    help="Override [log] level. Env: PIPELINE_LOG_LEVEL.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    envvar="PIPELINE_LOG_FORMAT",
    help="Override [log] format: text for a terminal, json for servers. Env: PIPELINE_LOG_FORMAT.",
)
@click.version_option(__version__, prog_name="pipeline")
@click.pass_context
def cli(ctx: click.Context, config_path: Path, log_level: str | None, log_format: str | None) -> None:
    """A-to-z claim desk for Amazon sellers, living in your mailbox.

    Reads Amazon's claim notifications and buyer messages from IMAP, keeps each claim's
    state, and writes reply drafts into your Drafts folder for you to review and send.
    Nothing is ever sent automatically.

    \b
    Start here:
      pipeline init            write a commented pipeline.toml
      pipeline check           test config, database, IMAP login, Drafts folder
      pipeline poll            run the daemon (IDLE), or --once for one pass
      pipeline claims          what needs doing, most urgent first
    """
    ctx.obj = Context(config_path, log_level, log_format)


@cli.command()
@click.option(
    "--path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write it (default: the --config path).",
)
@pass_context
@reports_errors
def init(obj: Context, path: Path | None) -> None:
    """Write a commented sample config file; never overwrites one.

    \b
    Example:
      pipeline init && $EDITOR pipeline.toml
    """
    target = path or obj.config_path
    write_sample(target)
    click.echo(f"wrote {target}; edit [imap] and [seller], then run `pipeline check`")


@cli.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@pass_context
@reports_errors
def db_upgrade(obj: Context) -> None:
    """Apply pending schema migrations (also done automatically on first use).

    \b
    Example:
      pipeline db upgrade
    """
    from pipeline.store import Store

    store = Store(obj.settings().database.url, migrate=False)
    applied = store.upgrade()
    click.echo(
        f"database {store.safe_url}: "
        + (f"applied {', '.join(applied)}" if applied else f"up to date at {store.revision()}")
    )


@cli.command()
@click.option("--once", is_flag=True, help="Take in what is new, act on it, and exit.")
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    metavar="PORT",
    envvar="PIPELINE_METRICS_PORT",
    help="Serve Prometheus metrics on 127.0.0.1:PORT. Env: PIPELINE_METRICS_PORT.",
)
@pass_context
@reports_errors
def poll(obj: Context, once: bool, metrics_port: int | None) -> None:
    """Watch the mailbox and act on Amazon mail (the daemon).

    Uses IMAP IDLE when the server offers it, else polls every [imap] poll_interval
    seconds. Reconnects with backoff; SIGTERM or Ctrl-C stops it cleanly.

    \b
    Examples:
      pipeline poll --once      one pass, then exit (cron, tests)
      pipeline poll             run until stopped (systemd)
    """
    from pipeline.service import poll_forever, poll_one_pass

    settings = obj.settings()
    if once:
        if metrics_port:
            click.echo("warning: --metrics-port is ignored with --once", err=True)
        stats = poll_one_pass(settings)
        click.echo(
            f"{stats.stored} new, {stats.known} already stored, {stats.ignored} not Amazon; "
            f"{stats.processed} processed, {stats.failed} failed"
        )
    else:
        poll_forever(settings, metrics_port=metrics_port)


def _parse_date(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 date (YYYY-MM-DD)", param_hint=name) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the facts as a JSON object.")
@click.pass_context
@reports_errors
def inspect(ctx: click.Context, file: Path, as_json: bool) -> None:
    """Show what the pipeline understands of one .eml message, with the evidence for each fact.

    Works without a config file (then [seller] response_days is 7).

    \b
    Examples:
      pipeline inspect claim.eml
      pipeline inspect --json buyer-message.eml | jq .complaint_type
    """
    from pipeline.inspection import inspect_file

    obj: Context = ctx.obj
    response_days, models_dir, authserv_ids = 7, None, tuple[str, ...]()
    if obj.config_path.exists():
        settings = obj.settings()
        response_days, models_dir = settings.seller.response_days, settings.models.models_dir or None
        authserv_ids = settings.trust.authserv_ids
    data = inspect_file(file, response_days=response_days, models_dir=models_dir, authserv_ids=authserv_ids)
    click.echo(json.dumps(data, indent=2, ensure_ascii=False) if as_json else views.format_inspect(data))


@cli.group(invoke_without_command=True)
@click.option("--state", type=click.Choice(STATES), help="Only claims in this state.")
@click.option("--failed", is_flag=True, help="List the messages that could not be read instead, with their errors.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.pass_context
@reports_errors
def claims(ctx: click.Context, state: str | None, failed: bool, as_json: bool) -> None:
    """List claims, most urgent first (time left to the deadline).

    The list ends with how many messages could not be read, if any: `--failed` lists them
    with their errors and the order IDs they mention; `pipeline reprocess --failed` retries them.

    \b
    Examples:
      pipeline claims
      pipeline claims --state refund_needed
      pipeline claims --json
      pipeline claims --failed
      pipeline claims show 111-2233445-5566778
    """
    if ctx.invoked_subcommand is not None:
        return
    from pipeline.queries import claim_rows, failed_messages

    settings = ctx.obj.settings()
    failures = failed_messages(settings)
    if failed:
        click.echo(json.dumps(failures, indent=2, ensure_ascii=False) if as_json else views.failed_table(failures))
        return
    rows = claim_rows(settings, state)
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    from pipeline.service import now as current_time

    click.echo(views.claims_table(rows, now=current_time(), color=None))
    if failures:
        click.echo(views.failed_footer(failures))


@claims.command("show")
@click.argument("order_id")
@click.option("--json", "as_json", is_flag=True, help="Print the timeline as JSON.")
@pass_context
@reports_errors
def claims_show(obj: Context, order_id: str, as_json: bool) -> None:
    """One claim's timeline: messages and their facts, transitions with reasons, drafts.

    \b
    Example:
      pipeline claims show 111-2233445-5566778
    """
    from pipeline.queries import claim_timeline

    data = claim_timeline(obj.settings(), order_id)
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    click.echo(views.claim_timeline(data, order_id))


@claims.command("set")
@click.argument("order_id")
@click.option("--complaint", type=click.Choice(COMPLAINTS), help="What the buyer complains about.")
@click.option("--carrier", help="The carrier of your shipment (e.g. UPS, Royal Mail).")
@click.option("--tracking", help="The tracking number of your shipment.")
@click.option("--delivered", "delivered", metavar="DATE", help="The day the carrier delivered it (YYYY-MM-DD).")
@click.option("--note", help="A note for the claim's timeline.")
@click.option("--answered", is_flag=True, help="You answered the buyer (outside the drafts): the reply clock stops.")
@click.option("--clear", is_flag=True, help="Take back every fact stated on this order before (then set the new).")
@pass_context
@reports_errors
def claims_set(
    obj: Context,
    order_id: str,
    complaint: str | None,
    carrier: str | None,
    tracking: str | None,
    delivered: str | None,
    note: str | None,
    answered: bool,
    clear: bool,
) -> None:
    """State a fact about an order yourself: it wins over what the mail says.

    A real claim notice names no reason: when neither the buyer nor a return request
    told it, look it up in Seller Central and state it here. The fact is replayed like a
    message (it shows in the timeline and survives `pipeline reprocess`); the draft it
    calls for is written at the next poll.

    \b
    Examples:
      pipeline claims set 111-2233445-5566778 --complaint not_received
      pipeline claims set 111-2233445-5566778 --carrier UPS --tracking 1Z999AA10123456784 --delivered 2026-11-03
      pipeline claims set 111-2233445-5566778 --note "buyer called, wants a replacement"
      pipeline claims set 111-2233445-5566778 --answered
      pipeline claims set 111-2233445-5566778 --clear
    """
    from pipeline.service import state_facts

    stated = {
        "complaint": complaint,
        "carrier": carrier,
        "tracking": tracking,
        "delivered": delivered,
        "note": note,
        "answered": "by the seller" if answered else None,
    }
    values = _stated_values(order_id, stated, clear)
    claim = state_facts(obj.settings(), order_id, values, clear=clear)
    click.echo(_stated_outcome(order_id, values, clear, claim))


def _stated_values(order_id: str, stated: dict[str, str | None], clear: bool) -> dict[str, str]:
    """The facts `claims set` was given (the options not left out), checked: a real order ID, a real date, no
    empty text, and at least one fact unless the earlier ones are cleared. Raises click's usage errors."""
    if not ORDER_ID.fullmatch(order_id):
        raise click.BadParameter(
            f"{order_id!r} is not an Amazon order ID (like 111-2233445-5566778)", param_hint="ORDER_ID"
        )
    values = {name: value for name, value in stated.items() if value is not None}
    delivered = values.get("delivered")
    if delivered is not None:
        try:
            date.fromisoformat(delivered)
        except ValueError:
            raise click.BadParameter(f"{delivered!r} is not a date (YYYY-MM-DD)", param_hint="--delivered") from None
    for name in ("carrier", "tracking", "note"):
        if name in values and not values[name].strip():
            raise click.BadParameter("must not be empty", param_hint=f"--{name}")
    if not values and not clear:
        raise click.UsageError(
            "state at least one of --complaint, --carrier, --tracking, --delivered, --note, --answered, or --clear"
        )
    return values


def _stated_outcome(order_id: str, values: dict[str, str], clear: bool, claim: dict[str, Any]) -> str:
    """What `claims set` did, and where the claim stands now (or that there is no claim yet)."""
    said = ", ".join(f"{name} {value}" for name, value in values.items())
    done = (
        ("cleared the facts stated before" if clear else "")
        + ("; " if clear and said else "")
        + (f"stated {said}" if said else "")
    )
    if claim.get("state") is None:
        return f"{order_id}: {done}; no claim yet: kept for when one comes"
    return (
        f"{order_id}: {done}; now {claim['state']} ({claim['strategy'] or 'no strategy'})"
        + (f", flagged: {claim['flag_reason']}" if claim["flagged"] else "")
        + ("; its draft is written at the next poll" if claim["strategy"] not in (None, "manual_review") else "")
    )


@cli.group()
def orders() -> None:
    """Shipment facts (carrier, tracking, delivery) from your own records."""


@orders.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@pass_context
@reports_errors
def orders_import(obj: Context, file: Path) -> None:
    """Import shipment facts from CSV or TSV, with our columns or Amazon's shipment confirmation columns.

    Columns: order_id, carrier, tracking_number, ship_date, delivered_date (ISO dates; empty =
    unknown), or Amazon's shipment-confirmation names (order-id, carrier-code, carrier-name,
    tracking-number, ship-date). Re-importing updates rows; bad rows are reported and skipped.

    \b
    Example:
      pipeline orders import shipments.csv
    """
    from pipeline.service import import_orders

    report = import_orders(obj.settings(), file)
    for line, reason in report.skipped:
        click.echo(f"{file}:{line}: skipped: {reason}", err=True)
    click.echo(
        f"{report.added} added, {report.updated} updated, {report.unchanged} unchanged, {len(report.skipped)} skipped"
    )


@cli.command()
@click.option("--since", metavar="DATE", help="Only messages sent on or after this date (YYYY-MM-DD).")
@click.option("--until", metavar="DATE", help="Only messages sent before this date (YYYY-MM-DD).")
@click.option("--order", "order_id", metavar="ORDER_ID", help="Only this order's messages.")
@click.option("--failed", "failed_only", is_flag=True, help="Only messages whose processing failed.")
@click.option("--from-imap", is_flag=True, help="Re-read the watched folders first (date-limited by --since/--until).")
@click.option("--dry-run", is_flag=True, help="Print what would change; write nothing.")
@pass_context
@reports_errors
def reprocess(
    obj: Context,
    since: str | None,
    until: str | None,
    order_id: str | None,
    failed_only: bool,
    from_imap: bool,
    dry_run: bool,
) -> None:
    """Re-run understanding and the playbook over stored mail (backfill, or after rules improve).

    Idempotent: running it twice, or again after Ctrl-C, gives the same claims. Exits 1
    while messages that could not be processed remain (see `pipeline claims --failed`).

    \b
    Examples:
      pipeline reprocess --dry-run
      pipeline reprocess --failed
      pipeline reprocess --from-imap --since 2026-01-01
      pipeline reprocess --order 111-2233445-5566778
    """
    from pipeline.reprocess import Selection
    from pipeline.reprocess import reprocess as run_reprocess

    selection = Selection(
        since=_parse_date(since, "--since"),
        until=_parse_date(until, "--until"),
        order_id=order_id,
        failed_only=failed_only,
    )
    progress = _Progress("reprocessing", "reprocessed", logging.getLogger("pipeline.reprocess"))
    try:
        result = run_reprocess(
            obj.settings(),
            selection,
            from_imap=from_imap,
            dry_run=dry_run,
            progress=progress.step,
            start=progress.start,
        )
    except KeyboardInterrupt:
        progress.close()
        kept = "nothing was written" if dry_run else "the messages done so far are kept"
        click.echo(
            f"interrupted after {progress.done} of {progress.total} messages; {kept}. "
            "Run the same command again to finish.",
            err=True,
        )
        raise click.exceptions.Exit(130) from None
    finally:
        progress.close()
    click.echo(views.reprocess_report(result, dry_run=dry_run, from_imap=from_imap))
    if result.failed:
        raise click.exceptions.Exit(1)  # failures remain: a script or a timer must see it


class _Progress:
    """A progress bar on a terminal, else a log line every 100 messages or 10 s, with rate and time left."""

    def __init__(self, label: str, done_verb: str, log: logging.Logger) -> None:
        self.label, self.done_verb, self.log = label, done_verb, log
        self.total = self.done = 0
        self.started = self.logged = time.monotonic()
        self.bar: Any = None

    def start(self, total: int) -> None:
        self.total, self.done = total, 0
        self.started = self.logged = time.monotonic()
        if sys.stderr.isatty() and total:
            self.bar = click.progressbar(
                length=total,
                label=self.label,
                file=sys.stderr,
                show_eta=True,
                show_pos=True,
                item_show_func=lambda rate: rate,
            ).__enter__()

    def step(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        rate = self.done / max(1e-6, now - self.started)
        if self.bar is not None:
            self.bar.update(count, f"{rate:.0f} msg/s")
        elif self.done % 100 == 0 or self.done == self.total or now - self.logged >= 10:
            self.logged = now
            left = (self.total - self.done) / rate if rate else 0
            self.log.info(
                "%s %d/%d messages (%.0f/s, about %.0f s left)", self.done_verb, self.done, self.total, rate, left
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


@cli.command()
@click.option(
    "--weeks",
    type=click.IntRange(1, 520),
    default=8,
    show_default=True,
    metavar="N",
    help="How many weeks, up to this one.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array, one object per week.")
@pass_context
@reports_errors
def stats(obj: Context, weeks: int, as_json: bool) -> None:
    """Per week: buyer complaints, answered in 24 h, claims filed, prevented, won, refunded, granted.

    A complaint counts as prevented once 30 days passed without a claim on its order.
    The claim rate is claims filed per order shipped, where shipments were imported
    (`pipeline orders import`): the seller's view of the Order Defect Rate risk.

    \b
    Examples:
      pipeline stats
      pipeline stats --weeks 26 --json
    """
    from pipeline.queries import stats as weekly
    from pipeline.service import now as current_time

    rows = weekly(obj.settings(), current_time(), weeks)
    click.echo(json.dumps(rows, indent=2) if as_json else views.stats_table(rows))


@cli.command()
@pass_context
@reports_errors
def check(obj: Context) -> None:
    """Check config, database, IMAP login, capabilities and the Drafts folder.

    Also says which trust mode applies, how much recent Amazon mail carries proof that
    Amazon sent it, and which servers' Authentication-Results it carries. Exits non-zero
    when anything fails (a warning does not).

    \b
    Example:
      pipeline check
    """
    from pipeline.check import check as run_check

    try:
        settings = obj.settings()
    except ConfigError as exc:
        click.echo(f"{click.style('FAIL', fg='red')} config: {exc}")
        raise click.exceptions.Exit(exc.exit_code) from None
    lines = run_check(settings)
    for line in lines:
        mark = click.style("ok  ", fg="green") if line.ok else click.style("FAIL", fg="red")
        if line.ok and line.warning:
            mark = click.style("warn", fg="yellow")
        click.echo(f"{mark} {line.name}: {line.detail}")
    if not all(line.ok for line in lines):
        raise click.exceptions.Exit(1)


@cli.command()
@click.option(
    "--hours",
    type=click.IntRange(1, 24 * 31),
    default=48,
    metavar="N",
    show_default=True,
    help="List claims whose deadline is within this many hours.",
)
@click.option("--print", "print_only", is_flag=True, help="Print the message instead of putting it in the INBOX.")
@click.option("--always", is_flag=True, help="Write a digest even when no claim needs action.")
@pass_context
@reports_errors
def digest(obj: Context, hours: int, print_only: bool, always: bool) -> None:
    """Put one unread summary message in the INBOX: the claims that need action soon.

    Lists open claims whose deadline is within --hours (default 48), claims that need a
    refund, and flagged claims, each with its state, strategy, time left and flag reason.
    From and to your [seller] from_address; the poller ignores it (not from Amazon).
    Without claims to list nothing is written, unless --always.

    \b
    Examples:
      pipeline digest                 e.g. daily from a systemd timer or cron
      pipeline digest --print
    """
    from pipeline.digest import append_digest, build_digest
    from pipeline.service import now as current_time

    settings = obj.settings()
    now = current_time()
    message = build_digest(settings, now=now, hours=hours)
    if print_only:
        click.echo(message.message.as_string(policy=message.message.policy.clone(linesep="\n")), nl=False)
        return
    if not message.worth_sending and not always:
        click.echo(f"no claims need action in the next {hours} hours; no digest written")
        return
    folder = append_digest(settings, message, now=now)
    click.echo(f"digest of {message.count} claim(s) put in {folder}: {message.subject}")


@cli.command()
@click.option("--keep", is_flag=True, help="Leave the demo server and files in place and print where they are.")
@reports_errors
def demo(keep: bool) -> None:
    """Run the whole pipeline on a sample mailbox served by a throwaway local Dovecot.

    Starts Dovecot on a free port, fills a mailbox with one story per playbook rule,
    polls it, prints the claims and the drafts written, and cleans up.

    \b
    Example:
      pipeline demo
    """
    from pipeline.demo import run_demo

    run_demo(echo=click.echo, keep=keep)


def main() -> None:
    """Console-script entry point."""
    logging.captureWarnings(True)
    cli(prog_name="pipeline")


if __name__ == "__main__":
    main()
