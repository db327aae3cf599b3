"""``pseudo reidentify``: the logged way from a pseudonym back to a patient."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from keystore.reidentify import Request, reidentify
from keystore.session import VaultSession
from pseudo.cli.common import (
    DbOption,
    ReidPassphraseFileOption,
    VaultOption,
    emit_json,
    out,
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
    data = identity.to_json()
    if as_json:
        emit_json(data)
        return
    table = Table(
        title=f"Re-identified {identity.pseudonym} (project {project})", show_header=False
    )
    for key in (
        "patient_id",
        "issuer_of_patient_id",
        "patient_name",
        "patient_birth_date",
        "date_offset_days",
    ):
        table.add_row(key.replace("_", " "), "" if data[key] is None else str(data[key]))
    for study in identity.studies:
        table.add_row(
            "study",
            f"{study.study_uid} (accession {study.accession_number or '-'}, "
            f"date {study.study_date or '-'}) <- {study.pseudo_study_uid}",
        )
    out.print(table)
