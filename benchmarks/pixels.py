#!/usr/bin/env python3
"""What pixel protection costs: ``pseudo run --workers 1`` with pixels on (the default) and
with ``--pixels off``, in the same run, on the benchmark cohort (images without burned-in text,
built as ``benchmarks/run.py`` builds it) and on ``../shared/corpus/burned-in`` (read in place).

Reports files/s of each, the ratio on/off (the issue's bound: at most 2x on the cohort), and the
peak memory of the worker. Rounds alternate on and off so that a busy machine slows both alike;
medians are reported.

Usage: python benchmarks/pixels.py [--instances 200] [--repeats 3] [--workdir benchmarks/_work]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from run import OPERATOR, REID, build_cohort, compile_bytecode, pseudo_run  # noqa: E402

BURNED_IN = HERE.parent.parent / "shared" / "corpus" / "burned-in" / "dicom"


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
    setting), files/s, the ratio, and the worker's peak memory (MB) with pixels on."""
    vaults = {mode: _vault(work / f"vault-pixels-{mode}") for mode in ("on", "off")}
    seconds: dict[str, list[float]] = {"on": [], "off": []}
    peak = 0
    for _ in range(repeats):
        for mode in ("off", "on"):
            took, parent, worker = pseudo_run(
                source, work / f"out-{mode}", vaults[mode], "--workers", "1", "--pixels", mode
            )
            seconds[mode].append(took)
            if mode == "on":
                peak = max(peak, parent, worker)
    on, off = statistics.median(seconds["on"]), statistics.median(seconds["off"])
    return {
        "files": files,
        "on_files_per_s": files / on,
        "off_files_per_s": files / off,
        "ratio": on / off,
        "peak_mb": peak / 1024,
    }


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
    rows = {"benchmark cohort (no burned-in text)": measure(cohort, len(files), work, args.repeats)}
    if args.burned_in.is_dir():
        count = len(list(args.burned_in.glob("*.dcm")))
        rows["burned-in corpus"] = measure(args.burned_in, count, work, args.repeats)
    print("| tree | files | pixels on, files/s | --pixels off, files/s | on/off | peak MB |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, row in rows.items():
        print(
            f"| {name} | {row['files']:.0f} | {row['on_files_per_s']:.1f} | "
            f"{row['off_files_per_s']:.1f} | {row['ratio']:.2f}x | {row['peak_mb']:.0f} |"
        )
    cohort_ratio = rows["benchmark cohort (no burned-in text)"]["ratio"]
    print(f"bound: on/off <= 2x on the cohort: {'met' if cohort_ratio <= 2 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
