"""Who a dataset belongs to: the identity from which the pseudonym and date offset derive."""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset

from pseudo.findings import RejectedFile


@dataclass(frozen=True)
class PatientIdentity:
    """The patient's original identifiers and the basis of their pseudonym.

    ``basis`` is ``patient-id`` (Issuer of Patient ID and Patient ID, the normal case),
    ``name`` (no Patient ID: name and birth date) or ``study`` (neither: each study is
    treated as its own patient).
    """

    basis: str
    key: tuple[str, ...]
    patient_id: str
    issuer: str
    name: str
    birth_date: str


def _text(ds: Dataset, keyword: str) -> str:
    try:
        value = ds.get(keyword)
    except Exception as exc:
        raise RejectedFile(f"{keyword} cannot be decoded ({exc.__class__.__name__})") from exc
    if value is None:
        return ""
    return str(value).strip()


def normalize_name(name: str) -> str:
    """Upper case, single spaces, no trailing component separators."""
    groups = [" ".join(g.upper().split()).rstrip("^") for g in name.split("=")]
    return "=".join(groups).rstrip("=")


def read_identity(ds: Dataset) -> PatientIdentity:
    """Read the patient's identifiers from the top level of ``ds``."""
    patient_id = _text(ds, "PatientID")
    issuer = _text(ds, "IssuerOfPatientID")
    name = _text(ds, "PatientName")
    birth_date = _text(ds, "PatientBirthDate")
    if patient_id:
        return PatientIdentity(
            "patient-id", ("patient-id", issuer, patient_id), patient_id, issuer, name, birth_date
        )
    if name:
        key = ("name", normalize_name(name), birth_date)
        return PatientIdentity("name", key, patient_id, issuer, name, birth_date)
    study = _text(ds, "StudyInstanceUID")
    if not study:
        raise RejectedFile(
            "no Patient ID, Patient's Name or Study Instance UID to assign a pseudonym"
        )
    return PatientIdentity("study", ("study", study), patient_id, issuer, name, birth_date)
