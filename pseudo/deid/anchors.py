"""Anchored dates: each patient's earliest study date becomes the policy's anchor date.

The offset is ``anchor - earliest study date`` of the first batch that sees the patient. It is
recorded (encrypted, readable by the operator) in the linkage store and reused by every later
batch, so a patient's dates keep one offset for life; it also goes into the sealed linkage
record. Finding the earliest date needs a quick header-only pass over the batch first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

from keystore.identities import IdentityBook
from keystore.keyring import Keyring
from keystore.linkage import LinkageStore
from pseudo.deid.identity import IdentityFields, Site, identity_of, read_fields
from pseudo.deid.tokens import patient_pseudonym
from pseudo.io.dicomio import read_source
from pseudo.policy.compiled import CompiledPolicy

#: Attributes read by the header-only pass.
SCAN_TAGS = [
    "PatientID",
    "IssuerOfPatientID",
    "IssuerOfPatientIDQualifiersSequence",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "SeriesDate",
    "AcquisitionDate",
    "ContentDate",
]
_FALLBACK_DATES = ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate")
_SCANNED = frozenset(tag_for_keyword(keyword) for keyword in (*SCAN_TAGS, "SpecificCharacterSet"))


@dataclass(frozen=True, slots=True)
class Scan:
    """What the header-only pass reads of one file: its patient and its study's date (ISO,
    empty when it has none)."""

    fields: IdentityFields
    day: str


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


def _not_scanned(tag: int, vr: str | None) -> bool:
    """Whether the header scan leaves an element out (all but :data:`SCAN_TAGS`)."""
    return tag not in _SCANNED


def scan_file(path: str) -> Scan | None:
    """The patient and study date of one file, read from its header by the reader of the
    per-file pipeline (so both see the same values), leaving out every other attribute when
    it can; None when they cannot be read: the real pass decides what happens to the file."""
    try:
        ds = read_source(Path(path), _not_scanned, keep_dropped=False).dataset
        fields = read_fields(ds)
        identity_of(fields)  # a file that names no patient: no scan
    except Exception:
        return None  # the real pass will quarantine or skip it with a reason
    found = study_date(ds)
    return Scan(fields, found.isoformat() if found else "")


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
    site: Site | None = None,
    book: IdentityBook | None = None,
) -> dict[str, int]:
    """Pseudonym -> anchored offset for the patients of ``scans`` at ``site``, with the
    project's identity ``book`` (recorded unless ``record`` is false, as in a dry run)."""
    days: list[tuple[str, str]] = []
    for scan in scans:
        if scan is None or not scan.day:
            continue
        identity = identity_of(scan.fields, site)
        days.append((patient_pseudonym(keyring, identity.key, identity.traits, book), scan.day))
    return resolve_days(keyring, policy, store, days, record=record)


def resolve_days(
    keyring: Keyring,
    policy: CompiledPolicy,
    store: LinkageStore,
    days: Iterable[tuple[str, str]],
    *,
    record: bool = True,
) -> dict[str, int]:
    """Pseudonym -> anchored offset, from ``(pseudonym, ISO study date)`` pairs: each
    patient's earliest date of this batch, unless an earlier batch recorded one."""
    assert policy.anchor is not None
    earliest: dict[str, date] = {}
    for patient, day in days:
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


def recorded_offsets(
    keyring: Keyring, policy: CompiledPolicy, store: LinkageStore, patients: Iterable[str]
) -> dict[str, int]:
    """Pseudonym -> anchored offset, for those of ``patients`` an earlier batch anchored
    (nothing is recorded: a patient not anchored yet is left out)."""
    keys = {state_key(policy, patient): patient for patient in patients}
    states = store.states(keyring, keys)
    return {keys[key]: int(str(state["offset_days"])) for key, state in states.items()}
