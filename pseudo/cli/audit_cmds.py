"""``pseudo audit``: show and verify the hash-chained audit log."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from keystore.session import VaultSession
from pseudo.cli.common import EXIT_ATTENTION, DbOption, VaultOption, emit_json, err, out, vault_path

audit_app = typer.Typer(help="Show and verify the audit log.", no_args_is_help=True)


@audit_app.command("verify")
def audit_verify(
    vault: VaultOption = None,
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
) -> None:
    """Check that no audit record was edited, deleted, reordered or truncated.

    Exits 1 if the check fails. Example: pseudo audit verify
    """
    with VaultSession(vault_path(vault), db) as session:
        result = session.audit.verify()
    if as_json:
        emit_json({"ok": result.ok, "records": result.count, "problems": result.problems})
    elif result.ok:
        err.print(f"[green]Audit log intact[/]: {result.count} records, hash chain verified")
    else:
        err.print(f"[red]Audit log FAILED verification[/] ({result.count} records):")
        for problem in result.problems:
            err.print(f"  - {problem}")
    if not result.ok:
        raise typer.Exit(EXIT_ATTENTION)


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
