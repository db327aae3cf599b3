"""``pseudo vault`` and ``pseudo project``: create the vault and its projects."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from keystore.session import VaultSession
from keystore.vault import DEFAULT_DATE_SHIFT, Vault
from pseudo.cli.common import (
    DbOption,
    PassphraseFileOption,
    ReidPassphraseFileOption,
    VaultOption,
    actor,
    emit_json,
    err,
    operator_passphrase,
    out,
    reid_passphrase,
    vault_path,
)

vault_app = typer.Typer(help="Create and inspect the key vault.", no_args_is_help=True)
project_app = typer.Typer(help="Projects: one trial or study each.", no_args_is_help=True)


@vault_app.command("init")
def vault_init(vault: VaultOption = None, db: DbOption = None) -> None:
    """Create an empty vault folder (owner-only) with its linkage store and audit log.

    Example: pseudo vault init --vault /secure/pseudo-vault
    """
    path = vault_path(vault)
    Vault.init(path, database_url=db)
    with VaultSession(path) as session:
        session.audit.append("vault.init", actor(), "success", details={"path": str(path)})
        err.print(f"Created vault [bold]{path}[/] (linkage store: {session.engine.url!r})")


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
) -> None:
    """Create a project: a fresh secret, an operator slot and a re-identification slot.

    Different projects give unlinkable pseudonyms for the same patient. The prefix and the
    date-shift range are fixed for the life of the project.

    Example: pseudo project create lung-trial --prefix LT
    """
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
        )
        session.audit.append(
            "project.create",
            actor(),
            "success",
            project=name,
            details={"prefix": project.settings.prefix, "slots": [operator_slot, reid_slot]},
        )
    err.print(
        f"Created project [bold]{name}[/]: pseudonyms {project.settings.prefix}-…, "
        f"date offsets {date_shift_min}..{date_shift_max} days, "
        f"slots {operator_slot!r} (operator) and {reid_slot!r} (re-identification)"
    )


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
                "slots": [{"name": s.name, "role": s.role} for s in project.slots],
                "created": project.created,
            }
        )
    if as_json:
        emit_json(rows)
        return
    table = Table("project", "prefix", "date offsets (days)", "key slots", "created")
    for name in store.project_names():
        project = store.project(name)
        settings = project.settings
        table.add_row(
            name,
            settings.prefix,
            f"{settings.date_shift_min_days}..{settings.date_shift_max_days}",
            ", ".join(f"{s.name} ({s.role})" for s in project.slots),
            project.created,
        )
    out.print(table)
