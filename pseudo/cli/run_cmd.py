"""``pseudo run``: pseudonymize a file or a folder tree."""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from keystore.errors import KeystoreError
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
    given_operator_passphrase,
    operator_passphrase,
    out,
    pixels_setting,
    print_fields,
    printable,
    recorded_policy,
    say_interrupted,
    vault_path,
)
from pseudo.errors import PseudoError

if TYPE_CHECKING:
    from pseudo.batch.report import RunSummary
    from pseudo.deid.identity import Site
    from pseudo.deid.trial import TrialValues
    from pseudo.pipeline.outcome import FileOutcome
    from pseudo.policy import CompiledPolicy


def run_command(
    input_path: Annotated[
        Path, typer.Argument(metavar="INPUT", help="A DICOM file or a folder tree.")
    ],
    project: Annotated[str, typer.Option("--project", help="Project whose keys to use.")],
    output: Annotated[
        Path | None,
        typer.Argument(
            metavar="OUTPUT", help="Output folder (not inside INPUT); not used with --dry-run."
        ),
    ] = None,
    policy: ProjectPolicyOption = None,
    change_policy: ChangePolicyOption = False,
    pixels: PixelsOption = None,
    allow_mixed_output: Annotated[
        bool,
        typer.Option(
            "--allow-mixed-output",
            help="Write into an OUTPUT that holds another project's pseudonyms.",
        ),
    ] = False,
    workers: Annotated[
        int, typer.Option(help="Worker processes [default: all cores].", show_default=False)
    ] = 0,
    report_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where run reports go [default: OUTPUT.pseudo-run/].", show_default=False
        ),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the run counts as JSON on stdout.")
    ] = False,
    no_verify: Annotated[
        bool,
        typer.Option("--no-verify", help="Do not check the written files for residual PHI."),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Show what would change, per attribute; write nothing."),
    ] = False,
    scheduler: Annotated[
        str | None,
        typer.Option(
            "--scheduler",
            metavar="ADDRESS",
            help="Run the workers on a Dask cluster (tcp://host:8786); "
            "INPUT and OUTPUT must be on a filesystem every worker sees at the same path.",
        ),
    ] = None,
    dask: Annotated[
        str | None,
        typer.Option(
            "--dask", metavar="local:N", help="Run the workers on a local Dask cluster of N."
        ),
    ] = None,
    show_inputs: Annotated[
        bool,
        typer.Option(
            "--show-inputs", help="Name skipped and quarantined files by their path (may identify)."
        ),
    ] = False,
    timepoint: Annotated[
        str | None,
        typer.Option(
            "--timepoint",
            metavar="ID",
            help="The batch's timepoint: written as Clinical Trial Time Point ID in every output.",
        ),
    ] = None,
    timepoint_description: Annotated[
        str | None,
        typer.Option(
            "--timepoint-description",
            metavar="TEXT",
            help="Written as Clinical Trial Time Point Description (with --timepoint).",
        ),
    ] = None,
    site: Annotated[
        str | None,
        typer.Option(
            "--site",
            metavar="NAME",
            help="The site these files come from (`pseudo project add-site`): the issuer of "
            "their patient IDs when a file names none [required when the project has several].",
            show_default=False,
        ),
    ] = None,
    vault: VaultOption = None,
    db: DbOption = None,
    passphrase_file: PassphraseFileOption = None,
) -> None:
    """Pseudonymize INPUT into OUTPUT/<pseudonym>/<study>/<series>/<instance>.dcm.

    The policy is checked before any file is read. Input is never modified; each output file
    is written atomically after its sealed linkage records are committed. Files that are not
    DICOM are skipped; files that cannot be processed completely are quarantined (listed with
    a reason in the run report, never written). Re-running skips files already done.
    Exits 1 if any file was quarantined. With --dry-run, every file is pseudonymized in memory
    and the changes are counted per attribute; nothing is written or recorded. A project with
    trial settings (`pseudo project set-trial`) and --timepoint fill the clinical trial
    attributes of every output (Subject ID: the pseudonym).

    Example: pseudo run /data/incoming /data/export --project lung-trial
    """
    _unlock_soon(vault, project, passphrase_file)  # while the modules below load
    from keystore.session import VaultSession
    from pseudo.api import run_site
    from pseudo.batch.discovery import check_paths
    from pseudo.batch.project_policy import choose_policy
    from pseudo.batch.report import inputs_folder
    from pseudo.batch.runner import Runner

    recorded = None if policy is not None else recorded_policy(vault, project)
    compiled, record = choose_policy(policy, recorded, pixels_setting(pixels))
    timepoints = _Timepoint(timepoint, timepoint_description)
    timepoints.values(None)  # refused before anything is unlocked or recorded
    if dry_run:
        _dry_run(
            input_path,
            project,
            compiled,
            vault,
            db,
            passphrase_file,
            as_json,
            not no_verify,
            site,
            timepoints,
        )
        return
    if output is None:
        raise UserError("OUTPUT is required (or use --dry-run)")
    check_paths(input_path, output)
    if scheduler and dask:
        raise UserError("--scheduler and --dask: give one of them")
    if dask is not None and not dask.startswith("local:"):
        raise UserError(f"--dask {dask}: expected local:N (for a remote cluster: --scheduler)")
    reports = report_dir or output.parent / f"{output.name}.pseudo-run"
    with VaultSession(vault_path(vault), db) as session:
        chosen_site = run_site(session, project, site)  # refused before anything is recorded
        keyring, policy_check = session.vault.unlock_for_run(
            project,
            operator_passphrase(passphrase_file),
            record,
            change_policy=change_policy,
            actor=actor(),
        )
        trial = timepoints.values(session.vault.project(project).trial, chosen_site)
        progress = RunProgress(enabled=not quiet and sys.stderr.isatty())
        runner = Runner(
            keyring,
            compiled,
            session.linkage,
            input_path,
            output,
            workers=workers or os.cpu_count() or 1,
            on_outcome=progress.outcome,
            check=not no_verify,
            on_plan=progress.plan,
            scheduler=scheduler or dask,
            audit=session.audit,
            actor=actor(),
            allow_mixed_output=allow_mixed_output,
            policy_change=policy_check.to_json(),
            inputs_folder=inputs_folder(session.vault.path, project),
            site=chosen_site,
            trial=trial,
        )
        interrupted = False
        previous = signal.signal(signal.SIGTERM, _terminate)
        # What is loaded by now lives as long as the run: the garbage collector need not go
        # through it again at each full collection (nor touch it in forked workers).
        gc.freeze()
        try:
            with progress:
                runner.run()
        except KeyboardInterrupt:
            interrupted = True
        finally:
            gc.unfreeze()
            signal.signal(signal.SIGTERM, previous)
            summary = runner.summary
            report = _write_report(summary, reports)
            if runner.audit_error is not None:
                err.print(
                    f"pseudo: warning: the run's audit record could not be written "
                    f"({runner.audit_error})"
                )
    if as_json:
        emit_json({"run_id": summary.run_id, "report": str(report), **summary.counts})
    if not quiet:
        _print_summary(summary, report, show_inputs)
    if interrupted:
        say_interrupted(
            "pseudo: interrupted; run the same command again to finish (nothing is lost)"
        )
        raise typer.Exit(130)
    if summary.count("quarantined") or summary.leaks:
        raise typer.Exit(EXIT_ATTENTION)


@dataclass(frozen=True)
class _Timepoint:
    """A run's --timepoint and --timepoint-description."""

    id: str | None
    description: str | None

    def values(
        self, settings: dict[str, Any] | None, site: Site | None = None
    ) -> TrialValues | None:
        """The clinical trial values of the run: the project's trial ``settings`` (as its file
        keeps them, read after the unlock checked them), the run's ``site`` and this timepoint;
        :class:`~pseudo.deid.trial.TrialSettingsError` if one cannot be written."""
        from pseudo.deid.trial import TrialValues, settings_of

        return TrialValues.of(
            settings_of(settings),
            site=site,
            timepoint_id=self.id,
            timepoint_description=self.description,
        )


def _unlock_soon(vault: Path | None, project: str, passphrase_file: Path | None) -> None:
    """Start deriving the project's operator keys (scrypt, outside the interpreter lock) while
    the command loads pydicom and the database layers, when the passphrase is given without
    asking. Any problem is left to the unlock itself, to report where it always does."""
    passphrase = given_operator_passphrase(passphrase_file)
    if passphrase is None:
        return
    from keystore.vault import Vault

    with contextlib.suppress(KeystoreError, PseudoError, OSError):
        Vault.open(vault_path(vault)).unlock_operator_soon(project, passphrase)


def _write_report(summary: RunSummary, reports: Path) -> Path:
    """Write the run report. When the run failed because the disk did, this may fail too:
    say so in one line, do not hide the first error."""
    from pseudo.batch.report import write_report

    report = reports / f"run-{summary.run_id}.json"
    try:
        report = write_report(summary, reports)
    except OSError as exc:
        err.print(f"pseudo: warning: cannot write the run report in {reports} ({exc.strerror})")
    return report


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM stops a run as Ctrl-C does: what is done is committed, the rest is left."""
    raise KeyboardInterrupt


class RunProgress:
    """A rich progress bar: files, MB/s, patients, outcomes and time left (terminals only)."""

    def __init__(self, enabled: bool) -> None:
        self.progress = Progress(
            TextColumn("[bold]pseudonymizing"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[detail]}"),
            TimeRemainingColumn(),
            console=err,
            disable=not enabled,
        )
        self.task = self.progress.add_task("run", total=None, rate="", detail="")
        self.counts: dict[str, int] = {}
        self.patients: set[str] = set()
        self.bytes = 0
        self.started = time.monotonic()

    def plan(self, files: int) -> None:
        """The run knows how many files it has."""
        self.progress.update(self.task, total=files)
        self.started = time.monotonic()

    def outcome(self, outcome: FileOutcome) -> None:
        """One more file done."""
        if self.progress.disable:
            return  # no bar: nothing to count or format
        self.counts[outcome.status] = self.counts.get(outcome.status, 0) + 1
        self.bytes += outcome.size
        if outcome.output:
            self.patients.add(outcome.output.split("/", 1)[0])
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = f"{self.bytes / elapsed / 1e6:.1f} MB/s, {len(self.patients)} patients"
        detail = ", ".join(f"{v} {k}" for k, v in self.counts.items() if v)
        self.progress.update(self.task, advance=1, rate=rate, detail=detail)

    def __enter__(self) -> RunProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)


def _dry_run(
    source: Path,
    project: str,
    policy: CompiledPolicy,
    vault: Path | None,
    db: str | None,
    passphrase_file: Path | None,
    as_json: bool,
    check: bool,
    site: str | None,
    timepoint: _Timepoint,
) -> None:
    from keystore.session import VaultSession
    from pseudo.api import run_site
    from pseudo.review import dryrun

    if not source.exists():
        raise UserError(f"{source}: input not found")
    with VaultSession(vault_path(vault), db) as session:
        chosen = run_site(session, project, site)  # refused as a run is
        keyring = session.vault.unlock_operator(project, operator_passphrase(passphrase_file))
        trial = timepoint.values(session.vault.project(project).trial, chosen)
        result = dryrun.dry_run(keyring, policy, session.linkage, source, check=check, trial=trial)
    if as_json:
        emit_json(result.to_json())
        return
    table = Table(
        "attribute", "change", "count", title=f"dry run of policy {policy.name}: nothing written"
    )
    for (path, kind), count in sorted(result.changes.items()):
        if kind != "kept":
            table.add_row(path, kind, str(count))
    out.print(table)
    kept = sum(c for (_, kind), c in result.changes.items() if kind == "kept")
    out.print(f"files: {result.files}; {kept} attribute values kept as they are")
    for path, reason in result.quarantined:
        err.print(
            Text.assemble(("would quarantine", "red"), f" {printable(path)}: {printable(reason)}")
        )


def _print_summary(summary: RunSummary, report: Path, show_inputs: bool) -> None:
    """What a person reads after a run: the counts, the skipped and quarantined files, the
    verification findings grouped by kind, and where the run report is."""
    counts = summary.counts
    keys = ["files", "written", "unchanged", "skipped", "quarantined"]
    keys += ["patients", "studies", "series", "findings"]
    fields = [(key, str(counts[key])) for key in keys]
    pixels = summary.pixels
    if pixels["protection"] == "off":
        fields.append(("pixels", "off: not examined for burned-in text"))
    else:
        fields.append(
            (
                "pixels",
                f"{pixels['images_redacted']} of {pixels['images_examined']} images redacted "
                f"({pixels['by_rule']} by rule, {pixels['by_detection']} by detection)",
            )
        )
    print_fields(err, "pseudo run", fields)
    listed = False
    for outcome in summary.outcomes:
        if outcome.status in ("quarantined", "skipped"):
            colour = "red" if outcome.status == "quarantined" else "yellow"
            name = outcome.input if show_inputs else f"input {outcome.input_id}"
            err.print(
                Text.assemble(
                    (outcome.status, colour), f" {printable(name)}: {printable(outcome.reason)}"
                )
            )
            listed = True
    _print_findings(summary)
    err.print(f"Run report: {printable(report)}", markup=False)
    _print_policy_change(summary)
    if listed and not show_inputs:
        inputs = summary.inputs_path(report.parent)
        err.print(
            "Input paths by id (they may name patients; --show-inputs prints them): "
            f"{printable(inputs)}",
            markup=False,
        )


def _print_policy_change(summary: RunSummary) -> None:
    """Say when this run recorded the project's policy, or changed it (and in what)."""
    change = summary.policy_change
    if not change:
        return
    if change.get("recorded"):
        err.print(f"The project now records policy {printable(summary.policy.name)}.", markup=False)
    elif change.get("changed"):
        previous = (change.get("previous") or {}).get("name")
        err.print(
            f"The project's policy changed from {printable(previous)} to "
            f"{printable(summary.policy.name)} ({printable(', '.join(change['changed']))}); "
            "the change is in the audit log.",
            markup=False,
        )


def _print_findings(summary: RunSummary) -> None:
    """The verification findings of the files released (those of quarantined files are their
    reason, above) and of the references between files, identical ones once with a count."""
    from pseudo.cli.findings_view import group_findings, group_lines

    findings = [
        finding
        for outcome in summary.outcomes
        if outcome.status != "quarantined"
        for finding in outcome.verification
    ]
    findings += summary.reference_findings
    if not findings:
        return
    leaks = sum(1 for finding in findings if finding.severity == "leak")
    err.print(f"verification: {leaks} leaks, {len(findings) - leaks} warnings", markup=False)
    for line in group_lines(group_findings(findings)):
        err.print(line)
