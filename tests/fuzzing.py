"""Fuzzing the whole file pipeline: mutated real files and generated data sets.

Each case goes through exactly what ``pseudo run`` does to one file (read, pseudonymize,
verify, write; :func:`pseudo.batch.worker.process_file`) under a time limit. The invariants:

* no crash: every input ends written, quarantined or skipped, and nothing escapes;
* no hang: no case takes longer than ``limit`` seconds;
* no leak: a canary value planted in an attribute the policy removes is in no output byte,
  whatever the mutation did to the file (the canaries still present in the mutated input and
  still held by attributes that must go, as the policy decides on the parsed mutated input).

Quarantines with ``cannot process (SomeError: ...)`` are allowed (fail closed) but counted, so
that a reviewer sees which parser paths the mutations reached.

``python scripts/fuzz.py --minutes 10`` runs it for a bounded time; the test suite runs a short
form (tests/test_fuzz.py).
"""

from __future__ import annotations

import random
import signal
import string
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from keystore.keyring import Keyring, ProjectSettings
from pseudo.batch import worker as batch
from pseudo.batch.pools import WorkerSetup
from pseudo.io.pydicom_internals import quiet_pydicom
from pseudo.policy import CompiledPolicy, load_policy
from pseudo.verify.recording import collect

SEEDS = [
    "CT_small.dcm",
    "MR_small.dcm",
    "rtplan.dcm",
    "rtstruct.dcm",
    "waveform_ecg.dcm",
    "test-SR.dcm",
    "SC_rgb_rle.dcm",
    "JPEG2000.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "image_dfl.dcm",
    "nested_priv_SQ.dcm",
]
#: Attributes the default policy removes, replaces or empties, where canaries are planted.
CANARY_ATTRIBUTES = [
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "PatientAddress",
    "InstitutionName",
    "ReferringPhysicianName",
    "StudyDescription",
    "ImageComments",
    "AccessionNumber",
]


class CaseTimeout(Exception):
    """A case ran longer than its limit."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`CaseTimeout` in this (main) thread after ``seconds``."""

    def expire(signum: int, frame: Any) -> None:
        raise CaseTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def canary(rng: random.Random) -> str:
    """A token like those of the PHI canary corpus: ``FZCN`` and six capitals or digits."""
    return "FZCN" + "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(6))


def plant(ds: Dataset, rng: random.Random) -> list[str]:
    """Put canaries into attributes that must go, also one private and one nested; return them."""
    planted = []
    for keyword in rng.sample(CANARY_ATTRIBUTES, 5):
        token = canary(rng)
        value = (
            f"DOE^{token}" if keyword.endswith("Name") and keyword != "InstitutionName" else token
        )
        setattr(ds, keyword, value)
        planted.append(token)
    block = ds.private_block(0x0029, "FUZZ VENDOR", create=True)
    token = canary(rng)
    block.add_new(0x10, "LO", token)
    planted.append(token)
    item = Dataset()
    token = canary(rng)
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    item.ReferencedSOPInstanceUID = generate_uid()
    item.ReferencedFrameNumber = "1"
    item.add_new(0x00081190, "UR", f"http://{token.lower()}.example.org/")  # Retrieve URL
    ds.ReferencedImageSequence = Sequence([item])
    planted.append(token.lower())
    return planted


def seed_files(public: Path | None = None) -> list[Path]:
    """The mutation seeds: bundled pydicom files, and the readable files of the public corpus
    in ../shared/corpus/public when it is given (read in place, never copied)."""
    found = []
    for name in SEEDS:
        path = get_testdata_file(name)
        if isinstance(path, str):
            found.append(Path(path))
    if public is not None and public.is_dir():
        found += sorted(p for p in public.rglob("*") if p.is_file() and p.stat().st_size < 4 << 20)
    return found


def mutate(data: bytes, rng: random.Random, donor: bytes) -> bytes:
    """A few random byte-level mutations, as a fuzzer would apply them."""
    buffer = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        if not buffer:
            break
        kind = rng.randrange(7)
        at = rng.randrange(len(buffer))
        if kind == 0:  # flip bits
            buffer[at] ^= 1 << rng.randrange(8)
        elif kind == 1:  # overwrite a 2- or 4-byte length-like field
            width = rng.choice((2, 4))
            value = rng.choice((0, 1, 0xFF, 0xFFFF, 0xFFFFFFFF, rng.randrange(1 << (8 * width))))
            buffer[at : at + width] = (value % (1 << (8 * width))).to_bytes(width, "little")
        elif kind == 2:  # truncate
            del buffer[at:]
        elif kind == 3:  # delete a run
            del buffer[at : at + rng.randint(1, 64)]
        elif kind == 4:  # insert random bytes
            buffer[at:at] = rng.randbytes(rng.randint(1, 32))
        elif kind == 5:  # splice a chunk of another file
            start = rng.randrange(max(1, len(donor)))
            buffer[at:at] = donor[start : start + rng.randint(8, 256)]
        else:  # duplicate a run (duplicate elements, repeated items)
            chunk = buffer[at : at + rng.randint(8, 128)]
            buffer[at:at] = chunk
    return bytes(buffer)


@dataclass
class FuzzReport:
    """What a fuzzing session did and found."""

    cases: int = 0
    mutations: int = 0
    generated: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    internal: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    canaries_checked: int = 0  # canaries that had to go, looked for in written outputs

    def line(self) -> str:
        """One-line summary."""
        parts = ", ".join(f"{n} {k}" for k, n in sorted(self.outcomes.items()))
        return (
            f"{self.cases} cases: {parts}; {self.canaries_checked} canaries looked for in the "
            f"outputs; {len(self.failures)} invariant failures"
        )


class Harness:
    """Runs cases through :func:`pseudo.batch.worker.process_file` and checks the invariants."""

    def __init__(
        self, work: Path, policy: str = "default", limit: float = 10.0, public: Path | None = None
    ) -> None:
        self.work = work
        self.seeds = seed_files(public)
        self.limit = limit
        self.policy: CompiledPolicy = load_policy(policy)
        settings = ProjectSettings("fuzz", "FZ", -3652, -1)
        keyring = Keyring.from_secret(bytes(range(32)), settings, bytes(32))
        (work / "tmp").mkdir(parents=True, exist_ok=True)
        self.setup = WorkerSetup("fuzz", keyring, self.policy, work / "tmp", True, False)
        batch.install_worker(self.setup)
        self.report = FuzzReport()

    def close(self) -> None:
        """Forget the worker setup."""
        batch.remove_worker(self.setup)

    def must_go(self, path: Path, planted: list[str]) -> list[str]:
        """The planted canaries that the policy removes from the (mutated) input; all of them
        when the input cannot be parsed here (if the pipeline writes it anyway, nothing
        planted may be in the output)."""
        try:
            with quiet_pydicom():
                ds = pydicom.dcmread(path, force=True)
                needles = collect(ds, self.policy)
        except Exception:
            return list(planted)
        texts = " ".join(n.text.upper() for n in needles.items.values())
        return [c for c in planted if c.upper() in texts]

    def run_case(self, name: str, data: bytes, planted: list[str]) -> None:
        """One input through the pipeline; record its outcome and any invariant failure."""
        self.report.cases += 1
        path = self.work / "case.dcm"
        path.write_bytes(data)
        must_go = self.must_go(path, planted)
        task = batch.Task(str(path), "", len(data), "fuzz")
        try:
            with time_limit(self.limit):
                outcome = batch.process_file(task)
        except CaseTimeout:
            self.report.failures.append(f"{name}: hang (over {self.limit} s)")
            return
        except Exception as exc:  # the invariant: process_file never raises for bad input
            self.report.failures.append(f"{name}: crash ({exc.__class__.__name__}: {exc})")
            return
        self.report.outcomes[outcome.status] += 1
        if outcome.status == "quarantined" and (outcome.reason or "").startswith("cannot process"):
            self.report.internal[(outcome.reason or "")[:60]] += 1
        if outcome.temp:
            written = Path(outcome.temp).read_bytes()
            Path(outcome.temp).unlink()
            if outcome.status != "written":
                self.report.failures.append(f"{name}: a temporary file for a {outcome.status}")
            self.report.canaries_checked += len(must_go)
            for token in must_go:
                if token.encode() in written or token.upper().encode() in written:
                    self.report.failures.append(f"{name}: canary {token} in the output")

    def mutation_cases(self, rng: random.Random, count: int) -> None:
        """``count`` mutated copies of the seed files, canaries planted before mutation."""
        seeds = self.seeds
        for index in range(count):
            seed = rng.choice(seeds)
            path = self.work / "seed.dcm"
            with quiet_pydicom():
                try:
                    ds = pydicom.dcmread(seed, force=True)
                    planted = plant(ds, rng)
                    ds.save_as(path, enforce_file_format=True)
                except Exception:
                    continue  # a seed pydicom cannot round-trip (e.g. a broken corpus file)
            donor = rng.choice(seeds).read_bytes()
            mutated = mutate(path.read_bytes(), rng, donor)
            self.report.mutations += 1
            self.run_case(f"mutation {index} of {seed.name}", mutated, planted)

    def generated_case(self, ds: Dataset, planted: list[str], name: str) -> None:
        """One generated data set (from hypothesis or elsewhere) through the pipeline."""
        path = self.work / "generated.dcm"
        with quiet_pydicom():
            try:
                ds.save_as(path, enforce_file_format=True)
            except Exception:
                return  # pydicom cannot write it: not an input anyone can give us
        self.report.generated += 1
        self.run_case(name, path.read_bytes(), planted)


def base_dataset() -> Dataset:
    """A small valid data set that generated cases extend."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OT"
    return ds


def new_work_folder() -> Path:
    """A scratch folder for one session."""
    return Path(tempfile.mkdtemp(prefix="pseudo-fuzz-"))
