#!/usr/bin/env python3
"""Per-file cost of each stage of ``pseudo run``, inside one process (no start-up, no commits).

For every ``--step``-th file of the cohort that ``benchmarks/run.py`` builds, interleaved file
by file so that a slow minute of a shared machine weighs on both: the fast read, the
pseudonymization and the write of ``pseudo`` (as one worker does them without verification),
the verification's share (the same three stages with the recorder and the check of the
output, minus the above), and a plain pydicom ``dcmread`` + ``save_as`` of the same file.

Usage: python benchmarks/stages.py [--step 4] [--workdir benchmarks/_work] [--cohort DIR]
(with the test dependencies installed, ``pip install -e '.[test]'``: it makes its vault as the
tests do)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pydicom

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from keystore.session import VaultSession  # noqa: E402
from pseudo.batch import worker as batch  # noqa: E402
from pseudo.batch.pools import WorkerSetup  # noqa: E402
from pseudo.deid.engine import Pseudonymizer  # noqa: E402
from pseudo.io.dicomio import read_source, write_temporary  # noqa: E402
from pseudo.io.pydicom_internals import quiet_pydicom  # noqa: E402
from pseudo.policy import load_policy  # noqa: E402
from tests.conftest import OPERATOR, make_vault  # noqa: E402


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step", type=int, default=4, help="every STEP-th cohort file")
    parser.add_argument("--workdir", type=Path, default=HERE / "_work")
    parser.add_argument(
        "--cohort",
        type=Path,
        help="a folder of DICOM files, read in place (default: WORKDIR/cohort), e.g. "
        "../shared/corpus/phi-canary/dicom for the canary-style cohort",
    )
    args = parser.parse_args()
    cohort = args.cohort or args.workdir / "cohort"
    files = sorted(cohort.rglob("*.dcm"))[:: args.step]
    if not files:
        raise SystemExit(f"{cohort}: no cohort (run benchmarks/run.py first)")
    scratch = Path(tempfile.mkdtemp(prefix="pseudo-stages-"))
    with VaultSession(make_vault(scratch / "vault")) as session:
        keyring = session.vault.unlock_operator("trial", OPERATOR)
    policy = load_policy("default")
    engine = Pseudonymizer(keyring, policy)
    setup = WorkerSetup("stages", keyring, policy, scratch, True, sync_each_file=False)
    batch.install_worker(setup)
    totals = dict.fromkeys(("read", "pseudonymize", "write", "with verification", "plain"), 0.0)
    for path in files:
        with quiet_pydicom():
            start = time.perf_counter()
            source = read_source(path, engine.droppable, keep_dropped=False)
            read = time.perf_counter()
            result = engine.pseudonymize(source.dataset, None, None)
            pseudonymized = time.perf_counter()
            temp, _ = write_temporary(result.dataset, scratch, source.pixels, sync=False)
            written = time.perf_counter()
        temp.unlink()
        outcome = batch.process_file(batch.Task(str(path), "", 0, "stages"))
        verified = time.perf_counter()
        if outcome.temp:
            Path(outcome.temp).unlink()
        pydicom.dcmread(path).save_as(scratch / "plain.dcm")
        plain = time.perf_counter()
        totals["read"] += read - start
        totals["pseudonymize"] += pseudonymized - read
        totals["write"] += written - pseudonymized
        totals["with verification"] += verified - written
        totals["plain"] += plain - verified
    per_file = {name: 1000 * seconds / len(files) for name, seconds in totals.items()}
    pseudo = per_file["read"] + per_file["pseudonymize"] + per_file["write"]
    print(f"{len(files)} files, ms per file:")
    for name in ("read", "pseudonymize", "write"):
        print(f"  pseudo {name:<24} {per_file[name]:6.3f}")
    print(f"  pseudo, no verification        {pseudo:6.3f}")
    print(
        f"  pseudo, with verification      {per_file['with verification']:6.3f}"
        f"  (verification +{100 * (per_file['with verification'] / pseudo - 1):.0f}%)"
    )
    print(
        f"  plain pydicom read+write       {per_file['plain']:6.3f}"
        f"  (pseudo without verification: {pseudo / per_file['plain']:.2f} of it)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
