"""Identity conflicts (issue 17): within one issuer, a file whose birth date or sex contradicts
what the project holds is quarantined (nothing written, nothing linked); files of one run that
disagree are all quarantined, whatever the number of workers; a different name alone is a
warning; the project keeps keyed fingerprints, never plain hashes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from sqlmodel import Session, select

from keystore.db import IdentityFingerprintRow
from keystore.session import VaultSession
from tests.patients import linkage_count, patients_in, report_of, run, write_patient


def _quarantined(result_report: dict[str, object]) -> list[str]:
    files = result_report["files"]
    assert isinstance(files, list)
    return [f["reason"] for f in files if f["status"] == "quarantined"]


def test_a_birth_date_conflict_is_quarantined_with_its_reason(
    vault: Path, tmp_path: Path, env: None
) -> None:
    write_patient(tmp_path / "b1", "100234", birth_date="19600101")
    assert run(vault, tmp_path / "b1", tmp_path / "out").code == 0
    (pseudonym,) = patients_in(tmp_path / "out")
    records = linkage_count(vault)
    write_patient(tmp_path / "b2", "100234", birth_date="19610202", study="s2")
    second = run(vault, tmp_path / "b2", tmp_path / "out")
    assert second.code == 1, second.stderr
    (reason,) = _quarantined(report_of(second))
    assert reason.startswith("identity conflict: Patient's Birth Date differs")
    assert pseudonym in reason and "19610202" not in reason and "19600101" not in reason
    assert linkage_count(vault) == records, "nothing linked"
    assert len(list((tmp_path / "out").rglob("*.dcm"))) == 1, "nothing written"
    again = run(vault, tmp_path / "b2", tmp_path / "out")
    assert again.code == 1, "a quarantined file is checked again, never skipped"


def test_a_sex_conflict_is_quarantined(vault: Path, tmp_path: Path, env: None) -> None:
    write_patient(tmp_path / "b1", "5", sex="F")
    assert run(vault, tmp_path / "b1", tmp_path / "out").code == 0
    write_patient(tmp_path / "b2", "5", sex="M", study="s2")
    second = run(vault, tmp_path / "b2", tmp_path / "out")
    assert second.code == 1
    assert "Patient's Sex differs" in _quarantined(report_of(second))[0]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_files_of_one_run_that_disagree_are_all_quarantined(
    vault: Path, tmp_path: Path, env: None, workers: str
) -> None:
    for number in range(3):
        write_patient(tmp_path / "in", "9", birth_date="19500101", tag=str(number))
    write_patient(tmp_path / "in", "9", birth_date="19900101", study="s2")
    write_patient(tmp_path / "in", "10", birth_date="19900101")
    result = run(vault, tmp_path / "in", tmp_path / "out", "--workers", workers)
    assert result.code == 1
    reasons = _quarantined(report_of(result))
    assert len(reasons) == 4 and all("different Patient's Birth Dates" in r for r in reasons)
    assert len(patients_in(tmp_path / "out")) == 1, "the other patient is written"


def test_a_different_name_alone_is_a_warning(vault: Path, tmp_path: Path, env: None) -> None:
    write_patient(tmp_path / "b1", "77", name="SMITH^ANNA")
    assert run(vault, tmp_path / "b1", tmp_path / "out").code == 0
    write_patient(tmp_path / "b2", "77", name="JONES^ANNA", study="s2")
    second = run(vault, tmp_path / "b2", tmp_path / "out")
    assert second.code == 0, second.stderr
    report = report_of(second)
    (written,) = [f for f in report["files"] if f["status"] == "written"]
    warnings = [f for f in written["findings"] if f["code"] == "identity-name"]
    assert len(warnings) == 1 and "JONES" not in warnings[0]["message"]
    assert len(patients_in(tmp_path / "out")) == 1


def test_fingerprints_are_keyed_and_bound_to_the_pseudonym(
    vault: Path, tmp_path: Path, env: None
) -> None:
    write_patient(tmp_path / "in", "1", birth_date="19700101")
    write_patient(tmp_path / "in", "2", birth_date="19700101")
    assert run(vault, tmp_path / "in", tmp_path / "out").code == 0
    with VaultSession(vault) as session, Session(session.engine) as db:
        rows = list(db.exec(select(IdentityFingerprintRow)))
    assert len(rows) == 2
    digests = {row.birth_date for row in rows}
    assert len(digests) == 2, "the same birth date of two patients gives unrelated digests"
    plain = {hashlib.sha256(b"19700101").hexdigest(), "19700101"}
    assert not digests & plain


def test_the_identity_derivations_never_change() -> None:
    """Known answers: the identity book's label and encodings are never edited in place (a
    change would make every recorded fingerprint and rule of every project a stranger)."""
    from keystore.identities import fingerprint, lookup_key
    from pseudo.deid.identity import Site, patient_id_key
    from tests.synthetic import make_keyring

    keyring = make_keyring()
    assert fingerprint(keyring, "T-ABC", "birth_date", "19700101") == (
        "17a21df2e7220d9dce000725d78c7b4e30efcc90b90c31eeacd238f1866cbc91"
    )
    oslo = patient_id_key("1", site=Site("oslo", "0107", "site:oslo"))
    assert lookup_key(keyring, oslo) == (
        "d901bf6acf70959917967ce117e4f08e23a25a517cbe37dc70729093fed48bcd"
    )
    assert patient_id_key("1", site=Site("lyon", "0042", "")) == ("patient-id", "", "1")
