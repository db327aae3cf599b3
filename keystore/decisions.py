"""Identity decisions, each audited here (below the command line): a trial's own subject IDs
imported as pseudonyms, a merge of two pseudonyms, a split of one.

Each is a rule of the identity book (:mod:`keystore.identities`) that later runs honour, and
each needs the project secret (an operator passphrase) to key it. A merge and a split open
sealed patient records, so they need a re-identification passphrase too. Identities are tuples
of strings that the caller's callbacks make (the DICOM side knows what they are made of).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from keystore.actions import AuditAction, AuditOutcome, outcome_with
from keystore.errors import IdentityError, InvalidTokenError, NotFoundError
from keystore.identities import (
    IdentityStore,
    Rule,
    condition,
    lookup_key,
    recorded_key,
)
from keystore.keyring import Keyring
from keystore.linkage import LinkageEntry, sealed_aad
from keystore.records import PatientRecordV1, open_record
from keystore.session import VaultSession
from keystore.stamps import os_user
from keystore.vault import ReidentificationKey

#: A subject ID: it becomes the Patient ID (LO) and the name of the patient's output folder.
SUBJECT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: The form of a keyed pseudonym of any project (a prefix, a dash, base32): a subject ID of
#: this form could be taken for one (and its output folder for another project's).
KEYED_SHAPE = re.compile(r"^[A-Z0-9]{1,12}-[A-Z2-7]{8,}$")
#: The basis recorded for a patient whose subject ID was imported.
IMPORTED_BASIS = "imported-subject"

#: The keyed pseudonym and date offset of an identity (the DICOM side computes them).
Deriver = Callable[[Keyring, tuple[str, ...]], tuple[str, int]]
#: The identity behind an opened patient record (``ValueError`` if it has none).
RecordKeyer = Callable[[PatientRecordV1], tuple[str, ...]]


@dataclass(frozen=True)
class SubjectRow:
    """One line of an import: the patient (site, patient ID, issuer) and their subject ID."""

    line: int
    site: str
    patient_id: str
    subject_id: str
    issuer: str = ""


#: The identity of a row (``ValueError`` for an unknown site).
RowKeyer = Callable[[SubjectRow], tuple[str, ...]]


@dataclass(frozen=True)
class ImportResult:
    """What an import did: subject IDs imported now, and those imported before."""

    imported: int
    already: int


def _refuse(
    session: VaultSession,
    action: AuditAction,
    project: str,
    actor: str,
    cause: str,
    subject: str | None = None,
) -> IdentityError:
    """Audit a refusal (``cause`` names no identifying value) and return the error."""
    session.audit.append(
        action,
        actor,
        outcome_with(AuditOutcome.REFUSED, cause),
        project=project,
        subject=subject,
    )
    return IdentityError(cause)


def import_subjects(
    session: VaultSession,
    project: str,
    passphrase: str,
    rows: Sequence[SubjectRow],
    keyer: RowKeyer,
    derive: Deriver,
    *,
    actor: str | None = None,
) -> ImportResult:
    """Make each row's subject ID the pseudonym of its patient: all rows, or none.

    Refused (audited) when a subject ID does not fit (``SUBJECT_ID``), has the form of a keyed
    pseudonym (``KEYED_SHAPE``), appears twice, or is already another patient's; when a patient
    appears twice, already has another subject ID, or already has a keyed pseudonym from
    earlier runs (their released files carry it). Each patient's link is sealed like every
    linkage record; a row imported before is left as it is.
    """
    who = actor or os_user()
    keyring = session.vault.unlock_operator(project, passphrase)
    keyed_shape = KEYED_SHAPE
    store = IdentityStore(session.engine)
    book = store.book(keyring)
    seen_subjects: dict[str, int] = {}
    seen_patients: dict[str, int] = {}
    planned: list[tuple[SubjectRow, tuple[str, ...], str, str, int]] = []
    already = 0
    for row in rows:
        where = f"line {row.line}"
        if not SUBJECT_ID.match(row.subject_id):
            raise _refuse(
                session,
                AuditAction.SUBJECTS_IMPORT,
                project,
                who,
                f"{where}: a subject ID is 1-64 letters, digits, '.', '_' or '-', starting "
                "with a letter or digit (it becomes the Patient ID and a folder name)",
            )
        if keyed_shape.match(row.subject_id):
            raise _refuse(
                session,
                AuditAction.SUBJECTS_IMPORT,
                project,
                who,
                f"{where}: the subject ID has the form of a keyed pseudonym (PREFIX-BASE32)",
            )
        if row.subject_id in seen_subjects:
            raise _refuse(
                session,
                AuditAction.SUBJECTS_IMPORT,
                project,
                who,
                f"{where}: the subject ID of line {seen_subjects[row.subject_id]} again",
            )
        seen_subjects[row.subject_id] = row.line
        try:
            identity = keyer(row)
        except ValueError as exc:
            raise _refuse(
                session, AuditAction.SUBJECTS_IMPORT, project, who, f"{where}: {exc}"
            ) from exc
        lookup = lookup_key(keyring, identity)
        if lookup in seen_patients:
            raise _refuse(
                session,
                AuditAction.SUBJECTS_IMPORT,
                project,
                who,
                f"{where}: the patient of line {seen_patients[lookup]} again",
            )
        seen_patients[lookup] = row.line
        ruled = [rule for rule in book.rules.get(lookup, ()) if not rule.conditions]
        if any(rule.kind == "subject" and rule.pseudonym == row.subject_id for rule in ruled):
            already += 1
            continue
        if ruled:
            raise _refuse(
                session,
                AuditAction.SUBJECTS_IMPORT,
                project,
                who,
                f"{where}: this patient already has pseudonym {ruled[0].pseudonym}",
            )
        keyed, offset = derive(keyring, identity)
        planned.append((row, identity, lookup, keyed, offset))
    used = store.pseudonyms_in_use(
        project, [p[0].subject_id for p in planned] + [p[3] for p in planned]
    )
    for row, _identity, _lookup, keyed, _offset in planned:
        if row.subject_id in used:
            raise _refuse(
                session,
                AuditAction.SUBJECTS_IMPORT,
                project,
                who,
                f"line {row.line}: the subject ID is already a pseudonym of the project",
            )
        if keyed in used:
            raise _refuse(
                session,
                AuditAction.SUBJECTS_IMPORT,
                project,
                who,
                f"line {row.line}: this patient already has pseudonym {keyed} from earlier runs "
                "(their released files carry it): a subject ID is given before a patient's "
                "first run",
            )
    entries = [
        LinkageEntry.of(
            row.subject_id,
            row.subject_id,
            PatientRecordV1(
                patient_id=row.patient_id,
                issuer_of_patient_id=row.issuer or None,
                identity_basis=IMPORTED_BASIS,
                site=row.site or None,
                identity_key=recorded_key(identity),
            ),
        )
        for row, identity, *_ in planned
    ]
    # sealed links first: a crash before the rules leaves links that an import again completes
    session.linkage.commit_batch(keyring, "import-subjects", entries, [])
    store.add_rules(
        keyring,
        [
            (lookup, Rule("subject", row.subject_id, offset))
            for row, _, lookup, _, offset in planned
        ],
    )
    session.audit.append(
        AuditAction.SUBJECTS_IMPORT,
        who,
        AuditOutcome.SUCCESS,
        project=project,
        details={"imported": len(planned), "already": already, "rows": len(rows)},
    )
    return ImportResult(len(planned), already)


def _patient_records(
    session: VaultSession, key: ReidentificationKey, project: str, pseudonym: str
) -> list[PatientRecordV1]:
    """The opened patient records of a pseudonym, oldest first (none: not found)."""
    rows = session.linkage.records(project, "patient", pseudonym)
    opened = []
    for row in rows:
        plain = key.open(row.sealed, sealed_aad(row.project, row.kind, row.key))
        record = open_record(row.kind, plain)
        if isinstance(record, PatientRecordV1):
            opened.append(record)
    return opened


@dataclass
class _Opened:
    """A decision's keys, opened and audited on failure."""

    keyring: Keyring
    reid: ReidentificationKey


def _open_keys(session: VaultSession, project: str, operator: str, reidentifier: str) -> _Opened:
    keyring = session.vault.unlock_operator(project, operator)
    reid = session.vault.unlock_reidentifier(project, reidentifier)
    return _Opened(keyring, reid)


def _records_of(
    session: VaultSession,
    opened: _Opened,
    project: str,
    pseudonym: str,
    action: AuditAction,
    actor: str,
    details: dict[str, Any],
) -> list[PatientRecordV1]:
    try:
        records = _patient_records(session, opened.reid, project, pseudonym)
    except InvalidTokenError as exc:
        session.audit.append(
            action, actor, AuditOutcome.SEALED_RECORD_UNREADABLE, project=project, details=details
        )
        raise IdentityError(f"a patient record of {pseudonym} does not open") from exc
    if not records:
        session.audit.append(
            action, actor, AuditOutcome.NOT_FOUND, project=project, details=details
        )
        raise NotFoundError(f"pseudonym {pseudonym} not found in project {project!r}")
    return records


def _identities(records: Sequence[PatientRecordV1], keyer: RecordKeyer) -> list[tuple[str, ...]]:
    """The distinct identities behind ``records``, in the order first seen."""
    found: dict[tuple[str, ...], None] = {}
    for record in records:
        found.setdefault(keyer(record), None)
    return list(found)


def merge(
    session: VaultSession,
    project: str,
    keep: str,
    merged: str,
    *,
    operator_passphrase: str,
    reid_passphrase: str,
    keyer: RecordKeyer,
    derive: Deriver,
    accept_different_birth_date: bool = False,
    reason: str | None = None,
    actor: str | None = None,
) -> int:
    """Give every identity of pseudonym ``merged`` the pseudonym (and date offset) of
    ``keep``: a patient-ID change, or one person seen under two IDs. Later runs honour it;
    files already released keep their pseudonym. The merged identities' records are sealed
    under ``keep`` too, so re-identifying ``keep`` shows them. Refused when the two records
    give different birth dates (unless ``accept_different_birth_date``). Returns the number
    of identities merged. Audited, refusals included."""
    who = actor or os_user()
    details: dict[str, Any] = {"keep": keep, "merged": merged}
    subject = f"merge:{merged}->{keep}"
    if keep == merged:
        raise _refuse(
            session, AuditAction.IDENTITY_MERGE, project, who, "the same pseudonym twice", subject
        )
    opened = _open_keys(session, project, operator_passphrase, reid_passphrase)
    kept = _records_of(session, opened, project, keep, AuditAction.IDENTITY_MERGE, who, details)
    gone = _records_of(session, opened, project, merged, AuditAction.IDENTITY_MERGE, who, details)
    births = {r.patient_birth_date for r in kept[:1] + gone[:1] if r.patient_birth_date}
    if len(births) > 1 and not accept_different_birth_date:
        raise _refuse(
            session,
            AuditAction.IDENTITY_MERGE,
            project,
            who,
            "the two patients have different birth dates (give --accept-different-birth-date "
            "if one was wrong)",
            subject,
        )
    try:
        kept_identity = _identities(kept, keyer)[0]
        identities = _identities(gone, keyer)
    except ValueError as exc:
        raise _refuse(session, AuditAction.IDENTITY_MERGE, project, who, str(exc), subject) from exc
    keyring = opened.keyring
    store = IdentityStore(session.engine)
    book = store.book(keyring)
    kept_rule = book.find(keyring, kept_identity, {})
    offset = kept_rule.offset_days if kept_rule else derive(keyring, kept_identity)[1]
    lookups = {lookup_key(keyring, identity) for identity in identities}
    # decisions that gave ``merged`` to other identities now give ``keep``
    lookups |= {
        lookup
        for lookup, rules in book.rules.items()
        for rule in rules
        if rule.pseudonym == merged and not rule.conditions
    }
    store.add_rules(keyring, [(lookup, Rule("merge", keep, offset)) for lookup in sorted(lookups)])
    entries = [LinkageEntry.of(keep, keep, record) for record in gone]
    session.linkage.commit_batch(keyring, "identity-merge", entries, [])
    session.audit.append(
        AuditAction.IDENTITY_MERGE,
        who,
        AuditOutcome.SUCCESS,
        project=project,
        subject=subject,
        reason=reason,
        details={**details, "identities": len(identities), "slot": opened.reid.slot},
    )
    return len(identities)


def split(
    session: VaultSession,
    project: str,
    pseudonym: str,
    traits: dict[str, str],
    *,
    operator_passphrase: str,
    reid_passphrase: str,
    keyer: RecordKeyer,
    derive: Deriver,
    reason: str | None = None,
    actor: str | None = None,
) -> str:
    """Give the files of ``pseudonym``'s patient ID whose traits (``birth_date``, ``sex``:
    normalized as the runs compare them) are ``traits`` a pseudonym of their own: a second
    person behind one patient ID. Refused when the traits are those of the pseudonym's first
    record (its own patient). Returns the new pseudonym (the same for the same split)."""
    who = actor or os_user()
    given = {trait: value for trait, value in sorted(traits.items()) if value}
    details: dict[str, Any] = {"pseudonym": pseudonym, "traits": sorted(given)}
    if not given:
        raise _refuse(
            session,
            AuditAction.IDENTITY_SPLIT,
            project,
            who,
            "give the other person's birth date or sex",
            f"split:{pseudonym}",
        )
    opened = _open_keys(session, project, operator_passphrase, reid_passphrase)
    records = _records_of(
        session, opened, project, pseudonym, AuditAction.IDENTITY_SPLIT, who, details
    )
    first = records[0]
    own = {"birth_date": (first.patient_birth_date or "").strip()}
    if all(own.get(trait, "") == value for trait, value in given.items() if trait in own) and (
        "birth_date" in given
    ):
        raise _refuse(
            session,
            AuditAction.IDENTITY_SPLIT,
            project,
            who,
            f"that is the birth date of {pseudonym}'s own patient: give the other person's",
            f"split:{pseudonym}",
        )
    try:
        identities = _identities(records, keyer)
    except ValueError as exc:
        raise _refuse(
            session, AuditAction.IDENTITY_SPLIT, project, who, str(exc), f"split:{pseudonym}"
        ) from exc
    keyring = opened.keyring
    parts = [f"{trait}={value}" for trait, value in given.items()]
    new, offset = derive(keyring, (*identities[0], "split", *parts))
    rules = []
    for identity in identities:
        lookup = lookup_key(keyring, identity)
        conditions = tuple(
            (trait, condition(keyring, lookup, trait, value)) for trait, value in given.items()
        )
        rules.append((lookup, Rule("split", new, offset, conditions)))
    IdentityStore(session.engine).add_rules(keyring, rules)
    session.audit.append(
        AuditAction.IDENTITY_SPLIT,
        who,
        AuditOutcome.SUCCESS,
        project=project,
        subject=f"split:{pseudonym}",
        reason=reason,
        details={**details, "new_pseudonym": new, "slot": opened.reid.slot},
    )
    return new
