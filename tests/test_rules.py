"""The rule language: selectors, conditions, actions, precedence and date settings."""

from __future__ import annotations

import copy
from datetime import date
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from pseudo.deid.engine import Pseudonymizer
from pseudo.deid.tokens import decrypt_token
from pseudo.policy import Action, PolicyError, load_policy
from tests.synthetic import dataset, make_keyring

KEYRING = make_keyring()


def policy(tmp_path: Path, text: str, name: str = "site") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\n" + text)
    return path


def run(path: Path, ds: Dataset) -> Dataset:
    return Pseudonymizer(KEYRING, load_policy(str(path))).pseudonymize(copy.deepcopy(ds)).dataset


# -- selectors ------------------------------------------------------------------------------
def test_vr_selector_and_specificity(tmp_path: Path) -> None:
    path = policy(
        tmp_path,
        "extends: default\nrules:\n  - select: {vr: PN}\n    action: replace\n    value: X^Y\n",
    )
    out = run(path, dataset())
    assert out.ReferringPhysicianName == "X^Y", "a VR rule beats the table"
    assert out.PatientName == out.PatientID, "the exact rule of the parent beats the VR rule"


def test_private_creator_selector_ignores_the_block_number(tmp_path: Path) -> None:
    path = policy(
        tmp_path,
        "extends: default\nrules:\n"
        "  - select: {creator: ACME 1.0, tag: '(0029,xx10)'}\n    action: keep\n",
    )
    first = dataset()  # ACME 1.0 reserves block 0x10: the value sits at (0029,1010)
    second = dataset()
    for tag in [t for t in second.keys() if t >> 16 == 0x0029]:
        del second[tag]
    second.add_new(0x00290010, "LO", "OTHER VENDOR")
    second.add_new(0x00290011, "LO", "ACME 1.0")  # now block 0x11
    second.add_new(0x00291010, "LO", "not ACME's")
    second.add_new(0x00291110, "LO", "ACME value")
    out_first, out_second = run(path, first), run(path, second)
    assert out_first[0x00291010].value == "DOE^JOHN" and out_first[0x00290010].value == "ACME 1.0"
    assert out_second[0x00291110].value == "ACME value"
    assert 0x00291010 not in out_second, "the same element of another creator is not selected"
    assert 0x00290010 not in out_second, "the other creator's empty block is dropped"
    assert out_second[0x00290011].value == "ACME 1.0"


def test_sequence_path_selector(tmp_path: Path) -> None:
    path = policy(
        tmp_path,
        "extends: default\nrules:\n"
        "  - select: RequestAttributesSequence\n    action: keep\n"
        "  - select: RequestAttributesSequence[*].RequestedProcedureID\n    action: token\n",
    )
    ds = dataset()
    ds.RequestedProcedureID = "TOP-LEVEL"
    out = run(path, ds)
    item = out.RequestAttributesSequence[0]
    assert len(item.RequestedProcedureID) == 16 and item.RequestedProcedureID != "RP1"
    assert "RequestedProcedureID" not in out, "the same keyword elsewhere follows the table (X)"
    assert item.AccessionNumber == out.AccessionNumber, "other attributes of the item: the table"


def test_tag_pattern_selector(tmp_path: Path) -> None:
    path = policy(
        tmp_path, "extends: default\nrules:\n  - select: '(0019,xx10)'\n    action: keep\n"
    )
    out = run(path, dataset())
    assert out[0x00191010].value == "vendor secret"


# -- conditions -----------------------------------------------------------------------------
CONDITIONAL = """extends: default
rules:
  - select: StationName
    action: replace
    value: ULTRASOUND
    when: {Modality: US}
  - select: StationName
    action: replace
    value: GE
    when: {Manufacturer: {matches: "^GE"}}
  - select: StationName
    action: replace
    value: LISTED
    when: {Modality: {in: [MR, PT]}}
  - select: StationName
    action: replace
    value: HAS-COMMENTS
    when: {ImageComments: {present: true}}
"""


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, None),
        ({"Modality": "US"}, "ULTRASOUND"),
        ({"Manufacturer": "GE MEDICAL SYSTEMS"}, "GE"),
        ({"Modality": "MR"}, "LISTED"),
        ({"ImageComments": "note"}, "HAS-COMMENTS"),
    ],
)
def test_conditions(tmp_path: Path, changes: dict[str, str], expected: str | None) -> None:
    path = policy(tmp_path, CONDITIONAL)
    ds = dataset()
    ds.StationName = "CT01"
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    out = run(path, ds)
    if expected is None:
        assert "StationName" not in out, "no condition holds: the table removes it"
    else:
        assert out.StationName == expected


def test_if_manufacturer_then_remove_all_private_tags_except_a_list(tmp_path: Path) -> None:
    path = policy(
        tmp_path,
        "extends: default\nrules:\n"
        "  - select: private\n    action: keep\n"
        "  - select: private\n    action: remove\n"
        "    except: [{creator: ACME 1.0}]\n"
        "    when: {Manufacturer: {matches: ^ACME}}\n",
    )
    other = dataset()
    other.Manufacturer = "OTHER"
    acme = dataset()
    acme.Manufacturer = "ACME Imaging"
    out_other, out_acme = run(path, other), run(path, acme)
    assert 0x00191010 in out_other and 0x00291010 in out_other, "other vendors: all private kept"
    assert 0x00191010 not in out_acme, "ACME files: private removed..."
    assert out_acme[0x00291010].value == "DOE^JOHN", "...except the listed creator's"


# -- actions --------------------------------------------------------------------------------
def test_substitute_removes_a_surname_and_keeps_final(tmp_path: Path) -> None:
    path = policy(
        tmp_path,
        "extends: default\nrules:\n"
        "  - select: StructureSetLabel\n    action: substitute\n"
        "    pattern: '(?i)smith-?'\n    replacement: ''\n",
    )
    ds = dataset()
    ds.StructureSetLabel = "smith-final"
    assert run(path, ds).StructureSetLabel == "final"


def test_every_action_by_rule(tmp_path: Path) -> None:
    path = policy(
        tmp_path,
        "extends: default\nrules:\n"
        "  - {select: Modality, action: keep}\n"
        "  - {select: StudyDescription, action: clean}\n"
        "  - {select: ImageComments, action: empty}\n"
        "  - {select: OtherPatientIDs, action: encrypt, max_input_length: 20}\n"
        "  - {select: ProtocolName, action: token}\n"
        "  - {select: Manufacturer, action: remove}\n"
        "  - {select: SeriesDescription, action: replace, value: THORAX}\n"
        "  - {select: IrradiationEventUID, action: remap_uid}\n"
        "  - {select: StudyDate, action: shift_date}\n",
    )
    ds = dataset()
    ds.ImageComments = "anything"
    ds.OtherPatientIDs = "OLD-7"
    ds.ProtocolName = "Chest low dose"
    ds.Manufacturer = "ACME"
    ds.SeriesDescription = "anything"
    ds.IrradiationEventUID = "1.2.3.77"
    out = run(path, ds)
    assert out.Modality == "CT"
    assert out.StudyDescription == "CT CHEST for"
    assert out.ImageComments == ""
    assert decrypt_token(KEYRING, "OtherPatientIDs", out.OtherPatientIDs) == "OLD-7"
    assert len(out.ProtocolName) == 16
    assert "Manufacturer" not in out
    assert out.SeriesDescription == "THORAX"
    assert out.IrradiationEventUID.startswith("2.25.")
    assert out.StudyDate != "20230105"


# -- precedence -----------------------------------------------------------------------------
def test_precedence(tmp_path: Path) -> None:
    policy(
        tmp_path, "extends: default\nrules:\n  - {select: StationName, action: token}\n", "parent"
    )
    path = policy(
        tmp_path,
        "extends: parent\nrules:\n"
        "  - {select: StationName, action: replace, value: CHILD}\n"
        "  - {select: StationName, action: replace, value: US, when: {Modality: US}}\n"
        "  - {select: '(0008,10xx)', action: remove}\n",
    )
    compiled = load_policy(str(path))
    assert compiled.chain == ["basic", "default", "parent", "site"]
    ds = dataset()
    ds.StationName = "CT01"
    assert run(path, ds).StationName == "CHILD", "child over parent at equal specificity"
    ds.Modality = "US"
    assert run(path, ds).StationName == "US", "conditional over unconditional"
    assert compiled.decide(0x00081010, "SH").action is Action.REPLACE, "exact over pattern"
    assert compiled.decide(0x00081030, "LO").action is Action.REMOVE


def test_overlapping_patterns_in_one_file_conflict(tmp_path: Path) -> None:
    path = policy(
        tmp_path,
        "extends: default\nrules:\n"
        "  - {select: '(0008,10xx)', action: remove}\n"
        "  - {select: '(0008,1xx0)', action: keep}\n",
    )
    with pytest.raises(PolicyError, match="conflict"):
        load_policy(str(path))


# -- dates ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mode", "expected"), [("empty", ""), ("shift", "shifted"), ("year", "year")]
)
def test_birth_date_choices_and_a_consistent_age(tmp_path: Path, mode: str, expected: str) -> None:
    path = policy(
        tmp_path,
        "extends: default\noptions: [retain_patient_characteristics]\n"
        f"dates:\n  birth_date: {mode}\n",
    )
    ds = dataset()
    ds.PatientBirthDate = "19700615"
    ds.PatientAge = "052Y"
    out = run(path, ds)
    study = date(int(out.StudyDate[:4]), int(out.StudyDate[4:6]), int(out.StudyDate[6:]))
    if expected == "":
        assert out.PatientBirthDate == "" and out.PatientAge == "052Y"
        return
    birth = date(
        int(out.PatientBirthDate[:4]), int(out.PatientBirthDate[4:6]), int(out.PatientBirthDate[6:])
    )
    offset = (study - date(2023, 1, 5)).days
    if expected == "shifted":
        assert (birth - date(1970, 6, 15)).days == offset
        assert out.PatientAge == "052Y"
    else:
        assert out.PatientBirthDate.endswith("0101")
        assert int(out.PatientAge[:3]) == study.year - birth.year - (
            (study.month, study.day) < (1, 1)
        )


def test_anchor_needs_modified_dates(tmp_path: Path) -> None:
    path = policy(tmp_path, "extends: basic\ndates:\n  anchor: 2000-01-01\n")
    with pytest.raises(PolicyError, match="retain_longitudinal_modified_dates"):
        load_policy(str(path))


def test_anchor_in_the_engine(tmp_path: Path) -> None:
    path = policy(tmp_path, "extends: default\ndates:\n  anchor: 2000-01-01\n")
    compiled = load_policy(str(path))
    ds = dataset()
    engine = Pseudonymizer(KEYRING, compiled)
    from pseudo.findings import RejectedFile

    with pytest.raises(RejectedFile, match="anchor"):
        engine.pseudonymize(copy.deepcopy(ds))
    from pseudo.deid.identity import read_identity
    from pseudo.deid.tokens import pseudonym

    patient = pseudonym(KEYRING, read_identity(ds).key)
    offset = (date(2000, 1, 1) - date(2023, 1, 5)).days
    out = (
        Pseudonymizer(KEYRING, compiled, {patient: offset}).pseudonymize(copy.deepcopy(ds)).dataset
    )
    assert out.StudyDate == "20000101"
    assert out[0x00181202].value == "19991231", "the calibration a day earlier stays a day earlier"


def test_sr_content_is_cleaned_at_any_depth_with_clean_structured_content(tmp_path: Path) -> None:
    path = policy(tmp_path, "extends: default\noptions: [clean_structured_content]\n")
    ds = dataset()
    ds.PatientName = "DOE^JOHN"

    def item(value_type: str, **values: object) -> Dataset:
        result = Dataset()
        result.ValueType = value_type
        for keyword, value in values.items():
            setattr(result, keyword, value)
        return result

    inner = item("TEXT", TextValue="Reviewed with DOE JOHN on 2023-01-04, final")
    date_item = item("DATE", Date="20230104")
    name_item = item("PNAME", PersonName="WHO^DR")
    uid_item = item("UIDREF", UID="1.2.3.4.99")
    time_item = item("TIME", Time="101500")
    container = item(
        "CONTAINER", ContentSequence=Sequence([inner, date_item, name_item, uid_item, time_item])
    )
    ds.ContentSequence = Sequence([container])
    out = run(path, ds)
    children = out.ContentSequence[0].ContentSequence
    assert children[0].TextValue == "Reviewed with on , final"
    assert children[1].Date != "20230104" and len(children[1].Date) == 8
    assert children[2].PersonName == "ANONYMIZED"
    assert children[3].UID.startswith("2.25.")
    assert children[4].Time == "101500"
