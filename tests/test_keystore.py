"""Key vault, sealing and linkage store: real crypto, real SQLite, files on disk."""

from __future__ import annotations

import base64
import json
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from keystore import crypto
from keystore.errors import (
    AuthenticationError,
    CorruptVaultError,
    InvalidNameError,
    InvalidTokenError,
    ProjectExistsError,
    SlotError,
    VaultExistsError,
    VaultNotFoundError,
    WeakPassphraseError,
)
from keystore.guard import ThrottlePolicy
from keystore.linkage import JournalEntry, LinkageEntry, journal_key
from keystore.session import VaultSession
from keystore.stamps import os_user
from keystore.vault import Vault
from tests.conftest import FAST_KDF, OPERATOR, REID, REPO, make_vault


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


def test_an_unlock_started_early_gives_the_same_keys_and_the_same_refusals(vault: Path) -> None:
    """``pseudo run`` starts the operator's key derivation while it loads; the unlock that
    follows must open exactly what it would have, and refuse (and audit) exactly the same."""
    expected = Vault.open(vault).unlock_operator("trial", OPERATOR)
    Vault.open(vault).unlock_operator_soon("trial", OPERATOR)
    assert len(crypto._SOON) == 1, "one operator slot: one derivation under way"
    with VaultSession(vault) as session:
        keyring = session.vault.unlock_operator("trial", OPERATOR)
        assert not crypto._SOON, "taken by the unlock it was derived for"
        assert keyring == expected and keyring._keys == expected._keys
        session.vault.unlock_operator_soon("trial", "a wrong guess")
        with pytest.raises(AuthenticationError):
            session.vault.unlock_operator("trial", "a wrong guess")
        assert session.audit.records()[-1].outcome == "denied: wrong passphrase"
    Vault.open(vault).unlock_operator_soon("trial", OPERATOR)
    with pytest.raises(AuthenticationError):  # derived for OPERATOR; not used for another
        Vault.open(vault).unlock_operator("trial", "another guess")
    crypto._SOON.clear()


def test_run_starts_unlocking_before_it_loads_pydicom_and_the_database() -> None:
    """What ``pseudo run`` imports before its unlock starts: neither pydicom nor SQLAlchemy,
    or the key derivation no longer overlaps their loading."""
    code = (
        "import sys, pseudo.cli.app, pseudo.cli.run_cmd, keystore.vault;"
        "print(sorted(m for m in ('pydicom', 'sqlalchemy', 'sqlmodel') if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert loaded.stdout.strip() == "[]"


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
    Vault.init(tmp_path / "v")
    with pytest.raises(VaultExistsError):
        Vault.init(tmp_path / "v")
    with pytest.raises(SlotError, match="through a VaultSession"):  # it could not be audited
        Vault.open(tmp_path / "v").create_project("p", OPERATOR, REID, kdf=FAST_KDF)
    with VaultSession(tmp_path / "v") as session:
        store = session.vault
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
        journal = [JournalEntry(journal_key(keyring, "/in/a.dcm"), "1:2:h", "written", "T-1/a.dcm")]
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
        keys = [journal_key(keyring, "/in/a.dcm"), journal_key(keyring, "/in/b.dcm")]
        journal_rows = session.linkage.journal_lookup(keyring, keys)
        assert set(journal_rows) == {keys[0]}
        assert "/in/a.dcm" not in keys[0]
        assert journal_rows[keys[0]].output == "T-1/a.dcm"


def test_imported_secret_reproduces_pseudonyms(tmp_path: Path) -> None:
    secret = bytes(range(32))
    first = make_vault(tmp_path / "a", secret=secret)
    second = make_vault(tmp_path / "b", secret=secret)
    ring_a = Vault.open(first).unlock_operator("trial", OPERATOR)
    ring_b = Vault.open(second).unlock_operator("trial", OPERATOR)
    assert ring_a.mac("token", "x") == ring_b.mac("token", "x")
    assert ring_a.reid_public_key != ring_b.reid_public_key


def test_kdf_cost_is_slow_enough_by_default() -> None:
    """The default scrypt cost makes one guess take at least 0.1 s here (best of three)."""
    params = crypto.ScryptParams()
    assert params.n >= 2**16
    assert crypto.time_kdf(params, rounds=3) >= 0.1


def test_tampered_kdf_parameters_are_refused(vault: Path) -> None:
    path = vault / "projects" / "trial.json"
    data = json.loads(path.read_text())
    data["slots"][0]["kdf"]["n"] = 2**30  # would allocate a terabyte
    path.write_text(json.dumps(data))
    with pytest.raises(CorruptVaultError, match="scrypt n"):
        Vault.open(vault).project("trial")


def test_each_slot_stores_its_cost_and_rewrap_raises_it(vault: Path) -> None:
    with VaultSession(vault) as session:
        before = session.vault.project("trial").slot("operator")
        assert before.params == FAST_KDF
        ring = session.vault.unlock_operator("trial", OPERATOR)
        raised = crypto.ScryptParams(n=2**15)
        session.vault.rewrap_slot("trial", "operator", OPERATOR, kdf=raised)
        stored = json.loads((vault / "projects" / "trial.json").read_text())
        slot = next(s for s in stored["slots"] if s["name"] == "operator")
        assert (slot["kdf"]["n"], slot["kdf"]["r"], slot["kdf"]["p"]) == (2**15, 8, 1)
        assert base64.b64decode(slot["kdf"]["salt"]) != before.salt  # a fresh salt
        after = session.vault.unlock_operator("trial", OPERATOR)
        assert after.mac("token", "x") == ring.mac("token", "x")
        with pytest.raises(AuthenticationError):
            session.vault.rewrap_slot("trial", "operator", "not the passphrase", kdf=raised)
        # a new passphrase replaces the old one
        session.vault.rewrap_slot(
            "trial", "reidentifier", REID, kdf=raised, new_passphrase="a brand new one"
        )
        with pytest.raises(AuthenticationError):
            session.vault.unlock_reidentifier("trial", REID)
        assert session.vault.unlock_reidentifier("trial", "a brand new one").slot == "reidentifier"
        actions = [r.action for r in session.audit.records()]
        assert actions.count("slot.rewrap") == 2


def test_slots_are_added_and_removed_but_never_the_last_of_a_kind(vault: Path) -> None:
    with VaultSession(vault) as session:
        store = session.vault
        ring = store.unlock_operator("trial", OPERATOR)
        store.add_slot(
            "trial",
            "operator",
            "op-bob",
            "bob's operator phrase",
            passphrase=OPERATOR,
            kdf=FAST_KDF,
        )
        store.add_slot(
            "trial",
            "reidentifier",
            "dpo-carol",
            "carol's reid phrase",
            passphrase=REID,
            kdf=FAST_KDF,
        )
        # the new slots open the same keys
        assert store.unlock_operator("trial", "bob's operator phrase").mac(
            "uid", "1.2"
        ) == ring.mac("uid", "1.2")
        carol = store.unlock_reidentifier("trial", "carol's reid phrase")
        assert carol.slot == "dpo-carol"
        assert carol.private_key == store.unlock_reidentifier("trial", REID).private_key
        # only a holder of the role can add to it
        with pytest.raises(AuthenticationError):
            store.add_slot(
                "trial", "reidentifier", "mallory", "mallory's phrase", passphrase=OPERATOR
            )
        with pytest.raises(SlotError, match="already has"):
            store.add_slot("trial", "operator", "op-bob", "x" * 12, passphrase=OPERATOR)
        store.remove_slot("trial", "operator", passphrase="bob's operator phrase")
        with pytest.raises(AuthenticationError):
            store.unlock_operator("trial", OPERATOR)
        with pytest.raises(SlotError, match="last operator slot"):
            store.remove_slot("trial", "op-bob", passphrase="bob's operator phrase")
        with pytest.raises(AuthenticationError):  # an operator cannot remove a re-identifier
            store.remove_slot("trial", "dpo-carol", passphrase="bob's operator phrase")
        store.remove_slot("trial", "dpo-carol", passphrase=REID)
        with pytest.raises(SlotError, match="last re-identification slot"):
            store.remove_slot("trial", "reidentifier", passphrase=REID)
        names = {(s.name, s.role) for s in store.project("trial").slots}
        assert names == {("op-bob", "operator"), ("reidentifier", "reidentifier")}
        outcomes = [(r.action, r.outcome) for r in session.audit.records()]
        assert outcomes.count(("slot.add", "success")) == 2
        assert outcomes.count(("slot.remove", "success")) == 2


def test_slot_changes_refuse_to_run_unaudited(vault: Path) -> None:
    with pytest.raises(SlotError, match="VaultSession"):
        Vault.open(vault).add_slot("trial", "operator", "x", "y" * 12, passphrase=OPERATOR)


def test_failures_in_a_row_slow_down_and_a_success_resets(vault: Path) -> None:
    policy = ThrottlePolicy(free_attempts=2, base_delay=0.4, max_delay=5)
    with VaultSession(vault, throttle=policy) as session:
        began, ended = [], []
        for _ in range(4):
            began.append(time.perf_counter())
            with pytest.raises(AuthenticationError) as caught:
                session.vault.unlock_operator("trial", "wrong guess")
            ended.append(time.perf_counter())
        assert [caught.value.failures] == [4]
        # attempts 1 and 2 are free (their audit records say they waited for nothing: a
        # loaded machine may take longer than any bound to derive a key); the 3rd cannot
        # start before 0.4 s after the 2nd began, the 4th before 0.8 s after the 3rd began
        waits = [json.loads(r.details)["waited_seconds"] for r in session.audit.records()[-4:]]
        assert waits[:2] == [0, 0]
        assert ended[2] - began[1] >= 0.4 - 0.01
        assert ended[3] - began[2] >= 0.8 - 0.01
        assert "the next attempt waits 1.6 s" in str(caught.value)
        assert session.vault.guard is not None
        assert session.vault.guard.failures("trial", "operator") == 4
    # the count is in the database: a new session (process) sees it and waits too
    with VaultSession(vault, throttle=policy) as session:
        session.vault.unlock_operator("trial", OPERATOR)
        # it began no earlier than 1.6 s after the 4th attempt began
        assert time.perf_counter() - began[3] >= 1.6 - 0.01
        assert session.vault.guard is not None
        assert session.vault.guard.failures("trial", "operator") == 0
        with pytest.raises(AuthenticationError):
            session.vault.unlock_operator("trial", "wrong again")
        assert json.loads(session.audit.records()[-1].details)["waited_seconds"] == 0
        # the re-identifier's count is separate
        assert session.vault.guard.failures("trial", "reidentifier") == 0


def test_every_failed_unlock_is_audited(vault: Path) -> None:
    with VaultSession(vault) as session:
        with pytest.raises(AuthenticationError):
            session.vault.unlock_operator("trial", "wrong operator guess")
        with pytest.raises(AuthenticationError):
            session.vault.unlock_reidentifier("trial", "wrong reid guess", "reidentifier")
        records = session.audit.records()[-2:]
    assert [(r.action, r.outcome) for r in records] == [("unlock", "denied: wrong passphrase")] * 2
    details = [json.loads(r.details) for r in records]
    assert [d["role"] for d in details] == ["operator", "reidentifier"]
    assert details[1]["slot"] == "reidentifier"
    assert all(r.actor == os_user() and "@" in r.actor for r in records)
    assert all("wrong" not in r.details for r in records)  # the guess itself is never logged


def test_reid_slots_hold_their_own_key_pair(vault: Path) -> None:
    data = json.loads((vault / "projects" / "trial.json").read_text())
    reid = next(s for s in data["slots"] if s["role"] == "reidentifier")
    operator = next(s for s in data["slots"] if s["role"] == "operator")
    assert reid["public_key"] != data["reid_public_key"] and reid["sealed"]
    assert "sealed" not in operator and "public_key" not in operator


def test_a_journal_that_cannot_be_read_is_a_database_error(vault: Path) -> None:
    """Planning a run reads the journal: a database failure there is one clear line (exit 5),
    not an internal error."""
    import sqlite3

    from keystore.errors import DatabaseError
    from keystore.linkage import journal_key

    with VaultSession(vault) as session:
        keyring = session.vault.unlock_operator("trial", OPERATOR)
        with sqlite3.connect(vault / "pseudo.db") as connection:
            connection.execute("DROP TABLE journal")
        with pytest.raises(DatabaseError, match="cannot read the linkage store"):
            session.linkage.journal_lookup(keyring, [journal_key(keyring, "/in/1.dcm")])
