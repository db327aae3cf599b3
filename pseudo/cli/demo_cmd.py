"""``pseudo demo``: the whole job on a synthetic cohort, one real command at a time."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import pydicom
import typer
from rich.rule import Rule
from rich.table import Table

from pseudo.batch.report import load_report
from pseudo.cli.common import UserError, err, out
from pseudo.demo import build_cohort, burned_in_image

MARKER = ".pseudo-demo"
OPERATOR_PASSPHRASE = "demo operator passphrase"
REID_PASSPHRASE = "demo re-identification passphrase"
SHOWN = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "StudyDate",
    "AccessionNumber",
    "StudyDescription",
    "StudyInstanceUID",
    "InstitutionName",
)


def _prepare(folder: Path) -> None:
    if folder.exists():
        if not (folder / MARKER).exists() and any(folder.iterdir()):
            raise UserError(f"{folder}: exists and is not a demo folder; choose another --dir")
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / MARKER).write_text("made by pseudo demo; safe to delete\n")


def _pseudo(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run one real ``pseudo`` command, echoing it as a user would type it."""
    out.print(f"[bold cyan]$ pseudo {shlex.join(args)}[/]")
    result = subprocess.run(
        [sys.executable, "-m", "pseudo", *args],
        env=env,
        text=True,
        capture_output=True,
        check=False,
    )
    if result.stderr.strip():
        out.print(result.stderr.rstrip(), markup=False, highlight=False)
    if result.returncode not in (0,):
        raise UserError(f"demo step failed: pseudo {args[0]} exited {result.returncode}")
    return result


def _values(path: Path) -> dict[str, str]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return {k: str(ds.get(k, "(removed)")) for k in SHOWN}


def demo_command(
    folder: Annotated[Path, typer.Option("--dir", help="Demo folder (recreated).")] = Path("demo"),
) -> None:
    """Build a synthetic cohort, pseudonymize it, re-identify one patient, verify the audit log.

    Every step runs a real pseudo command with the demo's passphrases (never use them for real
    data). Example: pseudo demo --dir /tmp/pseudo-demo
    """
    _prepare(folder)
    env = dict(
        os.environ, PSEUDO_PASSPHRASE=OPERATOR_PASSPHRASE, PSEUDO_REID_PASSPHRASE=REID_PASSPHRASE
    )
    env.pop("PSEUDO_VAULT", None)
    vault, source, target = folder / "vault", folder / "input", folder / "output"

    out.print(Rule("1. A synthetic cohort: 3 patients x 2 timepoints, from pydicom's test files"))
    files = build_cohort(source)
    screenshot = burned_in_image(source)
    out.print(
        f"{len(files) + 1} files written under {source}/, folders named after the patients, "
        f"e.g. {files[0].relative_to(source)}; {screenshot.relative_to(source)} has the "
        "patient's name, ID and birth date burned into its pixels"
    )

    out.print(Rule("2. A key vault and a project (the demo passphrases come from the environment)"))
    _pseudo("vault", "init", "--vault", str(vault), env=env)
    _pseudo("project", "create", "demo-trial", "--prefix", "DEMO", "--vault", str(vault), env=env)

    out.print(Rule("3. Pseudonymize the cohort"))
    run = _pseudo(
        "run",
        str(source),
        str(target),
        "--project",
        "demo-trial",
        "--vault",
        str(vault),
        "--json",
        env=env,
    )
    counts = json.loads(run.stdout)
    out.print(
        f"{counts['written']} files written for {counts['patients']} patients, "
        f"{counts['studies']} studies; {counts['quarantined']} quarantined"
    )
    report = load_report(Path(counts["report"]))
    mapping = {Path(f["input"]): target / f["output"] for f in report["files"] if f["output"]}
    before, after = _values(files[0]), _values(mapping[files[0].resolve()])
    table = Table(
        "attribute", "input", "output", title=f"{files[0].relative_to(source)} before and after"
    )
    for key in SHOWN:
        table.add_row(key, before[key], after[key])
    out.print(table)
    _print_timeline(mapping)
    _show_pixels(folder, screenshot, mapping[screenshot.resolve()])

    out.print(Rule("4. Re-identify one patient, for an incidental finding"))
    pseudonym = after["PatientID"]
    result = _pseudo(
        "reidentify",
        "--project",
        "demo-trial",
        "--pseudonym",
        pseudonym,
        "--requester",
        "Dr. Ada Lovelace (data protection officer)",
        "--reason",
        "incidental finding reported by the reading centre, ticket DEMO-1",
        "--json",
        "--vault",
        str(vault),
        env=env,
    )
    out.print(result.stdout.rstrip(), markup=False)

    out.print(Rule("5. The audit log: every step recorded, hash chain verified"))
    _pseudo("audit", "verify", "--project", "demo-trial", "--vault", str(vault), env=env)
    shown = _pseudo("audit", "show", "--vault", str(vault), env=env)
    out.print(shown.stdout.rstrip(), markup=False, highlight=False)
    identity = json.loads(result.stdout)
    err.print(
        f"[green]Demo complete[/]: {pseudonym} is {identity['patient_name']} "
        f"({identity['patient_id']}); everything is in {folder}/"
    )


def _show_pixels(folder: Path, before: Path, after: Path) -> None:
    """Write the burned-in image before and after as PNGs, and say where and what changed."""
    from PIL import Image

    written = []
    for label, path in (("before", before), ("after", after)):
        png = folder / f"burned-in-{label}.png"
        Image.fromarray(pydicom.dcmread(path).pixel_array).save(png)
        written.append(png)
    method = pydicom.dcmread(after, stop_before_pixels=True).DeidentificationMethod
    out.print(
        f"Burned-in text: {method[-1]}. The image before and after: {written[0]} and {written[1]}",
        markup=False,
    )


def _print_timeline(mapping: dict[Path, Path]) -> None:
    """Study dates per patient before and after: one pseudonym, one offset, same intervals."""
    rows: dict[str, tuple[str, set[str], set[str]]] = {}
    for source, target in sorted(mapping.items()):
        before = pydicom.dcmread(source, stop_before_pixels=True)
        after = pydicom.dcmread(target, stop_before_pixels=True)
        name = str(before.PatientName)
        _, dates, shifted = rows.setdefault(name, (str(after.PatientID), set(), set()))
        dates.add(str(before.StudyDate))
        shifted.add(str(after.StudyDate))
    table = Table(
        "patient (input)",
        "study dates",
        "pseudonym (output)",
        "shifted study dates",
        title="Longitudinal: one pseudonym and one date offset per patient",
    )
    for name, (pseudonym, dates, shifted) in rows.items():
        table.add_row(name, ", ".join(sorted(dates)), pseudonym, ", ".join(sorted(shifted)))
    out.print(table)
