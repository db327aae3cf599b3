"""Broken and hostile input: each file is quarantined (or processed, where that is safe) with a
clear reason, nothing identifying survives, and the rest of the run completes."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file

from pseudo.batch.report import load_report
from tests.conftest import OPERATOR, REPO, make_vault, run_command
from tests.hostile import CASES, CHARSET_NAMES, Case, build_matrix

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom, building bad files
GOOD = ["MR_small.dcm", "rtplan.dcm", "waveform_ecg.dcm"]
CODECS = ["utf-8", "iso2022_jp", "iso2022_jp_2", "euc_kr", "iso8859_5", "iso8859_7", "cp1251"]


@dataclass
class MatrixRun:
    code: int
    stderr: str
    report: dict[str, Any]
    output: Path
    outcomes: dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> MatrixRun:
    base = tmp_path_factory.mktemp("hostile")
    build_matrix(base / "in" / "bad")
    for name in GOOD:
        source = get_testdata_file(name)
        assert isinstance(source, str)
        (base / "in" / name).write_bytes(Path(source).read_bytes())
    vault = make_vault(base / "vault")
    process = subprocess.run(
        run_command(base / "in", base / "out", vault, "--json", "--quiet"),
        env=dict(os.environ, PSEUDO_PASSPHRASE=OPERATOR),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    report = load_report(Path(json.loads(process.stdout)["report"]))
    outcomes = {Path(f["input"]).name: f for f in report["files"]}
    return MatrixRun(process.returncode, process.stderr, report, base / "out", outcomes)


def test_the_run_completes_with_one_outcome_per_file(matrix: MatrixRun) -> None:
    assert matrix.code == 1, "quarantined files make the run end with status 1"
    assert "Traceback" not in matrix.stderr
    assert set(matrix.outcomes) == {c.name for c in CASES} | set(GOOD)
    for name in GOOD:
        assert matrix.outcomes[name]["status"] == "written", matrix.outcomes[name]["reason"]
    assert not [p for p in matrix.output.rglob("*") if p.suffix == ".part"]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_broken_input_gets_a_clear_outcome(matrix: MatrixRun, case: Case) -> None:
    outcome = matrix.outcomes[case.name]
    assert outcome["status"] in case.outcomes, outcome["reason"]
    if outcome["status"] == "written":
        written = matrix.output / outcome["output"]
        ds = pydicom.dcmread(written)
        assert ds.PatientIdentityRemoved == "YES"
        return
    reason = outcome["reason"] or ""
    assert reason and "\n" not in reason and len(reason) < 300, reason
    assert case.reason in reason.lower(), reason
    assert outcome["output"] is None


def _output_bytes(matrix: MatrixRun) -> list[tuple[Path, bytes]]:
    return [(p, p.read_bytes()) for p in matrix.output.rglob("*.dcm")]


def test_no_identifying_value_survives_in_any_encoding(matrix: MatrixRun) -> None:
    needles = [b"HOSTILE", b"Hostile"]
    for _charset, person, word in CHARSET_NAMES.values():
        for text in {person, word, *person.replace("=", "^").split("^")}:
            for codec in CODECS:
                try:
                    encoded = text.encode(codec)
                except UnicodeEncodeError:
                    continue
                if len(encoded) >= 3 and encoded.strip(b"\x1b()$BJ"):
                    needles.append(encoded)
    for path, data in _output_bytes(matrix):
        for needle in needles:
            assert needle not in data, f"{needle!r} in {path.name}"


def test_names_are_tokenized_from_their_decoded_form(matrix: MatrixRun) -> None:
    """The same person in ISO 2022 and in UTF-8 gets the same pseudonym."""
    first = matrix.outcomes["charset-japanese.dcm"]["output"].split("/")[0]
    second = matrix.outcomes["charset-japanese-as-utf8.dcm"]["output"].split("/")[0]
    assert first == second
    others = {matrix.outcomes[f"charset-{n}.dcm"]["output"].split("/")[0] for n in CHARSET_NAMES}
    assert len(others) == len(CHARSET_NAMES), "different people, different pseudonyms"


def test_invalid_dates_and_times_are_removed_and_reported(matrix: MatrixRun) -> None:
    outcome = matrix.outcomes["invalid-dates.dcm"]
    ds = pydicom.dcmread(matrix.output / outcome["output"])
    for keyword in ("StudyDate", "SeriesDate", "AcquisitionDateTime", "ContentDate"):
        assert keyword not in ds, keyword
    paths = {f["path"] for f in outcome["findings"] if f["code"] == "invalid-date"}
    assert {"StudyDate", "SeriesDate", "AcquisitionDateTime", "ContentDate"} <= paths


def test_a_long_uid_is_remapped_to_a_valid_one(matrix: MatrixRun) -> None:
    ds = pydicom.dcmread(matrix.output / matrix.outcomes["uid-too-long.dcm"]["output"])
    assert len(ds.SOPInstanceUID) <= 64 and ds.SOPInstanceUID.startswith("2.25.")


def test_private_attributes_without_creator_are_removed(matrix: MatrixRun) -> None:
    ds = pydicom.dcmread(matrix.output / matrix.outcomes["private-no-creator.dcm"]["output"])
    assert not [e for e in ds if e.tag.is_private]


def test_elements_after_the_pixel_data_are_removed_and_reported(matrix: MatrixRun) -> None:
    outcome = matrix.outcomes["no-preamble.dcm"]  # CT_small, with trailing padding
    assert any(f["code"] == "after-pixel-data" for f in outcome["findings"])
    ds = pydicom.dcmread(matrix.output / outcome["output"])
    assert 0xFFFCFFFC not in ds and "PixelData" in ds


def test_every_written_file_is_read_back_by_dcmdump(matrix: MatrixRun) -> None:
    from shutil import which

    if which("dcmdump") is None:
        if os.environ.get("PSEUDO_CI"):
            pytest.fail("dcmdump (Debian package dcmtk) is required in CI")
        pytest.skip("dcmdump (Debian package dcmtk) is not installed")
    for path, _ in _output_bytes(matrix):
        result = subprocess.run(["dcmdump", "-q", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, (path.name, result.stderr[:300])


def test_a_private_creator_without_elements_is_dropped(matrix: MatrixRun) -> None:
    ds = pydicom.dcmread(matrix.output / matrix.outcomes["creator-no-block.dcm"]["output"])
    assert not [e for e in ds if e.tag.is_private], "an empty block's creator is dropped too"


def test_a_wrong_vr_is_decided_by_the_dictionary_and_reported(matrix: MatrixRun) -> None:
    outcome = matrix.outcomes["wrong-vr.dcm"]
    assert any(f["code"] == "unexpected-vr" for f in outcome["findings"])
    ds = pydicom.dcmread(matrix.output / outcome["output"])
    assert str(ds.PatientName) == outcome["output"].split("/")[0], "the pseudonym, as PN"
