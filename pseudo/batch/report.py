"""A run's summary and its report: counts, outcomes, and the JSON files of a run.

The report (nothing identifying) goes beside the output (``OUTPUT.pseudo-run/``); the inputs
file, which maps the report's input ids to input paths (they can name patients), goes where
the vault's owner keeps it: ``<vault>/runs/<project>/`` (:func:`inputs_folder`), owner-only.
"""

from __future__ import annotations

import json
import os
import secrets
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pseudo import __version__

# Re-exported: reading reports lives in a module of its own (see there)
from pseudo.batch.report_files import load_report as load_report
from pseudo.batch.report_files import run_reports as run_reports
from pseudo.pipeline.outcome import FileOutcome
from pseudo.policy.compiled import PIXELS_OFF_METHOD, CompiledPolicy
from pseudo.verify.finding import VerificationFinding


@dataclass
class RunSummary:
    """Counts and outcomes of one run; :meth:`report` is the machine-readable run report."""

    run_id: str
    project: str
    policy: CompiledPolicy
    input: Path
    output: Path
    started: str
    finished: str = ""
    status: str = "running"
    outcomes: list[FileOutcome] = field(default_factory=list)
    new_linkage_records: int = 0
    verified: bool = True
    reference_findings: list[VerificationFinding] = field(default_factory=list)
    #: what the run found of the project's recorded policy (recorded now, changed, or same)
    policy_change: dict[str, Any] | None = None
    #: the folder of the inputs file (None: beside the report)
    inputs_folder: Path | None = None
    #: the clinical trial values the run wrote (site, timepoint, settings), if any
    trial: dict[str, Any] | None = None

    def count(self, status: str) -> int:
        """Number of files with this status."""
        return sum(1 for o in self.outcomes if o.status == status)

    def _outputs(self) -> list[list[str]]:
        return [
            o.output.split("/")
            for o in self.outcomes
            if o.output and o.status in ("written", "unchanged")
        ]

    @property
    def counts(self) -> dict[str, int]:
        """Files by status, and the patients, studies and series in the output."""
        parts = self._outputs()
        return {
            "files": len(self.outcomes),
            "written": self.count("written"),
            "unchanged": self.count("unchanged"),
            "skipped": self.count("skipped"),
            "quarantined": self.count("quarantined"),
            "patients": len({p[0] for p in parts}),
            "studies": len({p[1] for p in parts}),
            "series": len({p[2] for p in parts}),
            "findings": sum(len(o.findings) for o in self.outcomes),
            "new_linkage_records": self.new_linkage_records,
            "leaks": self.leaks,
            "verification_warnings": sum(
                1 for o in self.outcomes for f in o.verification if f.severity == "warning"
            ),
        }

    @property
    def leaks(self) -> int:
        """Leak-level verification findings: in quarantined files, and broken references."""
        in_files = sum(1 for o in self.outcomes for f in o.verification if f.severity == "leak")
        return in_files + len(self.reference_findings)

    def report(self) -> dict[str, Any]:
        """The run report: nothing identifying (no DICOM value, no input path: folders are
        often named after patients). Input files are named by a keyed digest of their path;
        :meth:`inputs` maps these to the paths, for the operator."""
        return {
            "format": "pseudo-run-report/1",
            "run_id": self.run_id,
            "pseudo_version": __version__,
            "project": self.project,
            "policy": {
                "name": self.policy.name,
                "title": self.policy.title,
                "sha256": self.policy.sha256,
                "chain": self.policy.chain,
                "options": self.policy.options,
                "standard_edition": f"PS3.15 {self.policy.edition}",
            },
            "pixels": self.pixels,
            "inputs": str(self.inputs_path(Path())),
            "project_policy": self.policy_change,
            **({"trial": self.trial} if self.trial is not None else {}),
            "output": str(self.output),
            "started": self.started,
            "finished": self.finished,
            "status": self.status,
            "counts": self.counts,
            "files": [
                {
                    "input_id": o.input_id,
                    "status": o.status,
                    "output": o.output,
                    "reason": o.reason,
                    "findings": [asdict(f) for f in o.findings],
                    "verification": [f.to_json() for f in o.verification],
                    "pixels": asdict(o.pixels) if o.pixels is not None else None,
                }
                for o in self.outcomes
            ],
            "verification": {
                "enabled": self.verified,
                "references": [f.to_json() for f in self.reference_findings],
                "skipped_values": dict(
                    sum((Counter(o.skipped_checks) for o in self.outcomes), Counter())
                ),
            },
        }

    @property
    def pixels(self) -> dict[str, Any]:
        """Pixel protection in this run: on or off, and the images it blanked text in, by
        rule and by detection."""
        if not self.policy.pixels.enabled:
            return {"protection": "off", "note": PIXELS_OFF_METHOD}
        done = [o.pixels for o in self.outcomes if o.pixels is not None]
        return {
            "protection": "on",
            "images_examined": len(done),
            "images_redacted": sum(1 for p in done if p.redacted),
            "by_rule": sum(1 for p in done if p.ruled),
            "by_detection": sum(1 for p in done if p.detected),
        }

    def inputs_path(self, reports: Path) -> Path:
        """Where the inputs file of this run goes (or beside the report in ``reports``)."""
        name = f"run-{self.run_id}.inputs.json"
        return self.inputs_folder / name if self.inputs_folder is not None else reports / name

    def inputs(self) -> dict[str, Any]:
        """The input paths of the run, by their id in the report (identifying: operator-side)."""
        root = self.input if self.input.is_dir() else self.input.parent
        return {
            "format": "pseudo-run-inputs/1",
            "run_id": self.run_id,
            "note": "input paths can name patients: keep this file with the input data",
            "input": str(self.input),
            "root": str(root),
            "files": {o.input_id: _relative(o.input, root) for o in self.outcomes},
        }


def _relative(path: str, root: Path) -> str:
    prefix = str(root).rstrip(os.sep) + os.sep  # a string test: pathlib costs 30 us a file
    return path[len(prefix) :] if path.startswith(prefix) else path


def now() -> str:
    """The current UTC time in ISO 8601."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def new_run_id() -> str:
    """A sortable, unique run identifier."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def inputs_folder(vault: Path, project: str) -> Path:
    """The folder of a project's inputs files in its vault (``<vault>/runs/<project>``)."""
    return vault.resolve() / "runs" / project


def write_report(summary: RunSummary, folder: Path) -> Path:
    """Write the run report as JSON into ``folder``, and the input paths it refers to into
    the summary's inputs folder (the vault's; beside the report without one), both
    owner-only; return the report's path."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if summary.inputs_folder is not None:  # <vault>/runs/<project>: each level owner-only
        summary.inputs_folder.parent.mkdir(mode=0o700, exist_ok=True)
        summary.inputs_folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / f"run-{summary.run_id}.json"
    _write_json(summary.inputs_path(folder), summary.inputs())
    _write_json(path, summary.report())
    return path


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(_json_text(data))
    os.replace(tmp, path)


def _json_text(data: dict[str, Any]) -> str:
    """``data`` as JSON, one top-level key a line and, in a list or mapping of many, one
    entry a line: as readable as an indented dump, and written by the C encoder (an indented
    dump is pure Python: seconds for the report of a run of 100,000 files)."""
    lines = []
    for key, value in data.items():
        name = json.dumps(key)
        if isinstance(value, list) and len(value) > 1:
            entries = ",\n    ".join(json.dumps(item) for item in value)
            lines.append(f"  {name}: [\n    {entries}\n  ]")
        elif isinstance(value, dict) and len(value) > 1:
            entries = ",\n    ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in value.items())
            lines.append(f"  {name}: {{\n    {entries}\n  }}")
        else:
            lines.append(f"  {name}: {json.dumps(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"
