"""``pseudo fetch``: pull studies from a PACS by accession number, and pseudonymize them."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pseudo.cli.common import (
    EXIT_ATTENTION,
    ChangePolicyOption,
    DbOption,
    PassphraseFileOption,
    PixelsOption,
    ProjectPolicyOption,
    UserError,
    VaultOption,
    actor,
    emit_json,
    err,
    operator_passphrase,
    pixels_setting,
    print_fields,
    printable,
    recorded_policy,
    say_interrupted,
    vault_path,
)
from pseudo.serve.peer import AE_TITLE_MAX, Peer, PeerError, parse_peer

if TYPE_CHECKING:
    from pseudo.batch.report import RunSummary
    from pseudo.serve.fetch import FetchSummary, LineResult


def fetch_command(
    project: Annotated[str, typer.Option("--project", help="Project whose keys to use.")],
    source: Annotated[
        str,
        typer.Option(
            "--from", metavar="HOST:PORT:AET", help="The PACS to pull from (C-FIND, C-GET)."
        ),
    ],
    accession_list: Annotated[
        Path,
        typer.Option(
            "--accession-list",
            metavar="FILE",
            help="Accession numbers, one a line (blank lines and # comments ignored).",
        ),
    ],
    output: Annotated[Path, typer.Option("--output", metavar="DIR", help="Output folder.")],
    ae_title: Annotated[
        str, typer.Option("--ae-title", help="Our calling AE title (the PACS must know it).")
    ] = "PSEUDO",
    move_to: Annotated[
        str | None,
        typer.Option(
            "--move-to",
            metavar="HOST:PORT:AET",
            help="Retrieve by C-MOVE instead of C-GET: a temporary storage SCP of ours listens "
            "at HOST:PORT while the fetch runs, and the PACS must know it as AET.",
            show_default=False,
        ),
    ] = None,
    policy: ProjectPolicyOption = None,
    change_policy: ChangePolicyOption = False,
    pixels: PixelsOption = None,
    allow_mixed_output: Annotated[
        bool,
        typer.Option(
            "--allow-mixed-output",
            help="Write into an output that holds another project's pseudonyms.",
        ),
    ] = False,
    workers: Annotated[
        int, typer.Option(help="Worker processes [default: all cores].", show_default=False)
    ] = 0,
    report_dir: Annotated[
        Path | None,
        typer.Option(help="Where run reports go [default: DIR.pseudo-run/].", show_default=False),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or summary.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the counts, per line of the list, as JSON.")
    ] = False,
    vault: VaultOption = None,
    db: DbOption = None,
    passphrase_file: PassphraseFileOption = None,
) -> None:
    """Pull the studies of an accession list from a PACS and pseudonymize them into DIR.

    Each accession number is looked up by C-FIND; its studies' instances are retrieved by
    C-GET (or C-MOVE with --move-to) into a private staging folder in the vault, pseudonymized
    exactly as `pseudo run` would do it (same outputs, journal, report and audit records), then
    deleted from the staging folder. Lines are named by their number, never by their value.
    Running the same command again fetches only what is not in DIR yet. Exits 1 if an
    accession number was not found, an instance did not arrive or was quarantined.

    Example: pseudo fetch --project lung-trial --from pacs.example.org:104:PACS
    --accession-list accessions.txt --output /data/export
    """
    from keystore.session import VaultSession
    from pseudo.batch.project_policy import choose_policy
    from pseudo.batch.report import inputs_folder
    from pseudo.cli.run_cmd import RunProgress
    from pseudo.serve.fetch import Fetcher, Source
    from pseudo.serve.fetch_list import read_accession_list

    fetch_source = Source(
        _peer("--from", source),
        _ae_title(ae_title),
        _peer("--move-to", move_to) if move_to is not None else None,
    )
    accessions = read_accession_list(accession_list)
    if not accessions:
        raise UserError(f"{accession_list}: holds no accession number")
    recorded = None if policy is not None else recorded_policy(vault, project)
    compiled, record = choose_policy(policy, recorded, pixels_setting(pixels))
    reports = report_dir or output.parent / f"{output.name}.pseudo-run"
    with VaultSession(vault_path(vault), db) as session:
        keyring, policy_check = session.vault.unlock_for_run(
            project,
            operator_passphrase(passphrase_file),
            record,
            change_policy=change_policy,
            actor=actor(),
        )
        progress = RunProgress(enabled=not quiet and sys.stderr.isatty())
        fetcher = Fetcher(
            keyring,
            compiled,
            session.linkage,
            fetch_source,
            session.vault.path / "fetch" / project,
            output,
            on_outcome=progress.outcome,
            audit=session.audit,
            actor=actor(),
            workers=workers or os.cpu_count() or 1,
            on_plan=progress.plan,
            allow_mixed_output=allow_mixed_output,
            policy_change=policy_check.to_json(),
            inputs_folder=inputs_folder(session.vault.path, project),
        )
        interrupted = False
        previous = signal.signal(signal.SIGTERM, _terminate)
        try:
            with progress:
                fetcher.run(accessions)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            signal.signal(signal.SIGTERM, previous)
            runner = fetcher.runner
            report = _write_report(runner.summary, reports) if runner is not None else None
            if runner is not None and runner.audit_error is not None:
                err.print(
                    f"pseudo: warning: the run's audit record could not be written "
                    f"({runner.audit_error})"
                )
    summary = fetcher.summary
    if as_json:
        emit_json(_json(summary, report))
    if not quiet:
        _print_summary(summary, report)
    if interrupted:
        say_interrupted("pseudo: interrupted; run the same command again to finish")
        raise typer.Exit(130)
    run = summary.run
    if summary.needs_attention or (run is not None and (run.count("quarantined") or run.leaks)):
        raise typer.Exit(EXIT_ATTENTION)


def _peer(option: str, text: str) -> Peer:
    try:
        return parse_peer(text)
    except PeerError as exc:
        raise UserError(f"{option} {exc}") from exc


def _ae_title(text: str) -> str:
    if not 0 < len(text) <= AE_TITLE_MAX or "\\" in text or not text.isprintable():
        raise UserError(
            f"--ae-title {text!r}: 1 to {AE_TITLE_MAX} printable characters, no backslash"
        )
    return text


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM stops a fetch as Ctrl-C does: what is done is committed, the rest is left."""
    raise KeyboardInterrupt


def _write_report(summary: RunSummary, reports: Path) -> Path | None:
    """Write the run report; when the disk fails, say so in one line and go on."""
    from pseudo.batch.report import write_report

    try:
        return write_report(summary, reports)
    except OSError as exc:
        err.print(f"pseudo: warning: cannot write the run report in {reports} ({exc.strerror})")
        return None


def _line_text(result: LineResult) -> str:
    """What a fetch did for one line of the list, without its accession number."""
    if result.problem and not result.instances:
        return f"line {result.line}: {result.problem}"
    parts = [
        f"{result.studies} {'study' if result.studies == 1 else 'studies'}, "
        f"{result.instances} {'instance' if result.instances == 1 else 'instances'} found",
        f"{result.fetched} fetched",
    ]
    if result.already:
        parts.append(f"{result.already} already in the output")
    if result.missing:
        parts.append(f"{result.missing} did not arrive")
    parts.append(f"{result.written} written")
    if result.quarantined:
        parts.append(f"{result.quarantined} quarantined")
    return f"line {result.line}: " + "; ".join(parts)


def _print_summary(summary: FetchSummary, report: Path | None) -> None:
    """One line per accession line, then the run's counts and where its report is."""
    for result in summary.lines:
        colour = "yellow" if result.needs_attention else ""
        err.print(printable(_line_text(result)), style=colour or None, markup=False)
    run = summary.run
    if run is not None:
        counts = run.counts
        keys = ["files", "written", "unchanged", "quarantined", "patients", "studies", "findings"]
        print_fields(err, "pseudo fetch", [(key, str(counts[key])) for key in keys])
    if summary.kept:
        err.print(
            f"{summary.kept} fetched files were not written (see the run report); they stay "
            "in the vault's staging folder until a fetch writes them",
            markup=False,
        )
    if report is not None:
        err.print(f"Run report: {printable(report)}", markup=False)


def _json(summary: FetchSummary, report: Path | None) -> dict[str, object]:
    run = summary.run
    return {
        "run_id": run.run_id if run is not None else None,
        "report": str(report) if report is not None else None,
        "fetched": summary.fetched,
        "kept_in_staging": summary.kept,
        **(run.counts if run is not None else {}),
        "lines": [line.to_json() for line in summary.lines],
    }
