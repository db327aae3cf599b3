"""The shipped levels do what their documentation says, and the policy commands explain them."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pydicom
import pytest

from pseudo.deid.engine import Pseudonymizer
from pseudo.dicom.tags import parse_tag_pattern
from pseudo.policy import Action, load_policy, shipped_policy_names
from pseudo.policy.table import confidentiality_table
from tests.conftest import PUBLIC, REPO, cli, need
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
    assert "Manufacturer" not in out and "SoftwareVersions" not in out
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
        assert out[keyword].value in ("", None), keyword
    assert out[0x00181202].value in ("", None), "every date, also those NiDB does not list"
    assert out.Modality == "CT"


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
