"""``pseudo audit``: show and verify the hash-chained audit log, and print its head."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from keystore.audit import VerifyResult, parse_head
from keystore.session import VaultSession
from keystore.stamps import GENESIS
from pseudo.cli.audit_view import (
    Selection,
    action_option,
    blocks,
    record_dict,
    since_option,
    table,
    to_csv,
    use_table,
)
from pseudo.cli.common import (
    EXIT_ATTENTION,
    DbOption,
    PassphraseFileOption,
    ReidPassphraseFileOption,
    UserError,
    VaultOption,
    actor,
    emit_json,
    err,
    out,
    printable,
    read_passphrase,
    vault_path,
)

audit_app = typer.Typer(help="Show and verify the audit log.", no_args_is_help=True)

ExpectOption = Annotated[
    list[str] | None,
    typer.Option(
        "--expect",
        help="SEQ:HASH of a record kept outside the vault (from `pseudo audit head`); "
        "fail unless the log still holds it unchanged. May be repeated.",
        show_default=False,
    ),
]


def _expected(values: list[str] | None) -> list[tuple[int, str]]:
    try:
        return [parse_head(value) for value in values or []]
    except ValueError as exc:
        raise UserError(f"--expect {exc}") from exc


def _audit_passphrase(
    project: str, passphrase_file: Path | None, reid_passphrase_file: Path | None
) -> str:
    """A passphrase of either role: the files first, then the environment, then a prompt."""
    what = f"project {project!r}"
    if passphrase_file is not None:
        return read_passphrase(passphrase_file, "PSEUDO_PASSPHRASE", what)
    if reid_passphrase_file is not None:
        return read_passphrase(reid_passphrase_file, "PSEUDO_REID_PASSPHRASE", what)
    for variable in ("PSEUDO_PASSPHRASE", "PSEUDO_REID_PASSPHRASE"):
        if os.environ.get(variable):
            return os.environ[variable]
    return read_passphrase(None, "PSEUDO_PASSPHRASE", f"{what} (operator or re-identification)")


def _report(result: VerifyResult, as_json: bool) -> None:
    head = f"{result.head[0]}:{result.head[1]}"
    if as_json:
        emit_json(
            {
                "ok": result.ok,
                "records": result.count,
                "problems": result.problems,
                "head": head,
                "authenticated": result.authenticated,
                "authenticated_through": result.authenticated_through,
                "unchecked_macs": result.unchecked,
                "keys": result.keyed_projects,
            }
        )
        return
    if not result.ok:
        err.print(f"[red]Audit log FAILED verification[/] ({result.count} records):")
        for problem in result.problems:
            err.print(f"  - {printable(problem)}", markup=False)
        return
    err.print(
        f"[green]Audit log intact[/]: {result.count} records, hash chain verified, head {head}"
    )
    if result.keyed_projects:
        err.print(
            f"{result.authenticated} records authenticated by the audit key of "
            f"{', '.join(result.keyed_projects)}, the last being record "
            f"{result.authenticated_through}: no record before it can have been rewritten; "
            "later ones are covered by the hash chain and the witnesses only"
        )
    if result.unchecked:
        err.print(
            f"{result.unchecked} records carry a project's audit MAC that was not checked "
            "(give --project and a passphrase of that project to check them)"
        )


@audit_app.command("verify")
def audit_verify(
    vault: VaultOption = None,
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
    expect: ExpectOption = None,
    project: Annotated[
        list[str] | None,
        typer.Option(
            "--project",
            help="Also check the audit MACs of this project's records (asks for any of its "
            "passphrases, operator or re-identification). May be repeated.",
            show_default=False,
        ),
    ] = None,
    passphrase_file: PassphraseFileOption = None,
    reid_passphrase_file: ReidPassphraseFileOption = None,
) -> None:
    """Check that no audit record was edited, deleted, reordered or truncated.

    Without a key, the hash chain and its witnesses (the database's head row and the vault's
    checkpoint of that database, which must exist) are checked, and each --expect record must
    still be there
    unchanged. With --project, records authenticated by that project's audit key are checked
    too: a forger without a passphrase cannot rewrite anything before such a record.
    Exits 1 if the check fails.

    Example: pseudo audit verify --expect 42:5f0c...e1 --project lung-trial
    """
    expected = _expected(expect)
    with VaultSession(vault_path(vault), db) as session:
        for name in project or []:
            session.vault.audit_key_holder(name)  # before asking for a passphrase
            session.vault.open_audit_key(
                name, _audit_passphrase(name, passphrase_file, reid_passphrase_file)
            )
        result = session.audit.verify(expect=expected)
    _report(result, as_json)
    if not result.ok:
        raise typer.Exit(EXIT_ATTENTION)


@audit_app.command("head")
def audit_head(
    vault: VaultOption = None,
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
) -> None:
    """Print the last record's sequence number and hash as SEQ:HASH, to keep outside the vault.

    Anyone who rewrites the log (even with write access to the database and the vault) cannot
    keep that record unchanged: `pseudo audit verify --expect SEQ:HASH` then fails.

    Example: pseudo audit head >> /mnt/worm/pseudo-audit-heads.txt
    """
    with VaultSession(vault_path(vault), db) as session:
        last = session.audit.last_record()
    seq, digest = (last.seq, last.hash) if last is not None else (0, GENESIS)
    timestamp = last.timestamp if last is not None else None
    if as_json:
        emit_json({"seq": seq, "hash": digest, "timestamp": timestamp})
    else:
        out.print(f"{seq}:{digest}", markup=False)


@audit_app.command("checkpoint")
def audit_checkpoint(
    vault: VaultOption = None,
    db: DbOption = None,
    expect: ExpectOption = None,
) -> None:
    """Re-create the vault's checkpoint of a database after it was lost, once the log checks out.

    The chain is verified (without the missing checkpoint) together with every --expect
    record; only then is the last record written as the new checkpoint, and the repair is
    itself recorded. Exits 1, changing nothing, if the check fails.

    Example: pseudo audit checkpoint --expect 42:5f0c...e1
    """
    expected = _expected(expect)
    with VaultSession(vault_path(vault), db) as session:
        result = session.audit.repair_checkpoint(expected, actor=actor())
    if not result.ok:
        _report(result, False)
        raise typer.Exit(EXIT_ATTENTION)
    err.print(
        f"Checkpoint re-created at record {result.head[0]} (anchored by {len(expected)} --expect)"
    )


@audit_app.command("show")
def audit_show(
    vault: VaultOption = None,
    db: DbOption = None,
    project: Annotated[
        str | None, typer.Option("--project", help="Only the records of this project.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            metavar="DATE",
            help="Only records from this date (2026-12-01) or time (2026-12-01T09:30, UTC) on.",
        ),
    ] = None,
    action: Annotated[
        str | None,
        typer.Option(
            "--action",
            metavar="ACTION",
            help="Only records of this action: reidentify, run, unlock, slot.add, "
            "project.create, ... (the action column).",
        ),
    ] = None,
    who: Annotated[
        str | None,
        typer.Option(
            "--actor",
            metavar="TEXT",
            help="Only records whose actor (requester, user@host) contains TEXT, any case.",
        ),
    ] = None,
    last: Annotated[
        int | None, typer.Option("--last", metavar="N", help="Only the last N records chosen.")
    ] = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV with a header row on stdout.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
) -> None:
    """Print the audit log: who did what, when, why, with which key slot, and the outcome.

    A terminal of 120 columns or more gets a table; a narrower one, or a pipe, gets one block
    per record with one field a line, every value whole (a re-identification shows its
    requester, reason, pseudonym or UID, time, outcome and key slot). --csv and --json give
    every field, for a spreadsheet or a script. The filters combine.

    Example: pseudo audit show --project lung-trial --action reidentify --since 2026-01-01
    """
    if as_csv and as_json:
        raise UserError("--csv and --json: give one of them")
    selection = Selection(project, since_option(since), action_option(action), who, last)
    with VaultSession(vault_path(vault), db) as session:
        rows = session.audit.records()
    records = selection.apply([record_dict(row) for row in rows])
    if as_json:
        emit_json(records)
    elif as_csv:
        sys.stdout.write(to_csv(records))
        sys.stdout.flush()
    elif not records:
        err.print("no audit records match", markup=False)
    elif use_table(out):
        out.print(table(records))
    else:
        for line in blocks(records):
            out.print(line)


@audit_app.command("check-key")
def audit_check_key(
    project: Annotated[str, typer.Option("--project", help="The project to check.")],
    vault: VaultOption = None,
    db: DbOption = None,
    reid_passphrase_file: ReidPassphraseFileOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
) -> None:
    """The re-identifier's (DPO's) routine check of the re-identification key.

    Opens a re-identification slot, checks that the key runs seal to is the one the
    re-identifiers pinned (signed), and opens the newest sealed records. Prints the pin's
    fingerprint (compare it with the one shown when the project was created) and the audit
    head to keep outside the vault. Exits 2 if the key was swapped.

    Example: pseudo audit check-key --project lung-trial
    """
    from keystore.keycheck import check_reid_key
    from pseudo.cli.common import reid_passphrase

    with VaultSession(vault_path(vault), db) as session:
        checked = check_reid_key(session, project, reid_passphrase(reid_passphrase_file))
    head = f"{checked.head[0]}:{checked.head[1]}"
    if as_json:
        emit_json(
            {
                "project": checked.project,
                "reid_pin": checked.pin,
                "public_key": checked.public_key,
                "probed": checked.probed,
                "head": head,
            }
        )
        return
    err.print(
        f"Project {checked.project!r}: the re-identification key is pinned by "
        f"{checked.pin}; the {checked.probed} newest sealed records open with it. "
        "Keep this head outside the vault:",
        markup=False,
    )
    out.print(head, markup=False)
