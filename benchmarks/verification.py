#!/usr/bin/env python3
"""What verification adds to a one-worker ``pseudo run``, as a user runs it.

Issue 14's targets: verification adds at most 20 % on the benchmark cohort and at most 30 %
on the canary-style cohort. For each cohort and pixel setting (``on``, the default, and
``--pixels off``), ``pseudo run --workers 1`` runs with verification and with ``--no-verify``,
in turn, in every round; the ratio of each round is taken between the two runs of that round
(a busy minute of a shared machine weighs on both), and the median and range of the rounds'
ratios are printed, for the wall-clock time and for the CPU time of the command and its
workers. Each run is a whole command (interpreter start, vault, discovery, commit, report),
like the rows of ``benchmarks/run.py``.

Cohorts: every ``--step``-th file of the benchmark cohort that ``benchmarks/run.py`` builds (its
mix of CT, MR, JPEG, JPEG 2000 ultrasound with burned-in text, RLE and multi-frame; linked,
never copied), and the canary-style cohort of ``benchmarks/run.py`` (the phi-canary corpus and
``--canary-copies - 1`` copies as other patients, written to a temporary folder).

With ``--code DIR`` (repeatable), each checkout of pseudo is timed in the same rounds (e.g. a
``git archive`` of main and this one): a change's before and after meet the same minutes of a
shared machine, and each one's ratio is still taken between its own two runs of a round.

Usage: python benchmarks/verification.py [--step 5] [--canary-copies 5] [--rounds 3]
       [--pixels on off] [--cohorts benchmark canary] [--workdir benchmarks/_work]
       [--code DIR]...
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import itertools
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import run as bench  # noqa: E402  (benchmarks/run.py: the cohorts, the vault, the command)
from instructions import paired  # noqa: E402  (the medians and ratios of paired rounds)


def timed_run(
    source: Path, target: Path, vault: Path, *extra: str, code: Path = HERE.parent
) -> tuple[float, float]:
    """Wall-clock and CPU seconds (the command and every worker it waited for) of one run, by
    the checkout of pseudo in ``code``."""
    command = bench.fresh_run_command(source, target, vault, "--workers", "1", *extra)
    env = dict(bench._env(), PYTHONPATH=str(code))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=code, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode not in (0, 1):
        raise SystemExit(f"pseudo run failed: {' '.join(command)}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def linked_subset(files: list[Path], root: Path, step: int, folder: Path) -> Path:
    """Every ``step``-th of ``files`` (under ``root``), hard-linked into ``folder``."""
    for path in files[::step]:
        target = folder / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, target)
    return folder


def new_vault(vault: Path) -> Path:
    """A vault with the benchmark's project (that of ``benchmarks/run.py``): one per pixel
    setting, since a project records its policy, pixels included."""
    from keystore.session import VaultSession
    from keystore.vault import Vault

    if not (vault / "vault.json").exists():
        Vault.init(vault)
        with VaultSession(vault) as session:
            session.vault.create_project(
                "bench", bench.OPERATOR, bench.REID, secret=hashlib.sha256(b"benchmark").digest()
            )
    return vault


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step", type=int, default=5, help="every STEP-th benchmark file")
    parser.add_argument("--canary", type=Path, default=bench.CANARY)
    parser.add_argument("--canary-copies", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pixels", nargs="+", choices=["on", "off"], default=["on", "off"])
    parser.add_argument("--workdir", type=Path, default=HERE / "_work")
    parser.add_argument("--instances", type=int, default=2000, help="of the benchmark cohort")
    parser.add_argument(
        "--cohorts", nargs="+", choices=["benchmark", "canary"], default=["benchmark", "canary"]
    )
    parser.add_argument(
        "--code",
        type=Path,
        action="append",
        help="a checkout of pseudo to time (repeatable: all in the same rounds; default: this one)",
    )
    args = parser.parse_args()
    codes = [path.resolve() for path in args.code or [HERE.parent]]

    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    files = bench.build_cohort(work / "cohort", args.instances)
    bench.compile_bytecode()
    for code in codes:  # each checkout byte-compiled, as this one (see compile_bytecode)
        for package in ("pseudo", "keystore"):
            compileall.compile_dir(code / package, quiet=1)
    scratch = Path(tempfile.mkdtemp(prefix="pseudo-verification-"))  # never in the repository
    try:
        vaults = {pixels: new_vault(scratch / f"vault-pixels-{pixels}") for pixels in args.pixels}
        cohorts: dict[str, Path] = {}
        if "benchmark" in args.cohorts:
            cohorts["benchmark cohort"] = linked_subset(
                files, work / "cohort", args.step, scratch / "benchmark"
            )
        if "canary" in args.cohorts and args.canary.is_dir():
            bench.build_canary_cohort(scratch / "canary", args.canary, args.canary_copies)
            cohorts["canary-style cohort"] = scratch / "canary"
        elif "canary" in args.cohorts:
            print(f"canary corpus not found at {args.canary}: benchmark cohort only")
        runs: dict[tuple[str, str, Path, bool], list[tuple[float, float]]] = {}
        for _ in range(args.rounds):
            for name, source in cohorts.items():
                for pixels in args.pixels:
                    for code in codes:
                        for verify in (False, True):
                            extra = ["--pixels", pixels, *([] if verify else ["--no-verify"])]
                            measured = timed_run(
                                source, scratch / "out", vaults[pixels], *extra, code=code
                            )
                            runs.setdefault((name, pixels, code, verify), []).append(measured)
        for name, source in cohorts.items():
            count = sum(1 for p in source.rglob("*.dcm"))
            for pixels, code in itertools.product(args.pixels, codes):
                pairs = runs[(name, pixels, code, False)], runs[(name, pixels, code, True)]
                label = f"{code}: " if len(codes) > 1 else ""
                for what, without, with_, ratios in paired(*pairs):
                    print(
                        f"{label}{name} ({count} files), pixels {pixels}, {what}: "
                        f"{without:.2f} s --no-verify, {with_:.2f} s verified: "
                        f"ratio {statistics.median(ratios):.3f} "
                        f"({min(ratios):.3f}-{max(ratios):.3f}), {args.rounds} rounds"
                    )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
