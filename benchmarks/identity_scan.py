#!/usr/bin/env python3
"""What the identity checks of a run cost: the header scan of every file and the settling of
the identities against the project's fingerprints, as ratios against a plain pydicom
read+write of the same files measured in the same run (and against the whole run).

Builds a cohort of copies of pydicom's ``CT_small.dcm`` (N files, N/4 patients) in a temporary
folder, a vault with one project, then times, on the same files:

* ``baseline``: ``pydicom.dcmread`` + ``save_as`` of every file;
* ``scan``: :func:`pseudo.deid.anchors.scan_file` of every file (one process);
* ``settle``: :func:`pseudo.batch.identities.settle` of those scans (SQLite, recording);
* ``run``: ``pseudo run --workers 1 --no-verify`` of the cohort (which does both).

Usage: python benchmarks/identity_scan.py [--files 400]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

OPERATOR = "benchmark operator passphrase"
REID = "benchmark re-identification passphrase"


def build(folder: Path, files: int) -> list[Path]:
    """``files`` copies of CT_small, four per patient, each its own instance."""
    source = pydicom.dcmread(str(get_testdata_file("CT_small.dcm")))
    paths = []
    for number in range(files):
        ds = source.copy()
        ds.PatientID = f"P{number // 4:05d}"
        ds.PatientBirthDate = f"19{50 + number // 4 % 40:02d}0101"
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = folder / f"{number:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def timed(label: str, action: Callable[[], None]) -> float:
    """Seconds ``action()`` takes."""
    start = time.perf_counter()
    action()
    seconds = time.perf_counter() - start
    print(f"  {label:<9} {seconds:7.3f} s", file=sys.stderr)
    return seconds


def main() -> None:
    """Measure and print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=400)
    args = parser.parse_args()

    from keystore.crypto import ScryptParams
    from keystore.identities import IdentityBook, IdentityStore
    from keystore.session import VaultSession
    from keystore.vault import Vault
    from pseudo.batch.identities import settle
    from pseudo.deid.anchors import Scan, scan_file

    with tempfile.TemporaryDirectory(prefix="pseudo-identity-bench-") as temp:
        work = Path(temp)
        (work / "in").mkdir()
        paths = build(work / "in", args.files)
        Vault.init(work / "vault")
        with VaultSession(work / "vault") as session:
            session.vault.create_project(
                "bench", OPERATOR, REID, kdf=ScryptParams(n=2**14), prefix="B"
            )

        def baseline() -> None:
            for path in paths:
                pydicom.dcmread(path).save_as(work / "copy.dcm")

        scans: list[Scan | None] = []

        def scan() -> None:
            scans[:] = [scan_file(str(path)) for path in paths]

        with VaultSession(work / "vault") as session:
            keyring = session.vault.unlock_operator("bench", OPERATOR)
            store = IdentityStore(session.engine)

            def settling() -> None:
                settle(keyring, store, IdentityBook(), None, [str(p) for p in paths], scans)

            def run() -> None:
                subprocess.run(
                    [
                        *(sys.executable, "-m", "pseudo", "run", str(work / "in")),
                        *(str(work / "out"), "--project", "bench", "--vault", str(work / "vault")),
                        *("--workers", "1", "--no-verify", "--quiet"),
                    ],
                    check=True,
                    env={**os.environ, "PSEUDO_PASSPHRASE": OPERATOR},
                )

            print(f"{args.files} files, {args.files // 4} patients:", file=sys.stderr)
            base = timed("baseline", baseline)
            scanned = timed("scan", scan)
            settled = timed("settle", settling)
            whole = timed("run", run)
    print(f"| measure ({args.files} files) | seconds | / baseline | share of the run |")
    print("|---|---|---|---|")
    for label, seconds in (
        ("pydicom read+write (baseline)", base),
        ("header scan", scanned),
        ("settle (SQLite)", settled),
        ("pseudo run --workers 1 --no-verify", whole),
    ):
        print(f"| {label} | {seconds:.3f} | {seconds / base:.2f} | {seconds / whole:.0%} |")


if __name__ == "__main__":
    main()
