#!/usr/bin/env python3
"""What pixel protection costs: ``pseudo run --workers 1`` with pixels on (the default) and
with ``--pixels off``, in the same run, on the benchmark cohort (built as ``benchmarks/run.py``
builds it), on its text-free images alone, and on ``../shared/corpus/burned-in`` (read in
place).

The cohort is not all text-free: its ultrasound (pydicom's ``examples_jpeg2k``, 12 % of the
files) carries real burned-in text, which is found, blanked, re-encoded and read back. The
issue's bound (at most 2x) is for images without burned-in text: the cohort less that
ultrasound (hard links, no copy). Both are reported.

Reports files/s of each (medians), the ratio on/off (the median of the rounds' ratios, and
their range), and the peak memory of the worker with pixels on and off. Rounds alternate off
and on so that a busy machine slows both alike.

Usage: python benchmarks/pixels.py [--instances 200] [--repeats 3] [--workdir benchmarks/_work]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from run import OPERATOR, REID, build_cohort, compile_bytecode, pseudo_run  # noqa: E402

BURNED_IN = HERE.parent.parent / "shared" / "corpus" / "burned-in" / "dicom"
#: The image of the cohort's mix that carries burned-in text (an ultrasound).
WITH_TEXT = "examples_jpeg2k"
TEXT_FREE = "benchmark cohort, text-free images (the issue's bound)"


def _vault(path: Path) -> Path:
    """A vault with project ``bench`` (fixed secret), made once."""
    from keystore.session import VaultSession
    from keystore.vault import Vault

    if not (path / "vault.json").exists():
        Vault.init(path)
        with VaultSession(path) as session:
            session.vault.create_project(
                "bench", OPERATOR, REID, secret=hashlib.sha256(b"benchmark").digest()
            )
    return path


def measure(source: Path, files: int, work: Path, repeats: int) -> dict[str, float]:
    """Median seconds with pixels on and off (one vault each: the project remembers the
    setting), files/s, the ratio of wall-clock and of CPU time (the command and its workers:
    a machine shared with other jobs stretches the wall-clock of the longer run more), and the
    worker's peak memory (MB) with pixels on and off (one worker runs in the command's own
    process)."""
    vaults = {mode: _vault(work / f"vault-pixels-{mode}") for mode in ("on", "off")}
    seconds: dict[str, list[float]] = {"on": [], "off": []}
    cpu: dict[str, list[float]] = {"on": [], "off": []}
    peaks = {"on": 0, "off": 0}
    for _ in range(repeats):
        for mode in ("off", "on"):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            took, parent, worker = pseudo_run(
                source, work / f"out-{mode}", vaults[mode], "--workers", "1", "--pixels", mode
            )
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            seconds[mode].append(took)
            cpu[mode].append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
            peaks[mode] = max(peaks[mode], parent, worker)
    on, off = statistics.median(seconds["on"]), statistics.median(seconds["off"])
    # each round's on against the off run just before it: a busy minute slows both
    ratios = [a / b for a, b in zip(seconds["on"], seconds["off"], strict=True)]
    cpu_ratios = [a / b for a, b in zip(cpu["on"], cpu["off"], strict=True)]
    return {
        "files": files,
        "on_files_per_s": files / on,
        "off_files_per_s": files / off,
        "ratio": statistics.median(ratios),
        "ratio_low": min(ratios),
        "ratio_high": max(ratios),
        "cpu_ratio": statistics.median(cpu_ratios),
        "cpu_ratio_low": min(cpu_ratios),
        "cpu_ratio_high": max(cpu_ratios),
        "peak_mb": peaks["on"] / 1024,
        "peak_off_mb": peaks["off"] / 1024,
    }


def text_free(cohort: Path, folder: Path) -> int:
    """``folder``: the cohort's files but its ultrasound with text, as hard links; how many."""
    shutil.rmtree(folder, ignore_errors=True)
    count = 0
    for path in sorted(cohort.rglob("*.dcm")):
        if WITH_TEXT in path.name:
            continue
        target = folder / path.relative_to(cohort)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, target)
        count += 1
    return count


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=HERE / "_work")
    parser.add_argument("--burned-in", type=Path, default=BURNED_IN)
    args = parser.parse_args()
    work = args.workdir.resolve() / "pixels"
    work.mkdir(parents=True, exist_ok=True)
    cohort = work / "cohort"
    shutil.rmtree(cohort, ignore_errors=True)
    files = build_cohort(cohort, args.instances)
    compile_bytecode()
    clean = work / "cohort-text-free"
    rows = {TEXT_FREE: measure(clean, text_free(cohort, clean), work, args.repeats)}
    with_text = sum(WITH_TEXT in path.name for path in files)
    name = f"benchmark cohort as built ({with_text} ultrasound images with text)"
    rows[name] = measure(cohort, len(files), work, args.repeats)
    if args.burned_in.is_dir():
        count = len(list(args.burned_in.glob("*.dcm")))
        rows["burned-in corpus"] = measure(args.burned_in, count, work, args.repeats)
    print(
        "| tree | files | pixels on, files/s | --pixels off, files/s | on/off (range) "
        "| on/off, CPU (range) | peak MB on | peak MB off |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, row in rows.items():
        print(
            f"| {name} | {row['files']:.0f} | {row['on_files_per_s']:.1f} | "
            f"{row['off_files_per_s']:.1f} | {row['ratio']:.2f}x ({row['ratio_low']:.2f}-"
            f"{row['ratio_high']:.2f}x) | {row['cpu_ratio']:.2f}x ({row['cpu_ratio_low']:.2f}-"
            f"{row['cpu_ratio_high']:.2f}x) | {row['peak_mb']:.0f} | "
            f"{row['peak_off_mb']:.0f} |"
        )
    ratio = rows[TEXT_FREE]["cpu_ratio"]
    print(f"bound: on/off <= 2x (CPU) on text-free images: {'met' if ratio <= 2 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
