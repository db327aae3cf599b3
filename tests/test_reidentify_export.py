"""The whole linkage for a DPO or a benchmark (``--all --out``), and reversible tokens opened
(``--token``): complete, owner-only, audited first."""

from __future__ import annotations

import csv
import json
import stat
from pathlib import Path
from typing import Any

import pydicom
import pytest

from keystore.session import VaultSession
from pseudo.cli import reid_cmds
from pseudo.deid.tokens import encrypt_token
from tests.conftest import OPERATOR, REID, CanaryRun, cli

REQUEST = ("--requester", "Dr. Test (DPO)", "--reason", "benchmark validation, ticket T-2")


@pytest.fixture()
def reid_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PSEUDO_REID_PASSPHRASE", REID)


def _read(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def _export(vault: Path, out: Path, *extra: str) -> Any:
    return cli("reidentify", "--project", "canary", "--all", "--out", out, *extra, "--vault", vault)


def _last_audit(vault: Path) -> Any:
    with VaultSession(vault) as session:
        return session.audit.records()[-1]


def test_the_export_is_complete_for_the_canary_corpus(
    canary_run: CanaryRun,
    canary_dir: Path,
    answer_key: dict[str, Any],
    tmp_path: Path,
    reid_env: None,
) -> None:
    out = tmp_path / "dpo"
    result = _export(canary_run.vault, out, *REQUEST, "--json")
    assert result.code == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "patid_mapping.csv",
        "patients.csv",
        "uid_mapping.csv",
    ]
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    for path in out.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path

    patients = _read(out / "patients.csv")
    assert patients[0] == list(reid_cmds.PATIENTS_HEADER)
    uids = _read(out / "uid_mapping.csv")
    patids = _read(out / "patid_mapping.csv")
    assert uids[0] == patids[0] == ["id_old", "id_new"]
    uid_map: dict[str, str] = {row[0]: row[1] for row in uids[1:]}
    patid_pairs = {tuple(row) for row in patids[1:]}
    by_pseudonym = {row[0]: row for row in patients[1:]}

    # every patient of the answer key, every instance, series and study UID of every output
    pseudonyms = set()
    for key, out_file in canary_run.pairs.items():
        source = pydicom.dcmread(canary_dir / key, stop_before_pixels=True)
        output = pydicom.dcmread(out_file, stop_before_pixels=True)
        pseudonym = str(output.PatientID)
        pseudonyms.add(pseudonym)
        for keyword in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"):
            assert uid_map[str(source[keyword].value)] == str(output[keyword].value), keyword
        assert (reid_cmds.csv_cell(source.PatientID), pseudonym) in patid_pairs
        row = by_pseudonym[pseudonym]
        assert row[3] == reid_cmds.csv_cell(source.PatientID)
        assert row[4] == str(source.PatientName)
        assert row[2] == str(source.IssuerOfPatientID)
        patient = answer_key["files"][key]["patient"]
        assert row[5] == answer_key["patients"][patient]["birth_date"]
        assert int(row[6]) != 0
    assert len(pseudonyms) == len(answer_key["patients"]) == len(by_pseudonym)
    summary = result.json()
    assert summary["patients"] == len(pseudonyms)
    assert summary["uids"] == len(uids) - 1
    # other UIDs the engine remapped (frame of reference, references) are there too
    assert len(uid_map) > 3 * len(canary_run.pairs) // 2

    record = _last_audit(canary_run.vault)
    assert (record.action, record.subject, record.outcome) == ("reidentify", "all", "success")
    assert json.loads(record.details)["patients"] == len(pseudonyms)


def test_the_audit_record_is_written_before_any_file(
    canary_run: CanaryRun, tmp_path: Path, reid_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Any] = []
    write = reid_cmds._write_private_csv

    def spy(path: Path, header: Any, rows: Any) -> Path:
        if not seen:
            seen.append(_last_audit(canary_run.vault))
            assert not any(path.parent.iterdir())  # the first file is not there yet
        return write(path, header, rows)

    monkeypatch.setattr(reid_cmds, "_write_private_csv", spy)
    result = _export(canary_run.vault, tmp_path / "dpo", *REQUEST)
    assert result.code == 0, result.stderr
    assert (seen[0].subject, seen[0].outcome) == ("all", "success")


def test_no_file_without_the_audit_record(
    canary_run: CanaryRun, tmp_path: Path, reid_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from keystore.audit import AuditLog
    from keystore.errors import DatabaseError

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise DatabaseError("cannot write the audit log: disk full")

    monkeypatch.setattr(AuditLog, "append", broken)
    out = tmp_path / "dpo"
    result = _export(canary_run.vault, out, *REQUEST)
    assert result.code != 0
    assert not out.exists() or not any(out.iterdir())


def test_refusals_write_nothing(canary_run: CanaryRun, tmp_path: Path, reid_env: None) -> None:
    full = tmp_path / "full"
    full.mkdir()
    (full / "old.csv").write_text("x")
    result = _export(canary_run.vault, full, *REQUEST)
    assert result.code == 2
    assert "not a new or empty folder" in result.stderr
    assert [p.name for p in full.iterdir()] == ["old.csv"]

    out = tmp_path / "dpo"
    no_reason = _export(canary_run.vault, out, "--requester", "Dr. Test")
    assert no_reason.code == 2 and "--reason is required" in no_reason.stderr
    assert not out.exists()
    record = _last_audit(canary_run.vault)
    assert (record.subject, record.outcome) == ("all", "refused: missing reason")

    no_out = cli(
        "reidentify", "--project", "canary", "--all", *REQUEST, "--vault", canary_run.vault
    )
    assert no_out.code == 2 and "--out" in no_out.stderr


def test_cells_that_a_spreadsheet_would_run_are_quoted(tmp_path: Path) -> None:
    from keystore.reidentify import LinkageExport, PatientLine

    export = LinkageExport(
        "p",
        [PatientLine("P-1", None, "=HYPERLINK(1)", "-123", "+A", "@B", -10)],
        [("1.2.3", "2.25.4")],
        [("-123", "P-1")],
    )
    reid_cmds.write_export(export, tmp_path / "x")
    rows = _read(tmp_path / "x" / "patients.csv")
    assert rows[1] == ["P-1", "", "'=HYPERLINK(1)", "'-123", "'+A", "'@B", "-10"]
    assert _read(tmp_path / "x" / "patid_mapping.csv")[1] == ["'-123", "P-1"]
    assert _read(tmp_path / "x" / "uid_mapping.csv")[1] == ["1.2.3", "2.25.4"]


# -- reversible tokens -------------------------------------------------------------------
def _token(vault: Path, attribute: str, value: str) -> str:
    with VaultSession(vault) as session:
        keyring = session.vault.unlock_operator("trial", OPERATOR)
    return encrypt_token(keyring, attribute, value)


def test_a_token_opens_for_its_attribute_audited_without_the_value(
    vault: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PSEUDO_PASSPHRASE", OPERATOR)
    token = _token(vault, "OtherPatientIDs", "OTHER-99")
    base = ("reidentify", "--project", "trial", "--token", token, *REQUEST, "--vault", vault)
    given = cli(*base, "--attribute", "OtherPatientIDs", "--json")
    assert given.code == 0, given.stderr
    assert given.json() == {"project": "trial", "attribute": "OtherPatientIDs", "value": "OTHER-99"}
    tried = cli(*base)  # every attribute tried: the token opens only for its own
    assert tried.code == 0, tried.stderr
    assert "OTHER-99" in tried.stdout and "OtherPatientIDs" in tried.stdout

    with VaultSession(vault) as session:
        records = session.audit.records()
    record = records[-1]
    assert (record.action, record.outcome) == ("reidentify", "success")
    assert record.subject is not None and record.subject.startswith("token:")
    assert json.loads(record.details)["attribute"] == "OtherPatientIDs"
    for stored in records:
        text = f"{stored.subject} {stored.details} {stored.reason}"
        assert "OTHER-99" not in text and token not in text

    wrong = cli(*base, "--attribute", "AccessionNumber")
    assert wrong.code == 1 and "does not open" in wrong.stderr
    with VaultSession(vault) as session:
        assert session.audit.records()[-1].outcome == "not found"


def test_a_token_needs_a_reason_and_the_operator_passphrase(
    vault: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PSEUDO_PASSPHRASE", OPERATOR)
    token = _token(vault, "OtherPatientIDs", "OTHER-99")
    base = ("reidentify", "--project", "trial", "--token", token, "--vault", vault)
    assert cli(*base, "--requester", "Dr. Test").code == 2
    monkeypatch.setenv("PSEUDO_PASSPHRASE", "not the passphrase")
    wrong = cli(*base, *REQUEST)
    assert wrong.code == 3
    with VaultSession(vault) as session:
        assert session.audit.records()[-1].outcome in ("denied: wrong passphrase", "denied")
