"""The ``retain_safe_private_tcia`` option: TCIA's Private Tag Knowledge Base, generated from
../shared, matched by private creator, its dispositions mapped onto pseudo's actions (issue 17)."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from pseudo.deid.engine import Pseudonymizer
from pseudo.findings import NotAnInstance, RejectedFile
from pseudo.policy import PolicyError, load_policy
from pseudo.policy.private_kb import tcia_table
from tests.conftest import REPO, SHARED, need
from tests.synthetic import dataset, make_keyring

KEYRING = make_keyring()
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on odd public values
KB = SHARED / "reference" / "tcia-private-tag-kb"
GENERATED = REPO / "policies" / "tcia" / "private-tag-kb.json"


def _policy(tmp_path: Path, *options: str) -> Path:
    path = tmp_path / f"{'-'.join(options).replace('_', '-')}.yaml"
    path.write_text(f"name: p\nextends: default\noptions: [{', '.join(options)}]\n")
    return path


def test_generator_reproduces_the_table(tmp_path: Path) -> None:
    need(KB, "TCIA Private Tag Knowledge Base")
    target = tmp_path / "kb.json"
    script = REPO / "scripts" / "generate_tcia_private.py"
    subprocess.run(
        [sys.executable, str(script), "--reference", str(KB), "--out", str(target)], check=True
    )
    assert target.read_bytes() == GENERATED.read_bytes()


def test_every_row_is_accounted_for() -> None:
    import json

    counts = json.loads(GENERATED.read_text(encoding="utf-8"))["counts"]
    assert counts["rows"] == 8787 and counts["parsed"] == 8787
    assert counts.get("unparsed", 0) == 0
    matched = sum(v for k, v in counts.items() if k.startswith("disposition "))
    others = (
        counts["no private creator (never kept)"]
        + counts["standard attribute inside a private sequence (decided by the policy)"]
    )
    assert matched + others == 8787


GE = 0x0009


def _ge_dataset() -> Dataset:
    """A dataset with one private block of each disposition (creators from the base)."""
    ds = dataset()
    blocks: dict[str, dict[int, tuple[str, str | bytes]]] = {
        "GEMS_GENIE_1": {0x22: ("SH", "HFS"), 0x01: ("SH", "secret"), 0x2B: ("LO", "1.2.3.9")},
        "GEMS_IDEN_01": {0xE3: ("UI", "1.2.3.4.5.77"), 0x27: ("OB", b"\x01\x02")},
        "GEMS_PETD_01": {0x05: ("DT", "20230105101010")},
        "ACME UNKNOWN 1.0": {0x10: ("LO", "not in the base")},
    }
    for number, (creator, elements) in enumerate(blocks.items(), start=0x10):
        ds.add_new((GE << 16) | number, "LO", creator)
        for element, (vr, value) in elements.items():
            ds.add_new((GE << 16) | (number << 8) | element, vr, value)
    return ds


def test_dispositions_map_onto_actions(tmp_path: Path) -> None:
    policy = load_policy(str(_policy(tmp_path, "retain_safe_private_tcia")))
    out = Pseudonymizer(KEYRING, policy).pseudonymize(_ge_dataset()).dataset
    block = {str(out[(GE << 16) | n].value): n for n in range(0x10, 0x14) if (GE << 16) | n in out}

    def value(creator: str, element: int) -> object:
        tag = (GE << 16) | (block[creator] << 8) | element
        return out[tag].value if tag in out else None

    assert value("GEMS_GENIE_1", 0x22) == "HFS", "k: kept"
    assert value("GEMS_GENIE_1", 0x01) is None, "d: removed"
    assert value("GEMS_GENIE_1", 0x2B) is None, "h on an LO: no UI to remap, removed"
    assert str(value("GEMS_IDEN_01", 0xE3)).startswith("2.25."), "h on a UI: remapped"
    assert value("GEMS_IDEN_01", 0x27) is None, "oi (an integer-coded date): removed"
    shifted = str(value("GEMS_PETD_01", 0x05))
    assert shifted != "20230105101010" and len(shifted) == 14, "o: shifted with the patient"
    assert "ACME UNKNOWN 1.0" not in block, "not in the base: removed, creator too"
    assert out.DeidentificationMethodCodeSequence[-1].CodeValue == "113111"  # Retain Safe Private


def test_both_tables_at_once_are_refused(tmp_path: Path) -> None:
    path = _policy(tmp_path, "retain_safe_private", "retain_safe_private_tcia")
    with pytest.raises(PolicyError, match="choose one"):
        load_policy(str(path))


def _private_count(ds: Dataset) -> int:
    return sum(1 for e in ds.iterall() if e.tag.group & 1 and e.tag.element >= 0x1000)


#: Private attributes (creators not counted) in the outputs of the public corpus under the
#: default policy with each option, measured; and how many outputs hold any.
KEPT = {"retain_safe_private": (76, 14), "retain_safe_private_tcia": (1503, 39)}
IN_INPUTS = 1790


def test_public_corpus_counts(tmp_path: Path, public_dir: Path) -> None:
    """What each option keeps on the public corpus: TCIA's base keeps about 20 times as many
    private attributes as PS3.15 Table E.3.10-1, and only attributes the base lists as kept,
    hashed or shifted (never one it deletes or does not know)."""
    pseudonymizers = {
        option: Pseudonymizer(KEYRING, load_policy(str(_policy(tmp_path, option))))
        for option in KEPT
    }
    table = tcia_table()
    kept = {option: [0, 0] for option in KEPT}
    total = 0
    for path in sorted(public_dir.rglob("*")):
        if not path.is_file() or path.suffix in (".csv", ".md", ".json", ".txt"):
            continue
        try:
            original = pydicom.dcmread(path)
        except Exception:
            continue  # not DICOM, or too broken to read
        total += _private_count(original)
        for option, pseudonymizer in pseudonymizers.items():
            try:
                out = pseudonymizer.pseudonymize(copy.deepcopy(original)).dataset
            except (RejectedFile, NotAnInstance):
                continue
            count = _private_count(out)
            kept[option][0] += count
            kept[option][1] += bool(count)
            if option == "retain_safe_private_tcia":
                for level in [out, *(i for e in out.iterall() if e.VR == "SQ" for i in e.value)]:
                    for tag in level.keys():
                        if tag.group & 1 and tag.element >= 0x1000:
                            action, why = table.lookup(level, tag)
                            assert action.value != "remove", f"{path.name} {tag}: {why}"
    assert total == IN_INPUTS
    assert {option: tuple(counts) for option, counts in kept.items()} == KEPT
