"""Generate ``policies/ps3.15/iod-types.json``: the PS3.3 type of every attribute of every
module of the IODs of the SOP Classes, at every depth, per IOD and module.

Source: the machine-generated PS3.3 tables that highdicom ships in its wheel
(``highdicom/_standard/sop_class_iod_map.json``, ``iod_module_map.json`` and
``module_attribute_map.json``; MIT licence). pseudo does not import highdicom: this script
reads the wheel (a zip file) and writes a small JSON file that is committed.

Usage::

    pip download --no-deps highdicom==0.28.2 -d /tmp/wheels
    python scripts/generate_iod_types.py /tmp/wheels/highdicom-0.28.2-py3-none-any.whl

Each module is a tree of nodes (an attribute's type, and for a sequence the node of its items);
the items of a macro that many modules include are one node stored once, so that the whole of
PS3.3's module tables fits in about 300 kB. ``tests/test_policy_iod.py`` checks that this script
reproduces the file byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "policies" / "ps3.15" / "iod-types.json"
#: The PS3.3 edition of highdicom 0.28.2's tables, as far as their content dates them (neither
#: highdicom nor its source, innolitics' dicom-standard, records it; see docs/policies.md).
EDITION = "2025 (highdicom 0.28.2; the release is not recorded)"
MEMBERS = ("sop_class_iod_map.json", "iod_module_map.json", "module_attribute_map.json")


def _tree(attributes: list[dict[str, Any]]) -> dict[str, Any]:
    """A module's attributes as nested ``keyword -> [type, children]``."""
    tree: dict[str, Any] = {}
    for attribute in attributes:
        node = tree
        for keyword in attribute["path"]:
            node = node.setdefault(keyword, ["3", {}])[1]
        node.setdefault(attribute["keyword"], ["3", {}])[0] = attribute["type"]
    return tree


class _Nodes:
    """Sequence items shared by many modules (macros) stored once: a node maps a keyword to
    its type, or to ``[type, node]`` when the attribute is a sequence with attributes."""

    def __init__(self) -> None:
        self.nodes: list[dict[str, Any]] = []
        self._index: dict[str, int] = {}

    def add(self, tree: dict[str, Any]) -> int:
        """The index of the node of ``tree`` (added once, children first)."""
        node: dict[str, Any] = {}
        for keyword in sorted(tree):
            kind, children = tree[keyword]
            node[keyword] = [kind, self.add(children)] if children else kind
        key = json.dumps(node, sort_keys=True)
        if key not in self._index:
            self._index[key] = len(self.nodes)
            self.nodes.append(node)
        return self._index[key]


def build(wheel: Path) -> dict[str, Any]:
    """The data of ``iod-types.json`` from the highdicom wheel at ``wheel``."""
    with zipfile.ZipFile(wheel) as archive:
        data = {name: json.loads(archive.read(f"highdicom/_standard/{name}")) for name in MEMBERS}
    sop_iods: dict[str, str] = data["sop_class_iod_map.json"]
    iod_modules = {
        iod: sorted(m["key"] for m in modules)
        for iod, modules in data["iod_module_map.json"].items()
        if iod in set(sop_iods.values())
    }
    used = {m for modules in iod_modules.values() for m in modules}
    nodes = _Nodes()
    modules = {
        module: nodes.add(_tree(attributes))
        for module, attributes in sorted(data["module_attribute_map.json"].items())
        if module in used and attributes
    }
    return {
        "generated_by": "scripts/generate_iod_types.py",
        "source": f"highdicom {wheel.name.split('-')[1]} wheel, highdicom/_standard/*.json "
        "(PS3.3 IOD and module tables, machine-generated from the standard)",
        "source_sha256": hashlib.sha256(wheel.read_bytes()).hexdigest(),
        "edition": EDITION,
        "sop_classes": dict(sorted(sop_iods.items())),
        "iods": {
            iod: [m for m in mods if m in modules] for iod, mods in sorted(iod_modules.items())
        },
        "modules": modules,
        "nodes": nodes.nodes,
    }


def dump(document: dict[str, Any]) -> str:
    """``document`` as JSON text, one node per line."""
    head = {key: value for key, value in document.items() if key != "nodes"}
    text = json.dumps(head, indent=1)[:-2]
    nodes = ",\n".join("  " + json.dumps(node, separators=(",", ":")) for node in document["nodes"])
    return f'{text},\n "nodes": [\n{nodes}\n ]\n}}\n'


def main() -> None:
    """Write ``policies/ps3.15/iod-types.json`` from a highdicom wheel."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheel", type=Path, help="a downloaded highdicom wheel (.whl)")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    args.output.write_text(dump(build(args.wheel)), encoding="utf-8")


if __name__ == "__main__":
    main()
