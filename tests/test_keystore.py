"""Key vault, sealing and linkage store: real crypto, real SQLite, files on disk."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from keystore import crypto
from keystore.errors import (
    AuthenticationError,
    CorruptVaultError,
    InvalidNameError,
    InvalidTokenError,
    ProjectExistsError,
    VaultExistsError,
    VaultNotFoundError,
    WeakPassphraseError,
)
from keystore.linkage import JournalEntry, LinkageEntry
from keystore.session import VaultSession
from keystore.vault import Vault
from tests.conftest import FAST_KDF, OPERATOR, REID, make_vault


def test_seal_opens_only_with_the_private_key_and_its_row() -> None:
    private, public = crypto.generate_x25519()
    other_private, _ = crypto.generate_x25519()
    blob = crypto.seal(public, b"DOE^JOHN", b"row-1")
    assert crypto.open_sealed(private, blob, b"row-1") == b"DOE^JOHN"
    assert b"DOE" not in blob
    with pytest.raises(InvalidTokenError):
        crypto.open_sealed(other_private, blob, b"row-1")
    with pytest.raises(InvalidTokenError):
        crypto.open_sealed(private, blob, b"row-2")
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    with pytest.raises(InvalidTokenError):
        crypto.open_sealed(private, bytes(tampered), b"row-1")
    assert crypto.seal(public, b"x", b"a") != crypto.seal(public, b"x", b"a")  # fresh ephemeral key


def test_encode_parts_is_unambiguous() -> None:
    assert crypto.encode_parts("ab", "c") != crypto.encode_parts("a", "bc")


def test_vault_files_are_owner_only(vault: Path) -> None:
    assert stat.S_IMODE(vault.stat().st_mode) == 0o700
    for path in [vault / "vault.json", vault / "pseudo.db", *(vault / "projects").iterdir()]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_secrets_never_rest_in_plaintext(vault: Path) -> None:
    data = json.loads((vault / "projects" / "trial.json").read_text())
    assert {s["role"] for s in data["slots"]} == {"operator", "reidentifier"}
    for slot in data["slots"]:
        assert slot["kdf"]["name"] == "scrypt" and slot["kdf"]["n"] >= 2**14
    text = (vault / "projects" / "trial.json").read_text()
    assert OPERATOR not in text and REID not in text


def test_unlock_and_wrong_passphrases(vault: Path) -> None:
    store = Vault.open(vault)
    keyring = store.unlock_operator("trial", OPERATOR)
    assert keyring.project == "trial"
    with pytest.raises(AuthenticationError):
        store.unlock_operator("trial", "wrong")
    with pytest.raises(AuthenticationError):
        store.unlock_operator(
            "trial", REID
        )  # the re-identification passphrase opens no operator slot
    with pytest.raises(AuthenticationError):
        store.unlock_reidentifier("trial", OPERATOR)
    assert store.unlock_reidentifier("trial", REID).project == "trial"


def test_swapped_public_key_is_detected(vault: Path) -> None:
    path = vault / "projects" / "trial.json"
    data = json.loads(path.read_text())
    _, attacker_public = crypto.generate_x25519()
    import base64

    data["reid_public_key"] = base64.b64encode(attacker_public).decode()
    path.write_text(json.dumps(data))
    with pytest.raises(CorruptVaultError, match="altered"):
        Vault.open(vault).unlock_operator("trial", OPERATOR)


def test_changed_prefix_is_detected(vault: Path) -> None:
    path = vault / "projects" / "trial.json"
    data = json.loads(path.read_text())
    data["prefix"] = "EVIL"
    path.write_text(json.dumps(data))
    with pytest.raises(CorruptVaultError):
        Vault.open(vault).unlock_operator("trial", OPERATOR)


def test_creation_rules(tmp_path: Path) -> None:
    with pytest.raises(VaultNotFoundError):
        Vault.open(tmp_path / "nowhere")
    store = Vault.init(tmp_path / "v")
    with pytest.raises(VaultExistsError):
        Vault.init(tmp_path / "v")
    with pytest.raises(WeakPassphraseError):
        store.create_project("p", "short", REID, kdf=FAST_KDF)
    with pytest.raises(WeakPassphraseError, match="must differ"):
        store.create_project("p", OPERATOR, OPERATOR, kdf=FAST_KDF)
    with pytest.raises(InvalidNameError):
        store.create_project("../evil", OPERATOR, REID, kdf=FAST_KDF)
    with pytest.raises(InvalidNameError):
        store.create_project("p", OPERATOR, REID, prefix="lower", kdf=FAST_KDF)
    store.create_project("p", OPERATOR, REID, kdf=FAST_KDF)
    with pytest.raises(ProjectExistsError):
        store.create_project("p", OPERATOR, REID, kdf=FAST_KDF)
    with pytest.raises(ValueError):
        crypto.ScryptParams(n=1024).validate()


def test_linkage_dedup_and_sealing(vault: Path) -> None:
    with VaultSession(vault) as session:
        keyring = session.vault.unlock_operator("trial", OPERATOR)
        entries = [
            LinkageEntry(
                "patient", "T-1", "T-1", {"patient_id": "123", "patient_name": "DOE^JOHN"}
            ),
            LinkageEntry("study", "2.25.1", "T-1", {"study_uid": "1.2.3"}),
        ]
        journal = [JournalEntry("/in/a.dcm", "1:2:h", "written", "T-1/a.dcm")]
        assert session.linkage.commit_batch(keyring, "run-1", entries, journal) == 2
        assert session.linkage.commit_batch(keyring, "run-2", entries, journal) == 0
        variant = LinkageEntry(
            "patient", "T-1", "T-1", {"patient_id": "123", "patient_name": "DOE^JON"}
        )
        assert session.linkage.commit_batch(keyring, "run-3", [variant], []) == 1
        rows = session.linkage.records("trial", "patient", "T-1")
        assert len(rows) == 2
        assert all(b"DOE" not in row.sealed for row in rows)
        key = session.vault.unlock_reidentifier("trial", REID)
        from keystore.linkage import sealed_aad

        opened = json.loads(key.open(rows[0].sealed, sealed_aad("trial", "patient", "T-1")))
        assert opened["patient_name"] == "DOE^JOHN"
        journal_rows = session.linkage.journal_lookup(keyring, ["/in/a.dcm", "/in/b.dcm"])
        assert set(journal_rows) == {"/in/a.dcm"}
        assert "/in/a.dcm" not in journal_rows["/in/a.dcm"].input_key


def test_imported_secret_reproduces_pseudonyms(tmp_path: Path) -> None:
    secret = bytes(range(32))
    first = make_vault(tmp_path / "a", secret=secret)
    second = make_vault(tmp_path / "b", secret=secret)
    ring_a = Vault.open(first).unlock_operator("trial", OPERATOR)
    ring_b = Vault.open(second).unlock_operator("trial", OPERATOR)
    assert ring_a.mac("token", "x") == ring_b.mac("token", "x")
    assert ring_a.reid_public_key != ring_b.reid_public_key


def test_kdf_cost_is_slow_enough_by_default() -> None:
    import time

    params = crypto.ScryptParams()
    assert params.n >= 2**16
    start = time.perf_counter()
    crypto.derive_kek("a passphrase", b"0" * 16, params)
    assert time.perf_counter() - start > 0.05
