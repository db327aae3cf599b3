"""The generated PS3.15 tables against the standard's own tables in ../shared/reference/ps3.15."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pseudo.policy import Action, load_policy
from pseudo.policy.compiled import CODE_ACTIONS, COMBINED_CODES, table_decision
from pseudo.policy.table import confidentiality_table
from tests.conftest import REFERENCE, REPO, need

GENERATED = REPO / "policies" / "ps3.15" / "table-e1-1.json"
SUPPLEMENT_TAGS = {
    "(003A,0020)",
    "(003A,0203)",
    "(003A,020C)",
    "(0040,0556)",
    "(0040,B020)",
    "(0040,E012)",
    "(0070,0006)",
}
OPTION_COLUMNS = {
    "retain_safe_private": "retain_safe_private",
    "retain_uids": "retain_uids",
    "retain_device": "retain_device_identity",
    "retain_institution": "retain_institution_identity",
    "retain_patient_chars": "retain_patient_characteristics",
    "retain_long_full_dates": "retain_longitudinal_full_dates",
    "retain_long_modified_dates": "retain_longitudinal_modified_dates",
    "clean_desc": "clean_descriptors",
    "clean_struct": "clean_structured_content",
    "clean_graph": "clean_graphics",
}


def _csv_rows() -> list[dict[str, str]]:
    path = need(REFERENCE / "table_E.1-1_2025c_normalized.csv", "PS3.15 2025c table")
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _tag(csv_tag: str) -> str:
    return "private" if "gggg" in csv_tag else f"({csv_tag[:4]},{csv_tag[4:]})"


def test_every_row_matches_the_standard_row_by_row() -> None:
    table = {row.tag: row for row in confidentiality_table().rows}
    rows = _csv_rows()
    for row in rows:
        generated = table[_tag(row["tag"])]
        assert generated.name == row["name"]
        assert generated.basic == row["basic"], row["name"]
        assert generated.retired == (row["retired"] == "Y")
        expected = {OPTION_COLUMNS[c]: row[c] for c in OPTION_COLUMNS if row[c]}
        assert generated.options == expected, row["name"]
    assert set(table) - {_tag(r["tag"]) for r in rows} == SUPPLEMENT_TAGS
    assert len(table) == len(rows) + len(SUPPLEMENT_TAGS)


def test_edition_and_sources_are_recorded() -> None:
    document = json.loads(GENERATED.read_text())
    assert document["edition"] == "2025c+2026c"
    assert document["source"]["file"] == "table_E.1-1_2025c_normalized.csv"
    assert document["cross_check"] == {
        "edition": "2024c",
        "file": "table_E.1-1_2024c.xml",
        "compared": 623,
        "known_differences": 2,
    }
    assert document["supplement"]["agreeing_rows"] == 645
    assert set(document["supplement"]["added_rows"]) == SUPPLEMENT_TAGS


@pytest.mark.skipif(
    importlib.util.find_spec("dicomanonymizer") is None,
    reason="dicom-anonymizer 2.1.0 (the 2026c transcription) is not installed",
)
def test_the_generator_reproduces_the_committed_tables(tmp_path: Path) -> None:
    need(REFERENCE, "PS3.15 reference tables")
    subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "generate_ps315.py"),
            "--reference",
            str(REFERENCE),
            "--out",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
    )
    for name in ("table-e1-1.json", "table-e3-10-1.json"):
        assert (tmp_path / name).read_bytes() == (GENERATED.parent / name).read_bytes(), name


def test_basic_profile_decisions_follow_the_basic_column() -> None:
    policy = load_policy("basic")
    for row in confidentiality_table().rows:
        if row.tag == "private" or "x" in row.tag:
            continue
        tag = int(row.tag[1:5] + row.tag[6:10], 16)
        if policy.candidates_for(tag, row.vr or "UN"):
            continue
        code = COMBINED_CODES.get(row.basic, row.basic)
        assert policy.decide(tag, row.vr or "UN").action is CODE_ACTIONS[code], row.name


@pytest.mark.parametrize("option", list(OPTION_COLUMNS.values()))
def test_each_option_changes_exactly_its_column(option: str) -> None:
    table = confidentiality_table()
    for row in table.rows:
        basic = table_decision(row, [], table.edition).action
        with_option = table_decision(row, [option], table.edition).action
        if option in row.options:
            code = COMBINED_CODES.get(row.options[option], row.options[option])
            assert with_option is CODE_ACTIONS[code], row.name
        else:
            assert with_option is basic, row.name


def test_combined_codes_take_the_strictest_choice() -> None:
    assert COMBINED_CODES == {"X/Z": "X", "X/D": "X", "Z/D": "Z", "X/Z/D": "X", "X/Z/U*": "U"}
    policy = load_policy("basic")
    assert policy.decide(0x00081140, "SQ").action is Action.REMAP_UID  # Referenced Image Sequence
    assert policy.decide(0x00080080, "LO").action is Action.REMOVE  # Institution Name X/Z/D
    assert policy.decide(0x00080023, "DA").action is Action.EMPTY  # Content Date Z/D


def test_safe_private_table_matches_the_standard() -> None:
    import xml.etree.ElementTree as ET

    source = need(REFERENCE / "table_E.3.10-1_2024c.xml", "PS3.15 table E.3.10-1")
    ns = "{http://docbook.org/ns/docbook}"
    body = ET.parse(source).getroot().find(f".//{ns}tbody")
    assert body is not None
    expected = set()
    for tr in body.iter(f"{ns}tr"):
        cells = [" ".join("".join(td.itertext()).split()) for td in tr]
        expected.add((cells[0].upper().replace("XX", "xx"), cells[1]))
    generated = json.loads((GENERATED.parent / "table-e3-10-1.json").read_text())
    assert {(r["tag"], r["creator"]) for r in generated["rows"]} == expected
