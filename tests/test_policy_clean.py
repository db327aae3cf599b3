"""The clean action (C): names and phrases go, clinical words, codes and SR structure stay."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from pseudo.deid.clean import TextCleaner, name_terms
from pseudo.deid.engine import Pseudonymizer
from pseudo.policy import load_policy
from tests.conftest import CANARY, need
from tests.synthetic import dataset, make_keyring

KEYRING = make_keyring()
#: A canary SR whose content tree uses DCM codes (121106 Comment, 121008 Person Observer Name).
CANARY_SR = "P02/ST3/SE2/P02ST3SE2_000030.dcm"
CODE_KEYWORDS = ("CodeValue", "CodingSchemeDesignator", "CodeMeaning")
STRUCTURE_KEYWORDS = ("ValueType", "RelationshipType", "ContinuityOfContent")


def run(tmp_path: Path, options: str, ds: Dataset) -> Dataset:
    path = tmp_path / "clean.yaml"
    path.write_text(f"name: clean\nextends: default\noptions: [{options}]\n")
    policy = load_policy(str(path))
    return Pseudonymizer(KEYRING, policy).pseudonymize(copy.deepcopy(ds)).dataset


# -- which values become terms ------------------------------------------------------------
def test_institution_words_are_not_deleted_one_by_one(tmp_path: Path) -> None:
    """The reviewer's case: an institution named with clinical words."""
    ds = dataset()
    ds.PatientName = "SMITH^JOHN"
    ds.InstitutionName = "Lung and Heart Center of MR Imaging"
    ds.StudyDescription = "CT LUNG AND HEART, MR of brain follow-up SMITH"
    ds.SeriesDescription = "from lung and  HEART center of mr imaging"
    out = run(tmp_path, "clean_descriptors", ds)
    assert out.StudyDescription == "CT LUNG AND HEART, MR of brain follow-up"
    assert out.SeriesDescription == "from", "the institution goes as a phrase (any case, spacing)"


def test_person_names_give_their_parts_but_not_initials_or_titles() -> None:
    terms = name_terms(pydicom.valuerep.PersonName("DE LA CRUZ^MARIA^J^DR"), 0x00100010)
    assert {"DE LA CRUZ", "CRUZ", "MARIA"} <= set(terms)
    assert not {"J", "DR", "DE", "LA"} & set(terms)
    cleaner = TextCleaner(terms)
    assert cleaner.clean("Type A dissection: J wave, de novo, seen by Maria Cruz") == (
        "Type A dissection: J wave, de novo, seen by"
    )


def test_ids_and_birth_date_are_found_as_before() -> None:
    terms = name_terms("AB 123", 0x00100020) + name_terms("19700615", 0x00100030)
    assert terms == ["AB 123", "AB", "123", "19700615"]
    assert name_terms("General Hospital", 0x00080080) == ["General Hospital"]
    assert name_terms("CT", 0x00081010) == ["CT"]
    assert TextCleaner(["CT"]).clean("CT CHEST") == "CT CHEST", "a station called CT"


def test_a_caret_joined_name_goes_whole(tmp_path: Path) -> None:
    """DOE is known, CNRY06DNPP is not: the whole DICOM-style name still goes."""
    ds = dataset()
    ds.PatientName = "DOE^JOHN"
    text = Dataset()
    text.RelationshipType = "CONTAINS"
    text.ValueType = "TEXT"
    text.TextValue = "Reviewed with DOE^CNRY06DNPP and Smith^Anna^^Dr on call; area 3 cm^2"
    ds.ContentSequence = Sequence([text])
    out = run(tmp_path, "clean_structured_content", ds)
    assert out.ContentSequence[0].TextValue == "Reviewed with and on call; area 3 cm^2"


# -- structure is never cleaned -----------------------------------------------------------
def _content_items(ds: Dataset, path: str = "") -> Iterator[tuple[str, Dataset]]:
    for index, item in enumerate(ds.get("ContentSequence", [])):
        where = f"{path}ContentSequence[{index}]"
        yield where, item
        yield from _content_items(item, where + ".")


def _structure(ds: Dataset) -> dict[str, str]:
    """Every code and structural value of the content tree, by path."""
    found = {}
    for where, item in _content_items(ds):
        for keyword in STRUCTURE_KEYWORDS:
            if keyword in item:
                found[f"{where}.{keyword}"] = str(item.get(keyword))
        for sequence in ("ConceptNameCodeSequence", "ConceptCodeSequence"):
            for index, code in enumerate(item.get(sequence, [])):
                for keyword in CODE_KEYWORDS:
                    found[f"{where}.{sequence}[{index}].{keyword}"] = str(code.get(keyword))
        for index, measured in enumerate(item.get("MeasuredValueSequence", [])):
            for code in measured.get("MeasurementUnitsCodeSequence", []):
                for keyword in CODE_KEYWORDS:
                    found[f"{where}.MeasuredValueSequence[{index}].units.{keyword}"] = str(
                        code.get(keyword)
                    )
    return found


def test_sr_codes_and_structure_survive_clean_structured_content(tmp_path: Path) -> None:
    original = pydicom.dcmread(need(CANARY / "dicom" / CANARY_SR, "PHI canary corpus"))
    out = run(tmp_path, "clean_structured_content", original)
    before, after = _structure(original), _structure(out)
    assert len(before) > 50
    assert {"121106", "121008", "111028"} <= set(before.values()), "DCM codes are in the file"
    assert after == before
    # ...and the content is still cleaned: no canary in TEXT, names replaced, dates moved.
    texts = [str(i.TextValue) for _, i in _content_items(out) if "TextValue" in i]
    # 'Enter text' goes: the PNAME item 'Enter text' makes ENTER and TEXT name parts
    assert texts == ["", "", "Patient reports chest pain since last visit.", "Discussed with"]
    names = [str(i.PersonName) for _, i in _content_items(out) if "PersonName" in i]
    assert names and set(names) == {"ANONYMIZED"}
    dates = [(w, str(i.Date)) for w, i in _content_items(out) if "Date" in i]
    assert dates and all(d != "20070604" for _, d in dates)


def test_codes_of_pydicoms_sr_survive(tmp_path: Path) -> None:
    """test-SR.dcm with an observer left at the OFFIS template's 'Enter text': the words ENTER
    and TEXT become name parts, and must not eat the value type TEXT nor 'Text Code'."""
    original = pydicom.dcmread(str(get_testdata_file("test-SR.dcm")))
    observer = Dataset()
    observer.RelationshipType = "HAS OBS CONTEXT"
    observer.ValueType = "PNAME"
    observer.PersonName = "Enter text"
    original.ContentSequence.append(observer)
    out = run(tmp_path, "clean_structured_content", original)
    before = _structure(original)
    assert {"TEXT", "Text Code", "1234", "99_OFFIS_DCMTK", "cm"} <= set(before.values())
    assert _structure(out) == before
    texts = [str(i.TextValue) for _, i in _content_items(out) if "TextValue" in i]
    assert texts[:2] == ["A mass of", "was detected."], "TEXT items are still processed"


def test_a_local_code_meaning_outside_sr_is_still_cleaned(tmp_path: Path) -> None:
    """A diagnosis typed into a local code is free text; a DCM code is not."""
    ds = dataset()
    ds.PatientName = "DOE^JOHN"
    local, standard = Dataset(), Dataset()
    local.CodeValue, local.CodingSchemeDesignator = "4711", "99LOCAL"
    local.CodeMeaning = "Entry for DOE^CNRY62GR2Q"
    standard.CodeValue, standard.CodingSchemeDesignator = "121106", "DCM"
    standard.CodeMeaning = "Comment"
    ds.AdmittingDiagnosesCodeSequence = Sequence([local, standard])
    out = run(tmp_path, "clean_descriptors", ds)
    first, second = out.AdmittingDiagnosesCodeSequence
    assert (first.CodeValue, first.CodingSchemeDesignator) == ("4711", "99LOCAL")
    assert first.CodeMeaning == "Entry for"
    assert (second.CodeValue, second.CodingSchemeDesignator, second.CodeMeaning) == (
        "121106",
        "DCM",
        "Comment",
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mrn 1234 for DOE", "for"),  # an extra pattern with its own (?i) flag
        ("MR knee DOE^X", "MR knee"),
    ],
)
def test_extra_patterns_with_flags_compile(text: str, expected: str) -> None:
    from pseudo.policy.clean_patterns import DEFAULT_PATTERNS

    cleaner = TextCleaner(["DOE"], [*DEFAULT_PATTERNS, r"(?i)\bMRN[- ]?\d+\b"])
    assert cleaner.clean(text) == expected
