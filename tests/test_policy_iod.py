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
