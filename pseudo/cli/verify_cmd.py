"""``pseudo verify``: residual-PHI check of an output tree against its input."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from keystore.session import VaultSession
from pseudo.batch.project_policy import choose_policy
from pseudo.batch.verify_tree import verify_tree
from pseudo.cli.common import (
    EXIT_ATTENTION,
    DbOption,
    PassphraseFileOption,
    UserError,
    VaultOption,
    emit_json,
    err,
    operator_passphrase,
    out,
    printable,
    recorded_policy,
    vault_path,
)
from pseudo.cli.findings_view import group_findings, group_lines
from pseudo.deid.trial import TrialValues, settings_of
from pseudo.policy import load_policy


def verify_command(
    input_path: Annotated[Path, typer.Argument(metavar="INPUT", help="The original files.")],
    output: Annotated[Path, typer.Argument(metavar="OUTPUT", help="The pseudonymized files.")],
    project: Annotated[
        str | None,
        typer.Option("--project", help="Pair outputs with inputs by this project's keys."),
    ] = None,
    policy: Annotated[
        str | None,
        typer.Option(
            help="The policy OUTPUT was made with \\[default: the project's recorded policy, "
            "else default].",
            show_default=False,
        ),
    ] = None,
    show_values: Annotated[
        bool, typer.Option("--show-values", help="Show the identifying values found.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
    site: Annotated[
        str | None,
        typer.Option("--site", metavar="NAME", help="With --project: the site INPUT came from."),
    ] = None,
    vault: VaultOption = None,
    db: DbOption = None,
    passphrase_file: PassphraseFileOption = None,
) -> None:
    """Search OUTPUT for every identifying value of INPUT; exit 1 on any leak.

    Looks at every attribute at every depth (file meta, private attributes, sequence items,
    structured-report content), the raw bytes and the file names, for names in their usual
    spellings, IDs, addresses, free text, original dates, original UIDs and private values.
    Also flags private attributes the policy does not keep, Burned In Annotation other than NO
    and references that no longer resolve. Values are never shown without --show-values.
    With --project, each output is paired with its input, so dates and references are checked.
    Identical findings are printed once with the number of files and the first few of them;
    --json lists every finding.

    Example: pseudo verify /data/incoming /data/export --project lung-trial
    """
    if project is None:
        compiled = load_policy(policy or "default")
    else:
        compiled, _ = choose_policy(policy, None if policy else recorded_policy(vault, project))
    for path in (input_path, output):
        if not path.exists():
            raise UserError(f"{path}: not found")
    if project is None:
        report = verify_tree(input_path, output, compiled, show_values=show_values)
    else:
        from pseudo.api import run_site

        with VaultSession(vault_path(vault), db) as session:
            chosen = run_site(session, project, site)
            keyring = session.vault.unlock_operator(project, operator_passphrase(passphrase_file))
            settings = settings_of(session.vault.project(project).trial)
            report = verify_tree(
                input_path,
                output,
                compiled,
                keyring,
                session.linkage,
                show_values=show_values,
                site=chosen,
                trial=TrialValues.of(settings, site=chosen),
            )
    if as_json:
        emit_json(report.to_json())
    else:
        for line in group_lines(group_findings(report.findings)):
            out.print(line)
        if report.findings:
            err.print("(paths shortened; --json lists every finding with its whole path)")
        colour = "red" if report.leaks else "green"
        err.print(
            f"[{colour}]{report.leaks} leaks[/], {len(report.findings) - report.leaks} warnings in "
            f"{report.outputs} output files ({report.paired} paired with their input)"
        )
        if report.skipped:
            skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(report.skipped.items()))
            err.print(f"not searched for (too short or too common): {skipped}")
        for note in report.notes:
            err.print(f"note: {printable(note)}", markup=False)
    if report.leaks:
        raise typer.Exit(EXIT_ATTENTION)
