"""Finds the bundled data (templates/, models/) in a checkout or an installed wheel, and user overrides."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def bundled_dir(name: str) -> Path:
    """The bundled `templates` or `models` folder: inside the wheel, else at the top of the checkout."""
    installed = _PACKAGE / "_data" / name
    if installed.is_dir():
        return installed
    checkout = _PACKAGE.parent / name
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(f"bundled {name}/ folder not found next to {_PACKAGE}")


def search_path(name: str, override: str | Path | None = None) -> list[Path]:
    """Folders to look in for a data file, the user's override first."""
    folders = []
    if override:
        folders.append(Path(override))
    folders.append(bundled_dir(name))
    return folders


def find_file(name: str, relative: str, override: str | Path | None = None) -> Path | None:
    """The first `relative` file found in the override folder, else in the bundled one."""
    for folder in search_path(name, override):
        candidate = folder / relative
        if candidate.is_file():
            return candidate
    return None
