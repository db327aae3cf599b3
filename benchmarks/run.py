#!/usr/bin/env python3
"""Throughput and memory of ``pseudo run``, measured against a plain pydicom read+write.

Builds a synthetic cohort from the DICOM files inside the pydicom package (CT, MR, JPEG,
JPEG 2000 and multi-frame instances), then measures, in the same run on the same files:

* a plain pydicom ``dcmread`` + ``save_as`` of every file (the floor of any pydicom-based tool);
* ``pseudo run`` with one worker and with all cores, with and without the residual-PHI
  verification;
* GDCM's ``gdcmanon`` (PS3.15 basic profile, C++), when installed;
* the peak memory of a worker on a multi-frame file of about 1 GB.

Results go to ``benchmarks/RESULTS.md`` (with the machine described) and to stdout.

Usage: python benchmarks/run.py [--instances 2000] [--big-mb 1024] [--workdir benchmarks/_work]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

HERE = Path(__file__).resolve().parent
GDCM_NAME = "gdcmanon -e (GDCM 3.0, C++, 1 process)"
HALVES_NAME = "two `pseudo run --workers 1 --no-verify` at once, half the patients each"
OPERATOR = "benchmark operator passphrase"
REID = "benchmark re-identification passphrase"
#: (pydicom test file, share of the cohort)
MIX = [
    ("CT_small.dcm", 0.40),
    ("MR_small.dcm", 0.25),
    ("examples_jpeg2k.dcm", 0.12),
    ("SC_rgb_jpeg_dcmd.dcm", 0.10),
    ("MR_small_RLE.dcm", 0.08),
    ("multiframe", 0.05),
]
FRAMES = 40


def _source(name: str) -> pydicom.Dataset:
    path = get_testdata_file(name)
    assert isinstance(path, str)
    return pydicom.dcmread(path)


def _multiframe(frames: int) -> pydicom.Dataset:
    """A multi-frame CT-like image: CT_small's frame repeated (uncompressed)."""
    ds = _source("CT_small.dcm")
    frame = bytes(ds.PixelData)
    ds.NumberOfFrames = frames
    ds.PixelData = frame * frames
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def build_cohort(folder: Path, instances: int) -> list[Path]:
    """Write the synthetic cohort (reused when it already exists)."""
    marker = folder / f".complete-{instances}"
    if marker.exists():
        return sorted(p for p in folder.rglob("*.dcm"))
    shutil.rmtree(folder, ignore_errors=True)
    templates = {
        name: (_multiframe(FRAMES) if name == "multiframe" else _source(name)) for name, _ in MIX
    }
    plan = [name for name, share in MIX for _ in range(round(instances * share))]
    written = []
    for index, name in enumerate(plan):
        ds = templates[name]
        patient, study = index // 20, index // 5
        ds.PatientName = f"PATIENT^NUMBER{patient}"
        ds.PatientID = f"MRN{100000 + patient}"
        ds.PatientBirthDate = f"19{50 + patient % 40}0{1 + patient % 9}15"
        ds.StudyInstanceUID = generate_uid(entropy_srcs=["bench-study", str(study)])
        ds.SeriesInstanceUID = generate_uid(entropy_srcs=["bench-series", str(study), name])
        ds.SOPInstanceUID = generate_uid(entropy_srcs=["bench-instance", str(index)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.StudyDate = ds.SeriesDate = f"2020{1 + study % 12:02d}{1 + study % 28:02d}"
        ds.AccessionNumber = f"ACC{study:06d}"
        ds.InstitutionName = "Benchmark General Hospital"
        path = folder / f"patient{patient:04d}" / f"study{study:05d}" / f"{index:06d}-{name}"
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path.with_suffix(".dcm"), enforce_file_format=True)
        written.append(path.with_suffix(".dcm"))
    marker.touch()
    return sorted(written)


def build_big(folder: Path, megabytes: int) -> Path:
    """One multi-frame file of about ``megabytes`` MB, written without holding it in memory."""
    path = folder / "big" / "big-multiframe.dcm"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = _source("CT_small.dcm")
    frame = bytes(ds.PixelData)
    frames = max(1, megabytes * 1024 * 1024 // len(frame))
    ds.NumberOfFrames = frames
    ds.PatientName, ds.PatientID = "BIG^PATIENT", "MRN-BIG"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    del ds.PixelData
    ds.save_as(path, enforce_file_format=True)
    with path.open("ab") as handle:
        length = len(frame) * frames
        handle.write(b"\xe0\x7f\x10\x00OW\x00\x00" + length.to_bytes(4, "little"))
        for _ in range(frames):
            handle.write(frame)
    return path


@dataclass
class Row:
    """One measured configuration: the median of its rounds (``rounds``: each round's seconds,
    measured beside the other configurations of that round)."""

    name: str
    seconds: float
    files: int
    megabytes: float
    note: str = ""
    rounds: list[float] = field(default_factory=list)

    @property
    def files_per_second(self) -> float:
        return self.files / self.seconds

    @property
    def mb_per_second(self) -> float:
        return self.megabytes / self.seconds


PLAIN = """
import sys, pydicom
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

def one(job):
    index, path, target = job
    ds = pydicom.dcmread(path)
    ds.save_as(Path(target) / f"{index}.dcm")

files = Path(sys.argv[1]).read_text().split("\\n")
jobs = [(i, p, sys.argv[2]) for i, p in enumerate(files)]
workers = int(sys.argv[3])
if workers == 1:
    for job in jobs:
        one(job)
else:
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(one, jobs, chunksize=16))
"""


def plain_pydicom(files: list[Path], target: Path, work: Path, workers: int = 1) -> float:
    """A plain pydicom ``dcmread`` + ``save_as`` of every file, run as a command as ``pseudo
    run`` is (interpreter start included): pixel data loaded, not decoded, nothing changed."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    listing = work / "files.txt"
    listing.write_text("\n".join(str(p) for p in files))
    start = time.perf_counter()
    command = [sys.executable, "-c", PLAIN, str(listing), str(target), str(workers)]
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def _env() -> dict[str, str]:
    return dict(os.environ, PSEUDO_PASSPHRASE=OPERATOR)


def fresh_run_command(source: Path, target: Path, vault: Path, *extra: str) -> list[str]:
    """The ``pseudo run`` command of the benchmark, its output and run reports removed first."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.rmtree(target.parent / f"{target.name}.pseudo-run", ignore_errors=True)
    return [
        *(sys.executable, "-m", "pseudo", "run", str(source), str(target)),
        *("--project", "bench", "--vault", str(vault), "--quiet", *extra),
    ]


def pseudo_run(source: Path, target: Path, vault: Path, *extra: str) -> tuple[float, int, int]:
    """One ``pseudo run`` as a user runs it; seconds, and the peak resident memory (kB) of the
    command and of its largest worker process (polled ``VmHWM``, see ``tests/memory.py``)."""
    from tests.memory import wait_with_peaks

    command = fresh_run_command(source, target, vault, *extra)
    start = time.perf_counter()
    process = subprocess.Popen(command, env=_env(), cwd=HERE.parent)
    peaks = wait_with_peaks(process)
    seconds = time.perf_counter() - start
    if process.returncode not in (0, 1):
        raise SystemExit(f"pseudo run failed: {' '.join(command)}")
    parent = peaks.pop(process.pid, 0)
    return seconds, parent, max(peaks.values(), default=0)


def compile_bytecode() -> None:
    """Byte-compile ``pseudo`` and ``keystore`` as pip does when it installs a package: an
    editable install in an environment with ``PYTHONDONTWRITEBYTECODE`` set (this VM has it)
    would compile their sources again at every start (about 0.1 s), which no installed copy
    does."""
    import compileall

    for package in ("pseudo", "keystore"):
        compileall.compile_dir(HERE.parent / package, quiet=1)


def split_in_halves(source: Path, work: Path) -> tuple[Path, Path]:
    """The cohort's patients in two halves, as hard links (no second copy of the data)."""
    halves = (work / "half-a", work / "half-b")
    if all((half / ".complete").exists() for half in halves):
        return halves
    patients = sorted(p for p in source.iterdir() if p.is_dir())
    middle = len(patients) // 2
    for half, chosen in zip(halves, (patients[:middle], patients[middle:]), strict=True):
        shutil.rmtree(half, ignore_errors=True)
        for patient in chosen:
            shutil.copytree(patient, half / patient.name, copy_function=os.link)
        (half / ".complete").touch()
    return halves


def two_at_once(halves: tuple[Path, Path], work: Path, vaults: tuple[Path, Path]) -> float:
    """Two ``pseudo run --workers 1`` at the same time, each on half of the patients with its
    own copy of the vault: two processes that share nothing (no parent, no database), the
    most that two processes of this code can give on this machine at this minute."""
    commands = [
        fresh_run_command(half, work / f"out-half-{index}", vault, "--workers", "1", "--no-verify")
        for index, (half, vault) in enumerate(zip(halves, vaults, strict=True))
    ]
    start = time.perf_counter()
    processes = [subprocess.Popen(c, env=_env(), cwd=HERE.parent) for c in commands]
    codes = [process.wait() for process in processes]
    seconds = time.perf_counter() - start
    if any(code not in (0, 1) for code in codes):
        raise SystemExit("pseudo run failed on a half of the cohort")
    return seconds


def median_of(repeats: int, measure: Callable[[], float]) -> float:
    """The median of ``repeats`` measurements (the first run warms the page cache)."""
    return statistics.median(measure() for _ in range(repeats))


def gdcmanon(source: Path, target: Path, work: Path) -> tuple[float, int] | None:
    """GDCM's PS3.15 basic-profile anonymizer on the same tree (needs a certificate)."""
    if shutil.which("gdcmanon") is None or shutil.which("openssl") is None:
        return None
    key, cert = work / "gdcm-key.pem", work / "gdcm-cert.pem"
    if not cert.exists():
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                str(key),
                "-out",
                str(cert),
                "-days",
                "2",
                "-subj",
                "/CN=bench",
            ],
            check=True,
            capture_output=True,
        )
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    start = time.perf_counter()
    subprocess.run(
        [
            "gdcmanon",
            "-e",
            "-c",
            str(cert),
            "-r",
            "--continue",
            "-i",
            str(source),
            "-o",
            str(target),
        ],
        check=False,
        capture_output=True,
    )
    seconds = time.perf_counter() - start
    return seconds, sum(1 for p in target.rglob("*") if p.is_file())


def machine() -> str:
    """A description of the machine."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        memory = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 // 1024
    except OSError:
        memory = 0
    return (
        f"{model}, {os.cpu_count()} cores, {memory} GiB RAM; {platform.platform()}; "
        f"Python {platform.python_version()}, pydicom {pydicom.__version__}"
    )


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--big-mb", type=int, default=1024)
    parser.add_argument("--workdir", type=Path, default=HERE / "_work")
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--repeats", type=int, default=5, help="rounds (medians)")
    args = parser.parse_args()
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    source = work / "cohort"
    files = build_cohort(source, args.instances)
    megabytes = sum(p.stat().st_size for p in files) / 1e6
    cores = os.cpu_count() or 1

    compile_bytecode()
    sys.path.insert(0, str(HERE.parent))
    from keystore.session import VaultSession
    from keystore.vault import Vault

    vault = work / "vault"
    if not (vault / "vault.json").exists():
        Vault.init(vault)
        with VaultSession(vault) as session:
            session.vault.create_project(
                "bench",
                OPERATOR,
                REID,
                secret=hashlib.sha256(b"benchmark").digest(),
            )

    halves = split_in_halves(source, work)
    half_vaults = (work / "vault-half-a", work / "vault-half-b")
    for copy in half_vaults:  # a fresh copy each time: the benchmark's vault may be new
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(vault, copy)
    repeats = args.repeats
    n = len(files)
    parents: dict[str, list[int]] = {}
    workers_peak: dict[str, list[int]] = {}

    def pseudo_once(label: str, *extra: str) -> Callable[[], float]:
        def once() -> float:
            seconds, parent, worker = pseudo_run(source, work / "out", vault, *extra)
            parents.setdefault(label, []).append(parent)
            workers_peak.setdefault(label, []).append(worker)
            return seconds

        return once

    plain_1_name = "plain pydicom read+write, 1 process"
    plain_n_name = f"plain pydicom read+write, {cores} processes"
    configurations: list[tuple[str, Callable[[], float]]] = [
        (plain_1_name, lambda: plain_pydicom(files, work / "plain", work, 1)),
        (
            "pseudo run, 1 worker, verification on",
            pseudo_once("pseudo run, 1 worker, verification on", "--workers", "1"),
        ),
        (
            "pseudo run, 1 worker, --no-verify",
            pseudo_once("pseudo run, 1 worker, --no-verify", "--workers", "1", "--no-verify"),
        ),
        (plain_n_name, lambda: plain_pydicom(files, work / "plain", work, cores)),
        (
            f"pseudo run, {cores} workers, verification on",
            pseudo_once(f"pseudo run, {cores} workers, verification on", "--workers", str(cores)),
        ),
        (
            f"pseudo run, {cores} workers, --no-verify",
            pseudo_once(
                f"pseudo run, {cores} workers, --no-verify",
                "--workers",
                str(cores),
                "--no-verify",
            ),
        ),
    ]
    if cores == 2:
        configurations.append((HALVES_NAME, lambda: two_at_once(halves, work, half_vaults)))
    gdcm_rounds: list[float] = []
    gdcm_written: list[int] = []
    if gdcmanon(source, work / "gdcm", work) is not None:  # installed: measured in the rounds

        def gdcm_once() -> float:
            result = gdcmanon(source, work / "gdcm", work)
            assert result is not None
            gdcm_rounds.append(result[0])
            gdcm_written.append(result[1])
            return result[0]

        configurations.append((GDCM_NAME, gdcm_once))
    for path in files:  # the page cache warm for every configuration, the first one too
        path.read_bytes()
    empty = work / "empty"
    empty.mkdir(exist_ok=True)
    startup = median_of(repeats, lambda: pseudo_run(empty, work / "empty-out", vault)[0])
    # Rounds: every configuration once per round, the order rotated from round to round, so a
    # slow minute of a shared machine weighs on all of them alike (see render: paired ratios).
    measured: dict[str, list[float]] = {name: [] for name, _ in configurations}
    for round_number in range(repeats):
        shift = round_number % len(configurations)
        for name, measure in configurations[shift:] + configurations[:shift]:
            measured[name].append(measure())
    rows: list[Row] = []
    for name, _ in configurations:
        if name == GDCM_NAME:
            continue
        note = "the floor of any pydicom-based tool"
        if name == HALVES_NAME:
            note = "two processes that share nothing: what two processes of this code get here"
        if name in parents:
            note = f"peak memory: command {max(parents[name]) / 1024:.0f} MB"
            if max(workers_peak[name]):
                note += f", largest worker {max(workers_peak[name]) / 1024:.0f} MB"
        seconds = statistics.median(measured[name])
        rows.append(Row(name, seconds, n, megabytes, note, measured[name]))
    if gdcm_rounds:
        rows.append(
            Row(
                GDCM_NAME,
                statistics.median(gdcm_rounds),
                n,
                megabytes,
                f"PS3.15 basic profile, originals encrypted into each file; {gdcm_written[-1]} "
                "files out",
                gdcm_rounds,
            )
        )

    big = build_big(work, args.big_mb)
    big_mb = big.stat().st_size / 1e6
    big_seconds, big_rss, _ = pseudo_run(big.parent, work / "big-out", vault, "--workers", "1")
    rows.append(
        Row(
            f"pseudo run, 1 worker, one {big_mb:.0f} MB multi-frame file",
            big_seconds,
            1,
            big_mb,
            f"peak memory {big_rss / 1024:.0f} MB (one worker: the command itself)",
        )
    )

    report = render(rows, cores, n, megabytes, startup, repeats)
    args.output.write_text(report)
    print(report)
    return 0


def paired(row: Row, baseline: Row) -> list[float]:
    """How many times the files/s of ``baseline`` ``row`` does, round by round (each ratio of
    two commands run one after the other)."""
    return [base / seconds for seconds, base in zip(row.rounds, baseline.rounds, strict=True)]


def spread(values: list[float], unit: str = "x", scale: float = 1.0, offset: float = 0.0) -> str:
    """``median (lowest-highest)`` of per-round values."""
    low, mid, high = (
        offset + scale * v for v in (min(values), statistics.median(values), max(values))
    )
    if unit == "%":
        return f"{mid:.0f}% ({low:.0f}-{high:.0f}%)"
    return f"{mid:.2f}x ({low:.2f}-{high:.2f}x)"


def render(
    rows: list[Row], cores: int, files: int, megabytes: float, startup: float, repeats: int
) -> str:
    """RESULTS.md."""
    by_name = {r.name: r for r in rows}
    gdcm = by_name.get(GDCM_NAME)
    one = by_name["pseudo run, 1 worker, verification on"]
    one_fast = by_name["pseudo run, 1 worker, --no-verify"]
    many = by_name[f"pseudo run, {cores} workers, verification on"]
    many_fast = by_name[f"pseudo run, {cores} workers, --no-verify"]
    halves = by_name.get(HALVES_NAME)
    plain_1 = by_name["plain pydicom read+write, 1 process"]
    plain_n = by_name[f"plain pydicom read+write, {cores} processes"]
    lines = [
        "# Benchmark results",
        "",
        f"Machine: {machine()}.",
        f"Cohort: {files} instances, {megabytes:.0f} MB, built by `benchmarks/run.py` from the "
        "files inside pydicom (CT, MR, JPEG, JPEG 2000, RLE, 40-frame uncompressed multi-frame).",
        f"Measured on {time.strftime('%Y-%m-%d')} in {repeats} rounds: each round runs every "
        "configuration once, on the same files, in an order rotated from round to round; "
        "seconds are the median over the rounds, and a ratio is the median (lowest-highest) of "
        "the ratios of each round, so that a slow minute of a shared machine weighs on both "
        "sides of a ratio. Every row is a command as a user runs it (interpreter start, "
        f"imports and unlocking the vault included: {startup:.2f} s for `pseudo run` on an "
        "empty folder; `pseudo` and `keystore` byte-compiled first, as an installed copy is).",
        "",
        "| configuration | seconds | files/s | MB/s | files/s vs plain pydicom (same processes) "
        "| note |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        several = f"{cores} " in row.name or row.name == HALVES_NAME
        baseline = plain_n if several and cores > 1 else plain_1
        ratio = ""
        if row is baseline:
            ratio = "1.00x"
        elif row.rounds and row.files == files:
            ratio = spread(paired(row, baseline))
        speed = f"{row.files_per_second:.1f} | {row.mb_per_second:.1f}"
        lines.append(f"| {row.name} | {row.seconds:.1f} | {speed} | {ratio} | {row.note} |")
    overhead = paired(one_fast, one)  # no-verify files/s over verify files/s, i.e. verify/no
    lines += [
        "",
        f"* Verification adds {spread(overhead, '%', 100, -100)} to a one-worker run "
        "(target: under 50%).",
        f"* With one worker `pseudo run` does {spread(paired(one, plain_1))} the files/s of a "
        f"plain pydicom read+write ({spread(paired(one_fast, plain_1))} without verification; "
        "target 1.0x).",
        f"* {cores} workers run {spread(paired(many, one))} as fast as one "
        f"(target: at least {0.8 * cores:.1f}x); without verification "
        f"{spread(paired(many_fast, one_fast))}. A plain pydicom loop on {cores} processes "
        f"runs {spread(paired(plain_n, plain_1))} as fast as on one.",
        *(
            [
                f"* Two `pseudo run` processes that share nothing, each on half the patients, "
                f"run {spread(paired(halves, one_fast))} as fast as one process on all of them: "
                "what two processes of this code get from this machine in the same rounds. "
                f"{cores} workers without verification reach "
                f"{spread(paired(many_fast, halves), '%', 100)} of that."
            ]
            if halves
            else []
        ),
        *(
            [
                f"* With all cores `pseudo run` does {spread(paired(many, gdcm))} the files/s "
                "of `gdcmanon` on one core (goal: 1.0x)."
            ]
            if gdcm
            else []
        ),
        "* Not alike: `pseudo run` flushes each batch of 64 files to disk (`syncfs`) before it "
        "commits their linkage records, verifies every output, and writes a run report; the "
        "plain pydicom loop and gdcmanon do none of this.",
        "",
        "Run again with `python benchmarks/run.py` (the cohort is cached in `benchmarks/_work/`, "
        "which git ignores).",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
