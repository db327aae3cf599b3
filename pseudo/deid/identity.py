"""Who a dataset belongs to: the identity from which the pseudonym and date offset derive.

An identity is (issuer, patient ID). The issuer is the file's Issuer of Patient ID; without it,
the namespace of the run's site (``pseudo run --site``). The project's first site has the
namespace of the runs made before sites existed (the empty one), so an identity there is the
one earlier versions derived and keeps its pseudonym; each later site has its own, and the same
patient ID there is another patient (see "A multi-site trial" in docs/user-guide.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydicom.dataset import Dataset

from keystore.identities import recorded_key
from pseudo.findings import RejectedFile


@dataclass(frozen=True)
class Site:
    """The site a run's files come from (``pseudo run --site``): its name, its Clinical Trial
    Site ID and the namespace of the patient IDs it issues (empty: the legacy namespace)."""

    name: str
    site_id: str
    namespace: str = ""


@dataclass(frozen=True)
class IdentityFields:
    """What a file says of its patient (top level), read once; see :func:`identity_of`."""

    patient_id: str = ""
    issuer: str = ""
    #: ``UniversalEntityID^UniversalEntityIDType`` of the qualifiers sequence, or empty
    qualifiers: str = ""
    name: str = ""
    birth_date: str = ""
    sex: str = ""
    study_uid: str = ""


@dataclass(frozen=True)
class PatientIdentity:
    """The patient's original identifiers and the basis of their pseudonym.

    ``basis`` is ``patient-id`` (Issuer of Patient ID and Patient ID, the normal case),
    ``name`` (no Patient ID: name and birth date) or ``study`` (neither: each study is
    treated as its own patient). ``site`` is the run's site name (empty without one).
    """

    basis: str
    key: tuple[str, ...]
    patient_id: str
    issuer: str
    name: str
    birth_date: str
    sex: str = ""
    site: str = ""

    @property
    def traits(self) -> dict[str, str]:
        """Birth date, sex and name as the identity book compares them (normalized)."""
        return traits_of(self.birth_date, self.sex, self.name)

    @property
    def recorded_key(self) -> str | None:
        """The key as the sealed patient record keeps it, when it cannot be derived again
        from the record's other fields (a site's or a qualifier's namespace); else None."""
        return recorded_key(self.key)


def traits_of(birth_date: str = "", sex: str = "", name: str = "") -> dict[str, str]:
    """A patient's traits as the identity book compares them (empty: unknown)."""
    return {
        "birth_date": birth_date.strip(),
        "sex": sex.strip().upper(),
        "name": normalize_name(name),
    }


def _text(ds: Dataset, keyword: str) -> str:
    try:
        value = ds.get(keyword)
    except Exception as exc:
        raise RejectedFile(f"{keyword} cannot be decoded ({exc.__class__.__name__})") from exc
    if value is None:
        return ""
    return str(value).strip()


def _qualifiers(ds: Dataset) -> str:
    """The first item's Universal Entity ID and its type, or empty."""
    try:
        items = ds.get("IssuerOfPatientIDQualifiersSequence") or []
        item = items[0] if len(items) else None
    except Exception as exc:
        raise RejectedFile(
            f"IssuerOfPatientIDQualifiersSequence cannot be read ({exc.__class__.__name__})"
        ) from exc
    if item is None:
        return ""
    entity = _text(item, "UniversalEntityID")
    return f"{entity}^{_text(item, 'UniversalEntityIDType')}" if entity else ""


def normalize_name(name: str) -> str:
    """Upper case, single spaces, no trailing component separators."""
    groups = [" ".join(g.upper().split()).rstrip("^") for g in name.split("=")]
    return "=".join(groups).rstrip("=")


def read_fields(ds: Dataset) -> IdentityFields:
    """The patient's identifiers at the top level of ``ds``."""
    return IdentityFields(
        patient_id=_text(ds, "PatientID"),
        issuer=_text(ds, "IssuerOfPatientID"),
        qualifiers=_qualifiers(ds),
        name=_text(ds, "PatientName"),
        birth_date=_text(ds, "PatientBirthDate"),
        sex=_text(ds, "PatientSex"),
        study_uid=_text(ds, "StudyInstanceUID"),
    )


def patient_id_key(
    patient_id: str, issuer: str = "", qualifiers: str = "", site: Site | None = None
) -> tuple[str, ...]:
    """The identity key of a patient ID: ``("patient-id", issuer, patient ID)`` as since the
    first release, extended (never changed) when the namespace is a site's. The qualifiers
    sequence is not part of it: earlier versions left it out, and a file that has one without
    an Issuer of Patient ID must keep the pseudonym they gave it."""
    del qualifiers  # read and kept with the identity, never part of its key
    if issuer:
        return ("patient-id", issuer, patient_id)
    if site is not None and site.namespace:
        return ("patient-id", "", patient_id, "site", site.namespace)
    return ("patient-id", "", patient_id)


def identity_of(fields: IdentityFields, site: Site | None = None) -> PatientIdentity:
    """The identity of a file's patient at ``site`` (None: a run without a site)."""
    site_name = site.name if site is not None else ""
    common = (fields.patient_id, fields.issuer, fields.name, fields.birth_date, fields.sex)
    if fields.patient_id:
        key = patient_id_key(fields.patient_id, fields.issuer, fields.qualifiers, site)
        return PatientIdentity("patient-id", key, *common, site=site_name)
    if fields.name:
        key = ("name", normalize_name(fields.name), fields.birth_date)
        if not fields.issuer and site is not None and site.namespace:
            key += ("site", site.namespace)
        return PatientIdentity("name", key, *common, site=site_name)
    if not fields.study_uid:
        raise RejectedFile(
            "no Patient ID, Patient's Name or Study Instance UID to assign a pseudonym"
        )
    return PatientIdentity("study", ("study", fields.study_uid), *common, site=site_name)


def read_identity(ds: Dataset, site: Site | None = None) -> PatientIdentity:
    """Read the patient's identifiers from the top level of ``ds`` (at ``site``)."""
    return identity_of(read_fields(ds), site)


def key_of_record(
    patient_id: str | None,
    issuer: str | None,
    name: str | None,
    birth_date: str | None,
    basis: str | None,
    recorded_key: str | None,
) -> tuple[str, ...]:
    """The identity key behind a sealed patient record (for a merge or a split): the one it
    recorded, else the one its fields give as every version derived it. Raises
    ``ValueError`` for a record that names no patient ID or name (a study-based identity)."""
    if recorded_key:
        key = json.loads(recorded_key)
        if isinstance(key, list) and all(isinstance(part, str) for part in key):
            return tuple(key)
        raise ValueError("a patient record's identity key is malformed")
    if patient_id:
        return ("patient-id", issuer or "", patient_id)
    if name and basis == "name":
        return ("name", normalize_name(name), birth_date or "")
    raise ValueError("the patient record names no patient ID: it cannot be merged or split")
