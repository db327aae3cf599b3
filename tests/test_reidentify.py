"""Re-identification: exact originals for every pseudonym, refusals that are logged."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pydicom
import pytest

from keystore.session import VaultSession
from keystore.stamps import os_user
from tests.conftest import OPERATOR, REID, CanaryRun, cli

REQUEST = ("--requester", "Dr. Test (DPO)", "--reason", "incidental finding, ticket T-1")


def _originals(answer_key: dict[str, Any], canary_dir: Path) -> dict[str, dict[str, Any]]:
    """Per patient: the original identifiers read from the input files and the answer key."""
    result: dict[str, dict[str, Any]] = {}
    for key, entry in answer_key["files"].items():
        ds = pydicom.dcmread(canary_dir / key, stop_before_pixels=True)
        patient = result.setdefault(
            entry["patient"],
            {
                "patient_id": str(ds.PatientID),
                "issuer_of_patient_id": str(ds.IssuerOfPatientID),
                "patient_name": str(ds.PatientName),
                "patient_birth_date": answer_key["patients"][entry["patient"]]["birth_date"],
                "studies": {},
            },
        )
        study = answer_key["studies"][entry["study"]]
        patient["studies"][study["uid"]] = (str(ds.AccessionNumber), study["date"])
    return result


@pytest.fixture()
def reid_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PSEUDO_REID_PASSPHRASE", REID)


def test_every_pseudonym_gives_back_the_answer_key(
    canary_run: CanaryRun, answer_key: dict[str, Any], canary_dir: Path, reid_env: None
) -> None:
    expected = _originals(answer_key, canary_dir)
    pseudonyms: dict[str, str] = {}
    for key, path in canary_run.pairs.items():
        pseudonyms[answer_key["files"][key]["patient"]] = path.relative_to(canary_run.output).parts[
            0
        ]
    for patient, pseudonym in pseudonyms.items():
        result = cli(
            "reidentify",
            "--project",
            "canary",
            "--pseudonym",
            pseudonym,
            *REQUEST,
            "--json",
            "--vault",
            canary_run.vault,
        )
        assert result.code == 0, result.stderr
        data = result.json()
        want = expected[patient]
        assert set(data) >= {
            "project",
            "pseudonym",
            "patient_id",
            "issuer_of_patient_id",
            "patient_name",
            "patient_birth_date",
            "date_offset_days",
            "studies",
        }
        for field in ("patient_id", "issuer_of_patient_id", "patient_name", "patient_birth_date"):
            assert data[field] == want[field], field
        got = {s["study_uid"]: (s["accession_number"], s["study_date"]) for s in data["studies"]}
        assert got == want["studies"]
        assert data["date_offset_days"] != 0


def test_study_uid_lookup_returns_only_that_study(canary_run: CanaryRun, reid_env: None) -> None:
    out_file = next(iter(canary_run.pairs.values()))
    ds = pydicom.dcmread(out_file, stop_before_pixels=True)
    result = cli(
        "reidentify",
        "--project",
        "canary",
        "--study-uid",
        str(ds.StudyInstanceUID),
        *REQUEST,
        "--json",
        "--vault",
        canary_run.vault,
    )
    assert result.code == 0, result.stderr
    data = result.json()
    assert data["pseudonym"] == ds.PatientID
    assert [s["pseudo_study_uid"] for s in data["studies"]] == [ds.StudyInstanceUID]


def _last_audit(vault: Path) -> Any:
    with VaultSession(vault) as session:
        return session.audit.records()[-1]


@pytest.mark.parametrize(
    ("case", "args", "code", "message", "outcome"),
    [
        (
            "wrong passphrase",
            [*REQUEST],
            3,
            "wrong re-identification passphrase",
            "denied: wrong passphrase",
        ),
        (
            "missing reason",
            ["--requester", "Dr. Test"],
            2,
            "--reason is required",
            "refused: missing reason",
        ),
        (
            "missing requester",
            ["--reason", "a reason"],
            2,
            "--requester is required",
            "refused: missing requester",
        ),
        ("unknown pseudonym", [*REQUEST], 1, "not found", "not found"),
    ],
)
def test_refusals_are_one_line_non_zero_and_audited(
    canary_run: CanaryRun,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    args: list[str],
    code: int,
    message: str,
    outcome: str,
) -> None:
    monkeypatch.setenv(
        "PSEUDO_REID_PASSPHRASE", "not the passphrase" if case == "wrong passphrase" else REID
    )
    pseudonym = (
        "CANARY-AAAAAAAAAAAAAAAA"
        if case == "unknown pseudonym"
        else next(iter(canary_run.pairs.values())).relative_to(canary_run.output).parts[0]
    )
    result = cli(
        "reidentify",
        "--project",
        "canary",
        "--pseudonym",
        pseudonym,
        *args,
        "--vault",
        canary_run.vault,
    )
    assert result.code == code
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    record = _last_audit(canary_run.vault)
    assert record.action == "reidentify"
    assert record.outcome == outcome
    assert record.subject == f"pseudonym:{pseudonym}"
    details = json.loads(record.details)
    assert details["os_user"] == os_user()
    # a refusal names no opened slot; a request that got past the passphrase names it
    assert details["slot"] == ("reidentifier" if case == "unknown pseudonym" else None)
    if case == "wrong passphrase":
        assert details["failures_in_a_row"] >= 1
        assert record.mac_key is None  # nothing was opened, so nothing authenticates it


def test_success_is_audited_before_the_answer(canary_run: CanaryRun, reid_env: None) -> None:
    pseudonym = next(iter(canary_run.pairs.values())).relative_to(canary_run.output).parts[0]
    result = cli(
        "reidentify",
        "--project",
        "canary",
        "--pseudonym",
        pseudonym,
        *REQUEST,
        "--json",
        "--vault",
        canary_run.vault,
    )
    assert result.code == 0
    record = _last_audit(canary_run.vault)
    assert (record.outcome, record.actor, record.reason) == (
        "success",
        "Dr. Test (DPO)",
        "incidental finding, ticket T-1",
    )
    details = json.loads(record.details)
    assert (details["os_user"], details["slot"]) == (os_user(), "reidentifier")
    assert "@" in details["os_user"]
    # the record is authenticated by the audit key of the slot that was opened
    assert (record.mac_key, record.mac_slot) == ("canary", "reidentifier") and record.mac
    # The audit record names the pseudonym, never the identity.
    identity = result.json()
    assert identity["patient_id"] not in json.dumps([record.details, record.subject, record.reason])


def test_operator_passphrase_cannot_reidentify(
    canary_run: CanaryRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PSEUDO_REID_PASSPHRASE", OPERATOR)
    pseudonym = next(iter(canary_run.pairs.values())).relative_to(canary_run.output).parts[0]
    result = cli(
        "reidentify",
        "--project",
        "canary",
        "--pseudonym",
        pseudonym,
        *REQUEST,
        "--vault",
        canary_run.vault,
    )
    assert result.code == 3


def test_audit_verify_passes_after_all_this(canary_run: CanaryRun) -> None:
    result = cli("audit", "verify", "--vault", canary_run.vault, "--json")
    assert result.code == 0, result.stdout
    assert result.json()["ok"] is True
    shown = cli("audit", "show", "--vault", canary_run.vault, "--json").json()
    actions: dict[str, int] = defaultdict(int)
    for record in shown:
        actions[record["action"]] += 1
    assert actions["run"] >= 1


# -- the sealed record model ----------------------------------------------------------------
def test_the_record_model_writes_the_format_of_every_earlier_version() -> None:
    """The writer's plaintext is the canonical JSON that 0.1.0 sealed, byte for byte (the
    record pinned by tests/test_known_answers.py), and the reader opens it as that record."""
    from keystore.records import LinkageEntry, PatientRecordV1, open_record
    from tests.test_known_answers import SEALED_PLAINTEXT

    record = PatientRecordV1(
        patient_id="PAT-0001",
        issuer_of_patient_id="ISSUER-A",
        patient_name="KNOWN^ANSWER",
        patient_birth_date="19700101",
        date_offset_days=-167,
        identity_basis="patient-id",
    )
    assert record.plaintext() == SEALED_PLAINTEXT
    entry = LinkageEntry.of("KAT-X", "KAT-X", record)
    assert (entry.kind, entry.canonical()) == ("patient", SEALED_PLAINTEXT)
    assert (
        entry.canonical()
        == LinkageEntry("patient", "KAT-X", "KAT-X", dict(entry.fields)).canonical()
    )
    assert open_record("patient", SEALED_PLAINTEXT) == record


def test_the_record_reader_accepts_old_objects_and_refuses_unknown_ones() -> None:
    from keystore.errors import InvalidTokenError
    from keystore.records import LinkageEntry, StudyRecordV1, open_record

    # a field missing from an object (a partial record) reads as None
    assert open_record("study", b'{"study_uid":"1.2.3"}') == StudyRecordV1(study_uid="1.2.3")
    for bad in (b"not json", b"[1, 2]", b'{"format": 2, "study_uid": "1.2.3"}', b"\xff"):
        with pytest.raises(InvalidTokenError) as caught:
            open_record("study", bad)
        assert "1.2.3" not in str(caught.value)  # no identifying value in the message
    with pytest.raises(ValueError, match="unknown fields patient_nmae"):
        LinkageEntry("patient", "T-1", "T-1", {"patient_nmae": "DOE^JOHN"})
    with pytest.raises(ValueError, match="kind"):
        LinkageEntry("visit", "T-1", "T-1", {})  # type: ignore[arg-type]


def _reid_json(vault: Path, *args: str) -> Any:
    result = cli("reidentify", "--project", "canary", *args, *REQUEST, "--json", "--vault", vault)
    assert result.code == 0, result.stderr
    return result.json()


def test_instance_and_series_uids_give_the_original_image(
    canary_run: CanaryRun, canary_dir: Path, reid_env: None
) -> None:
    """A DPO asked about one image finds it in the PACS: the original study, series and
    instance UIDs, and the patient they belong to."""
    checked = 0
    for key, out_file in sorted(canary_run.pairs.items())[:6]:
        source = pydicom.dcmread(canary_dir / key, stop_before_pixels=True)
        output = pydicom.dcmread(out_file, stop_before_pixels=True)
        by_instance = _reid_json(canary_run.vault, "--instance-uid", str(output.SOPInstanceUID))
        assert by_instance["pseudonym"] == str(output.PatientID)
        assert by_instance["patient_id"] == str(source.PatientID)
        assert by_instance["instance"] == {
            "pseudo_sop_instance_uid": str(output.SOPInstanceUID),
            "sop_instance_uid": str(source.SOPInstanceUID),
            "series_uid": str(source.SeriesInstanceUID),
            "study_uid": str(source.StudyInstanceUID),
            "pseudo_series_uid": str(output.SeriesInstanceUID),
            "pseudo_study_uid": str(output.StudyInstanceUID),
        }
        assert [s["study_uid"] for s in by_instance["studies"]] == [str(source.StudyInstanceUID)]
        by_series = _reid_json(
            canary_run.vault,
            "--series-uid",
            f" {output.SeriesInstanceUID} ",  # spaces ignored
        )
        assert by_series["series"]["series_uid"] == str(source.SeriesInstanceUID)
        assert by_series["series"]["study_uid"] == str(source.StudyInstanceUID)
        assert "instance" not in by_series
        assert [s["pseudo_study_uid"] for s in by_series["studies"]] == [
            str(output.StudyInstanceUID)
        ]
        checked += 1
    assert checked == 6
    record = _last_audit(canary_run.vault)
    assert record.subject.startswith("series:2.25.")
    assert record.outcome == "success"


def test_unknown_instance_and_two_keys_are_refused_and_audited(
    canary_run: CanaryRun, reid_env: None
) -> None:
    result = cli(
        *("reidentify", "--project", "canary", "--instance-uid", "2.25.1", *REQUEST),
        *("--vault", canary_run.vault),
    )
    assert result.code == 1
    assert "SOP instance UID 2.25.1 not found" in result.stderr
    assert _last_audit(canary_run.vault).outcome == "not found"
    both = cli(
        *("reidentify", "--project", "canary", "--instance-uid", "2.25.1"),
        *("--series-uid", "2.25.2", *REQUEST, "--vault", canary_run.vault),
    )
    assert both.code == 2
    assert "exactly one of" in both.stderr
    assert _last_audit(canary_run.vault).subject == "series:2.25.2, instance:2.25.1"


def test_an_old_vault_has_no_series_or_instance_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Vaults written before series and instance records: "not found", saying to ask by the
    study (which is still found)."""
    import os
    import shutil

    from tests.fixtures.make_vault_fixture import PROJECT
    from tests.test_old_vault import EXPECTED, FIXTURE

    old = tmp_path / "fixture"
    shutil.copytree(FIXTURE / "vault", old / "vault")
    for path in [old / "vault", *(old / "vault").rglob("*")]:
        os.chmod(path, 0o700 if path.is_dir() else 0o600)
    monkeypatch.setenv("PSEUDO_REID_PASSPHRASE", EXPECTED["passphrases"]["reidentification"])
    request = (*REQUEST, "--json", "--vault", old / "vault")
    entry = EXPECTED["runs"]["output"]["files"]["beta/1.dcm"]
    for option, uid in (
        ("--instance-uid", entry["sop_instance_uid"]),
        ("--series-uid", entry["series_uid"]),
    ):
        result = cli("reidentify", "--project", PROJECT, option, uid, *request)
        assert result.code == 1, result.stderr
        assert "not found" in result.stderr and "Study Instance UID" in result.stderr
    by_study = cli("reidentify", "--project", PROJECT, "--study-uid", entry["study_uid"], *request)
    assert by_study.code == 0, by_study.stderr
