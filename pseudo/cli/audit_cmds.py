"""``pseudo audit``: show and verify the hash-chained audit log, and print its head."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from keystore.audit import VerifyResult, parse_head
from keystore.session import VaultSession
from keystore.stamps import GENESIS
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
            err.print(f"  - {problem}", markup=False)
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
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
    last: Annotated[int | None, typer.Option(help="Only the last N records.")] = None,
) -> None:
    """Print the audit log (who, when, what, why, outcome).

    Example: pseudo audit show --last 20
    """
    with VaultSession(vault_path(vault), db) as session:
        rows = session.audit.records()
    if last is not None:
        rows = rows[-last:] if last > 0 else []
    records = [
        {
            "seq": r.seq,
            "timestamp": r.timestamp,
            "actor": r.actor,
            "action": r.action,
            "project": r.project,
            "subject": r.subject,
            "reason": r.reason,
            "outcome": r.outcome,
            "details": json.loads(r.details),
            "hash": r.hash,
            "authenticated_by": f"{r.mac_key}/{r.mac_slot}" if r.mac_key else None,
        }
        for r in rows
    ]
    if as_json:
        emit_json(records)
        return
    table = Table("#", "time (UTC)", "actor", "action", "project", "subject", "reason", "outcome")
    for r in records:
        table.add_row(
            str(r["seq"]),
            r["timestamp"],
            r["actor"],
            r["action"],
            r["project"] or "",
            r["subject"] or "",
            r["reason"] or "",
            r["outcome"],
        )
    out.print(table)
