"""``pseudo dicomdir``: standard DICOM media from pseudonymized output, with nothing original.

pydicom's bundled DICOMDIR test set (a DICOMDIR, its variants and their images) is
pseudonymized with ``pseudo run``; the media built from the output must read back with
pydicom and dcmtk, reference every output instance, and name only pseudonyms.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pydicom.data
import pytest
from pydicom.fileset import FileSet
from pydicom.uid import MediaStorageDirectoryStorage

from tests.conftest import OPERATOR, CliResult, cli, make_vault


@dataclass(frozen=True)
class Pseudonymized:
    """The DICOMDIR test set, pseudonymized once for the whole module."""

    source: Path
    output: Path
    written: int


@pytest.fixture(scope="module")
def pseudonymized(tmp_path_factory: pytest.TempPathFactory) -> Pseudonymized:
    """Copy pydicom's DICOMDIR test set and pseudonymize it with ``pseudo run``."""
    base = tmp_path_factory.mktemp("dicomdir")
    source = base / "src"
    shutil.copytree(Path(str(pydicom.data.get_testdata_file("DICOMDIR"))).parent, source)
    vault = make_vault(base / "vault")
    output = base / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PSEUDO_PASSPHRASE", OPERATOR)
        patch.delenv("PSEUDO_VAULT", raising=False)
        result = cli(
            "run", source, output, "--project", "trial", "--vault", vault, "--json", "--quiet"
        )
    # The input DICOMDIRs are skipped or quarantined (exit 1): either is fine here.
    assert result.code in (0, 1), result.stderr
    counts = result.json()
    assert counts["written"] > 0 and counts["leaks"] == 0
    return Pseudonymized(source, output, counts["written"])


def _outputs(output: Path) -> list[Path]:
    return sorted(output.rglob("*.dcm"))


def _original_identities(source: Path) -> set[str]:
    """Patient IDs and names (and name parts of 4 characters or more) of every input DICOMDIR."""
    values: set[str] = set()
    for path in source.rglob("*"):
        if not path.is_file():
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:
            continue
        if ds.file_meta.get("MediaStorageSOPClassUID") != MediaStorageDirectoryStorage:
            continue
        for record in ds.get("DirectoryRecordSequence", []):
            for keyword in ("PatientID", "PatientName"):
                value = str(record.get(keyword) or "")
                if value:
                    values.add(value)
                    values.update(p for p in value.replace("^", " ").split() if len(p) >= 4)
    return values


def _one_line_error(result: CliResult, *words: str) -> None:
    assert result.code == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("pseudo: error: ")
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr


def test_media_from_the_pseudonymized_dicomdir_test_set(
    pseudonymized: Pseudonymized, tmp_path: Path
) -> None:
    media = tmp_path / "media"
    result = cli("dicomdir", pseudonymized.output, media, "--json")
    assert result.code == 0, result.stderr
    outputs = _outputs(pseudonymized.output)
    pseudonyms = {p.name for p in pseudonymized.output.iterdir() if p.is_dir()}
    summary = result.json()
    assert summary["instances"] == len(outputs) == pseudonymized.written
    assert summary["patients"] == len(pseudonyms)
    assert summary["fileset_id"] == "PSEUDO" and summary["duplicates"] == 0
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(
        f"media: {len(outputs)} instances, {len(pseudonyms)} patients, "
        f"{summary['studies']} studies, {summary['series']} series"
    )
    assert sorted(p.name for p in media.iterdir()) == sorted(
        ["DICOMDIR", *(f"PT{i:06d}" for i in range(len(pseudonyms)))]
    )

    dicomdir = pydicom.dcmread(media / "DICOMDIR")
    assert dicomdir.file_meta.MediaStorageSOPClassUID == MediaStorageDirectoryStorage
    assert dicomdir.FileSetID == "PSEUDO"
    records = dicomdir.DirectoryRecordSequence
    types = Counter(str(r.DirectoryRecordType) for r in records)
    assert types["IMAGE"] == len(outputs)
    assert types["PATIENT"] == len(pseudonyms)
    assert (types["STUDY"], types["SERIES"]) == (summary["studies"], summary["series"])

    # Every referenced file exists, reads, and is the instance its record names.
    referenced: set[str] = set()
    for record in records:
        if record.DirectoryRecordType != "IMAGE":
            continue
        path = media.joinpath(*record.ReferencedFileID)
        assert path.is_file(), path
        instance = pydicom.dcmread(path)
        assert instance.SOPInstanceUID == record.ReferencedSOPInstanceUIDInFile
        assert instance.SOPClassUID == record.ReferencedSOPClassUIDInFile
        referenced.add(str(instance.SOPInstanceUID))
    written = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in outputs}
    assert referenced == written

    # pydicom's File-set reads it back, every instance loadable.
    fileset = FileSet(media / "DICOMDIR")
    assert len(fileset) == len(outputs) and fileset.ID == "PSEUDO"
    assert {str(i.load().SOPInstanceUID) for i in fileset} == written

    # Patient records carry the pseudonyms (the top folders of the output tree) only.
    patients = [r for r in records if r.DirectoryRecordType == "PATIENT"]
    assert {str(r.PatientID) for r in patients} == pseudonyms
    assert {str(r.PatientName) for r in patients} == pseudonyms

    # Nothing of the input DICOMDIRs' records: no patient ID or name, no original UID.
    raw = (media / "DICOMDIR").read_bytes().lower()
    originals = _original_identities(pseudonymized.source)
    assert {"77654033", "Doe^Archibald"} <= originals  # the test set is what we think it is
    for value in originals:
        assert value.lower().encode() not in raw, value
    source = pydicom.dcmread(pseudonymized.source / "DICOMDIR")
    for record in source.DirectoryRecordSequence:
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "ReferencedSOPInstanceUIDInFile"):
            if keyword in record:
                assert str(record.get(keyword)).encode() not in raw, keyword


def test_dcmdump_reads_the_dicomdir(pseudonymized: Pseudonymized, tmp_path: Path) -> None:
    dcmdump = shutil.which("dcmdump")
    if dcmdump is None:
        if os.environ.get("PSEUDO_CI"):
            pytest.fail("dcmdump (dcmtk) is required in CI (PSEUDO_CI is set)")
        pytest.skip("dcmdump not found: install dcmtk (apt-get install dcmtk) to run this check")
    media = tmp_path / "media"
    assert cli("dicomdir", pseudonymized.output, media).code == 0
    done = subprocess.run(
        [dcmdump, str(media / "DICOMDIR")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "E: " not in done.stderr, done.stderr
    assert "MediaStorageDirectoryStorage" in done.stdout and "[PSEUDO]" in done.stdout
    assert done.stdout.count('"Directory Record" IMAGE') == len(_outputs(pseudonymized.output))


def test_fileset_id_option(pseudonymized: Pseudonymized, tmp_path: Path) -> None:
    media = tmp_path / "media"
    result = cli("dicomdir", pseudonymized.output, media, "--fileset-id", "LUNG_TRIAL 2024")
    assert result.code == 0, result.stderr
    assert pydicom.dcmread(media / "DICOMDIR").FileSetID == "LUNG_TRIAL 2024"
    for bad in ("lower", "SEVENTEEN_CHARS_X", "", " LEADING", "A/B"):
        _one_line_error(
            cli("dicomdir", pseudonymized.output, tmp_path / "m2", "--fileset-id", bad),
            "--fileset-id",
        )
        assert not (tmp_path / "m2").exists()


def test_temporary_and_non_dicom_files_are_left_out(
    pseudonymized: Pseudonymized, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    shutil.copytree(pseudonymized.output, output)
    first = _outputs(output)[0]
    (output / ".pseudo-tmp").mkdir()
    shutil.copy(first, output / ".pseudo-tmp" / "half-written.dcm")
    (output / "notes.dcm").write_text("not DICOM at all\n")
    (output / "README.txt").write_text("hello\n")
    media = tmp_path / "media"
    media.mkdir()  # an empty folder is fine
    result = cli("dicomdir", output, media, "--json")
    assert result.code == 0, result.stderr
    summary = result.json()
    assert summary["instances"] == pseudonymized.written and summary["skipped"] == 1
    assert "1 .dcm files that are not DICOM skipped" in result.stderr


def test_refuses_media_that_is_not_empty(pseudonymized: Pseudonymized, tmp_path: Path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    (media / "keep.txt").write_text("mine\n")
    _one_line_error(cli("dicomdir", pseudonymized.output, media), str(media), "not empty")
    assert [p.name for p in media.iterdir()] == ["keep.txt"]
    as_file = tmp_path / "file"
    as_file.write_text("x")
    _one_line_error(cli("dicomdir", pseudonymized.output, as_file), "not a folder")


def test_refuses_media_inside_output(pseudonymized: Pseudonymized, tmp_path: Path) -> None:
    output = tmp_path / "out"
    shutil.copytree(pseudonymized.output, output)
    for media in (output / "media", output, output / "TRIAL" / "cd"):
        _one_line_error(cli("dicomdir", output, media), "inside the output folder")
    assert not (output / "media").exists() and not (output / "TRIAL").exists()


def test_refuses_output_without_dicom(pseudonymized: Pseudonymized, tmp_path: Path) -> None:
    output = tmp_path / "out"
    (output / ".pseudo-tmp").mkdir(parents=True)
    shutil.copy(_outputs(pseudonymized.output)[0], output / ".pseudo-tmp" / "x.dcm")
    (output / "README.txt").write_text("hello\n")
    (output / "notes.dcm").write_text("not DICOM\n")
    _one_line_error(cli("dicomdir", output, tmp_path / "media"), "no DICOM files")
    assert not (tmp_path / "media").exists()
    _one_line_error(cli("dicomdir", tmp_path / "missing", tmp_path / "media"), "not found")


def test_a_file_the_fileset_refuses_is_left_out_and_listed(
    pseudonymized: Pseudonymized, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    shutil.copytree(pseudonymized.output, output)
    broken = _outputs(output)[-1]
    ds = pydicom.dcmread(broken)
    del ds.SOPClassUID
    ds.save_as(broken)
    media = tmp_path / "media"
    result = cli("dicomdir", output, media, "--json")
    assert result.code == 1, result.stderr  # built, but something needs attention
    summary = result.json()
    assert summary["instances"] == pseudonymized.written - 1
    assert summary["refused"] == [
        {"file": str(broken.relative_to(output)), "reason": "it has no SOPClassUID"}
    ]
    assert "1 files left off the media:" in result.stderr
    assert f"{broken.relative_to(output)}: it has no SOPClassUID" in result.stderr
    assert (media / "DICOMDIR").is_file()
    assert len(FileSet(media / "DICOMDIR")) == pseudonymized.written - 1
    # When nothing can be put on media, nothing is built.
    for path in _outputs(output):
        ds = pydicom.dcmread(path)
        ds.pop("SOPClassUID", None)
        ds.save_as(path)
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line_error(cli("dicomdir", output, empty), "none of its", "SOPClassUID")
    assert empty.is_dir() and not any(empty.iterdir())  # an empty MEDIA stays as it was


def test_an_empty_study_id_is_numbered_in_the_dicomdir_only(
    pseudonymized: Pseudonymized, tmp_path: Path
) -> None:
    """Study ID is Type 1 in a STUDY record (PS3.3 F.5) but Type 2 in an instance."""
    output = tmp_path / "out"
    shutil.copytree(pseudonymized.output, output)
    for path in _outputs(output):
        ds = pydicom.dcmread(path)
        ds.StudyID = ""
        ds.save_as(path)
    media = tmp_path / "media"
    result = cli("dicomdir", output, media, "--json")
    assert result.code == 0, result.stderr
    summary = result.json()
    assert summary["instances"] == pseudonymized.written and summary["refused"] == []
    assert summary["invented_study_ids"] == summary["studies"] > 0
    assert "numbered in the DICOMDIR" in result.stderr
    dicomdir = pydicom.dcmread(media / "DICOMDIR")
    studies = [r for r in dicomdir.DirectoryRecordSequence if r.DirectoryRecordType == "STUDY"]
    assert sorted(str(r.StudyID) for r in studies) == [str(n) for n in range(1, len(studies) + 1)]
    copied = [p for p in media.rglob("*") if p.is_file() and p.name != "DICOMDIR"]
    assert copied and {pydicom.dcmread(p).get("StudyID") for p in copied} == {""}


def test_a_dicomdir_in_output_is_refused(pseudonymized: Pseudonymized, tmp_path: Path) -> None:
    output = tmp_path / "out"
    shutil.copytree(pseudonymized.output, output)
    media = tmp_path / "media"
    # A DICOMDIR (with its patients' names) dropped into OUTPUT is refused, not copied.
    shutil.copy(pseudonymized.source / "DICOMDIR", output / "DICOMDIR.dcm")
    _one_line_error(cli("dicomdir", output, media), "DICOMDIR.dcm", "is a DICOMDIR")
    assert not media.exists()
