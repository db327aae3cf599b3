"""Run reports on disk: finding a run's reports and reading one with its inputs file.

Kept apart from :mod:`pseudo.batch.report` (which writes them, and imports the pipeline's and the
verification's types): ``pseudo diff`` pairs files by a run report and needs only this.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def run_reports(folder: Path) -> list[Path]:
    """The run reports in a report folder, oldest first (not their inputs files)."""
    return sorted(p for p in folder.glob("run-*.json") if not p.name.endswith(".inputs.json"))


def load_report(path: Path, inputs_folder: Path | None = None) -> dict[str, Any]:
    """A run report with each file's ``input`` path filled in from its inputs file: in
    ``inputs_folder`` if given (a vault's ``runs/<project>``, e.g. after the vault moved),
    else where the report says (the vault's), else beside the report (older reports). When
    none can be read, files are known by ``input_id`` only."""
    report: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    inputs_path = _inputs_file(path, str(report.get("inputs") or ""), inputs_folder)
    if inputs_path is not None:
        inputs = json.loads(inputs_path.read_text(encoding="utf-8"))
        root = Path(inputs["root"])
        for item in report["files"]:
            relative = inputs["files"].get(item["input_id"])
            if relative is not None:
                item["input"] = str(root / relative)
        report["input"] = inputs["input"]
    return report


def _inputs_file(report: Path, named: str, folder: Path | None) -> Path | None:
    """The first readable inputs file among the places :func:`load_report` looks."""
    if not named:
        return None
    name = Path(named).name
    places = [folder / name] if folder is not None else []
    if Path(named).is_absolute():
        places.append(Path(named))
    places.append(report.with_name(name))
    return next((place for place in places if place.is_file()), None)
