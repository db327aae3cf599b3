"""Rotating a project's re-identification key pair: every record re-sealed in one transaction.

Crashes are real: an exception inside the transaction, and a process killed with SIGKILL in
the middle of the transaction and between its commit and the project file's replacement.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from keystore import crypto
from keystore.errors import CorruptVaultError, InvalidTokenError, StaleKeyError
from keystore.linkage import LinkageEntry, sealed_aad
from keystore.maintenance import rotate_reid_key
from keystore.session import VaultSession
from keystore.vault import KeySlot
from tests.conftest import FAST_KDF, OPERATOR, REID, REPO, cli
from tests.test_vault_slots import reidentify, run_cohort

CAROL = "carol's re-identification passphrase"


def fill_linkage(vault: Path, patients: int) -> None:
    """Store ``patients`` synthetic patient records (and one study each), sealed for real."""
    with VaultSession(vault) as session:
        keyring = session.vault.unlock_operator("trial", OPERATOR)
        entries = []
        for i in range(patients):
            entries.append(
                LinkageEntry("patient", f"T-{i:05}", f"T-{i:05}", {"patient_id": f"MRN{i:06}"})
            )
            entries.append(LinkageEntry("study", f"2.25.{i}", f"T-{i:05}", {"study_uid": f"1.{i}"}))
        session.linkage.commit_batch(keyring, "fill", entries, [])


def sealed_rows(vault: Path) -> dict[int, bytes]:
    """Every stored sealed record by row id."""
    with VaultSession(vault) as session:
        return {row.id or 0: row.sealed for row in session.linkage.all_records("trial")}


def opens(vault: Path, private_key: bytes) -> list[bool]:
    """For each record, whether ``private_key`` opens it."""
    result = []
    with VaultSession(vault) as session:
        for row in session.linkage.all_records("trial"):
            try:
                crypto.open_sealed(
                    private_key, row.sealed, sealed_aad(row.project, row.kind, row.key)
                )
                result.append(True)
            except InvalidTokenError:
                result.append(False)
    return result


def private_key(vault: Path, passphrase: str = REID) -> bytes:
    """The project's current re-identification private key."""
    with VaultSession(vault) as session:
        return session.vault.unlock_reidentifier("trial", passphrase).private_key


def test_rotation_reseals_every_record_and_every_pseudonym_still_reidentifies(
    tmp_path: Path, vault: Path, env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = run_cohort(tmp_path, vault)
    with VaultSession(vault) as session:
        session.vault.add_slot(
            "trial", "reidentifier", "dpo-carol", CAROL, passphrase=REID, kdf=FAST_KDF
        )
    pseudonyms = sorted(p.name for p in out.iterdir())
    before = {p: reidentify(vault, p)[1] for p in pseudonyms}
    old_key = private_key(vault)
    old_file = json.loads((vault / "projects" / "trial.json").read_text())

    result = cli("project", "rotate-reid-key", "trial", "--vault", vault, "--json")
    assert result.code == 0, result.stderr
    data = result.json()
    assert data["records"] == 39 and sorted(data["slots"]) == ["dpo-carol", "reidentifier"]

    new_file = json.loads((vault / "projects" / "trial.json").read_text())
    assert new_file["reid_public_key"] != old_file["reid_public_key"]
    assert not (vault / "projects" / "trial.json.rotating").exists()
    # every re-identification slot opens the new key; nobody's passphrase changed
    new_key = private_key(vault)
    assert new_key != old_key and private_key(vault, CAROL) == new_key
    # the old private key opens no record any more; the new one opens all
    assert not any(opens(vault, old_key))
    assert all(opens(vault, new_key))
    for pseudonym in pseudonyms:
        code, identity, stderr = reidentify(vault, pseudonym)
        assert code == 0, stderr
        assert identity == before[pseudonym]
    monkeypatch.setenv("PSEUDO_REID_PASSPHRASE", CAROL)
    assert reidentify(vault, pseudonyms[0])[1] == before[pseudonyms[0]]
    # operators still unlock (the settings MAC covers the new public key) and runs go on
    again = cli("run", tmp_path / "in", out, "--project", "trial", "--vault", vault, "--json")
    assert again.code == 0 and again.json()["unchanged"] == 18
    rotations = [
        r
        for r in cli("audit", "show", "--vault", vault, "--json").json()
        if r["action"] == "reid-key.rotate"
    ]
    assert [r["outcome"] for r in rotations] == ["started", "success"]
    assert rotations[-1]["details"]["records"] == 39
    assert cli("audit", "verify", "--vault", vault).code == 0


def test_an_error_mid_rotation_leaves_the_old_state(vault: Path) -> None:
    fill_linkage(vault, 600)  # 1200 records: three chunks of 500
    before = sealed_rows(vault)
    file_before = (vault / "projects" / "trial.json").read_bytes()
    old_key = private_key(vault)

    def fail(stage: str, done: int) -> None:
        if stage == "resealing" and done >= 1000:
            raise RuntimeError("simulated failure after 1000 records")

    with VaultSession(vault) as session, pytest.raises(RuntimeError):
        rotate_reid_key(session, "trial", OPERATOR, REID, on_progress=fail)
    assert sealed_rows(vault) == before
    assert (vault / "projects" / "trial.json").read_bytes() == file_before
    assert not (vault / "projects" / "trial.json.rotating").exists()
    assert all(opens(vault, old_key))
    with VaultSession(vault) as session:
        last = session.audit.records()[-1]
    assert last.outcome == "failed: RuntimeError; nothing changed"


_KILLABLE = """
import sys, time
from pathlib import Path
from keystore.maintenance import rotate_reid_key
from keystore.session import VaultSession

vault, marker, stage = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]

def progress(at, done):
    if at == stage:
        marker.write_text(str(done))
        time.sleep(300)

with VaultSession(vault) as session:
    rotate_reid_key(session, "trial", sys.argv[4], sys.argv[5], on_progress=progress)
"""


def kill_rotation_at(vault: Path, tmp_path: Path, stage: str) -> None:
    """Start a rotation in another process and SIGKILL it when it reaches ``stage``."""
    marker = tmp_path / f"reached-{stage}"
    process = subprocess.Popen(
        [sys.executable, "-c", _KILLABLE, str(vault), str(marker), stage, OPERATOR, REID],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not marker.exists():
        if process.poll() is not None:
            error = process.stderr.read().decode() if process.stderr else ""
            pytest.fail(f"rotation ended early: {error}")
        assert time.monotonic() < deadline, "rotation never reached " + stage
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL


def test_a_rotation_killed_mid_transaction_leaves_the_old_state(
    vault: Path, tmp_path: Path
) -> None:
    fill_linkage(vault, 600)
    before = sealed_rows(vault)
    file_before = (vault / "projects" / "trial.json").read_bytes()
    old_key = private_key(vault)
    kill_rotation_at(vault, tmp_path, "resealing")  # after the first 500 of 1200 records
    assert (vault / "projects" / "trial.json.rotating").exists()  # what the crash left behind
    with VaultSession(vault) as session:
        assert session.recovered == [
            "key rotation of project 'trial' discarded after an interruption; nothing changed"
        ]
    assert not (vault / "projects" / "trial.json.rotating").exists()
    assert sealed_rows(vault) == before
    assert (vault / "projects" / "trial.json").read_bytes() == file_before
    assert private_key(vault) == old_key and all(opens(vault, old_key))
    # and a rotation afterwards goes through
    with VaultSession(vault) as session:
        assert rotate_reid_key(session, "trial", OPERATOR, REID).records == 1200
    assert not any(opens(vault, old_key)) and all(opens(vault, private_key(vault)))


def test_a_rotation_killed_after_its_commit_is_completed_on_next_open(
    vault: Path, tmp_path: Path, env: None
) -> None:
    fill_linkage(vault, 30)
    old_key = private_key(vault)
    kill_rotation_at(vault, tmp_path, "committed")
    with VaultSession(vault) as session:
        assert session.recovered == [
            "key rotation of project 'trial' completed after an interruption"
        ]
    new_key = private_key(vault)
    assert new_key != old_key
    assert all(opens(vault, new_key)) and not any(opens(vault, old_key))
    code, identity, _ = reidentify(vault, "T-00007")
    assert code == 0 and identity["patient_id"] == "MRN000007"
    assert cli("audit", "verify", "--vault", vault).code == 0


def test_a_keyring_opened_before_a_rotation_cannot_add_records_sealed_to_the_old_key(
    vault: Path,
) -> None:
    fill_linkage(vault, 3)
    with VaultSession(vault) as session:
        stale = session.vault.unlock_operator("trial", OPERATOR)
        rotate_reid_key(session, "trial", OPERATOR, REID)
        entry = LinkageEntry("patient", "T-99999", "T-99999", {"patient_id": "MRN999999"})
        with pytest.raises(StaleKeyError, match="was rotated"):
            session.linkage.commit_batch(stale, "late-run", [entry], [])
        assert session.linkage.records("trial", "patient", "T-99999") == []
        fresh = session.vault.unlock_operator("trial", OPERATOR)
        assert session.linkage.commit_batch(fresh, "next-run", [entry], []) == 1
    assert all(opens(vault, private_key(vault)))


def test_a_removed_slot_keeps_nothing_that_opens_the_rotated_key(vault: Path) -> None:
    fill_linkage(vault, 5)
    with VaultSession(vault) as session:
        session.vault.add_slot(
            "trial", "reidentifier", "dpo-carol", CAROL, passphrase=REID, kdf=FAST_KDF
        )
        # Carol leaves, but keeps a copy of her slot (and her passphrase).
        kept = session.vault.project("trial").slot("dpo-carol")
        session.vault.remove_slot("trial", "dpo-carol", passphrase=REID)
        rotate_reid_key(session, "trial", OPERATOR, REID)
    old_private, _ = kept.open("trial", CAROL)
    assert not any(opens(vault, old_private))
    # Putting her old slot back into the project file gives her nothing either.
    path = vault / "projects" / "trial.json"
    data = json.loads(path.read_text())
    data["slots"].append(KeySlot.to_json(kept))
    path.write_text(json.dumps(data))
    with VaultSession(vault) as session, pytest.raises(CorruptVaultError, match="does not match"):
        session.vault.unlock_reidentifier("trial", CAROL, "dpo-carol")
