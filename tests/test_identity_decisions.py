"""``pseudo identity merge`` and ``split`` (issue 17): both need the re-identification
passphrase, both are audited, and later runs honour them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import CliResult, cli
from tests.patients import audit_actions, patients_in, reidentify, report_of, run, write_patient


def identity(vault: Path, *args: str) -> CliResult:
    """``pseudo identity ...`` on project ``trial``."""
    return cli("identity", *args, "--project", "trial", "--vault", vault, "--json")


def test_merge_gives_a_changed_patient_id_the_surviving_pseudonym(
    vault: Path, tmp_path: Path, env: None
) -> None:
    write_patient(tmp_path / "old-id", "OLD-1", birth_date="19550505")
    assert run(vault, tmp_path / "old-id", tmp_path / "a").code == 0
    write_patient(tmp_path / "new-id", "NEW-9", birth_date="19550505")
    assert run(vault, tmp_path / "new-id", tmp_path / "b").code == 0
    (keep,) = patients_in(tmp_path / "a")
    (merged,) = patients_in(tmp_path / "b")
    assert keep != merged
    merging = identity(vault, "merge", "--keep", keep, "--merge", merged, "--reason", "ID change")
    assert merging.code == 0, merging.stderr
    assert merging.json()["identities"] == 1
    write_patient(tmp_path / "later", "NEW-9", birth_date="19550505", study="s2")
    later = run(vault, tmp_path / "later", tmp_path / "c")
    assert later.code == 0, later.stderr
    assert patients_in(tmp_path / "c") == {keep}
    answer = reidentify(vault, keep).json()
    assert answer["patient_id"] == "OLD-1"
    assert {o["patient_id"] for o in answer["other_identities"]} == {"NEW-9"}
    ((action, outcome, details),) = audit_actions(vault, "identity.")
    assert (action, outcome) == ("identity.merge", "success")
    assert details["keep"] == keep and details["merged"] == merged


def test_merge_needs_the_reidentification_passphrase_and_refuses_two_birth_dates(
    vault: Path, tmp_path: Path, env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_patient(tmp_path / "in", "1", birth_date="19550505")
    write_patient(tmp_path / "in", "2", birth_date="19660606")
    assert run(vault, tmp_path / "in", tmp_path / "out").code == 0
    first, second = sorted(patients_in(tmp_path / "out"))
    monkeypatch.setenv("PSEUDO_REID_PASSPHRASE", "not the re-identification passphrase")
    denied = identity(vault, "merge", "--keep", first, "--merge", second)
    assert denied.code == 3
    monkeypatch.undo()
    monkeypatch.setenv("PSEUDO_PASSPHRASE", "operator passphrase for tests")
    monkeypatch.setenv("PSEUDO_REID_PASSPHRASE", "re-identification passphrase for tests")
    refused = identity(vault, "merge", "--keep", first, "--merge", second)
    assert refused.code == 2 and "different birth dates" in refused.stderr
    unknown = identity(vault, "merge", "--keep", first, "--merge", "TRIAL-AAAAAAAAAAAAAAAA")
    assert unknown.code == 1 and "not found" in unknown.stderr
    outcomes = [outcome for _, outcome, _ in audit_actions(vault, "identity.")]
    assert outcomes[0].startswith("refused") and outcomes[1] == "not found"
    forced = identity(
        vault, "merge", "--keep", first, "--merge", second, "--accept-different-birth-date"
    )
    assert forced.code == 0, forced.stderr


def test_split_gives_the_second_person_their_own_pseudonym(
    vault: Path, tmp_path: Path, env: None
) -> None:
    write_patient(tmp_path / "b1", "100234", name="MARTIN^ANNE", birth_date="19600101")
    assert run(vault, tmp_path / "b1", tmp_path / "out").code == 0
    (first,) = patients_in(tmp_path / "out")
    write_patient(tmp_path / "b2", "100234", name="MARTIN^PAUL", birth_date="19900909", sex="M")
    conflict = run(vault, tmp_path / "b2", tmp_path / "out")
    assert conflict.code == 1
    own = identity(vault, "split", "--pseudonym", first, "--birth-date", "19600101")
    assert own.code == 2 and "own patient" in own.stderr
    split = identity(
        vault, "split", "--pseudonym", first, "--birth-date", "19900909", "--reason", "twin IDs"
    )
    assert split.code == 0, split.stderr
    second = split.json()["new_pseudonym"]
    assert second != first and second.startswith("TRIAL-")
    again = run(vault, tmp_path / "b2", tmp_path / "out")
    assert again.code == 0, report_of(again)["files"]
    assert patients_in(tmp_path / "out") == {first, second}
    answer = reidentify(vault, second).json()
    assert (answer["patient_id"], answer["patient_name"]) == ("100234", "MARTIN^PAUL")
    assert reidentify(vault, first).json()["patient_name"] == "MARTIN^ANNE"
    write_patient(tmp_path / "b3", "100234", name="MARTIN^ANNE", birth_date="19600101", study="s3")
    assert run(vault, tmp_path / "b3", tmp_path / "out").code == 0
    assert patients_in(tmp_path / "out") == {first, second}, "the first person keeps hers"
    actions = [(a, o) for a, o, _ in audit_actions(vault, "identity.")]
    assert actions == [
        (
            "identity.split",
            f"refused: that is the birth date of {first}'s own patient: give the other person's",
        ),
        ("identity.split", "success"),
    ]
