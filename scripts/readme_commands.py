#!/usr/bin/env python3
"""Writes README.md's command table from the click commands of `pipeline.cli:cli`.

One row per command that runs: its usage (command path, arguments, options) and the first sentence of its help.
The table sits between the markers `<!-- commands:start -->` and `<!-- commands:end -->`; tests/test_readme.py
fails when it is out of date.

    python scripts/readme_commands.py            # rewrite README.md's table
    python scripts/readme_commands.py --check    # exit 1 when README.md's table is out of date
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.cli import cli  # noqa: E402

README = ROOT / "README.md"
START, END = "<!-- commands:start -->", "<!-- commands:end -->"
STALE = "README.md's command table is out of date: run python scripts/readme_commands.py"


def runnable_commands(command: click.Command, ctx: click.Context) -> Iterator[click.Context]:
    """The context of every visible command that runs on its own, in `--help` order: leaves, and groups that
    run without a subcommand (`claims`)."""
    if ctx.parent is not None and (not isinstance(command, click.Group) or command.invoke_without_command):
        yield ctx
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from runnable_commands(sub, click.Context(sub, info_name=name, parent=ctx))


def _option_usage(option: click.Option) -> str:
    name = max(option.opts, key=lambda opt: opt.startswith("--"))
    if option.is_flag:
        text = "/".join([name, *option.secondary_opts])
    else:
        # an explicit metavar, FILE for paths; else the option's own name (click's TEXT or INTEGER says too little)
        metavar = option.metavar or (
            option.type.name.upper()
            if isinstance(option.type, click.Path)
            else (option.name or name.lstrip("-")).upper()
        )
        text = f"{name} {metavar}" + (" ..." if option.multiple else "")
    return text if option.required else f"[{text}]"


def usage(ctx: click.Context) -> str:
    """`pipeline claims set ORDER_ID [--complaint COMPLAINT] …`: arguments, then the visible options but --help."""
    pieces = [ctx.command_path]
    pieces += [
        piece
        for param in ctx.command.params
        if isinstance(param, click.Argument)
        for piece in param.get_usage_pieces(ctx)
    ]
    pieces += [
        _option_usage(param) for param in ctx.command.params if isinstance(param, click.Option) and not param.hidden
    ]
    return " ".join(pieces)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render(command: click.Command = cli) -> str:
    """The Markdown table `| command | what it does |`, one row per runnable command."""
    root = click.Context(command, info_name="pipeline")
    rows = ["| command | what it does |", "|---|---|"]
    rows += [
        f"| `{_cell(usage(ctx))}` | {_cell(ctx.command.get_short_help_str(limit=1000))} |"
        for ctx in runnable_commands(command, root)
    ]
    return "\n".join(rows) + "\n"


def readme_block(text: str) -> str:
    """What stands between the markers in README.md's text."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"README.md lacks the markers {START} … {END}")
    return text[start + len(START) : end].strip("\n") + "\n"


def with_table(text: str, table: str) -> str:
    """README.md's text with the table between the markers replaced."""
    readme_block(text)  # the markers are there
    before, rest = text.split(START, 1)
    return f"{before}{START}\n{table}{END}{rest.split(END, 1)[1]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when README.md's table is out of date")
    args = parser.parse_args(argv)
    text = README.read_text(encoding="utf-8")
    updated = with_table(text, render())
    if args.check:
        if updated != text:
            print(STALE, file=sys.stderr)
            return 1
        return 0
    if updated != text:
        README.write_text(updated, encoding="utf-8")
        print("README.md: command table rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
