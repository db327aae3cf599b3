"""The one path from a pseudonym back to a person.

:func:`reidentify` refuses without a requester and a reason, and appends an audit record
*before* it returns anything: a success, a refusal, a wrong passphrase and an unknown pseudonym
are all logged, each naming the requester, the operating-system user and host that ran the
command, and the key slot opened (or asked for). If the audit record cannot be written,
nothing is revealed. Once the record is written with the opened slot, it is authenticated by
the project's audit key.
"""

from __future__ import annotations

from collections.abc import Callable
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
from keystore.linkage import LinkageStore, sealed_aad
from keystore.records import PatientRecordV1, SealedRecord, StudyRecordV1, open_record
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
class Identity:
    """The original identity behind a pseudonym, as printed by ``pseudo reidentify --json``."""

    project: str
    pseudonym: str
    patient_id: str | None
    issuer_of_patient_id: str | None
    patient_name: str | None
    patient_birth_date: str | None
    date_offset_days: int | None
    studies: list[StudyIdentity] = field(default_factory=list)
    other_identities: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A plain dictionary; ``other_identities`` only when the patient has variants."""
        data = asdict(self)
        if not self.other_identities:
            data.pop("other_identities")
        return data


@dataclass(frozen=True)
class Request:
    """Who asks to re-identify what, and why."""

    project: str
    requester: str | None
    reason: str | None
    pseudonym: str | None = None
    study_uid: str | None = None

    @property
    def subject(self) -> str:
        """The pseudonymous value asked about, for the audit record."""
        if self.pseudonym:
            return f"pseudonym:{self.pseudonym}"
        return f"study:{self.study_uid}"


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
    """The request with its pseudonym and Study UID normalized, as every lookup needs them."""
    return replace(
        request,
        pseudonym=normalize_pseudonym(request.pseudonym),
        study_uid=normalize_uid(request.study_uid),
    )


def _open_all(key: ReidentificationKey, rows: list[Any]) -> list[SealedRecord]:
    """Open the sealed records of ``rows`` (:class:`InvalidTokenError` if one does not open)."""
    return [
        open_record(row.kind, key.open(row.sealed, sealed_aad(row.project, row.kind, row.key)))
        for row in rows
    ]


def reidentify(
    vault: Vault,
    linkage: LinkageStore,
    audit: AuditLog,
    request: Request,
    passphrase: Callable[[], str],
    slot: str | None = None,
) -> Identity:
    """Answer a re-identification request, logging it first whatever the outcome.

    The pseudonym and the Study UID are normalized first (:func:`normalized`): case and
    surrounding spaces do not make a known pseudonym "not found".
    """
    request = normalized(request)
    requester = (request.requester or "").strip()
    reason = (request.reason or "").strip()
    opened: list[str] = []

    def log(outcome: AuditOutcome | str, **details: Any) -> None:
        audit.append(
            ACTION,
            requester or "(not given)",
            outcome,
            project=request.project,
            subject=request.subject,
            reason=reason or None,
            details={
                "os_user": os_user(),
                "slot": opened[0] if opened else None,
                "slot_requested": slot,
                **details,
            },
        )

    if not requester or not reason:
        missing = " and ".join(
            name for name, value in (("--requester", requester), ("--reason", reason)) if not value
        )
        log(outcome_with(AuditOutcome.REFUSED, f"missing {missing.replace('--', '')}"))
        verb = "are" if " and " in missing else "is"
        raise ReidentificationRefused(f"re-identification refused: {missing} {verb} required")
    if bool(request.pseudonym) == bool(request.study_uid):
        log(AuditOutcome.AMBIGUOUS_REQUEST)
        raise ReidentificationRefused("give exactly one of --pseudonym or --study-uid")
    try:
        project = vault.project(request.project)
    except ProjectNotFoundError:
        log(AuditOutcome.UNKNOWN_PROJECT)
        raise
    try:
        vault.refuse_closed(project, "no pseudonym of it can be re-identified any more")
    except ProjectClosedError:
        log(AuditOutcome.PROJECT_CLOSED)
        raise
    try:
        key = vault.unlock_reidentifier(request.project, passphrase(), slot, audit_failure=False)
    except AuthenticationError as exc:
        log(AuditOutcome.WRONG_PASSPHRASE, failures_in_a_row=exc.failures)
        raise
    except KeystoreError as exc:
        log(outcome_with(AuditOutcome.ERROR, exc.__class__.__name__))
        raise
    opened.append(key.slot)

    pseudonym = request.pseudonym
    study_filter: str | None = None
    if request.study_uid:
        study_rows = linkage.records(request.project, "study", request.study_uid)
        if not study_rows:
            log(AuditOutcome.NOT_FOUND)
            raise NotFoundError(f"study UID {request.study_uid} not found in {request.project!r}")
        pseudonym = study_rows[0].pseudonym
        study_filter = request.study_uid
    assert pseudonym is not None
    patient_rows = linkage.records(request.project, "patient", pseudonym)
    if not patient_rows:
        log(AuditOutcome.NOT_FOUND)
        raise NotFoundError(f"pseudonym {pseudonym} not found in project {request.project!r}")
    try:
        patients = _open_all(key, patient_rows)
        study_rows = linkage.studies_of(request.project, pseudonym)
        if study_filter:
            study_rows = [row for row in study_rows if row.key == study_filter]
        studies = _open_all(key, study_rows)
    except InvalidTokenError as exc:
        log(AuditOutcome.SEALED_RECORD_UNREADABLE)
        raise CorruptVaultError(
            f"a linkage record of {pseudonym} does not open with this project's key"
        ) from exc

    first, *others = [p for p in patients if isinstance(p, PatientRecordV1)]
    identity = Identity(
        project=request.project,
        pseudonym=pseudonym,
        patient_id=first.patient_id,
        issuer_of_patient_id=first.issuer_of_patient_id,
        patient_name=first.patient_name,
        patient_birth_date=first.patient_birth_date,
        date_offset_days=first.date_offset_days,
        other_identities=[other.to_fields() for other in others],
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
    # The audit record is written before anything is revealed; if it fails, we raise.
    log(AuditOutcome.SUCCESS, pseudonym=pseudonym, studies=len(identity.studies))
    return identity
