"""Each PS3.15 option, on real files, changes exactly the attributes of its column.

For every option, real files are pseudonymized with the Basic Profile and with the Basic
Profile plus that option. The attributes whose outcome differs must all belong to the option's
column of Table E.1-1 (or be dates and UIDs that the table does not list, whose safety nets
follow the temporal and UID options by design); and every attribute of the column that the
input holds with a value must come out differently, except binary values that the C code
cannot clean without looking at them (they are removed either way).
"""

from __future__ import annotations

import copy
import hashlib
from functools import cache
from pathlib import Path

import pydicom
import pytest
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

from keystore.keyring import Keyring, ProjectSettings
from pseudo.deid.engine import Pseudonymizer
from pseudo.dicom.private import SafePrivate
from pseudo.dicom.tags import parse_tag_pattern
from pseudo.dicom.vr import DATE_VRS
from pseudo.policy import load_policy
from pseudo.policy.table import confidentiality_table
from pseudo.review.diff import compare
from tests.conftest import CANARY, PUBLIC, need

OPTIONS = [
    "retain_safe_private",
    "retain_uids",
    "retain_device_identity",
    "retain_institution_identity",
    "retain_patient_characteristics",
    "retain_longitudinal_full_dates",
    "retain_longitudinal_modified_dates",
    "clean_descriptors",
    "clean_structured_content",
    "clean_graphics",
]
SAFE = SafePrivate.load()
MARKERS = {0x00120063, 0x00120064, 0x00280303}  # De-identification Method (+ codes), LTIM
BINARY = {"OB", "OW", "OF", "OD", "OL", "UN"}
KEYRING = Keyring.from_secret(
    hashlib.sha256(b"options").digest(), ProjectSettings("o", "O", -500, -1), bytes(32)
)
PUBLIC_FILES = [
    "highdicom/ct_image.dcm",
    "dicom-test-files/WG04/JLSN/MR3_JLSN.dcm",
    "pydicom/test_files/MR_small.dcm",
]


@cache
def inputs() -> tuple[tuple[str, Dataset], ...]:
    files = sorted(need(CANARY / "dicom", "PHI canary corpus").rglob("*.dcm"))[::3]
    files += [need(PUBLIC / name, "public DICOM corpus") for name in PUBLIC_FILES]
    return tuple((p.name, pydicom.dcmread(p)) for p in files)


def _column(option: str) -> tuple[set[int], list[tuple[int, int]], bool]:
    """Exact tags, repeating-group masks and the private row that the option's column changes."""
    exact, masks, private = set(), [], False
    for row in confidentiality_table().rows:
        if option not in row.options:
            continue
        if row.tag == "private":
            private = True
            continue
        pattern = parse_tag_pattern(row.tag)
        assert pattern is not None
        if pattern.is_exact:
            exact.add(pattern.value)
        else:
            masks.append((pattern.mask, pattern.value))
    return exact, masks, private


def _in_column(tag: int, column: tuple[set[int], list[tuple[int, int]], bool]) -> bool:
    exact, masks, private = column
    return tag in exact or any(tag & m == v for m, v in masks) or (private and bool(tag >> 16 & 1))


def _policy(tmp_path: Path, option: str | None) -> Path:
    path = tmp_path / f"{option or 'none'}.yaml"
    options = f"options: [{option}]\n" if option else ""
    path.write_text(f"name: t\nextends: basic\n{options}")
    return path


def _top_tag(path: str) -> int:
    first = path.split(".")[0].split("[")[0]
    pattern = parse_tag_pattern(first)
    return pattern.value if pattern is not None else int(tag_for_keyword(first) or 0)


def _leaf_tag(change_tag: str) -> int:
    return int(change_tag[1:5] + change_tag[6:10], 16)


@pytest.mark.parametrize("option", OPTIONS)
def test_option_changes_exactly_its_column(option: str, tmp_path: Path) -> None:
    basic = Pseudonymizer(KEYRING, load_policy(str(_policy(tmp_path, None))))
    policy = load_policy(str(_policy(tmp_path, option)))
    with_option = Pseudonymizer(KEYRING, policy)
    column = _column(option)
    follows_option = {
        "retain_uids": {"UI"},
        "retain_longitudinal_full_dates": DATE_VRS,
        "retain_longitudinal_modified_dates": DATE_VRS,
        # free text that no row decides is removed, but cleaned under a cleaning option
        "clean_descriptors": {"LT", "ST", "UT", "UC"},
        "clean_structured_content": {"LT", "ST", "UT", "UC"},
    }.get(option, set())
    changed: set[int] = set()
    expected: set[int] = set()
    for name, original in inputs():
        a = basic.pseudonymize(copy.deepcopy(original)).dataset
        b = with_option.pseudonymize(copy.deepcopy(original)).dataset
        for change in compare(a, b):
            tag = _leaf_tag(change.tag)
            if change.kind == "kept" or tag in MARKERS:
                continue
            changed.update((tag, _top_tag(change.path)))
            in_table = policy.fallback(tag, change.vr).source.startswith("PS3.15")
            assert _in_column(tag, column) or (change.vr in follows_option and not in_table), (
                f"{option} changed {change.path} ({change.kind}) in {name}, not in its column"
            )
        for tag in original.keys():
            element = original[tag]
            if not _in_column(tag, column) or element.VR in BINARY:
                continue
            if element.value in (None, "", []):
                continue
            if tag >> 16 & 1 and (SAFE.is_creator(tag) or not SAFE.is_safe(original, tag)):
                continue  # the private row keeps only the safe private attributes
            if tag >> 16 & 0xFF01 == 0x6000 and (tag >> 16) << 16 | 0x3000 in original:
                continue  # overlays go whole when their bitmap (which C cannot clean) goes
            expected.add(tag)
    missing = {f"({t >> 16:04X},{t & 0xFFFF:04X})" for t in expected - changed}
    assert not missing, f"{option}: column attributes present but unchanged: {sorted(missing)}"
    assert changed, f"{option}: no attribute of its column in the test files"


@pytest.mark.parametrize("option", OPTIONS)
def test_option_adds_its_cid_7050_code(option: str, tmp_path: Path) -> None:
    policy = load_policy(str(_policy(tmp_path, option)))
    out = Pseudonymizer(KEYRING, policy).pseudonymize(copy.deepcopy(inputs()[0][1])).dataset
    meanings = [item.CodeMeaning for item in out.DeidentificationMethodCodeSequence]
    assert meanings[0] == "Basic Application Confidentiality Profile"
    assert len(meanings) == 2 and meanings[1].endswith("Option")
