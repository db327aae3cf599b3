"""``pseudo reidentify``: the logged way from a pseudonym back to a patient, the export of
a project's whole linkage, and the opening of a reversible token."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated

import typer

from keystore.reidentify import (
    Identity,
    LinkageExport,
    Request,
    export_linkage,
    open_token,
    reidentify,
)
from keystore.session import VaultSession
from pseudo.cli.common import (
    DbOption,
    PassphraseFileOption,
    ReidPassphraseFileOption,
    UserError,
    VaultOption,
    emit_json,
    err,
    operator_passphrase,
    out,
    print_fields,
    reid_passphrase,
    spreadsheet_safe,
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
    series_uid: Annotated[
        str | None, typer.Option("--series-uid", help="Pseudonymous Series Instance UID.")
    ] = None,
    instance_uid: Annotated[
        str | None,
        typer.Option("--instance-uid", "--sop-instance-uid", help="Pseudonymous SOP Instance UID."),
    ] = None,
    export_all: Annotated[
        bool, typer.Option("--all", help="Export the whole linkage of the project to --out.")
    ] = False,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="With --all: a new or empty folder for the three CSV files."),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", help="Open a reversible token (the policy's encrypt action)."),
    ] = None,
    attribute: Annotated[
        str | None,
        typer.Option(
            "--attribute",
            help="With --token: the attribute keyword it was made for [default: try each].",
        ),
    ] = None,
    requester: Annotated[str | None, typer.Option(help="Who asks (name, role). Required.")] = None,
    reason: Annotated[
        str | None, typer.Option(help="Why (e.g. incidental finding, ticket). Required.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
    slot: Annotated[str | None, typer.Option(help="Key slot to open.")] = None,
    vault: VaultOption = None,
    db: DbOption = None,
    reid_passphrase_file: ReidPassphraseFileOption = None,
    passphrase_file: PassphraseFileOption = None,
) -> None:
    """Re-identify one patient (by pseudonym), study, series or instance (by pseudonymous UID);
    export the whole linkage (--all --out DIR); or open a reversible token (--token).

    Needs a requester and a reason, and the re-identification passphrase (a token: the
    operator passphrase, whose project key encrypts tokens). The request is written to the
    audit log before anything is shown or written, whatever its outcome.

    Example: pseudo reidentify --project trial --pseudonym TRIAL-7Q2M... --requester "Dr A (DPO)"
    --reason "incidental finding, ticket 123"

    Example: pseudo reidentify --project trial --all --out dpo-2024 --requester "Dr A (DPO)"
    --reason "annual linkage review"
    """
    request = Request(
        project,
        requester,
        reason,
        pseudonym=pseudonym,
        study_uid=study_uid,
        series_uid=series_uid,
        instance_uid=instance_uid,
    )
    if export_all or token is not None:
        if request.keys or (export_all and token is not None):
            raise UserError("give one of --all, --token or a pseudonym or UID to look up")
        if export_all:
            _export(request, out_dir, as_json, slot, vault, db, reid_passphrase_file)
        else:
            _token(request, token or "", attribute, as_json, slot, vault, db, passphrase_file)
        return
    if out_dir is not None or attribute is not None:
        raise UserError("--out goes with --all, --attribute with --token")
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


def _export(
    request: Request,
    out_dir: Path | None,
    as_json: bool,
    slot: str | None,
    vault: Path | None,
    db: str | None,
    passphrase_file: Path | None,
) -> None:
    """``--all``: audit, then write the three files (the folder is checked first)."""
    if out_dir is None:
        raise UserError("--all needs --out DIR (a new or empty folder)")
    check_export_folder(out_dir)
    with VaultSession(vault_path(vault), db) as session:
        export = export_linkage(
            session.vault,
            session.linkage,
            session.audit,
            request,
            lambda: reid_passphrase(passphrase_file),
            slot,
        )
    files = write_export(export, out_dir)
    summary = {
        "project": export.project,
        "patients": len(export.patients),
        "uids": len(export.uids),
        "patient_ids": len(export.patient_ids),
        "files": [str(path) for path in files],
    }
    if as_json:
        emit_json(summary)
        return
    err.print(
        f"Wrote the linkage of {export.project}: {summary['patients']} patients, "
        f"{summary['uids']} UIDs, to {out_dir} (readable by you only)"
    )


def _token(
    request: Request,
    token: str,
    attribute: str | None,
    as_json: bool,
    slot: str | None,
    vault: Path | None,
    db: str | None,
    passphrase_file: Path | None,
) -> None:
    """``--token``: open a reversible token, trying ``attribute`` or every candidate."""
    from pseudo.deid.tokens import decrypt_token

    attributes = [attribute] if attribute else token_attributes()
    with VaultSession(vault_path(vault), db) as session:
        opened = open_token(
            session.vault,
            session.audit,
            request,
            token,
            attributes,
            decrypt_token,
            lambda: operator_passphrase(passphrase_file),
            slot,
        )
    if as_json:
        emit_json({"project": opened.project, "attribute": opened.attribute, "value": opened.value})
        return
    rows = [("attribute", opened.attribute), ("original value", opened.value)]
    print_fields(out, f"Opened a token (project {opened.project})", rows)


def token_attributes() -> list[str]:
    """Every keyword of the DICOM dictionary whose VR can hold a reversible token: a token
    opens only for its own attribute (AES-SIV authenticates it), so trying them all finds it."""
    from pydicom.datadict import dictionary_VR, keyword_dict

    from pseudo.dicom.capacity import TOKEN_VRS

    return sorted(
        keyword for keyword, tag in keyword_dict.items() if dictionary_VR(tag) in TOKEN_VRS
    )


# -- the export files ----------------------------------------------------------------------
PATIENTS_HEADER = (
    "pseudonym",
    "site",
    "issuer",
    "patient_id",
    "patient_name",
    "birth_date",
    "date_offset_days",
)
#: The header of the MIDI-B de-identification benchmark's mapping files.
MAPPING_HEADER = ("id_old", "id_new")


def csv_cell(value: object) -> str:
    """A CSV cell that a spreadsheet does not run as a formula (a leading ``'``); a number
    (a date offset) is written as it is."""
    if isinstance(value, int):
        return str(value)
    return spreadsheet_safe("" if value is None else str(value))


def check_export_folder(folder: Path) -> None:
    """Refuse a folder that exists and is not empty, or is not a folder."""
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise UserError(f"--out {folder}: not a new or empty folder (nothing was exported)")


def write_export(export: LinkageExport, folder: Path) -> list[Path]:
    """Write ``patients.csv``, ``uid_mapping.csv`` and ``patid_mapping.csv`` in ``folder``
    (made 0700), each created 0600 and refused if it already exists."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    patients = (
        (
            p.pseudonym,
            p.site,
            p.issuer_of_patient_id,
            p.patient_id,
            p.patient_name,
            p.patient_birth_date,
            p.date_offset_days,
        )
        for p in export.patients
    )
    tables: list[tuple[str, Sequence[str], Iterable[Sequence[object]]]] = [
        ("patients.csv", PATIENTS_HEADER, patients),
        ("uid_mapping.csv", MAPPING_HEADER, export.uids),
        ("patid_mapping.csv", MAPPING_HEADER, export.patient_ids),
    ]
    return [_write_private_csv(folder / name, header, rows) for name, header, rows in tables]


def _write_private_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> Path:
    """One CSV file, created 0600 (never over an existing file)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([csv_cell(value) for value in row] for row in rows)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
        handle.write(buffer.getvalue())
        handle.flush()
        os.fsync(handle.fileno())
    return path


def identity_rows(identity: Identity) -> list[tuple[str, str]]:
    """The labelled lines of a re-identification: which values are the original (identifying)
    ones and which the pseudonymous ones, said on each line."""
    rows = [
        ("pseudonym", identity.pseudonym),
        *([("site", identity.site)] if identity.site else []),
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
    if identity.series is not None:
        rows += [
            ("pseudonymous series UID", identity.series.pseudo_series_uid),
            ("original series UID", identity.series.series_uid or "-"),
        ]
    if identity.instance is not None:
        rows += [
            ("pseudonymous SOP instance UID", identity.instance.pseudo_sop_instance_uid),
            ("original SOP instance UID", identity.instance.sop_instance_uid or "-"),
            ("original series UID", identity.instance.series_uid or "-"),
        ]
    if identity.other_identities:
        rows.append(("other identities", f"{len(identity.other_identities)} (all in --json)"))
    return rows


def _number(value: int | None) -> str:
    return "-" if value is None else str(value)
