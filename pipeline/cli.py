"""The `pipeline` command line: parses arguments, calls into the package, turns our errors into messages."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from pipeline import __version__
from pipeline.config import DEFAULT_CONFIG, Settings, load_settings, write_sample
from pipeline.errors import PipelineError
from pipeline.logs import setup_logging

F = TypeVar("F", bound=Callable[..., Any])


class PipelineClickError(click.ClickException):
    """A PipelineError shown as `Error: …` with the error's own exit code."""

    def __init__(self, error: PipelineError) -> None:
        super().__init__(str(error))
        self.exit_code = error.exit_code


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
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default=DEFAULT_CONFIG, show_default=True, envvar="PIPELINE_CONFIG",
              help="Config file (TOML). Env: PIPELINE_CONFIG.")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              envvar="PIPELINE_LOG_LEVEL", help="Override [log] level. Env: PIPELINE_LOG_LEVEL.")
@click.option("--log-format", type=click.Choice(["text", "json"]), envvar="PIPELINE_LOG_FORMAT",
              help="Override [log] format: text for a terminal, json for servers. Env: PIPELINE_LOG_FORMAT.")
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
@click.option("--path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write it (default: the --config path).")
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
    click.echo(f"database {store.safe_url}: " +
               (f"applied {', '.join(applied)}" if applied else f"up to date at {store.revision()}"))


@cli.command()
@click.option("--once", is_flag=True, help="Take in what is new, act on it, and exit.")
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None, envvar="PIPELINE_METRICS_PORT",
              help="Serve Prometheus metrics on 127.0.0.1:PORT. Env: PIPELINE_METRICS_PORT.")
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
        stats = poll_one_pass(settings)
        click.echo(f"{stats.stored} new, {stats.known} already stored, {stats.ignored} not Amazon; "
                   f"{stats.processed} processed, {stats.failed} failed")
    else:
        poll_forever(settings, metrics_port=metrics_port)


def main() -> None:
    """Console-script entry point."""
    logging.captureWarnings(True)
    cli(prog_name="pipeline")
