"""``pseudo reidentify``: the logged way from a pseudonym back to a patient."""

from __future__ import annotations

from typing import Annotated

import typer

from keystore.reidentify import Identity, Request, reidentify
from keystore.session import VaultSession
from pseudo.cli.common import (
    DbOption,
    ReidPassphraseFileOption,
    VaultOption,
    emit_json,
    out,
    print_fields,
    reid_passphrase,
    vault_path,
)


def reidentify_command(
    project: Annotated[
        str, typer.Option("--project", help="The project the pseudonym belongs to.")
    ],
    pseudonym: Annotated[
        str | None, typer.Option(help="Patient pseudonym (Patient ID of the output).")
    ] = None,
    study_uid: Annotated[
        str | None, typer.Option("--study-uid", help="Pseudonymous Study Instance UID.")
    ] = None,
    requester: Annotated[str | None, typer.Option(help="Who asks (name, role). Required.")] = None,
    reason: Annotated[
        str | None, typer.Option(help="Why (e.g. incidental finding, ticket). Required.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
    slot: Annotated[str | None, typer.Option(help="Re-identification key slot to open.")] = None,
    vault: VaultOption = None,
    db: DbOption = None,
    reid_passphrase_file: ReidPassphraseFileOption = None,
) -> None:
    """Re-identify one patient (by pseudonym) or one study (by pseudonymous Study UID).

    Needs a re-identification passphrase, a requester and a reason. The request is written to
    the audit log before anything is shown, whatever its outcome.

    Example: pseudo reidentify --project trial --pseudonym TRIAL-7Q2M... --requester "Dr A (DPO)"
    --reason "incidental finding, ticket 123"
    """
    request = Request(project, requester, reason, pseudonym=pseudonym, study_uid=study_uid)
    with VaultSession(vault_path(vault), db) as session:
        identity = reidentify(
            session.vault,
            session.linkage,
            session.audit,
            request,
            lambda: reid_passphrase(reid_passphrase_file),
            slot,
        )
    if as_json:
        emit_json(identity.to_json())
        return
    title = f"Re-identified {identity.pseudonym} (project {project})"
    print_fields(out, title, identity_rows(identity))


def identity_rows(identity: Identity) -> list[tuple[str, str]]:
    """The labelled lines of a re-identification: which values are the original (identifying)
    ones and which the pseudonymous ones, said on each line."""
    rows = [
        ("pseudonym", identity.pseudonym),
        ("original patient ID", identity.patient_id or "-"),
        ("original issuer of patient ID", identity.issuer_of_patient_id or "-"),
        ("original patient name", identity.patient_name or "-"),
        ("original birth date", identity.patient_birth_date or "-"),
        ("date offset (days)", _number(identity.date_offset_days)),
    ]
    for number, study in enumerate(identity.studies, start=1):
        rows += [
            (f"study {number}: pseudonymous UID", study.pseudo_study_uid),
            (f"study {number}: original UID", study.study_uid or "-"),
            (f"study {number}: original accession", study.accession_number or "-"),
            (f"study {number}: original date", study.study_date or "-"),
        ]
    if identity.other_identities:
        rows.append(("other identities", f"{len(identity.other_identities)} (all in --json)"))
    return rows


def _number(value: int | None) -> str:
    return "-" if value is None else str(value)
