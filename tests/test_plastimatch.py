"""The Plastimatch list of common anonymizer failures (../shared/seeds/), each shown not to happen.

* Some date fields cannot be changed.
* Relative dates cannot be preserved (StudyDate set to 2000-01-01, StructureSetDate 35 days later).
* Private tags are always deleted.
* Comments and descriptions cannot be reset.
* Strings cannot be modified (delete ``smith`` but keep ``final`` in ``smith-final``).
* UIDs are not changed, or their relationships are not preserved.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.sequence import Sequence
from pydicom.uid import ImplicitVRLittleEndian

from keystore.session import VaultSession
from tests.conftest import REID, cli
from tests.dicom_paths import value_at


def _rt_chain(
    folder: Path, study_date: str, structure_set_date: str, patient: str = "P-1"
) -> list[Path]:
    """A CT image, an RT structure set contoured on it, a plan and a dose of one patient.

    The objects reference each other as a planning system writes them: the structure set
    names the CT's frame of reference, study, series and image (for every contour); the plan
    names the structure set; the dose names the plan.
    """
    folder.mkdir(parents=True, exist_ok=True)
    names = ("rtstruct.dcm", "rtplan.dcm", "rtdose.dcm", "CT_small.dcm")
    chain = {}
    study = f"1.2.826.0.1.3680043.2.1125.{patient[-1]}.{study_date}"
    for name in names:
        ds = pydicom.dcmread(str(get_testdata_file(name)), force=True)
        if not ds.file_meta.get("TransferSyntaxUID"):  # rtstruct.dcm has no file meta
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
            ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientID = patient
        ds.PatientName = "SMITH^ANNA"
        # one patient: the same birth date and sex in every file (else an identity conflict)
        ds.PatientBirthDate = "19600101"
        ds.PatientSex = "F"
        ds.StudyDate = study_date
        ds.StudyInstanceUID = study
        chain[name] = ds
    ct, struct = chain["CT_small.dcm"], chain["rtstruct.dcm"]
    plan, dose = chain["rtplan.dcm"], chain["rtdose.dcm"]
    struct.StructureSetDate = structure_set_date
    struct.StructureSetLabel = "smith-final"
    # RTSTRUCT -> CT: frame of reference, study, series and the contoured image.
    dose.FrameOfReferenceUID = struct.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID
    ct.FrameOfReferenceUID = dose.FrameOfReferenceUID
    ct.SeriesInstanceUID = "1.2.826.0.1.3680043.2.1125.77.1"
    frame = struct.ReferencedFrameOfReferenceSequence[0]
    frame.FrameOfReferenceUID = ct.FrameOfReferenceUID
    frame.RTReferencedStudySequence[0].ReferencedSOPInstanceUID = study
    series = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    series.SeriesInstanceUID = ct.SeriesInstanceUID
    series.ContourImageSequence = Sequence([_image_reference(ct)])
    for roi in struct.StructureSetROISequence:
        roi.ReferencedFrameOfReferenceUID = ct.FrameOfReferenceUID
    for roi_contour in struct.ROIContourSequence:
        for contour in roi_contour.ContourSequence:
            contour.ContourImageSequence = Sequence([_image_reference(ct)])
    # RTPLAN -> RTSTRUCT, RTDOSE -> RTPLAN.
    plan.ReferencedStructureSetSequence[0].ReferencedSOPClassUID = struct.SOPClassUID
    plan.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID = struct.SOPInstanceUID
    dose.ReferencedRTPlanSequence[0].ReferencedSOPClassUID = plan.SOPClassUID
    dose.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID = plan.SOPInstanceUID
    written = []
    for name in names:
        path = folder / name
        chain[name].save_as(path, enforce_file_format=True)
        written.append(path)
    return written


def _image_reference(ds: pydicom.Dataset) -> pydicom.Dataset:
    item = pydicom.Dataset()
    item.ReferencedSOPClassUID = ds.SOPClassUID
    item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    return item


def _run(
    vault: Path, source: Path, target: Path, policy: Path | str = "default"
) -> dict[str, object]:
    result = cli(
        "run",
        source,
        target,
        "--project",
        "trial",
        "--vault",
        vault,
        "--policy",
        policy,
        "--json",
        "--quiet",
    )
    assert result.code == 0, result.stderr
    report: dict[str, object] = json.loads(Path(result.json()["report"]).read_text())
    return report


def _outputs(target: Path) -> dict[str, pydicom.Dataset]:
    return {str(ds.Modality): ds for ds in (pydicom.dcmread(p) for p in target.rglob("*.dcm"))}


def _day(text: str) -> date:
    return date(int(text[:4]), int(text[4:6]), int(text[6:8]))


def test_every_date_can_be_changed(tmp_path: Path, vault: Path, env: None) -> None:
    """Dates of every kind, also private ones and dates the table does not list, move together."""
    policy = tmp_path / "all-dates.yaml"
    policy.write_text(
        "name: all-dates\nextends: default\nrules:\n"
        "  - {select: '(0009,xx10)', action: shift_date}\n"  # a vendor's private date, kept shifted
        "  - {select: private, action: remove, except: [{creator: ACME DATES}]}\n"
    )
    source = tmp_path / "in"
    files = _rt_chain(source, "20200110", "20200214")
    ds = pydicom.dcmread(files[0])
    block = ds.private_block(0x0009, "ACME DATES", create=True)
    block.add_new(0x10, "DA", "20200111")
    ds.save_as(files[0], enforce_file_format=True)
    _run(vault, source, tmp_path / "out", policy)
    out = _outputs(tmp_path / "out")["RTSTRUCT"]
    offset = (_day(out.StudyDate) - date(2020, 1, 10)).days
    assert offset != 0
    assert _day(out.StructureSetDate) - _day(out.StudyDate) == date(2020, 2, 14) - date(2020, 1, 10)
    private = next(e for e in out.iterall() if e.tag.group == 0x0009 and e.tag.element == 0x1010)
    value = private.value.decode() if isinstance(private.value, bytes) else private.value
    assert (_day(value) - date(2020, 1, 11)).days == offset


def test_relative_dates_are_preserved_with_an_anchor_date(
    tmp_path: Path, vault: Path, env: None, monkeypatch: object
) -> None:
    """StudyDate becomes 2000-01-01; the structure set stays 35 days later; later batches agree."""
    policy = tmp_path / "anchored.yaml"
    policy.write_text("name: anchored\nextends: default\ndates:\n  anchor: 2000-01-01\n")
    _rt_chain(tmp_path / "batch1", "20200110", "20200214")
    _run(vault, tmp_path / "batch1", tmp_path / "out", policy)
    first = _outputs(tmp_path / "out")["RTSTRUCT"]
    assert first.StudyDate == "20000101"
    assert first.StructureSetDate == "20000205"  # 35 days later
    # A later batch of the same patient, a year on, with an even earlier structure set date.
    _rt_chain(tmp_path / "batch2", "20210110", "20191201")
    _run(vault, tmp_path / "batch2", tmp_path / "out2", policy)
    second = _outputs(tmp_path / "out2")["RTSTRUCT"]
    assert second.PatientID == first.PatientID
    offset = date(2000, 1, 1) - date(2020, 1, 10)
    assert _day(second.StudyDate) == date(2021, 1, 10) + offset, "the first batch fixed the offset"
    assert _day(second.StructureSetDate) == date(2019, 12, 1) + offset
    # The anchored offset is in the sealed linkage record too.
    import os

    os.environ["PSEUDO_REID_PASSPHRASE"] = REID
    try:
        result = cli(
            "reidentify",
            "--project",
            "trial",
            "--pseudonym",
            str(first.PatientID),
            "--requester",
            "DPO",
            "--reason",
            "check",
            "--json",
            "--vault",
            vault,
        )
    finally:
        del os.environ["PSEUDO_REID_PASSPHRASE"]
    assert result.json()["date_offset_days"] == (date(2000, 1, 1) - date(2020, 1, 10)).days
    with VaultSession(vault) as session:
        studies = {row.key for row in session.linkage.studies_of("trial", str(first.PatientID))}
        assert len(studies) == 2


def test_private_tags_can_be_kept(tmp_path: Path, vault: Path, env: None, public_dir: Path) -> None:
    """Retain Safe Private keeps the GE attributes of Table E.3.10-1, whatever their block."""
    policy = tmp_path / "safe-private.yaml"
    policy.write_text("name: safe-private\nextends: default\noptions: [retain_safe_private]\n")
    source = tmp_path / "in"
    source.mkdir()
    original = public_dir / "highdicom" / "ct_image.dcm"
    (source / "ct.dcm").write_bytes(original.read_bytes())
    _run(vault, source, tmp_path / "out", policy)
    out = next(pydicom.dcmread(p) for p in (tmp_path / "out").rglob("*.dcm"))
    before = pydicom.dcmread(original)
    from pseudo.dicom.private import SafePrivate

    safe = SafePrivate.load()
    kept = [
        t for t in before.keys() if t.group & 1 and t.element >= 0x1000 and safe.is_safe(before, t)
    ]
    assert kept
    for tag in kept:
        assert out[tag].value == before[tag].value
    unsafe = [t for t in before.keys() if t.group & 1 and t.element >= 0x1000 and t not in kept]
    assert unsafe and not [t for t in unsafe if t in out]


def test_comments_can_be_reset_or_cleaned(tmp_path: Path, vault: Path, env: None) -> None:
    policy = tmp_path / "comments.yaml"
    policy.write_text(
        "name: comments\nextends: default\nrules:\n"
        "  - {select: ImageComments, action: clean}\n"
        "  - {select: StudyComments, action: replace, value: reviewed}\n"
    )
    source = tmp_path / "in"
    files = _rt_chain(source, "20200110", "20200214")
    ds = pydicom.dcmread(files[0])
    ds.ImageComments = "Contours by SMITH on 2020-02-14, tel 555-123-4567: left lung"
    ds.StudyComments = "ask Anna Smith"
    ds.save_as(files[0], enforce_file_format=True)
    _run(vault, source, tmp_path / "out", policy)
    out = _outputs(tmp_path / "out")["RTSTRUCT"]
    assert out.ImageComments == "Contours by on , tel : left lung"
    assert out.StudyComments == "reviewed"


def test_substrings_can_be_removed(tmp_path: Path, vault: Path, env: None) -> None:
    policy = tmp_path / "labels.yaml"
    policy.write_text(
        "name: labels\nextends: default\nrules:\n"
        "  - select: StructureSetLabel\n    action: substitute\n"
        "    pattern: '(?i)smith-?'\n    replacement: ''\n"
    )
    _rt_chain(tmp_path / "in", "20200110", "20200214")
    _run(vault, tmp_path / "in", tmp_path / "out", policy)
    assert _outputs(tmp_path / "out")["RTSTRUCT"].StructureSetLabel == "final"


def _references(ds: pydicom.Dataset, keyword: str) -> list[str]:
    """Every value of ``keyword`` at any depth below the top level."""
    return [
        str(e.value)
        for item_sequence in ds
        if item_sequence.VR == "SQ"
        for item in item_sequence.value
        for e in item.iterall()
        if e.keyword == keyword
    ]


def test_uids_change_and_relationships_hold(tmp_path: Path, vault: Path, env: None) -> None:
    """Every reference of the chain resolves to the remapped UID of the output it points to."""
    files = _rt_chain(tmp_path / "in", "20200110", "20200214")
    originals = {str(pydicom.dcmread(p).Modality): pydicom.dcmread(p) for p in files}
    _run(vault, tmp_path / "in", tmp_path / "out")
    out = _outputs(tmp_path / "out")
    assert set(out) == {"CT", "RTSTRUCT", "RTPLAN", "RTDOSE"}
    for modality, ds in out.items():
        before = originals[modality]
        for keyword in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"):
            assert ds[keyword].value != before[keyword].value, (modality, keyword)
            assert str(ds[keyword].value).startswith("2.25."), (modality, keyword)
    ct, struct, plan, dose = (out[m] for m in ("CT", "RTSTRUCT", "RTPLAN", "RTDOSE"))
    # RTPLAN -> RTSTRUCT and RTDOSE -> RTPLAN
    plan_ref = "ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID"
    dose_ref = "ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID"
    assert value_at(originals["RTPLAN"], plan_ref) == originals["RTSTRUCT"].SOPInstanceUID
    assert value_at(plan, plan_ref) == struct.SOPInstanceUID
    assert value_at(originals["RTDOSE"], dose_ref) == originals["RTPLAN"].SOPInstanceUID
    assert value_at(dose, dose_ref) == plan.SOPInstanceUID
    # RTSTRUCT -> CT: every contour's image, the series, the study, the frame of reference
    contours = sum(len(r.ContourSequence) for r in originals["RTSTRUCT"].ROIContourSequence)
    assert contours >= 3
    images = _references(struct, "ReferencedSOPInstanceUID")
    assert len(images) == 1 + 1 + contours, "the study, the series' image, each contour's image"
    assert images.count(ct.SOPInstanceUID) == 1 + contours
    assert images.count(ct.StudyInstanceUID) == 1
    series = "ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]"
    series += ".RTReferencedSeriesSequence[0].SeriesInstanceUID"
    assert value_at(struct, series) == ct.SeriesInstanceUID
    frames = _references(struct, "FrameOfReferenceUID") + _references(
        struct, "ReferencedFrameOfReferenceUID"
    )
    assert len(frames) == 1 + 3 and set(frames) == {ct.FrameOfReferenceUID}
    assert dose.FrameOfReferenceUID == ct.FrameOfReferenceUID
    assert ct.FrameOfReferenceUID != originals["CT"].FrameOfReferenceUID
    assert (
        ct.StudyInstanceUID
        == dose.StudyInstanceUID
        == plan.StudyInstanceUID
        == struct.StudyInstanceUID
    )
