"""``pseudo inspect``: a tree or file as Patient -> Study -> Series -> Instances.

For each level: counts, modalities, date ranges, the private creators present, and the
attributes whose value differs within the level (as DicomBrowser shows them), so that a
reviewer sees at a glance what varies where.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset

from pseudo.dicom.private import creator_tag
from pseudo.dicom.tags import attribute_name, element_vr
from pseudo.io.layout import TEMP_DIR_NAME
from pseudo.io.listing import discover
from pseudo.io.pydicom_internals import quiet_pydicom
from pseudo.pixels.protect import pixel_state

DATE_KEYWORDS = ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate")
_SKIP_VRS = {"SQ", "OB", "OW", "OF", "OD", "OL", "OV", "UN"}


def _flat(ds: Dataset) -> dict[str, str]:
    """Top-level attribute values as text (bulk data and sequences left out)."""
    values = {}
    for tag in ds.keys():
        element = ds.get_item(tag)
        vr = element_vr(element, tag)
        if vr in _SKIP_VRS or tag & 0xFFFF == 0:
            continue
        try:
            values[attribute_name(tag)] = str(ds[tag].value)[:200]
        except Exception:
            values[attribute_name(tag)] = "<unreadable>"
    return values


def _differing(groups: list[list[dict[str, str]]]) -> list[str]:
    """Attributes constant within each group but not across groups (or within, for one group)."""
    keys = {k for group in groups for item in group for k in item}
    result = []
    for key in sorted(keys):
        per_group = [{item.get(key) for item in group} for group in groups]
        if len(groups) == 1:
            if len(per_group[0]) > 1:
                result.append(key)
        elif (
            all(len(values) == 1 for values in per_group)
            and len({next(iter(v)) for v in per_group}) > 1
        ):
            result.append(key)
    return result


@dataclass
class Node:
    """One patient, study or series."""

    level: str
    label: str
    items: list[dict[str, str]] = field(default_factory=list)
    children: dict[str, Node] = field(default_factory=dict)
    creators: set[str] = field(default_factory=set)
    files: list[str] = field(default_factory=list)  # a series' instance files, as items
    #: what the pixel step did to each image of a series (see pixels.protect.pixel_state)
    pixel_states: list[str] = field(default_factory=list)

    @property
    def instances(self) -> int:
        """Instances below this node."""
        return (
            len(self.items)
            if not self.children
            else sum(c.instances for c in self.children.values())
        )

    def all_items(self) -> list[dict[str, str]]:
        """Every instance's flat values below this node."""
        if not self.children:
            return self.items
        return [item for child in self.children.values() for item in child.all_items()]

    def to_json(self) -> dict[str, Any]:
        """Plain data: counts, modalities, date range, creators, differing attributes, children."""
        items = self.all_items()
        dates = sorted({i[k] for i in items for k in DATE_KEYWORDS if i.get(k)})
        children = list(self.children.values())
        groups = [c.all_items() for c in children] if children else [items]
        data: dict[str, Any] = {
            "level": self.level,
            "label": self.label,
            "instances": len(items),
            "modalities": sorted({i.get("Modality", "") for i in items} - {""}),
            "date_range": [dates[0], dates[-1]] if dates else None,
            "private_creators": sorted(
                self.creators | {c for ch in children for c in ch.to_json()["private_creators"]}
            ),
            "differing": _differing(groups),
        }
        if children:
            data["children"] = [child.to_json() for child in children]
        else:
            data["children"] = sorted(
                (
                    {
                        "level": "instance",
                        "label": item.get("SOPInstanceUID", "(no SOP Instance UID)"),
                        "instance_number": item.get("InstanceNumber"),
                        "sop_class": item.get("SOPClassUID"),
                        "file": file,
                    }
                    for item, file in zip(items, self.files, strict=True)
                ),
                key=_instance_order,
            )
        return data


def inspect_path(path: Path) -> list[Node]:
    """Read every DICOM file under ``path`` (headers only) into a patient tree."""
    patients: dict[str, Node] = {}
    with quiet_pydicom():
        for file in discover(path):
            if TEMP_DIR_NAME in file.parts:
                continue
            try:
                ds = pydicom.dcmread(file, stop_before_pixels=True)
            except Exception:
                continue
            flat = _flat(ds)
            patient_key = flat.get("PatientID", "") or "(no Patient ID)"
            patient = patients.setdefault(
                patient_key, Node("patient", f"{patient_key} {flat.get('PatientName', '')}".strip())
            )
            study_key = flat.get("StudyInstanceUID", "(no Study UID)")
            label = " ".join(
                [study_key, flat.get("StudyDate", ""), flat.get("StudyDescription", "")]
            )
            study = patient.children.setdefault(study_key, Node("study", label.strip()))
            series_key = flat.get("SeriesInstanceUID", "(no Series UID)")
            label = " ".join(
                [series_key, flat.get("Modality", ""), flat.get("SeriesDescription", "")]
            )
            series = study.children.setdefault(series_key, Node("series", label.strip()))
            series.items.append(flat)
            series.files.append(str(file))
            state = pixel_state(ds)
            if state is not None:
                series.pixel_states.append(state)
            for tag in ds.keys():
                if tag.group & 1 and 0x10 <= tag.element <= 0xFF:
                    series.creators.add(str(ds[tag].value).strip())
                elif tag.group & 1 and (creator_tag(int(tag)) or 0) not in ds:
                    series.creators.add("(no creator)")
    return list(patients.values())


def _instance_order(instance: dict[str, Any]) -> tuple[int, str]:
    number = str(instance.get("instance_number") or "")
    return (int(number) if number.lstrip("-").isdigit() else 1 << 31, str(instance["file"]))


def count_pixels(nodes: list[Node]) -> dict[str, Any]:
    """Images, and what the pixel step did to them: redacted (by rule, by rule name, by
    detection), examined and clean, not examined (--pixels off, or written without it)."""
    states = [
        state
        for patient in nodes
        for study in patient.children.values()
        for series in study.children.values()
        for state in series.pixel_states
    ]
    rules: dict[str, int] = defaultdict(int)
    for state in states:
        for part in state.split("+"):
            if part.startswith("rule:"):
                rules[part.removeprefix("rule:")] += 1
    redacted = [s for s in states if s.startswith("rule:") or s == "detection"]
    return {
        "images": len(states),
        "redacted": len(redacted),
        "by_rule": sum(1 for s in states if s.startswith("rule:")),
        "by_detection": sum(1 for s in states if "detection" in s),
        "rules": dict(sorted(rules.items())),
        "clean": states.count("clean"),
        "not_examined": sum(1 for s in states if s in ("off", "not examined")),
    }


def count_levels(nodes: list[Node]) -> dict[str, int]:
    """Patients, studies, series and instances."""
    counts: dict[str, int] = defaultdict(int)
    for patient in nodes:
        counts["patients"] += 1
        for study in patient.children.values():
            counts["studies"] += 1
            counts["series"] += len(study.children)
        counts["instances"] += patient.instances
    return dict(counts)
