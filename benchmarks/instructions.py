#!/usr/bin/env python3
"""Instructions per file of ``pseudo``'s per-file work, counted by valgrind: a measure that does
not depend on the speed of a shared machine, to compare two versions of the code.

Runs the work of one worker (read, pseudonymize, verify or not, write) inside one process on
every ``--step``-th file of the cohort that ``benchmarks/run.py`` builds, under valgrind's
cachegrind, twice: on those files and on the first of them only; the difference divided by the
number of files less one is the count per file without the one-off costs (imports, the vault,
the first file's caches). The hash seed and the project's secret are fixed (a random secret
gives other UIDs and paths, and so other words in each output, for the verification's
pre-filter: counts of one tree differed by up to 2.5 M a file), so a count repeats.

With ``--trial``, the count is made twice more with clinical trial values (a project's trial
settings, a site and a timepoint: :mod:`pseudo.deid.trial`), and the ratio to the count
without them is printed.

With ``--wall ROUNDS``, the same loop is timed instead (wall-clock and CPU seconds, no
valgrind), without and with verification, in rounds, for this checkout or for each ``--code``
checkout (before and after a change, measured in the same rounds), and the ratios printed.

Usage: python benchmarks/instructions.py [--verify] [--trial] [--step 20]
       [--workdir benchmarks/_work] [--cohort DIR] [--wall ROUNDS [--code DIR]...]
(needs valgrind, and the test dependencies: ``pip install -e '.[test]'``)
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

LOOP = """
import sys, tempfile, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from keystore.session import VaultSession
from pseudo.batch import worker as batch
from pseudo.policy import load_policy
from pseudo.batch.pools import WorkerSetup
from pseudo.deid.identity import Site
from pseudo.deid.trial import TrialSettings, TrialValues
from tests.conftest import OPERATOR, make_vault
files = [Path(p) for p in Path(sys.argv[2]).read_text().split("\\n") if p]
trial = None
if sys.argv[4] == "1":
    settings = TrialSettings(sponsor="ACME Pharma", protocol_id="LT-01", protocol_name="Lung")
    trial = TrialValues.of(settings, site=Site("lyon", "0042"), timepoint_id="M12")
secret = bytes(range(32))  # fixed: the same pseudonyms, UIDs and paths in every count
with VaultSession(make_vault(Path(tempfile.mkdtemp()) / "vault", secret=secret)) as session:
    keyring = session.vault.unlock_operator("trial", OPERATOR)
out = Path(tempfile.mkdtemp())
policy = load_policy("default")
if sys.argv[5] == "off":
    policy.pixels = policy.pixels.off()
setup = WorkerSetup("count", keyring, policy, out, sys.argv[3] == "1", False, trial=trial)
batch.install_worker(setup)
start = time.perf_counter(), time.process_time()
for path in files:
    outcome = batch.process_file(batch.Task(str(path), "", 0, "count"))
    if outcome.temp:
        Path(outcome.temp).unlink()
print(time.perf_counter() - start[0], time.process_time() - start[1])
"""


def count(files: list[Path], verify: bool, trial: bool = False, pixels: str = "on") -> int:
    """Instructions of the loop over ``files`` (valgrind's ``I refs``), with pixel protection
    ``pixels`` (on or off)."""
    with tempfile.TemporaryDirectory() as scratch:
        listing = Path(scratch) / "files.txt"
        listing.write_text("\n".join(str(p) for p in files))
        command = [
            *("valgrind", "--tool=cachegrind", "--cache-sim=no"),
            "--cachegrind-out-file=/dev/null",
            *(sys.executable, "-c", LOOP, str(HERE.parent), str(listing), str(int(verify))),
            str(int(trial)),
            pixels,
        ]
        env = dict(os.environ, PYTHONHASHSEED="0")
        result = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    found = re.search(r"I\s+refs:\s+([\d,]+)", result.stderr)
    if found is None:
        raise SystemExit(f"valgrind gave no instruction count:\n{result.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def seconds(files: list[Path], verify: bool, code: Path, pixels: str) -> tuple[float, float]:
    """Wall-clock and CPU seconds of the loop over ``files`` (no valgrind), run by the code
    in ``code`` (a checkout of pseudo), with pixel protection ``pixels`` (on or off)."""
    with tempfile.TemporaryDirectory() as scratch:
        listing = Path(scratch) / "files.txt"
        listing.write_text("\n".join(str(p) for p in files))
        command = [
            sys.executable,
            "-c",
            LOOP,
            str(code),
            str(listing),
            str(int(verify)),
            "0",
            pixels,
        ]
        env = dict(os.environ, PYTHONHASHSEED="0")
        result = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    wall, cpu = result.stdout.split()[-2:]
    return float(wall), float(cpu)


def wall_clock(files: list[Path], rounds: int, codes: list[Path], pixels: str) -> None:
    """Print, for each checkout in ``codes``, the seconds per file without and with
    verification and the ratio, as medians over ``rounds`` rounds; each round runs every
    configuration once, in turn, so a busy minute of a shared machine weighs on all of them."""
    runs: dict[tuple[int, bool], list[tuple[float, float]]] = {}
    for _ in range(rounds):
        for index, code in enumerate(codes):
            for verify in (False, True):
                runs.setdefault((index, verify), []).append(seconds(files, verify, code, pixels))
    for index, code in enumerate(codes):
        for what, without, with_, ratios in paired(runs[(index, False)], runs[(index, True)]):
            print(
                f"{code}: {what} {without:.2f} s without, {with_:.2f} s with verification "
                f"({len(files)} files, {rounds} rounds): ratio {statistics.median(ratios):.3f} "
                f"({min(ratios):.3f}-{max(ratios):.3f})"
            )


def paired(
    without: list[tuple[float, float]], with_: list[tuple[float, float]]
) -> list[tuple[str, float, float, list[float]]]:
    """For the wall-clock and the CPU seconds of rounds without and with verification (each
    round one pair): the measure's name, the two medians, and the ratio of each round."""
    return [
        (
            what,
            statistics.median(a[column] for a in without),
            statistics.median(b[column] for b in with_),
            [b[column] / a[column] for a, b in zip(without, with_, strict=True)],
        )
        for what, column in (("wall-clock", 0), ("CPU", 1))
    ]


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verify", action="store_true", help="with the verification")
    parser.add_argument(
        "--trial", action="store_true", help="also with clinical trial values, and the ratio"
    )
    parser.add_argument(
        "--pixels",
        choices=("on", "off"),
        default="on",
        help="pixel protection, as `pseudo run --pixels` (default: on, as a run by default)",
    )
    parser.add_argument("--step", type=int, default=20, help="every STEP-th cohort file")
    parser.add_argument("--workdir", type=Path, default=HERE / "_work")
    parser.add_argument(
        "--cohort",
        type=Path,
        help="a folder of DICOM files, read in place (default: WORKDIR/cohort), e.g. "
        "../shared/corpus/phi-canary/dicom for the canary-style cohort",
    )
    parser.add_argument(
        "--wall",
        type=int,
        metavar="ROUNDS",
        help="instead of counting instructions, time the loop (no valgrind) without and with "
        "verification in ROUNDS rounds, and print the ratios",
    )
    parser.add_argument(
        "--code",
        type=Path,
        action="append",
        help="with --wall: a checkout of pseudo to time (repeatable: e.g. a worktree of main "
        "and this one, timed in the same rounds; default: this checkout)",
    )
    args = parser.parse_args()
    cohort = args.cohort or args.workdir / "cohort"
    files = sorted(cohort.rglob("*.dcm"))[:: args.step]
    if len(files) < 2:
        raise SystemExit(f"{cohort}: no cohort (run benchmarks/run.py first)")
    if args.wall:
        wall_clock(files, args.wall, args.code or [HERE.parent], args.pixels)
        return 0
    mode = "with" if args.verify else "without"
    runs = [False, True] if args.trial else [False]
    # Once without valgrind first: modules edited since their last import are compiled (and
    # their .pyc written) here, not in the count over every file, whose difference with the
    # count over the first file would carry the compilation (one count came out 16 M a file
    # too high).
    seconds(files[:1], args.verify, HERE.parent, args.pixels)
    counts = {}
    for trial in runs:
        whole, first = (
            count(files, args.verify, trial, args.pixels),
            count(files[:1], args.verify, trial, args.pixels),
        )
        counts[trial] = (whole - first) // (len(files) - 1)
        what = "with" if trial else "without"
        print(
            f"{counts[trial] / 1e6:.2f} M instructions per file {mode} verification, {what} "
            f"clinical trial values, pixels {args.pixels} ({len(files)} files)"
        )
    if args.trial:
        print(f"clinical trial values / none: {counts[True] / counts[False]:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
