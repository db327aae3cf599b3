"""``pseudo vault`` and ``pseudo project``: the vault, its projects and their key slots.

Besides creating them: backup and restore, adding, removing and re-wrapping key slots,
rotating a project's re-identification key and closing a project (crypto-shredding). Each
change is recorded in the audit log by :mod:`keystore`.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from keystore import crypto, maintenance
from keystore.db import database_identity
from keystore.session import VaultSession
from keystore.vault import DEFAULT_DATE_SHIFT, Role, Vault
from pseudo.cli.common import (
    EXIT_ATTENTION,
    DbOption,
    NewPassphraseFileOption,
    PassphraseFileOption,
    ReidPassphraseFileOption,
    ScryptNOption,
    UserError,
    VaultOption,
    actor,
    confirm_destruction,
    emit_json,
    err,
    new_passphrase,
    operator_passphrase,
    out,
    printable,
    reid_passphrase,
    safe,
    scrypt_params,
    vault_path,
)
from pseudo.cli.identity_cmds import add_site_command, import_subjects_command

JsonOption = Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")]
SponsorOption = Annotated[
    str | None, typer.Option("--sponsor", help="Trial: Clinical Trial Sponsor Name.")
]
ProtocolIdOption = Annotated[
    str | None, typer.Option("--protocol-id", help="Trial: Clinical Trial Protocol ID.")
]
ProtocolNameOption = Annotated[
    str | None, typer.Option("--protocol-name", help="Trial: Clinical Trial Protocol Name.")
]
EthicsCommitteeOption = Annotated[
    str | None,
    typer.Option("--ethics-committee", help="Trial: the protocol's ethics committee (name)."),
]
EthicsApprovalOption = Annotated[
    str | None,
    typer.Option("--ethics-approval", help="Trial: the ethics committee's approval number."),
]
CoordinatingCenterOption = Annotated[
    str | None,
    typer.Option("--coordinating-center", help="Trial: Clinical Trial Coordinating Center Name."),
]


class RoleChoice(enum.StrEnum):
    """The two kinds of key slot."""

    operator = "operator"
    reidentifier = "reidentifier"


vault_app = typer.Typer(
    help="The key vault: create, back up, restore; re-wrap key slots.", no_args_is_help=True
)
project_app = typer.Typer(
    help="Projects (one trial or study each), their key slots, key rotation and closing.",
    no_args_is_help=True,
)


@vault_app.command("init")
def vault_init(vault: VaultOption = None, db: DbOption = None) -> None:
    """Create an empty vault folder (owner-only) with its linkage store and audit log.

    Example: pseudo vault init --vault /secure/pseudo-vault
    """
    path = vault_path(vault)
    created = Vault.init(path, database_url=db, actor=actor())
    store = database_identity(created.database_url)  # no password
    err.print(f"Created vault [bold]{safe(path)}[/] (linkage store: {safe(store)})")


@project_app.command("create")
def project_create(
    name: Annotated[str, typer.Argument(help="Project name (letters, digits, . _ - @).")],
    vault: VaultOption = None,
    db: DbOption = None,
    prefix: Annotated[
        str | None, typer.Option(help="Pseudonym prefix [default: from the project name].")
    ] = None,
    date_shift_min: Annotated[
        int, typer.Option(help="Smallest date offset in days.")
    ] = DEFAULT_DATE_SHIFT[0],
    date_shift_max: Annotated[
        int, typer.Option(help="Largest date offset in days.")
    ] = DEFAULT_DATE_SHIFT[1],
    operator_slot: Annotated[
        str, typer.Option(help="Name of the first operator key slot.")
    ] = "operator",
    reid_slot: Annotated[
        str, typer.Option(help="Name of the first re-identification key slot.")
    ] = "reidentifier",
    passphrase_file: PassphraseFileOption = None,
    reid_passphrase_file: ReidPassphraseFileOption = None,
    scrypt_n: ScryptNOption = None,
    sponsor: SponsorOption = None,
    protocol_id: ProtocolIdOption = None,
    protocol_name: ProtocolNameOption = None,
    ethics_committee: EthicsCommitteeOption = None,
    ethics_approval: EthicsApprovalOption = None,
    coordinating_center: CoordinatingCenterOption = None,
) -> None:
    """Create a project: a fresh secret, an operator slot and a re-identification slot.

    Different projects give unlinkable pseudonyms for the same patient. The prefix and the
    date-shift range are fixed for the life of the project. The trial settings (--sponsor and
    --protocol-id, optionally the others) are written into every output's clinical trial
    attributes; `pseudo project set-trial` changes them later.

    Example: pseudo project create lung-trial --prefix LT --sponsor ACME --protocol-id LT-01
    """
    given = {
        "sponsor": sponsor,
        "protocol_id": protocol_id,
        "protocol_name": protocol_name,
        "ethics_committee": ethics_committee,
        "ethics_approval": ethics_approval,
        "coordinating_center": coordinating_center,
    }
    trial = _trial_record({k: v for k, v in given.items() if v is not None})
    with VaultSession(vault_path(vault), db) as session:
        operator = operator_passphrase(passphrase_file, confirm=True)
        reid = reid_passphrase(reid_passphrase_file, confirm=True)
        project = session.vault.create_project(
            name,
            operator,
            reid,
            prefix=prefix,
            date_shift_days=(date_shift_min, date_shift_max),
            operator_slot=operator_slot,
            reid_slot=reid_slot,
            kdf=scrypt_params(scrypt_n),
            actor=actor(),
            trial=trial,
        )
    err.print(
        f"Created project [bold]{safe(name)}[/]: pseudonyms {project.settings.prefix}-…, "
        f"date offsets {date_shift_min}..{date_shift_max} days, "
        f"slots {operator_slot!r} (operator) and {reid_slot!r} (re-identification)"
    )
    if project.reid_pin is not None:
        err.print(
            "Re-identification key fingerprint (for the data-protection officer to keep "
            f"outside the vault; `pseudo audit check-key` shows it again): "
            f"{project.reid_pin.fingerprint}",
            markup=False,
        )


def _trial_record(fields: dict[str, str]) -> dict[str, Any] | None:
    """The trial settings a project keeps, checked (None when no field is given)."""
    from pseudo.deid.trial import parse_settings

    return parse_settings(fields).record() if fields else None


@project_app.command("set-trial")
def project_set_trial(
    project: Annotated[str, typer.Option("--project", help="The project.")],
    vault: VaultOption = None,
    db: DbOption = None,
    passphrase_file: PassphraseFileOption = None,
    sponsor: SponsorOption = None,
    protocol_id: ProtocolIdOption = None,
    protocol_name: ProtocolNameOption = None,
    ethics_committee: EthicsCommitteeOption = None,
    ethics_approval: EthicsApprovalOption = None,
    coordinating_center: CoordinatingCenterOption = None,
    clear: Annotated[
        bool, typer.Option("--clear", help="Remove the project's trial settings.")
    ] = False,
) -> None:
    """Set or change the trial settings written into every output of the project.

    The options given replace those fields; the others stay as they are ("" removes an
    optional one). A run's --site and --timepoint add the site and the timepoint. The change
    is recorded in the audit log with the settings before and after. Needs an operator
    passphrase.

    Example: pseudo project set-trial --project lung-trial --sponsor ACME --protocol-id LT-01
    """
    given = {
        "sponsor": sponsor,
        "protocol_id": protocol_id,
        "protocol_name": protocol_name,
        "ethics_committee": ethics_committee,
        "ethics_approval": ethics_approval,
        "coordinating_center": coordinating_center,
    }
    changes = {key: value for key, value in given.items() if value is not None}
    if clear == bool(changes):
        raise UserError("give the trial settings to change, or --clear (not both)")
    with VaultSession(vault_path(vault), db) as session:
        current = session.vault.project(project).trial or {}
        merged = {**current, **changes}
        trial = None if clear else _trial_record({k: v for k, v in merged.items() if v != ""})
        changed = session.vault.set_trial(
            project, operator_passphrase(passphrase_file), trial, actor=actor()
        )
    what = ", ".join(changed) if changed else "nothing (the same settings)"
    err.print(f"Trial settings of project {safe(repr(project))}: changed {what}")


@project_app.command("list")
def project_list(
    vault: VaultOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
) -> None:
    """List the projects of the vault with their prefixes and key slots.

    Example: pseudo project list --json
    """
    store = Vault.open(vault_path(vault))
    rows: list[dict[str, object]] = []
    for name in store.project_names():
        project = store.project(name)
        rows.append(
            {
                "name": name,
                "prefix": project.settings.prefix,
                "date_shift_days": [
                    project.settings.date_shift_min_days,
                    project.settings.date_shift_max_days,
                ],
                "slots": [
                    {"name": s.name, "role": s.role, "kdf": s.params.to_json()}
                    for s in project.slots
                ],
                "created": project.created,
                "closed": project.closed,
                "closed_at": project.closed_at,
                "reid_key": crypto.fingerprint(project.reid_public_key),
                "trial": project.trial,
                "sites": [
                    {"name": s.name, "site_id": s.site_id, "legacy_namespace": not s.namespace}
                    for s in project.sites
                ],
            }
        )
    if as_json:
        emit_json(rows)
        return
    table = Table("project", "prefix", "date offsets (days)", "key slots", "created", "closed")
    for name in store.project_names():
        project = store.project(name)
        settings = project.settings
        table.add_row(
            name,
            settings.prefix,
            f"{settings.date_shift_min_days}..{settings.date_shift_max_days}",
            ", ".join(f"{s.name} ({s.role}, n={s.params.n})" for s in project.slots),
            project.created,
            project.closed_at or ("yes" if project.closed else ""),
        )
    out.print(table)


def _role_passphrase(
    role: Role, passphrase_file: Path | None, reid_passphrase_file: Path | None
) -> str:
    if role == "operator":
        return operator_passphrase(passphrase_file)
    return reid_passphrase(reid_passphrase_file)


def _what(role: Role) -> str:
    return "operator" if role == "operator" else "re-identification"


# -- sites and subject IDs (pseudo.cli.identity_cmds) ----------------------------------------
project_app.command("add-site")(add_site_command)
project_app.command("import-subjects")(import_subjects_command)


# -- key slots ------------------------------------------------------------------------------
@project_app.command("add-slot")
def project_add_slot(
    name: Annotated[str, typer.Argument(help="The project.")],
    slot: Annotated[str, typer.Argument(help="Name of the new slot (e.g. the person's).")],
    role: Annotated[RoleChoice, typer.Option("--role", help="Kind of slot.")],
    vault: VaultOption = None,
    db: DbOption = None,
    scrypt_n: ScryptNOption = None,
    passphrase_file: PassphraseFileOption = None,
    reid_passphrase_file: ReidPassphraseFileOption = None,
    new_passphrase_file: NewPassphraseFileOption = None,
) -> None:
    """Give one more person their own passphrase for a project, without reprocessing anything.

    An existing passphrase of the same role opens the project (only a holder can let someone
    else in); the new passphrase comes from --new-passphrase-file, $PSEUDO_NEW_PASSPHRASE or a
    prompt asked twice.

    Example: pseudo project add-slot lung-trial dpo-bob --role reidentifier
    """
    kind: Role = role.value
    params = scrypt_params(scrypt_n)
    with VaultSession(vault_path(vault), db) as session:
        session.vault.refuse_closed(
            session.vault.project(name), "its key slots can no longer change"
        )
        current = _role_passphrase(kind, passphrase_file, reid_passphrase_file)
        fresh = new_passphrase(new_passphrase_file, _what(kind))
        created = session.vault.add_slot(
            name, kind, slot, fresh, passphrase=current, kdf=params, actor=actor()
        )
    err.print(
        f"Added {_what(kind)} slot [bold]{safe(slot)}[/] to project {safe(repr(name))} "
        f"(scrypt n={created.params.n})"
    )


@project_app.command("remove-slot")
def project_remove_slot(
    name: Annotated[str, typer.Argument(help="The project.")],
    slot: Annotated[str, typer.Argument(help="The slot to remove.")],
    vault: VaultOption = None,
    db: DbOption = None,
    passphrase_file: PassphraseFileOption = None,
    reid_passphrase_file: ReidPassphraseFileOption = None,
) -> None:
    """Remove a person's key slot; the last slot of its kind is never removed.

    Needs a passphrase of a slot of the same kind (the one removed will do). Removing a
    re-identification slot does not revoke a copy of the private key someone already opened:
    rotate the key afterwards (`pseudo project rotate-reid-key`).

    Example: pseudo project remove-slot lung-trial dpo-alice
    """
    with VaultSession(vault_path(vault), db) as session:
        role = session.vault.project(name).slot(slot).role
        session.vault.remove_slot(
            name,
            slot,
            passphrase=_role_passphrase(role, passphrase_file, reid_passphrase_file),
            actor=actor(),
        )
    err.print(f"Removed {_what(role)} slot [bold]{safe(slot)}[/] from project {safe(repr(name))}")


@vault_app.command("rewrap-slot")
def vault_rewrap_slot(
    name: Annotated[str, typer.Argument(help="The project.")],
    slot: Annotated[str, typer.Argument(help="The slot to re-wrap.")],
    vault: VaultOption = None,
    db: DbOption = None,
    scrypt_n: ScryptNOption = None,
    change_passphrase: Annotated[
        bool, typer.Option("--change-passphrase", help="Also give the slot a new passphrase.")
    ] = False,
    passphrase_file: PassphraseFileOption = None,
    reid_passphrase_file: ReidPassphraseFileOption = None,
    new_passphrase_file: NewPassphraseFileOption = None,
) -> None:
    """Re-wrap a key slot with a new scrypt cost (and optionally a new passphrase).

    The slot's own passphrase is needed. The keys inside do not change, so no record, image or
    other slot does. Raise the cost when `pseudo vault kdf-time` shows guesses got cheaper.

    Example: pseudo vault rewrap-slot lung-trial operator --scrypt-n 131072
    """
    store = Vault.open(vault_path(vault))
    old = store.project(name).slot(slot)
    params = scrypt_params(scrypt_n) or crypto.ScryptParams()
    with VaultSession(vault_path(vault), db) as session:
        current = _role_passphrase(old.role, passphrase_file, reid_passphrase_file)
        fresh = new_passphrase(new_passphrase_file, _what(old.role)) if change_passphrase else None
        session.vault.rewrap_slot(
            name, slot, current, kdf=params, new_passphrase=fresh, actor=actor()
        )
    err.print(
        f"Re-wrapped slot [bold]{safe(slot)}[/] of project {safe(repr(name))}: "
        f"scrypt n={old.params.n} -> "
        f"n={params.n}" + (", new passphrase" if fresh else "")
    )


@vault_app.command("kdf-time")
def vault_kdf_time(
    scrypt_n: ScryptNOption = None,
    as_json: JsonOption = False,
) -> None:
    """Measure what one passphrase guess costs on this machine with a scrypt cost.

    Example: pseudo vault kdf-time --scrypt-n 131072
    """
    params = scrypt_params(scrypt_n) or crypto.ScryptParams()
    seconds = crypto.time_kdf(params)
    if as_json:
        emit_json({**params.to_json(), "seconds": round(seconds, 4)})
        return
    out.print(
        f"scrypt n={params.n} r={params.r} p={params.p}: {seconds:.3f} s per guess, "
        f"{128 * params.r * params.n // 2**20} MiB"
    )


# -- rotation and closing -------------------------------------------------------------------
@project_app.command("rotate-reid-key")
def project_rotate_reid_key(
    name: Annotated[str, typer.Argument(help="The project.")],
    vault: VaultOption = None,
    db: DbOption = None,
    passphrase_file: PassphraseFileOption = None,
    reid_passphrase_file: ReidPassphraseFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Give the project a new re-identification key pair and re-seal every linkage record.

    All records are re-sealed in one database transaction (a crash leaves the old state);
    every re-identification slot gets the new key without its holder's passphrase. Needs an
    operator passphrase (it authenticates the new public key) and a re-identification one.
    Runs that opened the project before the rotation are refused at their next commit.

    Example: pseudo project rotate-reid-key lung-trial
    """
    with VaultSession(vault_path(vault), db) as session:
        session.vault.refuse_closed(session.vault.project(name), "its key can no longer be rotated")
        operator = operator_passphrase(passphrase_file)
        reid = reid_passphrase(reid_passphrase_file)
        rotation = maintenance.rotate_reid_key(session, name, operator, reid, actor=actor())
    if as_json:
        emit_json(
            {
                "project": rotation.project,
                "records": rotation.records,
                "slots": rotation.slots,
                "old_key": rotation.old_key,
                "new_key": rotation.new_key,
            }
        )
        return
    err.print(
        f"Rotated the re-identification key of project {name!r} "
        f"({rotation.old_key} -> {rotation.new_key}): {rotation.records} linkage records "
        f"re-sealed, slots {', '.join(rotation.slots)} re-wrapped"
    )


@project_app.command("close")
def project_close(
    name: Annotated[str, typer.Argument(help="The project.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    keep_operator_keys: Annotated[
        bool,
        typer.Option(
            "--keep-operator-keys",
            help="Keep the operator slots (the project secret and audit key): operators can "
            "still check the project's audit MACs (`audit verify --project`), but can also "
            "still compute the pseudonym of a patient they know. No operator passphrase needed.",
        ),
    ] = False,
    destroy_secret: Annotated[
        bool,
        typer.Option(
            "--destroy-secret", hidden=True, help="The default; accepted for older scripts."
        ),
    ] = False,
    vault: VaultOption = None,
    db: DbOption = None,
    passphrase_file: PassphraseFileOption = None,
    reid_passphrase_file: ReidPassphraseFileOption = None,
) -> None:
    """Close a project for good: destroy all of its keys (crypto-shredding).

    Every re-identification slot is removed, so nobody can open the sealed linkage records,
    and every operator slot, so nobody can compute a pseudonym of the project again (not even
    of a patient they know); the project takes no more data (`pseudo run` refuses it). The
    audit key goes too: take `pseudo audit verify --project` and `pseudo audit head` first.
    Needs a re-identification and an operator passphrase and a confirmation (type the project
    name, or --yes); --keep-operator-keys keeps the operator slots (closing again later without
    it destroys them, with an operator passphrase). Backups made before the close still hold
    the keys: destroy them too.

    Example: pseudo project close lung-trial --yes
    """
    if destroy_secret and keep_operator_keys:
        raise UserError("--destroy-secret and --keep-operator-keys: give one of them")
    with VaultSession(vault_path(vault), db) as session:
        project = session.vault.project(name)
        # a project closed with --keep-operator-keys can be closed for good later
        finishing = project.closed and bool(project.slots) and not keep_operator_keys
        if not finishing:
            session.vault.refuse_closed(project, "there is nothing left to close")
        what = "re-identification key" if keep_operator_keys else "keys and project secret"
        confirm_destruction(name, f"closing project {name!r} (destroying its {what})", yes)
        reid = None if finishing else reid_passphrase(reid_passphrase_file)
        operator = None if keep_operator_keys else operator_passphrase(passphrase_file)
        closure = maintenance.close_project(
            session,
            name,
            reid,
            operator_passphrase=operator,
            keep_operator_keys=keep_operator_keys,
            actor=actor(),
        )
        seq, digest = session.audit.head()
    err.print(
        f"Closed project [bold]{safe(name)}[/]: "
        f"destroyed slots {safe(', '.join(closure.destroyed_slots))}; "
        f"its {closure.records} linkage records can no longer be opened"
        + (
            "; nobody can compute its pseudonyms any more"
            if closure.secret_destroyed
            else "; its operators can still compute pseudonyms"
        )
    )
    if closure.secret_destroyed:
        err.print(
            f"Its audit MACs can no longer be checked: keep the audit head {seq}:{digest} "
            "outside the vault (`pseudo audit verify --expect` checks it)",
            markup=False,
        )


# -- backup and restore ---------------------------------------------------------------------
@vault_app.command("backup")
def vault_backup(
    dest: Annotated[Path, typer.Argument(help="A new (or empty) folder for the backup.")],
    vault: VaultOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Copy the vault consistently: project files, checkpoint and the SQLite database.

    The database is copied with SQLite's online backup API, so runs may go on meanwhile. The
    folder and files are owner-only; backup.json lists every file's SHA-256 and the audit head.
    A PostgreSQL linkage store is not copied: back it up with pg_dump.

    Example: pseudo vault backup /secure/backups/pseudo-2024-06-01
    """
    with VaultSession(vault_path(vault), db) as session:
        if db is not None and session.vault.uses_own_sqlite:
            raise UserError("--db: a backup copies the vault's own database; omit --db")
        manifest = maintenance.backup(session, dest, actor=actor())
    if as_json:
        emit_json(manifest.to_json())
        return
    err.print(
        f"Backed up {safe(vault_path(vault))} to [bold]{safe(dest)}[/]: "
        f"{len(manifest.files)} files, "
        f"audit head {manifest.audit_head}"
    )
    if manifest.database == "external":
        err.print(
            "[yellow]note[/]: the linkage store is not in the vault folder and is not in this "
            "backup: back it up with pg_dump (see docs/operations.md)"
        )


@vault_app.command("restore")
def vault_restore(
    backup: Annotated[Path, typer.Argument(help="A folder made by `pseudo vault backup`.")],
    vault: VaultOption = None,
    as_json: JsonOption = False,
) -> None:
    """Restore a backup into a new vault folder and verify its audit log.

    Every file's SHA-256 is checked against backup.json, and the restored audit log must
    still contain the record the backup was taken at. Exits 1 if the verification fails.

    Example: pseudo vault restore /secure/backups/pseudo-2024-06-01 --vault /secure/pseudo-vault
    """
    dest = vault_path(vault)
    restoration = maintenance.restore(backup, dest, actor=actor())
    manifest, result = restoration.manifest, restoration.verified
    if as_json:
        emit_json({"vault": str(dest), "ok": result.ok, "problems": result.problems})
    elif result.ok:
        err.print(
            f"Restored [bold]{safe(dest)}[/] from {safe(backup)}: "
            "audit log intact up to and beyond "
            f"record {manifest.audit_head.split(':')[0]}"
        )
    else:
        err.print(f"[red]Restored {safe(dest)}, but its audit log FAILED verification[/]:")
        for problem in result.problems:
            err.print(f"  - {printable(problem)}", markup=False)
    if not result.ok:
        raise typer.Exit(EXIT_ATTENTION)
