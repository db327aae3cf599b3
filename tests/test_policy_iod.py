"""Compound codes of Table E.1-1 resolved by the object's IOD (issue 20)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pseudo.policy import load_policy
from pseudo.policy.conditions import dependents_to_remove
from pseudo.policy.explain import explain
from pseudo.policy.iod import DATA, IodTypes
from tests.conftest import REPO

ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
CT = "1.2.840.10008.5.1.4.1.1.2"


def test_type_decides_the_code() -> None:
    iod = IodTypes.load()
    assert iod.resolve("X/Z/D", ENHANCED_MR, (), "DeviceSerialNumber").code == "D"  # Type 1
    assert iod.resolve("X/Z/D", CT, (), "DeviceSerialNumber").code == "X"  # Type 3
    assert iod.resolve("X/Z/D", "1.2.3.4", (), "DeviceSerialNumber").code == "X"  # unknown


def test_explain_shows_iod_module_and_type() -> None:
    policy = load_policy("default")
    step = explain(policy, 0x00181000, sop_class=ENHANCED_MR).decided_by
    assert step.action == "dummy"
    assert "enhanced-mr-image" in step.source and "Type 1" in step.source


def test_dependent_follows_its_condition() -> None:
    name, number = 0x00120081, 0x00120082
    assert dependents_to_remove({name, number}, {name}) == [name]
    assert dependents_to_remove({name}, {name}) == []


def test_data_names_its_source() -> None:
    data = json.loads(DATA.read_text(encoding="utf-8"))
    assert data["generated_by"] == "scripts/generate_iod_types.py"
    assert "highdicom" in data["source"]


@pytest.mark.skipif(
    "PSEUDO_HIGHDICOM_WHEEL" not in os.environ,
    reason="set PSEUDO_HIGHDICOM_WHEEL to a highdicom 0.28.2 wheel to check the generator",
)
def test_generator_reproduces_the_data(tmp_path: Path) -> None:
    target = tmp_path / "iod-types.json"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "generate_iod_types.py"),
            os.environ["PSEUDO_HIGHDICOM_WHEEL"],
            "--output",
            str(target),
        ],
        check=True,
    )
    assert target.read_bytes() == DATA.read_bytes()


BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
SC = "1.2.840.10008.5.1.4.1.1.7"


def test_a_recursive_macro_is_typed_below_the_depth_the_tables_write() -> None:
    """An SR content item's Date is Type 1C at every depth of the content tree."""
    iod = IodTypes.load()
    for depth in (1, 2, 5):
        path = ("ContentSequence",) * depth
        assert iod.attribute_type(BASIC_TEXT_SR, path, "Date")[2] == "1C", depth
    assert iod.attribute_type(BASIC_TEXT_SR, ("ContentSequence",), "NoSuchKeyword")[2] is None


def test_conform_to_iod_resolves_the_allow_list_and_the_emptying() -> None:
    strict, nidb_full = load_policy("strict"), load_policy("nidb-full")

    def step(policy: str, tag: int, sop_class: str) -> str:
        chosen = explain(load_policy(policy), tag, sop_class=sop_class).decided_by
        assert "conform_to_iod" in chosen.source
        return chosen.action

    assert strict.conform_to_iod and nidb_full.conform_to_iod
    assert not load_policy("default").conform_to_iod
    assert step("strict", 0x00080070, CT) == "empty"  # Manufacturer: Type 2
    assert step("strict", 0x00181020, CT) == "remove"  # Software Versions: Type 3
    assert step("strict", 0x00181020, ENHANCED_MR) == "dummy"  # Type 1 text: a dummy
    assert step("strict", 0x0040A491, BASIC_TEXT_SR) == "keep"  # Completion Flag: a Type 1 code
    assert step("nidb-full", 0x00080023, ENHANCED_MR) == "dummy"  # Content Date: Type 1
    assert step("nidb-full", 0x00080020, CT) == "empty"  # Study Date: Type 2
    assert step("nidb-full", 0x00081010, CT) == "remove"  # Station Name: Type 3


def test_frame_increment_pointer_targets_are_required() -> None:
    """An attribute the file's Frame Increment Pointer names counts as Type 1C whatever the IOD
    says (a multi-frame NM stored as Secondary Capture keeps its Energy Window Vector)."""
    iod = IodTypes.load()
    assert iod.resolve("X/Z/D/K", SC, (), "EnergyWindowVector", "US").code == "X"
    pointed = iod.resolve("X/Z/D/K", SC, (), "EnergyWindowVector", "US", pointed=True)
    assert pointed.code == "K" and pointed.type == "1C"
