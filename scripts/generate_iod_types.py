"""Generate ``policies/ps3.15/iod-types.json``: the PS3.3 type of every attribute that a
compound code of Table E.1-1 (X/Z, X/D, Z/D, X/Z/D, X/Z/U*) names, per IOD and module.

Source: the machine-generated PS3.3 tables that highdicom ships in its wheel
(``highdicom/_standard/sop_class_iod_map.json``, ``iod_module_map.json`` and
``module_attribute_map.json``; MIT licence). pseudo does not import highdicom: this script
reads the wheel (a zip file) and writes a small JSON file that is committed.

Usage::

    pip download --no-deps highdicom==0.28.2 -d /tmp/wheels
    python scripts/generate_iod_types.py /tmp/wheels/highdicom-0.28.2-py3-none-any.whl

The output keeps, for each module, only the attributes whose keyword a compound row names, at
every depth (``path`` is the chain of sequence keywords above the attribute), so that the file
stays small; ``tests/test_policy_iod.py`` checks that this script reproduces it byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "policies" / "ps3.15" / "table-e1-1.json"
OUTPUT = ROOT / "policies" / "ps3.15" / "iod-types.json"
COMPOUND = {"X/Z", "X/D", "Z/D", "X/Z/D", "X/Z/U*"}
MEMBERS = ("sop_class_iod_map.json", "iod_module_map.json", "module_attribute_map.json")


def compound_keywords(table: dict[str, Any]) -> set[str]:
    """Keywords of the rows whose Basic Profile or option code is compound."""
    keywords = set()
    for row in table["rows"]:
        codes = {row["basic"], *row.get("options", {}).values()}
        if codes & COMPOUND and row.get("keyword"):
            keywords.add(row["keyword"])
    return keywords


def build(wheel: Path) -> dict[str, Any]:
    """The data of ``iod-types.json`` from the highdicom wheel at ``wheel``."""
    with zipfile.ZipFile(wheel) as archive:
        data = {name: json.loads(archive.read(f"highdicom/_standard/{name}")) for name in MEMBERS}
    keywords = compound_keywords(json.loads(TABLE.read_text(encoding="utf-8")))
    sop_iods: dict[str, str] = data["sop_class_iod_map.json"]
    iod_modules = {
        iod: sorted(m["key"] for m in modules)
        for iod, modules in data["iod_module_map.json"].items()
        if iod in set(sop_iods.values())
    }
    used = {m for modules in iod_modules.values() for m in modules}
    modules: dict[str, dict[str, str]] = {}
    for module, attributes in sorted(data["module_attribute_map.json"].items()):
        if module not in used:
            continue
        entries = {}
        for attribute in attributes:
            if attribute["keyword"] in keywords:
                key = ">".join([*attribute["path"], attribute["keyword"]])
                entries[key] = attribute["type"]
        if entries:
            modules[module] = dict(sorted(entries.items()))
    return {
        "generated_by": "scripts/generate_iod_types.py",
        "source": f"highdicom {wheel.name.split('-')[1]} wheel, highdicom/_standard/*.json "
        "(PS3.3 IOD and module tables, machine-generated from the standard)",
        "source_sha256": hashlib.sha256(wheel.read_bytes()).hexdigest(),
        "sop_classes": dict(sorted(sop_iods.items())),
        "iods": {
            iod: [m for m in mods if m in modules] for iod, mods in sorted(iod_modules.items())
        },
        "modules": modules,
    }


def main() -> None:
    """Write ``policies/ps3.15/iod-types.json`` from a highdicom wheel."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheel", type=Path, help="a downloaded highdicom wheel (.whl)")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    text = json.dumps(build(args.wheel), indent=1, sort_keys=False) + "\n"
    args.output.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
