"""The engine on synthetic datasets: every action and table code, at any depth."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from keystore.keyring import Keyring
from pseudo.deid.engine import Pseudonymizer
from pseudo.deid.tokens import decrypt_token
from pseudo.deid.uids import remap_uid
from pseudo.findings import RejectedFile
from pseudo.io.dicomio import NotDicom, encode, read_source, write_temporary
from pseudo.io.pydicom_internals import quiet_pydicom
from pseudo.policy import load_policy
from tests.conftest import CANARY
from tests.synthetic import dataset, make_keyring


@pytest.fixture()
def keyring() -> Keyring:
    return make_keyring()


def run(keyring: Keyring, ds: Dataset, policy: str = "default") -> Dataset:
    return Pseudonymizer(keyring, load_policy(policy)).pseudonymize(ds).dataset


def test_default_policy_on_a_synthetic_dataset(keyring: Keyring) -> None:
    out = run(keyring, dataset())
    pseudonym = out.PatientID
    assert pseudonym.startswith("T-") and out.PatientName == pseudonym
    assert out.PatientBirthDate == ""  # Z
    assert "PatientAge" not in out  # X
    assert len(out.AccessionNumber) == 16 and out.AccessionNumber != "ACC-1"  # token (SH)
    assert out.StudyID != "STUDY7"
    assert out.StudyTime == "101500"  # times kept
    offset = Pseudonymizer(keyring, load_policy("default")).patient(
        __import__("pseudo.deid.identity", fromlist=["read_identity"]).read_identity(dataset())
    )[1]
    assert -100 <= offset <= -1
    from datetime import date, timedelta

    expected = (date(2023, 1, 5) + timedelta(days=offset)).strftime("%Y%m%d")
    assert out.StudyDate == expected
    assert out.AcquisitionDateTime == expected + "101600.123+0100"  # DT keeps time and zone
    assert out[0x00181202].value == (date(2023, 1, 4) + timedelta(days=offset)).strftime("%Y%m%d")
    for keyword in ("InstitutionName", "StudyDescription", "RequestAttributesSequence"):
        assert keyword not in out  # X
    assert out.ReferringPhysicianName == ""  # Z
    assert out.Modality == "CT" and out.Rows == 2  # not in the table: kept
    assert out.PixelData == b"\x01\x02\x03\x04\x05\x06\x07\x08"
    assert not [t for t in out.keys() if t.group & 1], "private attributes removed"
    assert 0x00080000 not in out and 0x50000010 not in out
    assert 0x60003000 not in out and 0x60000010 not in out


def test_uids_are_remapped_at_every_depth(keyring: Keyring) -> None:
    out = run(keyring, dataset())
    assert out.SOPInstanceUID == remap_uid(keyring, "1.2.3.4.5.6")
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.FrameOfReferenceUID == remap_uid(keyring, "1.2.3.4.9")
    ref = out.ReferencedImageSequence[0]
    assert ref.ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"  # standard: unchanged
    assert ref.ReferencedSOPInstanceUID == remap_uid(keyring, "1.2.3.4.5.7")
    inner = ref.SourceImageSequence[0]
    assert inner.ReferencedSOPInstanceUID == remap_uid(keyring, "1.2.3.4.5.8")
    assert inner.PatientName == out.PatientID  # rules apply at every depth
    for uid in (out.SOPInstanceUID, out.StudyInstanceUID, ref.ReferencedSOPInstanceUID):
        assert uid.startswith("2.25.") and len(uid) <= 64


def test_file_meta_is_rebuilt(keyring: Keyring) -> None:
    meta = run(keyring, dataset()).file_meta
    assert set(meta.keys()) <= {
        0x00020000,
        0x00020001,
        0x00020002,
        0x00020003,
        0x00020010,
        0x00020012,
        0x00020013,
    }
    assert str(meta.ImplementationVersionName).startswith("PSEUDO_")


def test_deidentification_attributes(keyring: Keyring) -> None:
    out = run(keyring, dataset(), "basic")
    assert out.PatientIdentityRemoved == "YES"
    assert out.LongitudinalTemporalInformationModified == "REMOVED"
    assert [i.CodeValue for i in out.DeidentificationMethodCodeSequence] == ["113100"]
    assert "StudyDate" in out and out.StudyDate == ""  # Z in the basic profile


def test_invalid_date_is_removed_and_reported(keyring: Keyring) -> None:
    ds = dataset()
    ds.StudyDate = "20230231"
    result = Pseudonymizer(keyring, load_policy("default")).pseudonymize(ds)
    assert "StudyDate" not in result.dataset
    dates = [(f.path, f.code) for f in result.findings if f.code == "invalid-date"]
    assert dates == [("StudyDate", "invalid-date")]
    assert "20230231" not in repr(result.findings)


def test_multivalued_dates_and_ranges(keyring: Keyring) -> None:
    ds = dataset()
    ds.add_new(0x00181200, "DA", ["20230101", "20230201"])  # Date of Last Calibration
    ds.add_new(0x00400244, "DA", "20230101-20230110")  # Performed Procedure Step Start Date
    out = run(keyring, ds)
    first, second = out[0x00181200].value
    assert (int(second) - int(first)) != 0 and first != "20230101"
    start, end = str(out[0x00400244].value).split("-")
    from datetime import date

    assert (
        date(int(end[:4]), int(end[4:6]), int(end[6:]))
        - date(int(start[:4]), int(start[4:6]), int(start[6:]))
    ).days == 9


def test_same_patient_same_pseudonym_across_files(keyring: Keyring) -> None:
    a, b = dataset(), dataset()
    b.SOPInstanceUID = "1.2.3.4.5.99"
    b.StudyDate = "20250101"
    out_a, out_b = run(keyring, a), run(keyring, b)
    assert out_a.PatientID == out_b.PatientID
    other = dataset()
    other.PatientID = "87654321"
    assert run(keyring, other).PatientID != out_a.PatientID


def test_policy_file_actions(keyring: Keyring, tmp_path: Path) -> None:
    policy = tmp_path / "site.yaml"
    policy.write_text(
        "name: site\nextends: default\nrules:\n"
        "  - select: Modality\n    action: replace\n    value: OT\n"
        "  - select: OtherPatientIDs\n    action: encrypt\n    max_input_length: 20\n"
        "  - select: StationName\n    action: token\n"
        "  - select: SeriesDescription\n    action: clean\n"
        "  - select: Manufacturer\n    action: dummy\n"
    )
    ds = dataset()
    ds.OtherPatientIDs = "OTHER-42"
    ds.StationName = "CT01"
    ds.SeriesDescription = "Thorax DOE 1970-01-01 final"
    ds.Manufacturer = "ACME"
    out = Pseudonymizer(keyring, load_policy(str(policy))).pseudonymize(ds).dataset
    assert out.Modality == "OT"
    assert decrypt_token(keyring, "OtherPatientIDs", out.OtherPatientIDs) == "OTHER-42"
    assert len(out.StationName) == 16 and out.StationName != "CT01"
    assert out.SeriesDescription == "Thorax final"
    assert out.Manufacturer == "ANONYMIZED"


def test_encrypt_value_too_long_rejects_the_file(keyring: Keyring, tmp_path: Path) -> None:
    policy = tmp_path / "site.yaml"
    policy.write_text(
        "name: site\nextends: default\nrules:\n"
        "  - select: OtherPatientIDs\n    action: encrypt\n    max_input_length: 5\n"
    )
    ds = dataset()
    ds.OtherPatientIDs = "MUCH-TOO-LONG"
    with pytest.raises(RejectedFile, match="max_input_length"):
        Pseudonymizer(keyring, load_policy(str(policy))).pseudonymize(ds)


def test_missing_patient_id_falls_back_to_name(keyring: Keyring) -> None:
    ds = dataset()
    del ds.PatientID
    result = Pseudonymizer(keyring, load_policy("default")).pseudonymize(ds)
    assert result.dataset.PatientID == result.pseudonym
    patient = result.linkage[0]
    assert patient.fields["identity_basis"] == "name"


def test_dicomdir_is_rejected(keyring: Keyring) -> None:
    ds = pydicom.dcmread(str(get_testdata_file("DICOMDIR")))
    with pytest.raises(RejectedFile, match="DICOMDIR"):
        Pseudonymizer(keyring, load_policy("default")).pseudonymize(ds)


def test_linkage_entries(keyring: Keyring) -> None:
    result = Pseudonymizer(keyring, load_policy("default")).pseudonymize(dataset())
    patient, study, series, instance = result.linkage
    assert (patient.kind, patient.key) == ("patient", result.pseudonym)
    assert (
        patient.fields["patient_id"] == "12345678" and patient.fields["patient_name"] == "DOE^JOHN"
    )
    assert patient.fields["date_offset_days"] == result.date_offset_days
    assert (study.kind, study.key) == ("study", result.study_uid)
    assert study.fields == {
        "study_uid": "1.2.3.4.5",
        "accession_number": "ACC-1",
        "study_date": "20230105",
    }
    assert (series.kind, series.key) == ("series", result.series_uid)
    assert (instance.kind, instance.key) == ("instance", result.sop_instance_uid)
    assert instance.fields["study_uid"] == series.fields["study_uid"] == "1.2.3.4.5"
    assert instance.fields["pseudo_study_uid"] == result.study_uid
    assert series.pseudonym == instance.pseudonym == result.pseudonym


def _sources() -> list[Path]:
    bundled = Path(pydicom.__file__).parent / "data" / "test_files"
    files = sorted(bundled.glob("*.dcm"))
    if CANARY.is_dir():
        files += sorted((CANARY / "dicom").rglob("*.dcm"))
    return files


def test_the_fast_encoder_writes_what_pydicom_writes(keyring: Keyring) -> None:
    """dicomio.encode writes raw elements itself: its bytes must be pydicom's, file for file."""
    engine = Pseudonymizer(keyring, load_policy("default"))
    compared = 0
    with quiet_pydicom():
        for path in _sources():
            try:
                result = engine.pseudonymize(read_source(path).dataset)
            except (RejectedFile, NotDicom):
                continue
            expected = io.BytesIO()
            pydicom.dcmwrite(expected, result.dataset, enforce_file_format=True)
            assert encode(result.dataset) == expected.getvalue(), path.name
            compared += 1
    assert compared >= 50


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"])
@pytest.mark.parametrize("charset", [None, "ISO_IR 100", "ISO_IR 192", "ISO 2022 IR 87"])
def test_the_fast_encoder_writes_changed_strings_as_pydicom_does(
    syntax: str, charset: str | None
) -> None:
    """Changed string values (not raw) of every string VR, single and multiple, odd and even,
    empty, ASCII and not, in both VR encodings and several character sets: pydicom's bytes."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import UID

    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = charset
    values = {
        "AE": ["STATION1", "AE"],
        "AS": ["045Y"],
        "CS": ["ORIGINAL", "PRIMARY", "AXIAL"],
        "DA": ["20230105", "2023"],
        "DT": ["20230105101600.1"],
        "TM": ["1016", "101600.123456"],
        "UI": ["1.2.3", "1.2.34"],
        "UR": ["http://example.org/a"],
        "LO": ["Odd", "Évian", "even"],
        "SH": ["ACC1"],
        "ST": ["some text."],
        "LT": ["a longer text\\with a backslash"],
        "UC": ["UC value"],
        "UT": ["café"],
        "PN": ["DOE^JOHN"],
    }
    element = 0x1000
    for vr, texts in values.items():
        for subset in ([texts[0]], texts, [], [""], texts[:1] * 2):
            element += 1
            value = subset[0] if len(subset) == 1 else subset
            ds.add_new(0x00190000 | element, vr, value)  # private: any VR is allowed
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.7", "1.2.3.4"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.7")
    meta.MediaStorageSOPInstanceUID = UID("1.2.3.4")
    meta.TransferSyntaxUID = UID(syntax)
    ds.file_meta = meta
    ds.preamble = b"\x00" * 128
    ds.set_original_encoding(syntax.endswith(".2"), True, ds._character_set)
    with quiet_pydicom():
        expected = io.BytesIO()
        pydicom.dcmwrite(expected, ds, enforce_file_format=True)
        assert encode(ds) == expected.getvalue()


def test_the_pixel_data_is_copied_byte_for_byte_and_a_shrunk_source_is_refused(
    tmp_path: Path,
) -> None:
    """The pixel data goes from input to output in the kernel where it can (copy_file_range);
    the copy is exact, and a source cut short after its header was read is refused, never
    written in part."""
    source_path = tmp_path / "in.dcm"
    template = get_testdata_file("CT_small.dcm")
    assert isinstance(template, str)
    ds = pydicom.dcmread(template)
    ds.save_as(source_path)
    pixels = bytes(ds.PixelData)
    source = read_source(source_path)
    assert source.pixels is not None
    out, _ = write_temporary(source.dataset, tmp_path, source.pixels, sync=False)
    written = out.read_bytes()
    assert written.endswith(pixels)
    assert pydicom.dcmread(out).PixelData == pixels

    source = read_source(source_path)
    assert source.pixels is not None
    with source_path.open("r+b") as handle:
        handle.truncate(source.pixels.start + 100)
    before = set(tmp_path.iterdir())
    with pytest.raises(RejectedFile, match="changed while it was read"):
        write_temporary(source.dataset, tmp_path, source.pixels, sync=False)
    assert set(tmp_path.iterdir()) == before  # no partial file left
