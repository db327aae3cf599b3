"""``pseudo diff``: compare two files or two trees, attribute by attribute.

Trees are paired, in this order: by the run report of ``pseudo run`` that made B from A (the
``B.pseudo-run/`` folder beside B, or one given), by identical pixel data (pseudonymization never
changes it), and by relative path.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset

from pseudo.batch.report_files import load_report, run_reports
from pseudo.io.layout import TEMP_DIR_NAME
from pseudo.io.listing import discover
from pseudo.io.pydicom_internals import quiet_pydicom
from pseudo.review.diff import Change, compare, summarize


@dataclass(frozen=True)
class Place:
    """The patient and study of a pair, told by B's pseudonymous values.

    A label is only B's value when it differs from A's (so it was pseudonymized); an unchanged
    value is kept as a grouping key but never shown. Keys stay in memory: they are not written
    to any report.
    """

    patient_key: str = ""
    patient_label: str = ""
    study_key: str = ""
    study_label: str = ""


@dataclass
class Pair:
    """Two files compared, and what changed between them."""

    a: str
    b: str
    changes: list[Change]
    #: Where B belongs, for grouping (see :func:`where`).
    place: Place = field(default_factory=Place)
    #: The two files (for the thumbnails of the HTML report)
    files: tuple[Path, Path] | None = None


@dataclass
class TreeDiff:
    """The result of comparing two files or two trees."""

    a: Path
    b: Path
    paired_by: str
    pairs: list[Pair] = field(default_factory=list)
    #: Input paths can name patients: without values they are hidden (files of A are
    #: numbered in path order instead).
    show_paths: bool = False
    only_a: list[str] = field(default_factory=list)
    only_b: list[str] = field(default_factory=list)

    @property
    def a_label(self) -> str:
        """A's path, or a neutral label when paths are hidden."""
        return str(self.a) if self.show_paths else "A (path hidden: --show-values shows it)"

    def summary(self) -> dict[tuple[str, str], int]:
        """Counts by (attribute path with [*] for items, change)."""
        counts: dict[tuple[str, str], int] = {}
        for pair in self.pairs:
            for key, count in summarize(pair.changes).items():
                counts[key] = counts.get(key, 0) + count
        return counts

    def rows(self, *, with_values: bool) -> list[dict[str, str]]:
        """One row per attribute per pair."""
        rows = []
        for pair in self.pairs:
            for change in pair.changes:
                row = {
                    "a": pair.a,
                    "b": pair.b,
                    "attribute": change.path,
                    "tag": change.tag,
                    "vr": change.vr,
                    "change": change.kind,
                    "detail": change.detail,
                    "creator": change.creator or "",
                }
                if with_values:
                    row["before"] = change.before or ""
                    row["after"] = change.after or ""
                rows.append(row)
        return rows

    def to_json(self, *, with_values: bool) -> dict[str, Any]:
        """The whole comparison as plain data."""
        return {
            "a": self.a_label,
            "b": str(self.b),
            "paired_by": self.paired_by,
            "pairs": len(self.pairs),
            "only_in_a": self.only_a,
            "only_in_b": self.only_b,
            "summary": [
                {"attribute": path, "change": kind, "count": count}
                for (path, kind), count in sorted(self.summary().items())
            ],
            "changes": self.rows(with_values=with_values),
        }

    def to_csv(self, *, with_values: bool) -> str:
        """One CSV row per attribute per pair."""
        rows = self.rows(with_values=with_values)
        buffer = io.StringIO()
        fields = ["a", "b", "attribute", "tag", "vr", "change", "detail", "creator"]
        writer = csv.DictWriter(
            buffer, fieldnames=fields + (["before", "after"] if with_values else [])
        )
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()


def _changed(before: Dataset, after: Dataset, keyword: str) -> tuple[str, str]:
    """B's value of ``keyword`` (the grouping key) and the same value if it may be shown."""
    old, new = str(before.get(keyword, "") or ""), str(after.get(keyword, "") or "")
    return new, (new if new and new != old else "")


def where(before: Dataset, after: Dataset) -> Place:
    """The patient and study that B belongs to, with labels safe to show."""
    patient, patient_label = _changed(before, after, "PatientID")
    study, study_uid = _changed(before, after, "StudyInstanceUID")
    _, study_date = _changed(before, after, "StudyDate")
    label = " ".join(part for part in (study_date, study_uid) if part)
    return Place(patient, patient_label, study, label)


def _read(path: Path) -> Dataset | None:
    try:
        return pydicom.dcmread(path, force=True)
    except Exception:
        return None


def _pixel_key(path: Path) -> str | None:
    ds = _read(path)
    if ds is None or "PixelData" not in ds:
        return None
    return hashlib.sha256(bytes(ds.PixelData)).hexdigest()


def _report_pairs(a: Path, b: Path, report: Path | None) -> dict[Path, Path]:
    """Pairs from the run report that made B from A, if there is one."""
    candidates = [report] if report else run_reports(b.parent / f"{b.name}.pseudo-run")
    pairs: dict[Path, Path] = {}
    for path in candidates:
        if path is None or not path.is_file():
            continue
        data = load_report(path)
        for item in data.get("files", []):
            if "input" not in item:
                continue  # the inputs file beside the report is gone: no pairing by report
            source, output = Path(item["input"]), item.get("output")
            if output and source.is_relative_to(a.resolve()) and (b / output).is_file():
                pairs[source] = b / output
    return pairs


def diff_paths(
    a: Path, b: Path, *, with_values: bool = False, report: Path | None = None
) -> TreeDiff:
    """Compare two files, or two trees after pairing their files."""
    with quiet_pydicom():
        if a.is_file() and b.is_file():
            result = TreeDiff(a, b, "files", show_paths=with_values)
            _add(result, a, b, a.name if with_values else "A", b.name, with_values)
            return result
        files_a = [p for p in discover(a)]
        files_b = [p for p in discover(b) if TEMP_DIR_NAME not in p.parts]
        pairs = _report_pairs(a, b, report)
        paired_by = "run report" if pairs else ""
        remaining_a = [p for p in files_a if p.resolve() not in pairs]
        remaining_b = set(files_b) - set(pairs.values())
        if remaining_a and remaining_b:
            by_pixels = {k: p for p in remaining_b if (k := _pixel_key(p))}
            for path in remaining_a:
                key = _pixel_key(path)
                if key and key in by_pixels:
                    pairs[path.resolve()] = by_pixels.pop(key)
            paired_by = paired_by or "pixel data"
            remaining_b = set(files_b) - set(pairs.values())
            for path in [p for p in files_a if p.resolve() not in pairs]:
                twin = b / path.relative_to(a)
                if twin in remaining_b:
                    pairs[path.resolve()] = twin
                    paired_by = paired_by or "path"
        result = TreeDiff(a, b, paired_by or "none", show_paths=with_values)
        for index, source in enumerate(files_a, start=1):
            name = str(source.relative_to(a)) if with_values else f"input {index:05d}"
            target = pairs.get(source.resolve())
            if target is None:
                result.only_a.append(name)
                continue
            _add(result, source, target, name, str(target.relative_to(b)), with_values)
        result.only_b = sorted(str(p.relative_to(b)) for p in set(files_b) - set(pairs.values()))
        return result


def _add(result: TreeDiff, a: Path, b: Path, name_a: str, name_b: str, with_values: bool) -> None:
    before, after = _read(a), _read(b)
    if before is None or after is None:
        (result.only_a if before is not None else result.only_b).append(
            name_a if before else name_b
        )
        return
    changes = compare(before, after, with_values=with_values)
    result.pairs.append(Pair(name_a, name_b, changes, where(before, after), (a, b)))
