"""The package's rooms: every module imports on its own (no import cycles), and the pure ones stay light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# One interpreter: third-party packages stay loaded, our own modules are forgotten before each import, so a
# module that only imports when another of ours went first (a cycle) fails here.
EACH_ALONE = """
import importlib, pkgutil, sys
import pipeline
names = sorted(m.name for m in pkgutil.walk_packages(pipeline.__path__, "pipeline.")
               if ".migrations.versions." not in m.name and m.name != "pipeline.__main__")
failed = []
for name in names:
    for loaded in [m for m in sys.modules if m == "pipeline" or m.startswith("pipeline.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed.append(f"{name}: {type(exc).__name__}: {exc}")
print(len(names))
print("\\n".join(failed))
"""


def test_every_module_imports_on_its_own() -> None:
    result = subprocess.run(
        [sys.executable, "-c", EACH_ALONE], capture_output=True, text=True, cwd=ROOT, timeout=120, check=True
    )
    count, *failed = result.stdout.splitlines()
    assert int(count) > 30
    assert [line for line in failed if line] == []


def test_the_playbook_and_the_facts_need_no_spacy() -> None:
    """The playbook is pure functions over Facts: importing it must not pull in spaCy, a database or IMAP."""
    code = (
        "import sys, pipeline.playbook, pipeline.understanding.facts, pipeline.vocabulary; "
        "print(sorted(m for m in ('spacy', 'sqlalchemy', 'imapclient', 'jinja2') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def test_every_module_says_its_job_on_its_first_line() -> None:
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        if "versions" in path.parts:
            continue
        text = path.read_text(encoding="utf-8")
        if not text.strip():
            continue
        assert text.startswith('"""'), path
        first = text[3:].splitlines()[0]
        assert len(first) > 20 and first.rstrip().endswith((".", '"""', ":")), (path, first)


def test_no_function_is_longer_than_sixty_lines() -> None:
    import ast

    long = []
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        if "versions" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length >= 60:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    assert long == []
