"""Large files in bounded memory, and inputs that grow between runs."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from datetime import date
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian

from pseudo.demo import build_cohort
from tests.conftest import OPERATOR, cli, run_command
from tests.memory import wait_with_peaks

MEMORY_BOUND_MB = 300


def _big_file(path: Path, megabytes: int) -> None:
    """A multi-frame file written frame by frame, never whole in memory."""
    ds = pydicom.dcmread(str(get_testdata_file("CT_small.dcm")))
    frame = bytes(ds.PixelData)
    frames = megabytes * 1024 * 1024 // len(frame)
    ds.NumberOfFrames = frames
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    del ds.PixelData
    ds.save_as(path, enforce_file_format=True)
    with path.open("ab") as handle:
        handle.write(b"\xe0\x7f\x10\x00OW\x00\x00" + (len(frame) * frames).to_bytes(4, "little"))
        for _ in range(frames):
            handle.write(frame)


def _tail_digest(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        handle.seek(-size, os.SEEK_END)
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.mark.slow
def test_a_big_multiframe_file_stays_in_bounded_memory(tmp_path: Path, vault: Path) -> None:
    source = tmp_path / "in"
    source.mkdir()
    _big_file(source / "big.dcm", 400)
    process = subprocess.Popen(
        run_command(source, tmp_path / "out", vault, "--workers", "1", "--quiet"),
        env=dict(os.environ, PSEUDO_PASSPHRASE=OPERATOR),
    )
    peaks = wait_with_peaks(process)
    assert process.returncode == 0
    peak_mb = max(peaks.values()) / 1024
    print(f"peak memory {peak_mb:.0f} MB")
    assert 20 < peak_mb < MEMORY_BOUND_MB, f"peak memory {peak_mb:.0f} MB for a 400 MB file"
    output = next((tmp_path / "out").rglob("*.dcm"))
    pixels = 400 * 1024 * 1024 // 32768 * 32768
    assert _tail_digest(output, pixels) == _tail_digest(source / "big.dcm", pixels)


@pytest.mark.slow
def test_a_grown_input_processes_only_the_new_files_with_the_same_pseudonyms(
    tmp_path: Path, vault: Path, env: None
) -> None:
    build_cohort(tmp_path / "all")
    first, second = tmp_path / "in", tmp_path / "all"
    for patient in (tmp_path / "all").iterdir():
        baseline = sorted(patient.iterdir())[0]  # the first timepoint only
        shutil.copytree(baseline, first / patient.name / baseline.name)

    def run(source: Path) -> dict[str, int]:
        result = cli(
            "run",
            source,
            tmp_path / "out",
            "--project",
            "trial",
            "--vault",
            vault,
            "--json",
            "--quiet",
        )
        assert result.code == 0, result.stderr
        counts: dict[str, int] = result.json()
        return counts

    assert run(first)["written"] == 9
    # The input grows by a new timepoint; the same folder is run again.
    shutil.rmtree(first)
    shutil.copytree(second, first)
    counts = run(first)
    assert (counts["written"], counts["patients"], counts["studies"]) == (9, 3, 6)
    offsets: dict[str, set[int]] = {}
    for source in sorted(first.rglob("*.dcm")):
        original = pydicom.dcmread(source, stop_before_pixels=True)
        matches = [
            pydicom.dcmread(p, stop_before_pixels=True)
            for p in (tmp_path / "out").rglob("*.dcm")
            if pydicom.dcmread(p, stop_before_pixels=True).InstanceNumber == original.InstanceNumber
        ]
        for out in matches:
            if out.AccessionNumber == cli_token(original.AccessionNumber, vault):
                shift = _day(out.StudyDate) - _day(original.StudyDate)
                offsets.setdefault(str(out.PatientID), set()).add(shift.days)
    assert len(offsets) == 3 and all(len(v) == 1 for v in offsets.values())


def cli_token(accession: str, vault: Path) -> str:
    """The token the project's keys give an Accession Number (to pair input and output)."""
    from keystore.session import VaultSession
    from pseudo.deid.tokens import hmac_token

    with VaultSession(vault) as session:
        keyring = session.vault.unlock_operator("trial", OPERATOR)
    return hmac_token(keyring, "AccessionNumber", accession)


def _day(text: str) -> date:
    return date(int(text[:4]), int(text[4:6]), int(text[6:8]))
