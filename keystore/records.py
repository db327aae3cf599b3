"""The sealed linkage record: one versioned model that the writer and the reader share.

A linkage record is a JSON object sealed to the project's re-identification key (see
:func:`keystore.crypto.seal`); the row around it (project, kind, key, pseudonym) is stored in
clear and bound to it as associated data. What the object holds is defined here only:
:class:`PatientRecordV1` for a patient, :class:`StudyRecordV1` for a study, and (added later,
as kinds of their own so the first two keep their bytes) :class:`SeriesRecordV1` for a series
and :class:`InstanceRecordV1` for an instance. The caller (the DICOM side) fills their generic
fields; this package knows nothing of where they come from.

Format, version 1 (every record written since the first release): the fields as canonical
JSON, keys sorted, no spaces, UTF-8 not escaped, a field with no value as ``null``, e.g.
``{"accession_number":null,"study_date":"20230105","study_uid":"1.2.3"}``. The object carries
no version key: a later version must add ``"format"`` (an integer above 1), and
:func:`open_record` tells them apart by it. Records written by any earlier code open: a field
missing from an object reads as None.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from keystore.errors import InvalidTokenError

Kind = Literal["patient", "study", "series", "instance"]
#: A field's value; a mapping only in the instance record (its other remapped UIDs).
FieldValue = str | int | dict[str, str] | None

#: The version this code writes.
RECORD_VERSION = 1
#: The key that names a record's version from version 2 on (absent: version 1).
VERSION_KEY = "format"


@dataclass(frozen=True)
class _Record:
    """What the versions of both kinds of record share: their (de)serialization."""

    kind: ClassVar[Kind]
    version: ClassVar[int]

    def to_fields(self) -> dict[str, FieldValue]:
        """Every field by name, None included: the object that gets sealed."""
        return dataclasses.asdict(self)

    def plaintext(self) -> bytes:
        """The sealed plaintext of this record (see the module's docstring for the format)."""
        return canonical(self.to_fields())

    @classmethod
    def field_names(cls) -> frozenset[str]:
        """The names of the fields of this record."""
        return frozenset(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_fields(cls, data: Mapping[str, Any]) -> Any:
        """The record from an opened object; a missing field is None, an unknown one ignored."""
        return cls(**{name: data.get(name) for name in cls.field_names()})


@dataclass(frozen=True)
class PatientRecordV1(_Record):
    """Who a patient pseudonym stands for.

    ``date_offset_days`` is the patient's date shift; ``identity_basis`` says which
    identifiers the pseudonym was derived from (e.g. ``patient-id``). Added later, and
    written only when they have a value (so a record without them keeps the bytes, and the
    digest, it always had): ``site``, the site of the run that saw the patient, and
    ``identity_key``, the identity as JSON when the other fields do not give it again (a
    site's or a qualifier's namespace).
    """

    kind: ClassVar[Kind] = "patient"
    version: ClassVar[int] = 1
    #: fields left out of the sealed object when they have no value
    optional: ClassVar[frozenset[str]] = frozenset({"site", "identity_key"})

    patient_id: str | None = None
    issuer_of_patient_id: str | None = None
    patient_name: str | None = None
    patient_birth_date: str | None = None
    date_offset_days: int | None = None
    identity_basis: str | None = None
    site: str | None = None
    identity_key: str | None = None

    def to_fields(self) -> dict[str, FieldValue]:
        """Every field by name, None included, but the optional ones without a value."""
        fields = dataclasses.asdict(self)
        return {k: v for k, v in fields.items() if v is not None or k not in self.optional}


@dataclass(frozen=True)
class StudyRecordV1(_Record):
    """What a pseudonymous study UID stands for."""

    kind: ClassVar[Kind] = "study"
    version: ClassVar[int] = 1

    study_uid: str | None = None
    accession_number: str | None = None
    study_date: str | None = None


@dataclass(frozen=True)
class SeriesRecordV1(_Record):
    """What a pseudonymous Series Instance UID stands for: the original series and study
    (``pseudo_study_uid`` is the study's pseudonymous UID, the key of its study record).

    Vaults written before this kind existed hold none: a series there is not found."""

    kind: ClassVar[Kind] = "series"
    version: ClassVar[int] = 1

    series_uid: str | None = None
    study_uid: str | None = None
    pseudo_study_uid: str | None = None


@dataclass(frozen=True)
class InstanceRecordV1(_Record):
    """What a pseudonymous SOP Instance UID stands for: the original instance, its series and
    study, their pseudonymous UIDs, and ``remapped``: every other UID of the file that was
    remapped (frame of reference, referenced instances...), original -> pseudonymous.

    Vaults written before this kind existed hold none: an instance there is not found."""

    kind: ClassVar[Kind] = "instance"
    version: ClassVar[int] = 1

    sop_instance_uid: str | None = None
    series_uid: str | None = None
    study_uid: str | None = None
    pseudo_series_uid: str | None = None
    pseudo_study_uid: str | None = None
    remapped: dict[str, str] | None = None


SealedRecord = PatientRecordV1 | StudyRecordV1 | SeriesRecordV1 | InstanceRecordV1
RecordModel = (
    type[PatientRecordV1] | type[StudyRecordV1] | type[SeriesRecordV1] | type[InstanceRecordV1]
)

#: (kind, version) -> the model that reads it
_MODELS: dict[tuple[str, int], RecordModel] = {
    ("patient", 1): PatientRecordV1,
    ("study", 1): StudyRecordV1,
    ("series", 1): SeriesRecordV1,
    ("instance", 1): InstanceRecordV1,
}


def canonical(values: Mapping[str, FieldValue]) -> bytes:
    """Canonical JSON of a record's fields: the bytes that get sealed (and digested)."""
    text = json.dumps(dict(values), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


#: kind -> the fields of the record this code writes
_WRITTEN_FIELDS = {
    kind: model.field_names()
    for (kind, version), model in _MODELS.items()
    if version == RECORD_VERSION
}


def check_fields(kind: str, values: Mapping[str, FieldValue]) -> None:
    """Raise ``ValueError`` unless ``values`` are fields of the current record of ``kind``
    (any subset of them: a field left out is stored as absent and reads as None)."""
    names = _WRITTEN_FIELDS.get(kind)
    if names is None:
        raise ValueError(f"unknown linkage record kind {kind!r}")
    unknown = values.keys() - names
    if unknown:
        raise ValueError(f"{kind} record: unknown fields {', '.join(sorted(unknown))}")


def open_record(kind: str, plaintext: bytes) -> SealedRecord:
    """The record of ``kind`` that an opened plaintext holds, whatever version wrote it.

    Raises :class:`InvalidTokenError` if it is not a record, or one of a version this code
    does not know (a newer ``pseudo`` wrote it).
    """
    try:
        data = json.loads(plaintext)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidTokenError(f"a sealed {kind} record is not a JSON object") from exc
    if not isinstance(data, dict):
        raise InvalidTokenError(f"a sealed {kind} record is not a JSON object")
    version = data.get(VERSION_KEY, 1)
    model = _MODELS.get((kind, version)) if isinstance(version, int) else None
    if model is None:
        raise InvalidTokenError(
            f"a sealed {kind} record of format {version!r}: written by a newer pseudo"
        )
    record: SealedRecord = model.from_fields(data)
    return record


@dataclass(frozen=True)
class LinkageEntry:
    """An identity to seal: ``fields`` are the original identifiers behind ``key``.

    ``key`` is the pseudonymous value the record is found by (the patient pseudonym, or the
    pseudonymous Study, Series or SOP Instance UID), ``pseudonym`` the patient it belongs to.
    ``fields`` are fields of the record of ``kind`` (checked); :meth:`of` builds an entry
    from a record.
    """

    kind: Kind
    key: str
    pseudonym: str
    fields: Mapping[str, FieldValue]

    def __post_init__(self) -> None:
        check_fields(self.kind, self.fields)

    @classmethod
    def of(cls, key: str, pseudonym: str, record: SealedRecord) -> LinkageEntry:
        """The entry that seals ``record`` under ``key``, for patient ``pseudonym``."""
        return cls(record.kind, key, pseudonym, record.to_fields())

    def canonical(self) -> bytes:
        """The content as canonical JSON, the plaintext that gets sealed."""
        return canonical(self.fields)
