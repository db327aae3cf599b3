"""The data of the HTML review report: a per-patient / per-study summary and every row, compact.

Rows are the bulk of a report (hundreds per file), so they are written once as indexes into
small tables: each distinct attribute path (with its tag, VR and private creator) and each
distinct detail is listed once, and each file points at its list of rows. Files with the same
rows (the slices of one series, typically) share one list. A row's number is
``attribute * 8 + change``, written as its difference from the previous row's number (rows follow
the attributes' order, so the differences are short). Without values a row is that difference (a
list ``[difference, detail]`` when it has a detail); with values it is
``[difference, detail, before, after]``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pseudo.review.diff import KINDS, Change
from pseudo.review.diff_tree import Pair, TreeDiff

#: Kinds that are not a change: hidden by the report's default "changed only" filter.
UNCHANGED = ("kept",)


@dataclass
class _Interned:
    """A table of distinct values, each given its index on first sight."""

    index: dict[Any, int] = field(default_factory=dict)

    def __call__(self, value: Any) -> int:
        return self.index.setdefault(value, len(self.index))

    def values(self) -> list[Any]:
        """The values in index order."""
        return list(self.index)


@dataclass
class StudyCounts:
    """One study's line of the summary: its patient, its label, files and counts per change."""

    patient: int
    label: str
    files: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))


@dataclass
class ReportData:
    """Everything the report page draws, ready to be embedded."""

    patients: list[str]
    studies: list[StudyCounts]
    payload: dict[str, Any]

    def json(self) -> str:
        """The rows' payload as compact JSON, safe inside a ``<script>`` element."""
        text = json.dumps(self.payload, separators=(",", ":"), ensure_ascii=False)
        return text.replace("</", "<\\/").replace("<!--", "<\\!--")


def _code(change: Change, attrs: _Interned) -> int:
    """``attribute * 8 + change``: which attribute and what happened to it, in one number."""
    attribute = attrs((change.path, change.tag, change.vr, change.creator or ""))
    return attribute * 8 + KINDS.index(change.kind)


def _rows(changes: list[Change], attrs: _Interned, details: _Interned, with_values: bool) -> Any:
    """One file's rows, each number written as the difference from the previous one."""
    rows: list[Any] = []
    previous = 0
    for change in changes:
        code = _code(change, attrs)
        step, previous = code - previous, code
        detail = details(change.detail)
        if with_values:
            rows.append([step, detail, change.before or "", change.after or ""])
        else:
            rows.append([step, detail] if detail else step)
    return rows


def _places(pairs: list[Pair]) -> tuple[list[str], list[StudyCounts], list[int]]:
    """Patients (labels), studies (with counts) and each pair's study index."""
    patient_index: dict[str, int] = {}
    patients: list[str] = []
    study_index: dict[tuple[int, str], int] = {}
    studies: list[StudyCounts] = []
    of_pair = []
    for pair in pairs:
        place = pair.place
        if place.patient_key not in patient_index:
            patient_index[place.patient_key] = len(patients)
            patients.append(place.patient_label or f"patient {len(patients) + 1} (ID hidden)")
        patient = patient_index[place.patient_key]
        key = (patient, place.study_key)
        if key not in study_index:
            study_index[key] = len(studies)
            number = sum(1 for s in studies if s.patient == patient) + 1
            studies.append(StudyCounts(patient, place.study_label or f"study {number}"))
        study = studies[study_index[key]]
        study.files += 1
        for change in pair.changes:
            study.counts[change.kind] += 1
        of_pair.append(study_index[key])
    return patients, studies, of_pair


def build(diff: TreeDiff, *, with_values: bool = False) -> ReportData:
    """The summary and the compact rows of ``diff``."""
    patients, studies, of_pair = _places(diff.pairs)
    attrs, details, patterns = _Interned(), _Interned(), _Interned()
    details("")
    files = []
    for pair, study in zip(diff.pairs, of_pair, strict=True):
        rows = _rows(pair.changes, attrs, details, with_values)
        pattern = patterns(json.dumps(rows, separators=(",", ":")))
        files.append([pair.b, pair.a, study, pattern])
    payload = {
        "kinds": list(KINDS),
        "unchanged": list(UNCHANGED),
        "patients": patients,
        "studies": [[s.patient, s.label] for s in studies],
        "files": files,
        "attrs": [list(a) for a in attrs.values()],
        "details": details.values(),
        "patterns": [json.loads(p) for p in patterns.values()],
        "values": with_values,
    }
    return ReportData(patients, studies, payload)
