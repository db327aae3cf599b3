"""``pseudo identity merge|split``: resolve identity conflicts and patient-ID changes, and
``pseudo project add-site|import-subjects`` (registered on the project group): the sites of a
multi-site trial and its own subject IDs. Each decision is audited by :mod:`keystore`."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Annotated

import typer

from keystore.records import PatientRecordV1
from keystore.session import VaultSession
from pseudo.cli.common import (
    DbOption,
    PassphraseFileOption,
    ReidPassphraseFileOption,
    UserError,
    VaultOption,
    actor,
    emit_json,
    err,
    operator_passphrase,
    reid_passphrase,
    safe,
    vault_path,
)

identity_app = typer.Typer(
    help="Patient identities: merge two pseudonyms into one, split one into two (audited).",
    no_args_is_help=True,
)

ProjectOption = Annotated[str, typer.Option("--project", help="The project.")]
ReasonOption = Annotated[
    str | None, typer.Option("--reason", help="Why (a ticket, a site's message); audited.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")]


def record_identity(record: PatientRecordV1) -> tuple[str, ...]:
    """The identity behind an opened patient record (``ValueError`` if it names none)."""
    from pseudo.deid.identity import key_of_record

    return key_of_record(
        record.patient_id,
        record.issuer_of_patient_id,
        record.patient_name,
        record.patient_birth_date,
        record.identity_basis,
        record.identity_key,
    )


@identity_app.command("merge")
def merge_command(
    project: ProjectOption,
    keep: Annotated[str, typer.Option("--keep", help="The pseudonym that stays.")],
    merged: Annotated[
        str, typer.Option("--merge", help="The pseudonym whose patient IDs join --keep.")
    ],
    accept_different_birth_date: Annotated[
        bool,
        typer.Option(
            "--accept-different-birth-date",
            help="Merge even though the two records give different birth dates (one was wrong).",
        ),
    ] = False,
    reason: ReasonOption = None,
    as_json: JsonOption = False,
    vault: VaultOption = None,
    db: DbOption = None,
    passphrase_file: PassphraseFileOption = None,
    reid_passphrase_file: ReidPassphraseFileOption = None,
) -> None:
    """Give the patient IDs of --merge the pseudonym and date offset of --keep, in every later
    run (a patient-ID change, or one person under two IDs).

    Files already released keep their pseudonym. Needs the re-identification passphrase (the
    patient records are opened) and the operator's (the decision is keyed). Audited.

    Example: pseudo identity merge --project trial --keep TRIAL-AAAA... --merge TRIAL-BBBB...
    """
    from keystore.decisions import merge
    from pseudo.deid.tokens import keyed_patient

    keep, merged = keep.strip().upper(), merged.strip().upper()
    with VaultSession(vault_path(vault), db) as session:
        count = merge(
            session,
            project,
            keep,
            merged,
            operator_passphrase=operator_passphrase(passphrase_file),
            reid_passphrase=reid_passphrase(reid_passphrase_file),
            keyer=record_identity,
            derive=keyed_patient,
            accept_different_birth_date=accept_different_birth_date,
            reason=reason,
            actor=actor(),
        )
    if as_json:
        emit_json({"project": project, "keep": keep, "merged": merged, "identities": count})
        return
    err.print(
        f"Merged {safe(merged)} into [bold]{safe(keep)}[/] ({count} patient ID(s)); "
        "later runs give them the kept pseudonym"
    )


@identity_app.command("split")
def split_command(
    project: ProjectOption,
    pseudonym: Annotated[str, typer.Option("--pseudonym", help="The pseudonym to split.")],
    birth_date: Annotated[
        str | None,
        typer.Option("--birth-date", help="The other person's birth date (YYYYMMDD)."),
    ] = None,
    sex: Annotated[
        str | None, typer.Option("--sex", help="The other person's sex (M, F, O).")
    ] = None,
    reason: ReasonOption = None,
    as_json: JsonOption = False,
    vault: VaultOption = None,
    db: DbOption = None,
    passphrase_file: PassphraseFileOption = None,
    reid_passphrase_file: ReidPassphraseFileOption = None,
) -> None:
    """Give a second person behind one patient ID a pseudonym of their own: the files of that
    ID whose birth date (and sex) are those given get it in every later run.

    Resolves an identity conflict (`pseudo run` quarantined their files): run them again
    afterwards. Needs the re-identification and the operator passphrases. Audited.

    Example: pseudo identity split --project trial --pseudonym TRIAL-AAAA... --birth-date 19700101
    """
    from keystore.decisions import split
    from pseudo.deid.identity import traits_of
    from pseudo.deid.tokens import keyed_patient

    if birth_date is not None and not (len(birth_date.strip()) == 8 and birth_date.isdigit()):
        raise UserError(f"--birth-date {birth_date!r}: expected YYYYMMDD")
    traits = traits_of(birth_date or "", sex or "")
    del traits["name"]
    pseudonym = pseudonym.strip().upper()
    with VaultSession(vault_path(vault), db) as session:
        new = split(
            session,
            project,
            pseudonym,
            traits,
            operator_passphrase=operator_passphrase(passphrase_file),
            reid_passphrase=reid_passphrase(reid_passphrase_file),
            keyer=record_identity,
            derive=keyed_patient,
            reason=reason,
            actor=actor(),
        )
    if as_json:
        emit_json({"project": project, "pseudonym": pseudonym, "new_pseudonym": new})
        return
    err.print(
        f"Split {safe(pseudonym)}: the other person gets [bold]{safe(new)}[/] in later runs "
        "(run the quarantined files again)"
    )


# -- on the project group -------------------------------------------------------------------
def add_site_command(
    site: Annotated[str, typer.Argument(help="The site's name, as --site gives it.")],
    project: ProjectOption,
    site_id: Annotated[
        str | None,
        typer.Option("--site-id", help="Its Clinical Trial Site ID [default: the name]."),
    ] = None,
    vault: VaultOption = None,
    db: DbOption = None,
    passphrase_file: PassphraseFileOption = None,
) -> None:
    """Register a site: `pseudo run --site NAME` then takes it as the issuer of the patient IDs
    its files give without an Issuer of Patient ID.

    The first site keeps the pseudonyms of the runs made before sites were registered; each
    later site has its own namespace (the same patient ID there is another patient). Once a
    project has several sites, every run names one. Audited.

    Example: pseudo project add-site --project trial lyon --site-id 0042
    """
    with VaultSession(vault_path(vault), db) as session:
        entry = session.vault.add_site(
            project, site, operator_passphrase(passphrase_file), site_id=site_id, actor=actor()
        )
        count = len(session.vault.project(project).sites)
    where = (
        "the namespace of earlier runs"
        if not entry.namespace
        else "a namespace of its own: the same patient ID elsewhere is another patient"
    )
    err.print(
        f"Added site [bold]{safe(site)}[/] (ID {safe(entry.site_id)}) to project "
        f"{safe(repr(project))}: {where}"
        + ("; runs must now name their site with --site" if count > 1 else "")
    )


#: The columns of an import file (a header line names them; ``issuer`` is optional).
SUBJECT_COLUMNS = ("site", "patient_id", "subject_id")


def read_subjects(path: Path) -> list[tuple[int, dict[str, str]]]:
    """The rows of an import file by column name, with their line numbers."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(
            f"{path}: cannot read the subjects file ({exc.__class__.__name__})"
        ) from exc
    lines = list(csv.reader(text.splitlines()))
    if not lines:
        raise UserError(f"{path}: empty (expected a header: site,patient_id,subject_id)")
    header = [name.strip().lower().replace(" ", "_") for name in lines[0]]
    missing = [name for name in SUBJECT_COLUMNS if name not in header]
    if missing:
        raise UserError(
            f"{path}: line 1 must name the columns site, patient_id, subject_id (and "
            f"optionally issuer); missing {', '.join(missing)}"
        )
    rows = []
    for number, cells in enumerate(lines[1:], start=2):
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(header):
            raise UserError(f"{path}: line {number} has {len(cells)} columns, not {len(header)}")
        rows.append(
            (number, {name: cell.strip() for name, cell in zip(header, cells, strict=True)})
        )
    return rows


def import_subjects_command(
    file: Annotated[Path, typer.Argument(metavar="FILE.csv", help="site,patient_id,subject_id")],
    project: ProjectOption,
    as_json: JsonOption = False,
    vault: VaultOption = None,
    db: DbOption = None,
    passphrase_file: PassphraseFileOption = None,
) -> None:
    """Make a trial's own subject IDs the pseudonyms of its patients (all rows or none).

    FILE.csv has a header and the columns site, patient_id, subject_id (and optionally
    issuer, for patients whose files carry an Issuer of Patient ID). A subject ID is 1-64
    letters, digits, '.', '_' or '-'; it must be unique, not look like a keyed pseudonym, and
    be given before the patient's first run. Patients not in the file keep keyed pseudonyms.
    Each link is sealed like every other; audited.

    Example: pseudo project import-subjects --project trial subjects.csv
    """
    from keystore.decisions import SubjectRow, import_subjects
    from pseudo.deid.identity import Site, patient_id_key
    from pseudo.deid.tokens import keyed_patient

    rows = [
        SubjectRow(
            number,
            cells["site"],
            cells["patient_id"],
            cells["subject_id"],
            cells.get("issuer", ""),
        )
        for number, cells in read_subjects(file)
    ]
    with VaultSession(vault_path(vault), db) as session:
        registered = session.vault.project(project).sites

        def identity(row: SubjectRow) -> tuple[str, ...]:
            if not row.patient_id:
                raise ValueError("no patient ID")
            if not row.site:
                if len(registered) > 1:
                    raise ValueError("no site, and the project has several")
                entry = registered[0] if registered else None
            else:
                entry = next((s for s in registered if s.name == row.site), None)
                if entry is None:
                    raise ValueError(
                        "the site is not one of the project's (`pseudo project add-site`)"
                    )
            site = Site(entry.name, entry.site_id, entry.namespace) if entry else None
            return patient_id_key(row.patient_id, row.issuer, "", site)

        result = import_subjects(
            session,
            project,
            operator_passphrase(passphrase_file),
            rows,
            identity,
            keyed_patient,
            actor=actor(),
        )
    if as_json:
        emit_json({"project": project, "imported": result.imported, "already": result.already})
        return
    err.print(
        f"Imported {result.imported} subject IDs into project {safe(repr(project))}"
        + (f" ({result.already} imported before)" if result.already else "")
    )
