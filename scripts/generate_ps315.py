#!/usr/bin/env python3
"""Generate policies/ps3.15/*.json from the DICOM standard's own tables.

Reads PS3.15 Table E.1-1 (Application Level Confidentiality Profile Attributes) from the 2025c
normalized CSV in ``../shared/reference/ps3.15/`` and cross-checks every row it shares with the
official 2024c DocBook source; reads Table E.3.10-1 (Safe Private Attributes) from the 2024c
DocBook. Writes the tables as YAML data that the policy loader reads. Nothing in the output is
typed by hand; run this script again when a new edition of the standard is added.

Rows added by the 2026c edition are taken from the machine-generated 2026c transcription that
ships in the ``dicom-anonymizer`` 2.1.0 package (Basic Profile column only; it is the table the
PHI canary corpus was built against), after checking that it agrees with 2025c on every row
they share. Install it with ``pip install dicom-anonymizer==2.1.0``; ``--no-supplement`` skips it.

Usage: python scripts/generate_ps315.py [--reference DIR] [--out DIR] [--no-supplement]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import inspect
import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from pydicom.datadict import dictionary_keyword, dictionary_VR

#: The first field of every generated table.
NOTICE = (
    "by scripts/generate_ps315.py from the DICOM standard's own table (shared/reference/ps3.15; "
    "see the fields below for editions and sources); do not edit by hand: run the script again"
)

EDITION = "2025c"
CROSS_CHECK_EDITION = "2024c"
E11_CSV = "table_E.1-1_2025c_normalized.csv"
E11_XML = "table_E.1-1_2024c.xml"
E3101_XML = "table_E.3.10-1_2024c.xml"
DOCBOOK = "{http://docbook.org/ns/docbook}"

#: CSV column -> option identifier used in policies (the order of the table's columns).
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
#: Known differences between 2024c and 2025c, documented in shared/reference/ps3.15/README.md.
KNOWN_2024C_DIFFERENCES = {("00102160", "retired"), ("00102160", "in_std_comp_iod")}
CODES = {"X", "Z", "D", "U", "K", "C", "X/Z", "X/D", "Z/D", "X/Z/D", "X/Z/U*"}
SUPPLEMENT_EDITION = "2026c"
SUPPLEMENT_SOURCE = (
    "dicom-anonymizer 2.1.0, dicomanonymizer/dicom_anonymization_databases/dicomfields_2026c.py"
)
#: Lists of dicomfields_2026c -> Basic Profile code.
SUPPLEMENT_LISTS = {
    "D_TAGS": "D",
    "U_TAGS": "U",
    "X_D_TAGS": "X/D",
    "X_TAGS": "X",
    "X_Z_D_TAGS": "X/Z/D",
    "X_Z_TAGS": "X/Z",
    "X_Z_U_STAR_TAGS": "X/Z/U*",
    "Z_D_TAGS": "Z/D",
    "Z_TAGS": "Z",
}
PRIVATE_ROW = "(gggg,eeee) where gggg is odd"


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tag_text(tag: str) -> str:
    """``00080050`` -> ``(0008,0050)``; masks keep their lower-case ``x``."""
    return f"({tag[:4]},{tag[4:]})"


def dictionary_entry(tag: str) -> tuple[str | None, str | None]:
    """Keyword and VR from pydicom's data dictionary, or ``(None, None)`` if unknown there."""
    if "x" in tag:
        return None, None
    try:
        return dictionary_keyword(int(tag, 16)) or None, dictionary_VR(int(tag, 16))
    except KeyError:
        return None, None


def read_e11(path: Path) -> list[dict[str, str]]:
    """Rows of the normalized CSV, validated."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for column in ["basic", *OPTION_COLUMNS]:
            if row[column] and row[column] not in CODES:
                raise SystemExit(f"{path}: row {row['tag']}: unknown action code {row[column]!r}")
        if row["tag"] != PRIVATE_ROW and not re.fullmatch(r"[0-9A-Fx]{8}", row["tag"]):
            raise SystemExit(f"{path}: unexpected tag {row['tag']!r}")
    return rows


def _cell_text(cell: ET.Element) -> str:
    return re.sub(r"\s+", " ", "".join(cell.itertext())).strip()


def read_docbook_table(path: Path) -> list[list[str]]:
    """Body rows of a DocBook table, as lists of cell texts."""
    root = ET.parse(path).getroot()
    body = root.find(f".//{DOCBOOK}tbody")
    if body is None:
        raise SystemExit(f"{path}: no table body")
    return [[_cell_text(cell) for cell in tr] for tr in body.iter(f"{DOCBOOK}tr")]


def cross_check(rows: list[dict[str, str]], xml_path: Path) -> dict[str, int]:
    """Compare every row shared with the 2024c DocBook; exit on an unexplained difference."""
    by_tag = {row["tag"]: row for row in rows}
    columns = ["retired", "in_std_comp_iod", "basic", *OPTION_COLUMNS]
    compared = differences = 0
    for cells in read_docbook_table(xml_path):
        name, tag = cells[0], cells[1]
        key = (
            PRIVATE_ROW
            if "gggg" in tag
            else tag.strip("()").replace(",", "").upper().replace("X", "x")
        )
        row = by_tag.get(key)
        if row is None:
            raise SystemExit(f"{xml_path}: row {tag} {name!r} is missing from the {EDITION} CSV")
        compared += 1
        for column, value in zip(columns, cells[2:], strict=True):
            if row[column] != value:
                if (key, column) in KNOWN_2024C_DIFFERENCES:
                    differences += 1
                    continue
                raise SystemExit(
                    f"{tag} {name!r}: {column} is {value!r} in {CROSS_CHECK_EDITION} but "
                    f"{row[column]!r} in {EDITION}; investigate before generating"
                )
    return {"compared": compared, "known_differences": differences}


def read_supplement() -> tuple[dict[str, str], dict[str, str]]:
    """Basic Profile codes and attribute names by tag (``0008XXXX``) of the 2026c rows."""
    try:
        from dicomanonymizer.dicom_anonymization_databases import dicomfields_2026c as table
    except ImportError as exc:
        raise SystemExit(
            "the 2026c supplement needs `pip install dicom-anonymizer==2.1.0` "
            "(or run with --no-supplement)"
        ) from exc
    codes: dict[str, str] = {}
    for list_name, code in SUPPLEMENT_LISTS.items():
        for tag in getattr(table, list_name):
            if len(tag) == 2:  # (group, element); masks are given as 4-tuples
                key = f"{tag[0]:04X}{tag[1]:04X}"
                if key in codes and codes[key] != code:
                    raise SystemExit(
                        f"2026c supplement: {key} is listed as {codes[key]} and {code}"
                    )
                codes[key] = code
    names = {
        f"{int(g, 16):04X}{int(e, 16):04X}": name.strip()
        for g, e, name in re.findall(
            r"\(0x([0-9A-Fa-f]{4}), 0x([0-9A-Fa-f]{4})\),\s*#\s*(.+)", inspect.getsource(table)
        )
    }
    return codes, names


def merge_supplement(
    rows: list[dict[str, str]], supplement: dict[str, str], names: dict[str, str]
) -> dict[str, Any]:
    """Append the rows 2026c adds; stop if it disagrees with 2025c on any shared row."""
    by_tag = {row["tag"]: row for row in rows}
    agree = 0
    for tag, code in supplement.items():
        if tag in by_tag:
            if by_tag[tag]["basic"] != code:
                raise SystemExit(
                    f"{tag}: Basic Profile {by_tag[tag]['basic']!r} in {EDITION} but {code!r} in "
                    f"{SUPPLEMENT_EDITION}; investigate before generating"
                )
            agree += 1
    added = []
    for tag in sorted(set(supplement) - set(by_tag)):
        if tag not in names:
            raise SystemExit(f"2026c row {tag} has no attribute name in the transcription")
        name = names[tag]
        row = {column: "" for column in rows[0]}
        row.update(tag=tag, name=name, basic=supplement[tag], retired="N", in_std_comp_iod="")
        row["edition"] = SUPPLEMENT_EDITION
        rows.append(row)
        added.append(tag_text(tag))
    return {
        "edition": SUPPLEMENT_EDITION,
        "source": SUPPLEMENT_SOURCE,
        "columns": "Basic Profile only; option columns of these rows are left empty",
        "agreeing_rows": agree,
        "added_rows": added,
    }


def e11_table(
    rows: list[dict[str, str]],
    source: Path,
    check: dict[str, int],
    supplement: dict[str, Any] | None,
) -> dict[str, Any]:
    """The generated document for Table E.1-1."""
    out_rows = []
    for row in rows:
        keyword, vr = dictionary_entry(row["tag"]) if row["tag"] != PRIVATE_ROW else (None, None)
        entry: dict[str, Any] = {
            "tag": "private" if row["tag"] == PRIVATE_ROW else tag_text(row["tag"]),
            "name": row["name"],
        }
        if keyword:
            entry["keyword"] = keyword
        if vr:
            entry["vr"] = vr
        entry["basic"] = row["basic"]
        options = {OPTION_COLUMNS[c]: row[c] for c in OPTION_COLUMNS if row[c]}
        if options:
            entry["options"] = options
        entry["retired"] = row["retired"] == "Y"
        if row["in_std_comp_iod"]:  # not given for supplement rows
            entry["in_std_comp_iod"] = row["in_std_comp_iod"] == "Y"
        if row.get("edition"):
            entry["edition"] = row["edition"]
        out_rows.append(entry)
    document: dict[str, Any] = {
        "table": "PS3.15 Table E.1-1 Application Level Confidentiality Profile Attributes",
        "edition": EDITION if supplement is None else f"{EDITION}+{SUPPLEMENT_EDITION}",
        "source": {"file": source.name, "sha256": sha256(source)},
        "cross_check": {"edition": CROSS_CHECK_EDITION, "file": E11_XML, **check},
    }
    if supplement is not None:
        document["supplement"] = supplement
    return {
        **document,
        "generated_by": "scripts/generate_ps315.py",
        "options": list(OPTION_COLUMNS.values()),
        "rows": out_rows,
    }


def e3101_table(xml_path: Path) -> dict[str, Any]:
    """The generated document for Table E.3.10-1 (Safe Private Attributes)."""
    rows = []
    for cells in read_docbook_table(xml_path):
        tag, creator, vr, vm, meaning = cells[:5]
        match = re.fullmatch(r"\(([0-9A-Fa-f]{4}),xx([0-9A-Fa-f]{2})\)", tag)
        if not match:
            raise SystemExit(f"{xml_path}: unexpected private tag {tag!r}")
        tag = f"({match[1].upper()},xx{match[2].upper()})"
        rows.append({"tag": tag, "creator": creator, "vr": vr, "vm": vm, "meaning": meaning})
    return {
        "table": "PS3.15 Table E.3.10-1 Safe Private Attributes",
        "edition": CROSS_CHECK_EDITION,
        "source": {"file": xml_path.name, "sha256": sha256(xml_path)},
        "generated_by": "scripts/generate_ps315.py",
        "rows": rows,
    }


def _dump(data: dict[str, Any], path: Path) -> None:
    """Write a table as JSON (read in milliseconds, where YAML took a tenth of a second at
    every start), its header fields first and then one row per line, for review and diffs."""
    rows = data.pop("rows")
    header = {"generated": NOTICE, **data}
    text = json.dumps(header, indent=2, ensure_ascii=False)[: -len("\n}")]
    text += ',\n  "rows": [\n'
    text += ",\n".join("    " + json.dumps(row, ensure_ascii=False) for row in rows)
    path.write_text(text + "\n  ]\n}\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    repo = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, default=repo.parent / "shared/reference/ps3.15")
    parser.add_argument("--out", type=Path, default=repo / "policies/ps3.15")
    parser.add_argument("--no-supplement", action="store_true", help="2025c rows only")
    args = parser.parse_args(argv)
    if not args.reference.is_dir():
        print(f"{args.reference}: reference folder not found", file=sys.stderr)
        return 2
    rows = read_e11(args.reference / E11_CSV)
    check = cross_check(rows, args.reference / E11_XML)
    supplement = None if args.no_supplement else merge_supplement(rows, *read_supplement())
    args.out.mkdir(parents=True, exist_ok=True)
    _dump(
        e11_table(rows, args.reference / E11_CSV, check, supplement), args.out / "table-e1-1.json"
    )
    _dump(e3101_table(args.reference / E3101_XML), args.out / "table-e3-10-1.json")
    print(
        f"Table E.1-1 {EDITION}: {len(rows)} rows; {check['compared']} cross-checked against "
        f"{CROSS_CHECK_EDITION} ({check['known_differences']} known differences)"
    )
    if supplement:
        print(
            f"  + {len(supplement['added_rows'])} rows of {SUPPLEMENT_EDITION} "
            f"({supplement['agreeing_rows']} shared rows agree)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
