"""The shipped levels do what their documentation says, and the policy commands explain them."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import UID

from pseudo.deid.engine import Pseudonymizer
from pseudo.dicom.tags import parse_tag_pattern
from pseudo.policy import Action, load_policy, shipped_policy_names
from pseudo.policy.table import confidentiality_table
from tests.conftest import PUBLIC, REPO, CanaryRun, cli, need
from tests.synthetic import dataset, make_keyring

KEYRING = make_keyring()
JOHNSNOWLABS = "pseudo-phi-tcia-via-johnsnowlabs"


def run(policy: str, ds: pydicom.Dataset) -> pydicom.Dataset:
    return Pseudonymizer(KEYRING, load_policy(policy)).pseudonymize(copy.deepcopy(ds)).dataset


def test_the_documented_levels_are_shipped() -> None:
    assert {"basic", "default", "strict", "nidb-anonymize", "nidb-full"} <= set(
        shipped_policy_names()
    )
    for name in shipped_policy_names():
        text = (REPO / "policies" / f"{name}.yaml").read_text()
        assert text.startswith("#"), f"{name}: says what it keeps and why one would choose it"
        assert name in (REPO / "docs" / "policies.md").read_text()


def test_strict_keeps_only_its_list() -> None:
    policy = load_policy("strict")
    table_tags = {
        p.value
        for row in confidentiality_table().rows
        if row.tag != "private"
        for p in [parse_tag_pattern(row.tag)]
        if p is not None and p.is_exact
    }
    keep = [r for r in policy.rules if r.decision.action is Action.KEEP and r.file == "strict.yaml"]
    kept = {s.pattern.value for r in keep for s in r.selectors}
    assert not kept & table_tags, "the allow-list never overrides a row of Table E.1-1"
    ds = dataset()
    ds.Manufacturer = "ACME"
    ds.SoftwareVersions = "1.2"
    out = run("strict", ds)
    assert out.Rows == 2 and out.Modality == "CT" and out.PixelData
    # by the CT Image IOD: Manufacturer is Type 2 (kept empty), Software Versions Type 3
    assert out.Manufacturer == "" and "SoftwareVersions" not in out
    assert out.PatientID.startswith("T-") and out.SOPInstanceUID.startswith("2.25.")


def test_nidb_anonymize_blanks_names_and_birth_date_only() -> None:
    ds = dataset()
    ds.OperatorsName = "OP^ONE"
    out = run("nidb-anonymize", ds)
    for keyword in ("PatientName", "PatientBirthDate", "ReferringPhysicianName", "OperatorsName"):
        assert out[keyword].value in ("", None)
    assert out.PatientID == "12345678" and out.StudyDate == "20230105"
    assert out.InstitutionName == "General Hospital" and out.SOPInstanceUID == "1.2.3.4.5.6"
    assert out[0x00191010].value == "vendor secret", "NiDB keeps private attributes"
    assert out.PatientIdentityRemoved == "NO", "Patient ID is kept: the output says so"
    assert "DeidentificationMethodCodeSequence" not in out
    assert "no PS3.15 profile" in out.DeidentificationMethod


def test_nidb_full_also_blanks_institution_dates_id_and_weight() -> None:
    ds = dataset()
    ds.PatientWeight = "80"
    ds.StationName = "CT01"
    out = run("nidb-full", ds)
    for keyword in (
        "InstitutionName",
        "StationName",
        "StudyDescription",
        "StudyDate",
        "StudyTime",
        "PatientID",
        "PatientWeight",
        "AcquisitionDateTime",
    ):
        assert keyword not in out or out[keyword].value in ("", None), keyword
    assert 0x00181202 not in out, "every date, also those NiDB does not list"
    assert out.Modality == "CT"
    # By the CT Image IOD: Patient ID and Study Date are Type 2 (emptied, as NiDB does),
    # Institution Name and Patient's Weight Type 3 (removed).
    assert out.PatientID == "" and out.StudyDate == ""
    assert "InstitutionName" not in out and "PatientWeight" not in out


def test_nidb_full_gives_required_dates_a_dummy() -> None:
    """A date the IOD requires (Type 1) gets a fixed dummy, never one derived from the input."""
    ds = dataset()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.4.1")
    ds.ContentDate, ds.ContentTime = "20230105", "101500"
    out = run("nidb-full", ds)
    assert (out.ContentDate, out.ContentTime) == ("19000101", "000000")
    assert out.PatientIdentityRemoved == "NO"


def test_clean_descriptors_removes_names_but_keeps_clinical_words(tmp_path: Path) -> None:
    folder = need(PUBLIC / JOHNSNOWLABS, "pseudo-PHI TCIA files")
    path = tmp_path / "desc.yaml"
    path.write_text("name: desc\nextends: default\noptions: [clean_descriptors]\n")
    checked = 0
    for file in sorted(folder.glob("*.dcm")):
        original = pydicom.dcmread(file)
        out = run(str(path), original)
        before, after = (
            str(original.get("StudyDescription", "")),
            str(out.get("StudyDescription", "")),
        )
        names = [p for p in re.split(r"[\^ ]", str(original.PatientName)) if len(p) > 1]
        for name in names:
            assert name.lower() not in after.lower(), f"{file.name}: {name} left in {after!r}"
        for word in ("CHEST", "CT", "MRI", "PROSTATE", "MAMMOGRAM", "UROGRAM", "HIP", "ABDOMEN"):
            if re.search(rf"\b{word}\b", before):
                assert re.search(rf"\b{word}\b", after), f"{file.name}: {word} lost from {after!r}"
        if any(n.lower() in before.lower() for n in names):
            checked += 1
    assert checked >= 2, "files whose description names the patient were checked"


def test_policy_validate_and_explain(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(
        "name: site\nextends: default\nrules:\n"
        "  - {select: StationName, action: token, when: {Modality: US}}\n"
    )
    valid = cli("policy", "validate", path, "--json")
    assert valid.code == 0 and valid.json()["chain"] == ["basic", "default", "site"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nrules:\n  - {select: Nope, action: remove}\n")
    refused = cli("policy", "validate", bad)
    assert refused.code == 2 and f"{bad}:3" in refused.stderr

    explained = cli("policy", "explain", path, "StationName", "--json").json()
    assert (
        explained["decided_by"]["kind"] == "table" and explained["decided_by"]["action"] == "remove"
    )
    assert explained["steps"][0]["requires"] == ["when Modality equals 'US'"]
    assert explained["steps"][0]["action"] == "token"

    dicom = tmp_path / "us.dcm"
    ds = dataset()
    ds.Modality = "US"
    ds.StationName = "US01"
    ds.save_as(dicom, enforce_file_format=True)
    in_file = cli("policy", "explain", path, "StationName", "--file", dicom, "--json").json()
    assert [o["action"] for o in in_file["occurrences"]] == ["token"]
    nested = cli(
        "policy", "explain", "default", "ReferencedSOPInstanceUID", "--file", dicom, "--json"
    ).json()
    assert {o["path"] for o in nested["occurrences"]} == {
        "ReferencedImageSequence[0].ReferencedSOPInstanceUID",
        "ReferencedImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID",
    }
    text = cli("policy", "explain", "default", "PatientID")
    assert text.code == 0 and "pseudonym" in text.stdout


def test_policy_show_is_the_merged_policy() -> None:
    shown = cli("policy", "show", "strict", "--json").json()
    assert shown["chain"] == ["basic", "default", "strict"]
    assert shown["defaults"]["standard"] == "remove"
    assert [r["where"].split(":")[0] for r in shown["rules"]][-1] == "strict.yaml"
    assert len(shown["table"]) == len(confidentiality_table().rows)


def test_dry_run_writes_nothing(tmp_path: Path, vault: Path, env: None) -> None:
    from pseudo.demo import build_cohort

    build_cohort(tmp_path / "in")
    result = cli(
        "run", tmp_path / "in", "--dry-run", "--project", "trial", "--vault", vault, "--json"
    )
    assert result.code == 0, result.stderr
    report = result.json()
    assert report["files"]["would write"] == 18
    changes = {(c["attribute"], c["change"]): c["count"] for c in report["changes"]}
    assert changes[("PatientName", "replaced")] == 18
    assert changes[("StudyDate", "shifted")] == 18
    assert changes[("SOPInstanceUID", "remapped")] == 18
    assert changes[("StudyDescription", "removed")] == 18
    assert changes[("RequestAttributesSequence", "removed")] == 18
    assert not [p for p in tmp_path.iterdir() if p.name != "in" and p.name != "vault"]
    from keystore.session import VaultSession

    with VaultSession(vault) as session:
        assert session.linkage.count("trial") == 0


@pytest.mark.parametrize("name", ["basic", "default", "strict", "nidb-anonymize", "nidb-full"])
def test_levels_run_on_real_files(name: str, public_dir: Path) -> None:
    for file in ("pydicom/test_files/MR_small.dcm", "highdicom/ct_image.dcm"):
        out = run(name, pydicom.dcmread(public_dir / file))
        assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID


@pytest.mark.parametrize("name", shipped_policy_names())
def test_every_level_passes_its_own_verification(
    name: str, canary_dir: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Each shipped level over the whole canary corpus: no file quarantined, no leak by the
    level's own verification, and Patient Identity Removed = YES only where no issuer of the
    Patient ID or insurance plan (or any other identity attribute) remains. The default
    level's run, pixel step included, is the suite's shared one; the pixel step is the same
    module in every level, and the other levels run without it."""
    if name == "default":
        shared: CanaryRun = request.getfixturevalue("canary_run")
        out, counts = shared.output, shared.report["counts"]
    else:
        out = tmp_path / "out"
        vault = request.getfixturevalue("vault")
        request.getfixturevalue("env")  # the operator's passphrase
        result = cli(
            *("run", canary_dir.resolve(), out, "--project", "trial", "--vault", vault),
            *("--policy", name, "--workers", "2", "--json", "--quiet", "--pixels", "off"),
        )
        assert result.code == 0, result.stderr
        counts = result.json()
    assert counts["leaks"] == 0 and counts["written"] == 95 == counts["files"], counts
    removes = load_policy(name).removes_identity
    for path in out.rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert ds.PatientIdentityRemoved == ("YES" if removes else "NO"), path
        if removes:
            for keyword in ("IssuerOfPatientID", "InsurancePlanIdentification", "OtherPatientIDs"):
                assert not ds.get(keyword), f"{path}: YES while {keyword} remains"


def test_original_keeps_the_file_and_names_paths_by_keyed_uids() -> None:
    """NiDB's Original level: every attribute as it was, only the marks added; the output's
    path holds the patient's pseudonym and keyed UIDs, never an original UID."""
    ds = dataset()
    result = Pseudonymizer(KEYRING, load_policy("nidb-original")).pseudonymize(copy.deepcopy(ds))
    out = result.dataset
    for element in ds:
        if element.tag.element != 0 and element.tag != 0x00990010:  # group length, empty block
            assert out[element.tag].value == element.value, element.keyword
    assert {e.keyword for e in out if e.tag not in ds} == {
        "PatientIdentityRemoved",
        "DeidentificationMethod",
    }
    assert out.PatientIdentityRemoved == "NO"
    assert "no PS3.15 profile" in out.DeidentificationMethod
    for uid in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.PatientID):
        assert uid not in result.relative_path
    assert result.relative_path.count("/2.25.") == 3
