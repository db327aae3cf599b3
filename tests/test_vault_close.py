"""``pseudo project close``: crypto-shredding a project's keys (by default all of them)."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest

from keystore.errors import AuthenticationError, InvalidTokenError, ProjectClosedError, SlotError
from keystore.linkage import LinkageEntry
from keystore.maintenance import close_project
from keystore.session import VaultSession
from keystore.vault import KeySlot, Vault
from tests.conftest import OPERATOR, REID, cli
from tests.test_vault_slots import last_audit, reidentify, run_cohort


def signed(details: object) -> dict[str, object]:
    """The details of a record a re-identifier wrote, which name the key that signed it."""
    assert isinstance(details, dict) and "signed_by" in details
    return {key: value for key, value in details.items() if key != "signed_by"}


def slot_material(vault: Path, role: str = "reidentifier") -> list[bytes]:
    """The wrapped (and sealed) bytes of every slot of ``role``, as stored in base64."""
    data = json.loads((vault / "projects" / "trial.json").read_text())
    return [
        value.encode()
        for slot in data["slots"]
        if slot["role"] == role
        for value in (slot["wrapped"], slot.get("sealed"), slot["kdf"]["salt"])
        if value
    ]


def all_bytes(folder: Path) -> bytes:
    """Every file under ``folder``, concatenated."""
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def test_closing_needs_a_confirmation(vault: Path, env: None) -> None:
    result = cli("project", "close", "trial", "--vault", vault)
    assert result.code == 2 and result.stderr.count("\n") == 1
    assert "confirm with --yes" in result.stderr
    with VaultSession(vault) as session:
        assert session.vault.unlock_reidentifier("trial", REID).slot == "reidentifier"


def test_a_wrong_passphrase_closes_nothing(
    vault: Path, env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PSEUDO_REID_PASSPHRASE", OPERATOR)
    result = cli("project", "close", "trial", "--yes", "--vault", vault)
    assert result.code == 3
    assert not Vault.open(vault).project("trial").closed
    assert last_audit(vault)["outcome"] == "denied: wrong passphrase"


def test_closing_destroys_the_reidentification_key_for_good(
    tmp_path: Path, vault: Path, env: None
) -> None:
    out = run_cohort(tmp_path, vault)
    pseudonym = next(out.iterdir()).name
    assert reidentify(vault, pseudonym)[0] == 0
    material = slot_material(vault) + slot_material(vault, "operator")
    old_slots = [
        KeySlot.from_json(s)
        for s in json.loads((vault / "projects" / "trial.json").read_text())["slots"]
    ]

    closed = cli("project", "close", "trial", "--yes", "--vault", vault)
    assert closed.code == 0, closed.stderr
    assert "can no longer be opened" in closed.stderr

    # Re-identification fails with one clear line (exit 2), and the refusal is audited.
    code, _, stderr = reidentify(vault, pseudonym)
    assert code == 2 and stderr.count("\n") == 1
    assert "was closed" in stderr and "no pseudonym of it can be re-identified" in stderr
    refusal = last_audit(vault)
    assert refusal["outcome"] == "refused: project closed"
    # No run adds to it.
    run = cli("run", tmp_path / "in", tmp_path / "out2", "--project", "trial", "--vault", vault)
    assert run.code == 2 and "accepts no more data" in run.stderr
    assert not (tmp_path / "out2").exists()
    # The close is in the audit log, authenticated, with what was destroyed.
    records = cli("audit", "show", "--vault", vault, "--json").json()
    close = [r for r in records if r["action"] == "project.close"]
    assert [r["outcome"] for r in close] == ["started", "success"]
    assert close[-1]["details"]["destroyed_slots"] == ["operator", "reidentifier"]
    assert close[-1]["details"]["secret_destroyed"] is True
    assert close[-1]["authenticated_by"] == "trial/operator"  # the last slot opened
    # The audit key went with the slots: the chain still verifies, the MACs cannot be checked.
    assert cli("audit", "verify", "--vault", vault).code == 0
    unkeyed = cli("audit", "verify", "--vault", vault, "--project", "trial")
    assert unkeyed.code == 2 and unkeyed.stderr.count("\n") == 1
    assert "nobody holds its audit key" in unkeyed.stderr

    # A copy of the vault taken after the close, with the old passphrase: nothing opens.
    copy = tmp_path / "stolen-after-close"
    shutil.copytree(vault, copy)
    stolen = all_bytes(copy)
    assert material and not any(m in stolen for m in material)
    data = json.loads((copy / "projects" / "trial.json").read_text())
    assert data["closed"] is True and data["slots"] == []
    data["closed"] = False  # even an attacker who reopens the file finds no slot
    (copy / "projects" / "trial.json").write_text(json.dumps(data))
    (copy / "pseudo.db").unlink()  # and no linkage-store flag
    for name in ("pseudo.db-wal", "pseudo.db-shm"):
        (copy / name).unlink(missing_ok=True)
    with pytest.raises(AuthenticationError, match="no re-identification slot"):
        Vault.open(copy).unlock_reidentifier("trial", REID)
    # nor the project secret: an operator can no longer compute a known patient's pseudonym
    with pytest.raises(AuthenticationError, match="no operator slot"):
        Vault.open(copy).unlock_operator("trial", OPERATOR)
    # (the slots as they were before the close did open: the passphrases are right)
    assert [s.role for s in old_slots] == ["operator", "reidentifier"]
    assert old_slots[0].open("trial", OPERATOR) and old_slots[1].open("trial", REID)

    listed = cli("project", "list", "--vault", vault, "--json").json()[0]
    assert listed["closed"] is True and listed["closed_at"]
    for args in (
        ["project", "rotate-reid-key", "trial"],
        ["project", "close", "trial", "--yes"],
        ["project", "add-slot", "trial", "x", "--role", "reidentifier"],
    ):
        refused = cli(*args, "--vault", vault)
        assert refused.code == 2 and "was closed" in refused.stderr, args
    assert cli("audit", "verify", "--vault", vault).code == 0


def test_closing_destroys_the_project_secret_by_default(
    tmp_path: Path, vault: Path, env: None
) -> None:
    run_cohort(tmp_path, vault)
    result = cli("project", "close", "trial", "--yes", "--vault", vault)
    assert result.code == 0, result.stderr
    assert "nobody can compute its pseudonyms any more" in result.stderr
    head = cli("audit", "head", "--vault", vault).stdout.strip()
    assert f"keep the audit head {head}" in result.stderr
    data = json.loads((vault / "projects" / "trial.json").read_text())
    assert data["slots"] == [] and data["closed"] is True
    with VaultSession(vault) as session, pytest.raises(ProjectClosedError):
        session.vault.unlock_operator("trial", OPERATOR)
    assert signed(last_audit(vault)["details"]) == {
        "destroyed_slots": ["operator", "reidentifier"],
        "by_slots": ["reidentifier", "operator"],
        "linkage_records": 39,  # 3 patients, 6 studies, 12 series, 18 instances
        "secret_destroyed": True,
    }
    assert cli("audit", "verify", "--vault", vault, "--expect", head).code == 0


def test_the_old_destroy_secret_flag_is_the_default_and_excludes_keeping_the_keys(
    vault: Path, env: None
) -> None:
    both = cli(
        "project",
        "close",
        "trial",
        "--yes",
        "--destroy-secret",
        "--keep-operator-keys",
        "--vault",
        vault,
    )
    assert both.code == 2 and not Vault.open(vault).project("trial").closed
    old = cli("project", "close", "trial", "--yes", "--destroy-secret", "--vault", vault)
    assert old.code == 0, old.stderr
    assert Vault.open(vault).project("trial").slots == []


def test_closing_needs_an_operator_passphrase_unless_the_keys_are_kept(
    vault: Path, env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PSEUDO_PASSPHRASE", "not the operator passphrase")
    wrong = cli("project", "close", "trial", "--yes", "--vault", vault)
    assert wrong.code == 3 and wrong.stderr.count("\n") == 1
    assert "wrong operator passphrase" in wrong.stderr
    monkeypatch.delenv("PSEUDO_PASSPHRASE")
    missing = cli("project", "close", "trial", "--yes", "--vault", vault)
    assert missing.code == 2 and "no operator passphrase" in missing.stderr
    project = Vault.open(vault).project("trial")
    assert not project.closed and len(project.slots) == 2
    with VaultSession(vault) as session:
        assert session.vault.unlock_reidentifier("trial", REID).slot == "reidentifier"
        with pytest.raises(SlotError, match="needs an operator passphrase"):
            close_project(session, "trial", REID)
        assert not session.vault.project("trial").closed


def test_keep_operator_keys_keeps_only_the_operator_slots(
    tmp_path: Path, vault: Path, env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = run_cohort(tmp_path, vault)
    monkeypatch.delenv("PSEUDO_PASSPHRASE")  # only a re-identification passphrase is needed
    kept = cli("project", "close", "trial", "--yes", "--keep-operator-keys", "--vault", vault)
    assert kept.code == 0, kept.stderr
    assert "its operators can still compute pseudonyms" in kept.stderr
    data = json.loads((vault / "projects" / "trial.json").read_text())
    assert data["closed"] is True and [s["role"] for s in data["slots"]] == ["operator"]
    for slot in data["slots"]:
        with pytest.raises(InvalidTokenError, match="does not open"):
            KeySlot.from_json(slot).open("trial", REID)
    close = last_audit(vault)
    assert signed(close["details"]) == {
        "destroyed_slots": ["reidentifier"],
        "by_slots": ["reidentifier"],
        "linkage_records": 39,  # 3 patients, 6 studies, 12 series, 18 instances
        "secret_destroyed": False,
    }
    code, _, stderr = reidentify(vault, next(out.iterdir()).name)
    assert code == 2 and "was closed" in stderr
    # Operators can still check the log with the project's audit key ...
    monkeypatch.setenv("PSEUDO_PASSPHRASE", OPERATOR)
    verified = cli("audit", "verify", "--vault", vault, "--project", "trial", "--json")
    assert verified.code == 0, verified.stderr
    assert verified.json()["authenticated_through"] == close["seq"]
    # ... but add nothing to the project.
    run = cli("run", tmp_path / "in", tmp_path / "out2", "--project", "trial", "--vault", vault)
    assert run.code == 2 and "accepts no more data" in run.stderr
    again = cli("project", "close", "trial", "--yes", "--keep-operator-keys", "--vault", vault)
    assert again.code == 2 and "nothing left to close" in again.stderr

    # Once the audit key is no longer needed, closing again destroys the operator slots too
    # (an operator passphrase is enough: no re-identification slot is left).
    monkeypatch.delenv("PSEUDO_REID_PASSPHRASE")
    final = cli("project", "close", "trial", "--yes", "--vault", vault)
    assert final.code == 0, final.stderr
    closed_at = data["closed_at"]
    data = json.loads((vault / "projects" / "trial.json").read_text())
    assert data["slots"] == [] and data["closed_at"] == closed_at  # closed when it was closed
    assert last_audit(vault)["details"] == {
        "destroyed_slots": ["operator"],
        "by_slots": ["operator"],
        "linkage_records": 39,  # 3 patients, 6 studies, 12 series, 18 instances
        "secret_destroyed": True,
    }
    done = cli("project", "close", "trial", "--yes", "--vault", vault)
    assert done.code == 2 and "nothing left to close" in done.stderr
    assert cli("audit", "verify", "--vault", vault).code == 0


def test_the_linkage_store_refuses_a_closed_project_for_a_stale_vault_too(
    tmp_path: Path, vault: Path, env: None
) -> None:
    """Another vault folder sharing the database (or an old copy) still has the project open."""
    stale = (vault / "projects" / "trial.json").read_bytes()
    with VaultSession(vault) as session:
        keyring = session.vault.unlock_operator("trial", OPERATOR)
    assert cli("project", "close", "trial", "--yes", "--vault", vault).code == 0
    (vault / "projects" / "trial.json").write_bytes(stale)
    with VaultSession(vault) as session:
        with pytest.raises(ProjectClosedError):
            session.vault.unlock_operator("trial", OPERATOR)
        entry = LinkageEntry("patient", "T-1", "T-1", {"patient_id": "MRN1"})
        with pytest.raises(ProjectClosedError):
            session.linkage.commit_batch(keyring, "late", [entry], [])
        assert session.linkage.count("trial") == 0
    pseudonym = "TRIAL-AAAAAAAAAAAAAAAA"
    code, _, stderr = reidentify(vault, pseudonym)
    assert code == 2 and "was closed" in stderr


def test_closed_project_slots_are_gone_even_from_the_base64_of_the_file(
    vault: Path, env: None
) -> None:
    before = (vault / "projects" / "trial.json").read_text()
    reid = next(s for s in json.loads(before)["slots"] if s["role"] == "reidentifier")
    operator = next(s for s in json.loads(before)["slots"] if s["role"] == "operator")
    assert cli("project", "close", "trial", "--yes", "--vault", vault).code == 0
    after = (vault / "projects" / "trial.json").read_bytes()
    for value in (reid["sealed"], reid["wrapped"], operator["wrapped"]):
        assert base64.b64decode(value) not in after and value.encode() not in after
