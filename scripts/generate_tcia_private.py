#!/usr/bin/env python3
"""Generate ``policies/tcia/private-tag-kb.json`` from TCIA's Private Tag Knowledge Base.

Reads ``TCIAPrivateTagKB-02-01-2024-formatted.csv`` in ``../shared/reference/tcia-private-tag-kb/``
(8,787 rows: ``element_sig_pattern``, ``tag_name``, ``vr``, ``private_disposition``) and writes one
row per private attribute that can be matched by its private creator, with the disposition
normalized (``' k'`` and ``K`` are ``k``, ``D`` is ``d``). Nothing in the output is typed by hand;
run the script again when TCIA publishes a new edition.

The export's quoting flaws are parsed tolerantly (``(0009,GEIIS",10)`` is ``(0009,"GEIIS",10)``)
and every row is accounted for in the output's ``counts``: parsed, unparsed, without a creator
(``(0009,,02)``: not matchable by creator, so never kept), and ending in a standard attribute
inside a private sequence (decided by the policy like any standard attribute).

Usage: python scripts/generate_tcia_private.py [--reference DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT.parent / "shared" / "reference" / "tcia-private-tag-kb"
SOURCE = "TCIAPrivateTagKB-02-01-2024-formatted.csv"
EDITION = "2024-02-01"
OUTPUT = ROOT / "policies" / "tcia" / "private-tag-kb.json"
NOTICE = (
    "by scripts/generate_tcia_private.py from TCIA's Private Tag Knowledge Base "
    "(shared/reference/tcia-private-tag-kb); do not edit by hand: run the script again"
)
#: One step of a pattern: a private attribute (group, creator, element byte) or a standard tag.
STEP = re.compile(
    r"\((?P<group>[0-9a-fA-F]{4}),"
    r"(?:\"?(?P<creator>[^\"]*?)\"?,(?P<element>[0-9a-fA-F]{2})|(?P<standard>[0-9a-fA-F]{4}))\)"
)
ITEM = re.compile(r"\[<\d+>\]")
#: Dispositions as TCIA spells them: keep, delete, hash (a UID), offset (a date), offset of an
#: integer-coded date, not applicable.
DISPOSITIONS = {"k", "d", "h", "o", "oi", "na"}


def _step(text: str) -> str | None:
    """One step in the output's notation: ``(0019,"GEMS_ACQU_01",0c)`` or ``(0028,0008)``."""
    match = STEP.fullmatch(text)
    if match is None:
        return None
    group = match["group"].upper()
    if match["standard"] is not None:
        return f"({group},{match['standard'].upper()})"
    return f'({group},"{match["creator"].strip()}",{match["element"].lower()})'


def parse(rows: list[dict[str, str]]) -> tuple[list[dict[str, Any]], Counter[str]]:
    """The matchable rows and what became of every row of the CSV."""
    out: list[dict[str, Any]] = []
    counts: Counter[str] = Counter()
    for row in rows:
        steps = [_step(part) for part in ITEM.split(row["element_sig_pattern"].strip())]
        disposition = row["private_disposition"].strip().lower()
        if any(step is None for step in steps):
            counts["unparsed"] += 1
            continue
        counts["parsed"] += 1
        last = STEP.fullmatch(str(steps[-1]))
        assert last is not None
        if last["standard"] is not None:
            counts["standard attribute inside a private sequence (decided by the policy)"] += 1
            continue
        if not last["creator"].strip():
            counts["no private creator (never kept)"] += 1
            continue
        if disposition not in DISPOSITIONS:
            disposition = ""  # unknown: removed (fail closed)
        counts[f"disposition {disposition or 'missing'}"] += 1
        out.append(
            {
                "path": steps[:-1],
                "group": last["group"].upper(),
                "creator": last["creator"].strip(),
                "element": last["element"].lower(),
                "vr": row["vr"].strip(),
                "disposition": disposition,
                "name": row["tag_name"].strip(),
            }
        )
    out.sort(key=lambda r: (r["group"], r["creator"], r["element"], r["path"], r["vr"]))
    return out, counts


def build(reference: Path) -> dict[str, Any]:
    """The document written to ``private-tag-kb.json``."""
    path = reference / SOURCE
    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    parsed, counts = parse(rows)
    return {
        "generated": NOTICE,
        "table": "TCIA Private Tag Knowledge Base",
        "edition": EDITION,
        "source": {"file": SOURCE, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()},
        "generated_by": "scripts/generate_tcia_private.py",
        "counts": {"rows": len(rows), **dict(sorted(counts.items()))},
        "rows": parsed,
    }


def dump(document: dict[str, Any], target: Path) -> None:
    """Write ``document`` as JSON with one row per line (small diffs, fast to read)."""
    head = {key: value for key, value in document.items() if key != "rows"}
    lines = json.dumps(head, indent=2, ensure_ascii=False)[:-2]
    rows = ",\n".join(
        "    " + json.dumps(row, ensure_ascii=False, separators=(", ", ": "))
        for row in document["rows"]
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(f'{lines},\n  "rows": [\n{rows}\n  ]\n}}\n', encoding="utf-8")


def main() -> None:
    """Parse the arguments and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, default=REFERENCE)
    parser.add_argument("--out", type=Path, default=OUTPUT)
    args = parser.parse_args()
    dump(build(args.reference), args.out)


if __name__ == "__main__":
    main()
