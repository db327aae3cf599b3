"""A vault made by version 0.1.0 opens with the current code and gives the same answers.

``tests/fixtures/vault-0.1.0/`` holds a vault, a project and the outputs of two runs, made by
``tests/fixtures/make_vault_fixture.py`` with the code of 0.1.0 (synthetic inputs, test
passphrases). Every test works on a copy in ``tmp_path``, never on the committed files. If one
fails, the change under test broke existing projects: it must keep the old behaviour or ship a
migration, and the fixture and its expected values are never made again to match (see
"Compatibility promise" in docs/operations.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset

from pseudo.api import open_project
from pseudo.deid.engine import Pseudonymizer
from pseudo.deid.identity import read_identity
from pseudo.deid.uids import remap_uid
from tests.conftest import cli
from tests.fixtures.make_vault_fixture import INPUTS, PROJECT, build_inputs

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "vault-0.1.0"
EXPECTED: dict[str, Any] = json.loads((FIXTURE / "expected.json").read_text())
OPERATOR: str = EXPECTED["passphrases"]["operator"]
REID: str = EXPECTED["passphrases"]["reidentification"]
REQUEST = ("--requester", "Compatibility test (CI)", "--reason", "old vault still opens")


def sha256(path: Path) -> str:
    """SHA-256 of a file, in hex."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_under(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root``, by relative path."""
    return {
        p.relative_to(root).as_posix(): sha256(p) for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture()
def old(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the fixture, owner-only as a vault folder is (git does not keep modes)."""
    copy = tmp_path / "fixture"
    shutil.copytree(FIXTURE, copy)
    for path in [copy / "vault", *(copy / "vault").rglob("*")]:
        os.chmod(path, 0o700 if path.is_dir() else 0o600)
    monkeypatch.setenv("PSEUDO_PASSPHRASE", OPERATOR)
    monkeypatch.setenv("PSEUDO_REID_PASSPHRASE", REID)
    monkeypatch.delenv("PSEUDO_VAULT", raising=False)
    return copy


@pytest.fixture()
def inputs(tmp_path: Path) -> Path:
    """The synthetic inputs, built again by the fixture script's own function."""
    source = tmp_path / "in"
    built = {relative: sha256(path) for relative, path in build_inputs(source).items()}
    if built != EXPECTED["inputs_sha256"]:
        pytest.fail(
            "the synthetic inputs are not the bytes the fixture was made from (pydicom's "
            "writer or tests/fixtures/make_vault_fixture.py changed, not necessarily pseudo)"
        )
    return source


def run(old: Path, source: Path, output: Path, *extra: str | Path) -> None:
    """``pseudo run`` with the old vault, one worker."""
    result = cli(
        *("run", source, output, "--project", PROJECT, "--vault", old / "vault"),
        *("--workers", "1", "--quiet", "--json", *extra),
    )
    assert result.code == 0, result.stderr


#: What says which software and policy wrote a file: it changes with a release or a shipped
#: policy's edit, not with the keys (PS3.15 asks for it to name the method used).
MARKS = {
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
    "ImplementationVersionName",
    "BurnedInAnnotation",  # set to NO by the pixel step (issue 15) once the pixels are clean
}


def same_pseudonymization(new: Path, old: Path) -> None:
    """``new`` pseudonymizes as ``old`` (0.1.0's output) did: byte for byte when the version
    and policy marks are the same; else every attribute both hold is equal (at any depth),
    ``new`` holds nothing ``old`` did not (a later, stricter policy may remove more, never
    add or change), and the pixel data are the same."""
    if sha256(new) == sha256(old):
        return
    a, b = pydicom.dcmread(new), pydicom.dcmread(old)
    marks = [k for k in MARKS if a.get(k) != b.get(k) or a.file_meta.get(k) != b.file_meta.get(k)]
    assert marks, f"{new.name}: other bytes than 0.1.0 with the same software and policy marks"
    _same_where_both(a, b, new.name)
    assert a.PixelData == b.PixelData, f"{new.name}: pixel data"


def _same_where_both(a: Dataset, b: Dataset, where: str) -> None:
    for element in a:
        if element.keyword in MARKS:
            continue
        assert element.tag in b, f"{where}: {element.tag} is new since 0.1.0"
        other = b[element.tag]
        if element.VR == "SQ":
            assert len(element.value) == len(other.value), f"{where}: {element.tag} items"
            for x, y in zip(element.value, other.value, strict=True):
                _same_where_both(x, y, f"{where} {element.tag}")
        else:
            assert element.value == other.value, f"{where}: {element.tag} changed since 0.1.0"


def check_outputs(output: Path, expected_run: dict[str, Any], committed: Path) -> None:
    """Per input: the pseudonym, offset, UIDs and path of 0.1.0, the same pseudonymization
    (see :func:`same_pseudonymization`); and the same tree."""
    for relative, expected in expected_run["files"].items():
        written = output / expected["output"]
        assert written.is_file(), f"{relative}: no output at the path 0.1.0 used"
        ds = pydicom.dcmread(written)
        assert str(ds.PatientID) == expected["pseudonym"], relative
        assert str(ds.StudyDate) == expected["study_date"], relative
        assert str(ds.StudyInstanceUID) == expected["study_uid"], relative
        assert str(ds.SeriesInstanceUID) == expected["series_uid"], relative
        assert str(ds.SOPInstanceUID) == expected["sop_instance_uid"], relative
        same_pseudonymization(written, committed / expected["output"])
    assert files_under(output).keys() == files_under(committed).keys()


def test_the_committed_fixture_is_whole() -> None:
    """The committed outputs are those expected.json describes (the fixture was not edited)."""
    assert EXPECTED["made_by"]["pseudo_version"] == "0.1.0"
    for name, expected_run in EXPECTED["runs"].items():
        committed = files_under(FIXTURE / name)
        described = {f["output"]: f["output_sha256"] for f in expected_run["files"].values()}
        assert committed == described, name
    assert set(EXPECTED["inputs_sha256"]) == set(INPUTS)


def test_a_run_gives_the_same_pseudonyms_offsets_uids_and_bytes(
    old: Path, inputs: Path, tmp_path: Path
) -> None:
    """The default policy over the same inputs: the same files at the same paths."""
    run(old, inputs, tmp_path / "out")
    check_outputs(tmp_path / "out", EXPECTED["runs"]["output"], FIXTURE / "output")
    offsets = {
        f["pseudonym"]: f["date_offset_days"] for f in EXPECTED["runs"]["output"]["files"].values()
    }
    assert offsets == {p: v["date_offset_days"] for p, v in EXPECTED["patients"].items()}


def test_an_anchored_run_uses_the_offsets_recorded_by_0_1_0(
    old: Path, inputs: Path, tmp_path: Path
) -> None:
    """Anchored dates: the same outputs, and a later study alone still gets the offset that
    0.1.0 recorded from the patient's earliest study (not anchor minus its own date)."""
    policy = old / "anchored.yaml"
    run(old, inputs, tmp_path / "out", "--policy", policy)
    expected_run = EXPECTED["runs"]["output-anchored"]
    check_outputs(tmp_path / "out", expected_run, FIXTURE / "output-anchored")

    later = "alpha/2020-03-09/1.dcm"
    alone = tmp_path / "later-only"
    alone.mkdir()
    shutil.copy2(inputs / later, alone / "1.dcm")
    run(old, alone, tmp_path / "later-out", "--policy", policy)
    expected = expected_run["files"][later]
    assert (
        expected["date_offset_days"]
        == expected_run["files"]["alpha/2019-03-04/1.dcm"]["date_offset_days"]
    )
    same_pseudonymization(
        tmp_path / "later-out" / expected["output"],
        FIXTURE / "output-anchored" / expected["output"],
    )


def test_the_api_derives_the_same_values(old: Path, inputs: Path) -> None:
    """``pseudo.api.open_project`` on the old vault: the same pseudonyms, offsets and UIDs,
    and the same files from the in-memory path."""
    files = EXPECTED["runs"]["output"]["files"]
    with open_project(old / "vault", PROJECT, passphrase=OPERATOR) as project:
        engine = Pseudonymizer(project.keyring, project.policy)
        for relative, expected in files.items():
            ds = pydicom.dcmread(inputs / relative)
            assert engine.patient(read_identity(ds)) == (
                expected["pseudonym"],
                expected["date_offset_days"],
            )
            assert remap_uid(project.keyring, str(ds.StudyInstanceUID)) == expected["study_uid"]
            assert (
                remap_uid(project.keyring, str(ds.SOPInstanceUID)) == (expected["sop_instance_uid"])
            )
            result = project.pseudonymize(ds)
            assert result.relative_path == expected["output"]


def _sorted_identity(identity: dict[str, Any]) -> dict[str, Any]:
    """A re-identification answer with its lists in a fixed order."""
    return {
        **identity,
        "studies": sorted(identity["studies"], key=lambda s: s["pseudo_study_uid"]),
        "other_identities": sorted(
            identity.get("other_identities", []), key=lambda i: json.dumps(i, sort_keys=True)
        ),
    }


def test_reidentify_with_the_old_reidentification_slot(old: Path) -> None:
    """Records sealed by 0.1.0 open with the re-identification passphrase: the same answer."""
    expected = EXPECTED["reidentified"]
    result = cli(
        *("reidentify", "--project", PROJECT, "--pseudonym", expected["pseudonym"]),
        *(*REQUEST, "--json", "--vault", old / "vault"),
    )
    assert result.code == 0, result.stderr
    answer = result.json()
    assert _sorted_identity(answer) == _sorted_identity(expected)
    patient = EXPECTED["patients"][expected["pseudonym"]]
    assert answer["patient_id"] == patient["patient_id"] == "OLD-P001"
    assert answer["patient_name"] == patient["patient_name"]
    assert answer["date_offset_days"] == patient["date_offset_days"]

    study = EXPECTED["runs"]["output"]["files"]["beta/1.dcm"]["study_uid"]
    by_study = cli(
        *("reidentify", "--project", PROJECT, "--study-uid", study),
        *(*REQUEST, "--json", "--vault", old / "vault"),
    )
    assert by_study.code == 0, by_study.stderr
    assert by_study.json()["patient_id"] == "OLD-P002"


def test_audit_log_of_0_1_0_verifies(old: Path, inputs: Path, tmp_path: Path) -> None:
    """The old chain, its checkpoint and its MACs verify, before and after the current code
    appends to it, and the head recorded by 0.1.0 is still in it."""
    vault = old / "vault"
    head = EXPECTED["audit_head"]
    checks = ("audit", "verify", "--vault", vault, "--expect", head, "--project", PROJECT)
    first = cli(*checks, "--json")
    assert first.code == 0, first.stdout + first.stderr
    run(old, inputs, tmp_path / "out")
    reidentified = cli(
        *("reidentify", "--project", PROJECT, "--pseudonym", EXPECTED["reidentified"]["pseudonym"]),
        *(*REQUEST, "--json", "--vault", vault),
    )
    assert reidentified.code == 0, reidentified.stderr
    again = cli(*checks, "--json")
    assert again.code == 0, again.stdout + again.stderr


def test_the_committed_fixture_is_left_unchanged(old: Path, inputs: Path, tmp_path: Path) -> None:
    """Opening and using the copy does not touch the committed files."""
    before = files_under(FIXTURE)
    run(old, inputs, tmp_path / "out")
    assert files_under(FIXTURE) == before
