"""README.md: its command table is the one scripts/readme_commands.py renders from the click commands."""

from __future__ import annotations

import importlib.util
import re
from itertools import takewhile
from pathlib import Path
from types import ModuleType

import click

from pipeline.cli import cli

ROOT = Path(__file__).resolve().parent.parent


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("readme_commands", ROOT / "scripts" / "readme_commands.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_command_table_is_up_to_date() -> None:
    script = _script()
    block = script.readme_block((ROOT / "README.md").read_text(encoding="utf-8"))
    assert block == script.render(cli), script.STALE


def _leaf_paths(command: click.Command, path: tuple[str, ...] = ()) -> set[str]:
    paths = set()
    if path and (not isinstance(command, click.Group) or command.invoke_without_command):
        paths.add(" ".join(("pipeline", *path)))
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            paths |= _leaf_paths(sub, (*path, name))
    return paths


def test_table_has_a_row_for_every_command() -> None:
    rows = _script().render(cli).splitlines()[2:]
    # a row's usage starts with the command path: lower-case words, before the ARGUMENTS and [--options]
    paths = [
        " ".join(takewhile(lambda word: re.fullmatch(r"[a-z][a-z0-9_-]*", word), row.split("`")[1].split()))
        for row in rows
    ]
    leaves = _leaf_paths(cli)
    assert {"pipeline claims", "pipeline claims show", "pipeline db upgrade", "pipeline orders import"} <= leaves
    assert sorted(paths) == sorted(leaves), "every command that runs has exactly one row"
