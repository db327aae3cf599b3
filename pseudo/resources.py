"""Where the shipped data lives: ``policies/`` in a checkout, ``pseudo/_policies`` in a wheel."""

from __future__ import annotations

from pathlib import Path


def policies_dir() -> Path:
    """The folder of the shipped policies."""
    package = Path(__file__).resolve().parent
    for candidate in (package.parent / "policies", package / "_policies"):
        if (candidate / "ps3.15" / "table-e1-1.json").is_file():
            return candidate
    raise FileNotFoundError("the shipped policies folder is missing from this installation")
