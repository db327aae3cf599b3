"""Anchored dates: each patient's earliest study date becomes the policy's anchor date.

The offset is ``anchor - earliest study date`` of the first batch that sees the patient. It is
recorded (encrypted, readable by the operator) in the linkage store and reused by every later
batch, so a patient's dates keep one offset for life; it also goes into the sealed linkage
record. Finding the earliest date needs a quick header-only pass over the batch first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from keystore.keyring import Keyring
from keystore.linkage import LinkageStore
from pseudo.deid.identity import read_identity
from pseudo.deid.tokens import pseudonym
from pseudo.policy.compiled import CompiledPolicy

#: Attributes read by the header-only pass.
SCAN_TAGS = [
    "PatientID",
    "IssuerOfPatientID",
    "PatientName",
    "PatientBirthDate",
    "StudyInstanceUID",
    "StudyDate",
    "SeriesDate",
    "AcquisitionDate",
    "ContentDate",
]
_FALLBACK_DATES = ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate")

Scan = tuple[tuple[str, ...], str]


def study_date(ds: Dataset) -> date | None:
    """The study's date: Study Date, else the first of Series, Acquisition or Content Date."""
    for keyword in _FALLBACK_DATES:
        text = str(ds.get(keyword) or "").strip()
        if len(text) == 8 and text.isdigit():
            try:
                return date(int(text[:4]), int(text[4:6]), int(text[6:]))
            except ValueError:
                continue
    return None


def scan_file(path: str) -> Scan | None:
    """Identity key and study date of one file, reading only a few header attributes."""
    try:
        ds = pydicom.dcmread(
            Path(path), stop_before_pixels=True, specific_tags=SCAN_TAGS, force=True
        )
        identity = read_identity(ds)
    except Exception:
        return None  # the real pass will quarantine it with a reason
    found = study_date(ds)
    return (identity.key, found.isoformat()) if found else None


def state_key(policy: CompiledPolicy, patient: str) -> str:
    """Where a patient's anchored offset is recorded (one per anchor date)."""
    assert policy.anchor is not None
    return f"anchor:{policy.anchor.isoformat()}:{patient}"


def resolve(
    keyring: Keyring,
    policy: CompiledPolicy,
    store: LinkageStore,
    scans: Iterable[Scan | None],
    *,
    record: bool = True,
) -> dict[str, int]:
    """Pseudonym -> anchored offset for the patients of ``scans`` (recorded unless ``record``
    is false, as in a dry run)."""
    assert policy.anchor is not None
    earliest: dict[str, date] = {}
    for scan in scans:
        if scan is None:
            continue
        key, day = scan
        patient = pseudonym(keyring, key)
        found = date.fromisoformat(day)
        if patient not in earliest or found < earliest[patient]:
            earliest[patient] = found
    proposals = {
        state_key(policy, patient): {"offset_days": (policy.anchor - day).days}
        for patient, day in earliest.items()
    }
    states: Mapping[str, Mapping[str, object]]
    if record:
        states = store.claim_states(keyring, proposals)
    else:
        states = {**proposals, **store.states(keyring, proposals)}
    prefix = len(state_key(policy, ""))
    return {key[prefix:]: int(str(state["offset_days"])) for key, state in states.items()}
