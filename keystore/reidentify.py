"""The one path from a pseudonym back to a person.

:func:`reidentify` refuses without a requester and a reason, and appends an audit record
*before* it returns anything: a success, a refusal, a wrong passphrase and an unknown pseudonym
are all logged, each naming the requester, the operating-system user and host that ran the
command, and the key slot opened (or asked for). If the audit record cannot be written,
nothing is revealed. Once the record is written with the opened slot, it is authenticated by
the project's audit key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from keystore.actions import AuditAction, AuditOutcome, outcome_with
from keystore.audit import AuditLog
from keystore.errors import (
    AuthenticationError,
    CorruptVaultError,
    InvalidTokenError,
    KeystoreError,
    NotFoundError,
    ProjectClosedError,
    ProjectNotFoundError,
    ReidentificationRefused,
)
from keystore.keyring import Keyring
from keystore.linkage import LinkageStore, sealed_aad
from keystore.records import (
    InstanceRecordV1,
    PatientRecordV1,
    SealedRecord,
    SeriesRecordV1,
    StudyRecordV1,
    open_record,
)
from keystore.stamps import os_user
from keystore.vault import ReidentificationKey, Vault

#: The action of every record :func:`reidentify` writes.
ACTION = AuditAction.REIDENTIFY


@dataclass
class StudyIdentity:
    """The original identifiers of one study."""

    pseudo_study_uid: str
    study_uid: str | None
    accession_number: str | None
    study_date: str | None


@dataclass
class SeriesIdentity:
    """The original UIDs of one series (asked for by its pseudonymous Series UID)."""

    pseudo_series_uid: str
    series_uid: str | None
    study_uid: str | None
    pseudo_study_uid: str | None


@dataclass
class InstanceIdentity:
    """The original UIDs of one instance (asked for by its pseudonymous SOP Instance UID):
    what a DPO needs to find the exact image in the PACS."""

    pseudo_sop_instance_uid: str
    sop_instance_uid: str | None
    series_uid: str | None
    study_uid: str | None
    pseudo_series_uid: str | None
    pseudo_study_uid: str | None


@dataclass
class Identity:
    """The original identity behind a pseudonym, as printed by ``pseudo reidentify --json``.

    ``series`` and ``instance`` are set (and printed) only for a request by a pseudonymous
    Series or SOP Instance UID; ``site`` (the site of the run that saw the patient) only for
    a patient seen at a registered site."""

    project: str
    pseudonym: str
    patient_id: str | None
    issuer_of_patient_id: str | None
    patient_name: str | None
    patient_birth_date: str | None
    date_offset_days: int | None
    studies: list[StudyIdentity] = field(default_factory=list)
    other_identities: list[dict[str, Any]] = field(default_factory=list)
    series: SeriesIdentity | None = None
    instance: InstanceIdentity | None = None
    site: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A plain dictionary; ``other_identities``, ``series``, ``instance`` and ``site`` only
        when set."""
        data = asdict(self)
        for optional in ("other_identities", "series", "instance", "site"):
            if not data[optional]:
                data.pop(optional)
        return data


@dataclass(frozen=True)
class Request:
    """Who asks to re-identify what, and why (exactly one of the four keys)."""

    project: str
    requester: str | None
    reason: str | None
    pseudonym: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    instance_uid: str | None = None

    @property
    def keys(self) -> list[tuple[str, str]]:
        """The ``(level, value)`` pairs given: exactly one in a valid request."""
        given = (
            ("pseudonym", self.pseudonym),
            ("study", self.study_uid),
            ("series", self.series_uid),
            ("instance", self.instance_uid),
        )
        return [(level, value) for level, value in given if value]

    @property
    def subject(self) -> str:
        """The pseudonymous value asked about, for the audit record."""
        keys = self.keys
        return ", ".join(f"{level}:{value}" for level, value in keys) or "study:None"


def normalize_pseudonym(value: str | None) -> str | None:
    """A pseudonym as the linkage table stores it: surrounding spaces removed, upper case.

    Pseudonyms are a project prefix (upper-case letters and digits), a dash and upper-case
    base32 (:mod:`pseudo.deid.tokens`), so ``" trial-u4er7go2xrmhsy5d "`` copied from a mail
    is the pseudonym ``TRIAL-U4ER7GO2XRMHSY5D``. An empty value stays empty (None).
    """
    if value is None:
        return None
    return value.strip().upper() or None


def normalize_uid(value: str | None) -> str | None:
    """A UID without surrounding spaces (and the NUL padding a DICOM value may carry)."""
    if value is None:
        return None
    return value.strip().strip("\0").strip() or None


def normalized(request: Request) -> Request:
    """The request with its pseudonym and UIDs normalized, as every lookup needs them."""
    return replace(
        request,
        pseudonym=normalize_pseudonym(request.pseudonym),
        study_uid=normalize_uid(request.study_uid),
        series_uid=normalize_uid(request.series_uid),
        instance_uid=normalize_uid(request.instance_uid),
    )


def _open_all(key: ReidentificationKey, rows: list[Any]) -> list[SealedRecord]:
    """Open the sealed records of ``rows`` (:class:`InvalidTokenError` if one does not open)."""
    return [
        open_record(row.kind, key.open(row.sealed, sealed_aad(row.project, row.kind, row.key)))
        for row in rows
    ]


Log = Callable[..., None]


class _Gate:
    """What every re-identification goes through before it may reveal anything: a requester
    and a reason, a known and open project, a passphrase that opens a slot; each refusal is
    audited (``subject`` names what was asked about, never an identifying value)."""

    def __init__(
        self, vault: Vault, audit: AuditLog, request: Request, subject: str, slot: str | None
    ) -> None:
        self.vault, self.audit, self.request, self.subject = vault, audit, request, subject
        self.slot = slot
        self.opened: str | None = None
        self.requester = (request.requester or "").strip()
        self.reason = (request.reason or "").strip()

    def log(self, outcome: AuditOutcome | str, **details: Any) -> None:
        """Append the request's audit record (raises if it cannot be written)."""
        self.audit.append(
            ACTION,
            self.requester or "(not given)",
            outcome,
            project=self.request.project,
            subject=self.subject,
            reason=self.reason or None,
            details={
                "os_user": os_user(),
                "slot": self.opened,
                "slot_requested": self.slot,
                **details,
            },
        )

    def admit(self, valid: bool = True, invalid: str = "") -> None:
        """Refuse (audited) a request without requester or reason, an invalid one (``valid``
        false: ``invalid`` is the message), an unknown or closed project."""
        if not self.requester or not self.reason:
            missing = " and ".join(
                name
                for name, value in (("--requester", self.requester), ("--reason", self.reason))
                if not value
            )
            self.log(outcome_with(AuditOutcome.REFUSED, f"missing {missing.replace('--', '')}"))
            verb = "are" if " and " in missing else "is"
            raise ReidentificationRefused(f"re-identification refused: {missing} {verb} required")
        if not valid:
            self.log(AuditOutcome.AMBIGUOUS_REQUEST)
            raise ReidentificationRefused(invalid)
        try:
            project = self.vault.project(self.request.project)
        except ProjectNotFoundError:
            self.log(AuditOutcome.UNKNOWN_PROJECT)
            raise
        try:
            self.vault.refuse_closed(project, "no pseudonym of it can be re-identified any more")
        except ProjectClosedError:
            self.log(AuditOutcome.PROJECT_CLOSED)
            raise

    def unlock(self, passphrase: Callable[[], str]) -> ReidentificationKey:
        """Open a re-identification slot (a wrong passphrase is audited here)."""
        try:
            key = self.vault.unlock_reidentifier(
                self.request.project, passphrase(), self.slot, audit_failure=False
            )
        except AuthenticationError as exc:
            self.log(AuditOutcome.WRONG_PASSPHRASE, failures_in_a_row=exc.failures)
            raise
        except KeystoreError as exc:
            self.log(outcome_with(AuditOutcome.ERROR, exc.__class__.__name__))
            raise
        self.opened = key.slot
        return key

    def unreadable(self, what: str) -> CorruptVaultError:
        """Audit a sealed record that does not open with the key, and return the error to
        raise (``what`` names the record, never its content)."""
        self.log(AuditOutcome.SEALED_RECORD_UNREADABLE)
        return CorruptVaultError(f"{what} does not open with this project's key")

    def not_found(self, message: str) -> NotFoundError:
        """Audit "not found" and return the error to raise."""
        self.log(AuditOutcome.NOT_FOUND)
        return NotFoundError(message)


def reidentify(
    vault: Vault,
    linkage: LinkageStore,
    audit: AuditLog,
    request: Request,
    passphrase: Callable[[], str],
    slot: str | None = None,
) -> Identity:
    """Answer a re-identification request, logging it first whatever the outcome.

    The request names a patient pseudonym or a pseudonymous Study, Series or SOP Instance UID.
    The pseudonym and the UIDs are normalized first (:func:`normalized`): case and surrounding
    spaces do not make a known pseudonym "not found". A series or an instance of a vault
    written before series and instance records existed is "not found" (the message says so);
    the study of such a file is still found by its Study UID.
    """
    request = normalized(request)
    gate = _Gate(vault, audit, request, request.subject, slot)
    gate.admit(
        len(request.keys) == 1,
        "give exactly one of --pseudonym, --study-uid, --series-uid or --instance-uid",
    )
    key = gate.unlock(passphrase)
    level, value = request.keys[0]
    try:
        series, instance, pseudonym, study_filter = _resolve(linkage, key, request, level, value)
    except LookupError as exc:
        raise gate.not_found(str(exc)) from exc
    except InvalidTokenError as exc:
        raise gate.unreadable(f"the linkage record of {level} {value}") from exc
    patient_rows = linkage.records(request.project, "patient", pseudonym)
    if not patient_rows:
        raise gate.not_found(f"pseudonym {pseudonym} not found in project {request.project!r}")
    try:
        patients = _open_all(key, patient_rows)
        study_rows = linkage.studies_of(request.project, pseudonym)
        if study_filter:
            study_rows = [row for row in study_rows if row.key == study_filter]
        studies = _open_all(key, study_rows)
    except InvalidTokenError as exc:
        raise gate.unreadable(f"a linkage record of {pseudonym}") from exc
    identity = _identity(request.project, pseudonym, patients, study_rows, studies)
    identity.series, identity.instance = series, instance
    # The audit record is written before anything is revealed; if it fails, we raise.
    gate.log(AuditOutcome.SUCCESS, pseudonym=pseudonym, studies=len(identity.studies))
    return identity


_LEVEL_NAMES = {"study": "study UID", "series": "series UID", "instance": "SOP instance UID"}
_BEFORE_RECORDS = (
    " (vaults written before series and instance records existed hold none: ask by the "
    "file's pseudonymous Study Instance UID)"
)


def _resolve(
    linkage: LinkageStore,
    key: ReidentificationKey,
    request: Request,
    level: str,
    value: str,
) -> tuple[SeriesIdentity | None, InstanceIdentity | None, str, str | None]:
    """``(series, instance, pseudonym, pseudonymous study UID or None)`` of a request's key.

    Raises :class:`LookupError` (message included) when the key has no record."""
    if level == "pseudonym":
        return None, None, value, None
    kind = level
    rows = linkage.records(request.project, kind, value)  # type: ignore[arg-type]
    if not rows:
        hint = _BEFORE_RECORDS if level in ("series", "instance") else ""
        raise LookupError(f"{_LEVEL_NAMES[level]} {value} not found in {request.project!r}{hint}")
    row = rows[0]
    if level == "study":
        return None, None, row.pseudonym, value
    record = _open_all(key, [row])[0]
    if isinstance(record, SeriesRecordV1):
        series = SeriesIdentity(value, record.series_uid, record.study_uid, record.pseudo_study_uid)
        return series, None, row.pseudonym, record.pseudo_study_uid
    assert isinstance(record, InstanceRecordV1)
    instance = InstanceIdentity(
        pseudo_sop_instance_uid=value,
        sop_instance_uid=record.sop_instance_uid,
        series_uid=record.series_uid,
        study_uid=record.study_uid,
        pseudo_series_uid=record.pseudo_series_uid,
        pseudo_study_uid=record.pseudo_study_uid,
    )
    return None, instance, row.pseudonym, record.pseudo_study_uid


def _identity(
    project: str,
    pseudonym: str,
    patients: list[SealedRecord],
    study_rows: list[Any],
    studies: list[SealedRecord],
) -> Identity:
    """The identity a patient's opened records make (the first patient record is the one
    shown, the others are ``other_identities``)."""
    first, *others = [p for p in patients if isinstance(p, PatientRecordV1)]
    identity = Identity(
        project=project,
        pseudonym=pseudonym,
        patient_id=first.patient_id,
        issuer_of_patient_id=first.issuer_of_patient_id,
        patient_name=first.patient_name,
        patient_birth_date=first.patient_birth_date,
        date_offset_days=first.date_offset_days,
        other_identities=[other.to_fields() for other in others],
        site=first.site,
    )
    seen: set[str] = set()
    for row, study in zip(study_rows, studies, strict=True):
        if row.key in seen or not isinstance(study, StudyRecordV1):
            continue
        seen.add(row.key)
        identity.studies.append(
            StudyIdentity(
                pseudo_study_uid=row.key,
                study_uid=study.study_uid,
                accession_number=study.accession_number,
                study_date=study.study_date,
            )
        )
    return identity


# -- the whole linkage ---------------------------------------------------------------------
@dataclass
class PatientLine:
    """One patient record of an export (a pseudonym with variants has one line each)."""

    pseudonym: str
    site: str | None
    issuer_of_patient_id: str | None
    patient_id: str | None
    patient_name: str | None
    patient_birth_date: str | None
    date_offset_days: int | None


@dataclass
class LinkageExport:
    """The whole linkage of a project: every patient record, every original -> pseudonymous
    UID (study, series, instance and the other UIDs remapped in a file) and every original
    Patient ID -> pseudonym, each sorted and without repetition."""

    project: str
    patients: list[PatientLine] = field(default_factory=list)
    uids: list[tuple[str, str]] = field(default_factory=list)
    patient_ids: list[tuple[str, str]] = field(default_factory=list)


def export_linkage(
    vault: Vault,
    linkage: LinkageStore,
    audit: AuditLog,
    request: Request,
    passphrase: Callable[[], str],
    slot: str | None = None,
) -> LinkageExport:
    """Open every linkage record of ``request.project`` (a DPO's or a benchmark's export).

    Refused, audited, as :func:`reidentify`; the audit record of a success (subject ``all``,
    with the counts) is written before the export is returned, so before the caller writes
    any file.
    """
    gate = _Gate(vault, audit, request, "all", slot)
    gate.admit(not request.keys, "--all takes no --pseudonym or UID")
    key = gate.unlock(passphrase)
    rows = linkage.all_records(request.project)
    try:
        opened = _open_all(key, rows)
    except InvalidTokenError as exc:
        raise gate.unreadable(f"a linkage record of project {request.project!r}") from exc
    export = _collect(request.project, rows, opened)
    gate.log(
        AuditOutcome.SUCCESS,
        export="all",
        patients=len(export.patients),
        uids=len(export.uids),
        records=len(rows),
    )
    return export


def _collect(project: str, rows: list[Any], records: list[SealedRecord]) -> LinkageExport:
    """The export made of a project's rows and their opened records."""
    patients: dict[tuple[Any, ...], PatientLine] = {}
    uids: set[tuple[str, str]] = set()
    patient_ids: set[tuple[str, str]] = set()
    for row, record in zip(rows, records, strict=True):
        if isinstance(record, PatientRecordV1):
            line = PatientLine(
                pseudonym=row.pseudonym,
                site=record.site,
                issuer_of_patient_id=record.issuer_of_patient_id,
                patient_id=record.patient_id,
                patient_name=record.patient_name,
                patient_birth_date=record.patient_birth_date,
                date_offset_days=record.date_offset_days,
            )
            patients.setdefault(tuple(asdict(line).values()), line)
            if record.patient_id:
                patient_ids.add((record.patient_id, row.pseudonym))
        elif isinstance(record, StudyRecordV1) and record.study_uid:
            uids.add((record.study_uid, row.key))
        elif isinstance(record, SeriesRecordV1) and record.series_uid:
            uids.add((record.series_uid, row.key))
        elif isinstance(record, InstanceRecordV1):
            if record.sop_instance_uid:
                uids.add((record.sop_instance_uid, row.key))
            uids.update((record.remapped or {}).items())
    ordered = sorted(patients.values(), key=lambda p: (p.pseudonym, str(p.patient_id)))
    return LinkageExport(project, ordered, sorted(uids), sorted(patient_ids))


# -- reversible tokens ---------------------------------------------------------------------
@dataclass
class OpenedToken:
    """What a reversible token holds, and the attribute it was made for."""

    project: str
    attribute: str
    value: str


#: Opens a token for one attribute with the project's keyring (the DICOM side knows how):
#: raises :class:`InvalidTokenError` when the token was not made for that attribute.
TokenOpener = Callable[[Keyring, str, str], str]


def open_token(
    vault: Vault,
    audit: AuditLog,
    request: Request,
    token: str,
    attributes: Iterable[str],
    opener: TokenOpener,
    passphrase: Callable[[], str],
    slot: str | None = None,
) -> OpenedToken:
    """Open a reversible token (the ``encrypt`` action), audited like any re-identification.

    Reversible tokens are encrypted with a key derived from the project secret, so this needs
    an *operator* passphrase. Each of ``attributes`` is tried in turn (a token opens only for
    the attribute it was made for). The audit record names the attribute and a digest of the
    token, never the value, and is written before the value is returned.
    """
    token = token.strip()
    digest = hashlib.sha256(token.encode()).hexdigest()[:16]
    gate = _Gate(vault, audit, request, f"token:{digest}", slot)
    gate.admit(bool(token), "--token is empty")
    try:
        keyring = vault.unlock_operator(request.project, passphrase(), slot)
    except AuthenticationError as exc:
        gate.log(AuditOutcome.WRONG_PASSPHRASE, failures_in_a_row=exc.failures, role="operator")
        raise
    except KeystoreError as exc:
        gate.log(outcome_with(AuditOutcome.ERROR, exc.__class__.__name__), role="operator")
        raise
    for attribute in attributes:
        try:
            value = opener(keyring, attribute, token)
        except (InvalidTokenError, ValueError):
            continue
        gate.log(AuditOutcome.SUCCESS, role="operator", attribute=attribute)
        return OpenedToken(request.project, attribute, value)
    raise gate.not_found(
        f"the token does not open in project {request.project!r} for the attributes tried "
        "(another project's token, or another attribute: give --attribute)"
    )
