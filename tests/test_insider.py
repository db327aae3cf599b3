"""The operator is not trusted: each attack of an insider with the operator passphrase and
write access to the vault folder and database, played with that role's own keys only.

Who can forge what is stated in docs/threat-model.md ("Pseudonymizing operator").
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import time
from pathlib import Path

import pytest

from keystore import crypto
from keystore.audit import record_hash, record_mac
from keystore.db import AuditRow
from keystore.errors import AuthenticationError, PinnedKeyError, WeakPassphraseError
from keystore.guard import ThrottlePolicy
from keystore.session import VaultSession
from keystore.stamps import GENESIS
from keystore.vault import ReidPin, Vault, settings_mac
from tests.conftest import FAST_KDF, OPERATOR, REID, cli
from tests.fixtures.make_vault_fixture import build_inputs

REQUEST = ("--requester", "Dr. DPO", "--reason", "patient safety follow-up")


# -- what an operator can do with their own keys ---------------------------------------------
def operator_keys(vault: Path) -> tuple[bytes, bytes]:
    """(project secret, audit key): what the operator's slot holds."""
    project = Vault.open(vault).project("trial")
    opened = Vault.open(vault).open_slot(project, "operator", OPERATOR)
    return opened.key, opened.audit_key


def rewrite(vault: Path, keep: list[int]) -> None:
    """Keep only the records ``keep`` (in order), renumber, recompute every hash and every MAC
    of project trial with the operator's audit key, and fix the head row and the checkpoint:
    the operator's best rewrite of the log."""
    _, audit_key = operator_keys(vault)
    con = sqlite3.connect(vault / "pseudo.db")
    columns = [c[1] for c in con.execute("PRAGMA table_info(audit)")]
    rows = {r[0]: dict(zip(columns, r, strict=True)) for r in con.execute("SELECT * FROM audit")}
    con.execute("DELETE FROM audit")
    previous = GENESIS
    for seq, old in enumerate(keep, start=1):
        record = AuditRow(**{**rows[old], "seq": seq, "prev_hash": previous})
        record.hash = record_hash(record)
        if record.mac_key == "trial":
            record.mac = record_mac(audit_key, record.hash)
        values = record.model_dump()
        con.execute(
            f"INSERT INTO audit ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
            list(values.values()),
        )
        previous = record.hash
    con.execute("UPDATE audit_head SET seq = ?, hash = ?", (len(keep), previous))
    con.commit()
    con.close()
    checkpoint = {"seq": len(keep), "hash": previous}
    (vault / "audit-checkpoint.json").write_text(json.dumps(checkpoint))


def verify(vault: Path, *extra: str | Path) -> int:
    """``pseudo audit verify`` with the operator's passphrase (its audit key) when asked."""
    return cli("audit", "verify", "--vault", vault, *extra).code


def reidentify_once(vault: Path, tmp_path: Path) -> str:
    """A real re-identification by the DPO; returns its pseudonym."""
    source = tmp_path / "in"
    build_inputs(source)
    ran = cli("run", source, tmp_path / "out", "--project", "trial", "--vault", vault, "--quiet")
    assert ran.code == 0, ran.stderr
    pseudonym = sorted(p.name for p in (tmp_path / "out").iterdir())[0]
    result = cli(
        *("reidentify", "--project", "trial", "--pseudonym", pseudonym, *REQUEST),
        *("--vault", vault),
    )
    assert result.code == 0, result.stderr
    return pseudonym


def last_seq(vault: Path, action: str) -> int:
    con = sqlite3.connect(vault / "pseudo.db")
    (seq,) = con.execute("SELECT max(seq) FROM audit WHERE action = ?", (action,)).fetchone()
    return int(seq)


# -- the audit log ---------------------------------------------------------------------------
def test_an_operator_cannot_forge_a_reidentification_record(vault: Path, env: None) -> None:
    """A 'reidentify success' record appended by a process holding only the operator slot
    (so with a valid MAC) is not signed by a re-identifier: verification fails."""
    with VaultSession(vault) as session:
        session.vault.unlock_operator("trial", OPERATOR)
        session.audit.append(
            "reidentify",
            "trial/reidentifier",
            "success",
            project="trial",
            subject="pseudonym:TRIAL-FORGED",
            reason="forged by the operator",
            details={"slot": "reidentifier"},
        )
    assert verify(vault) == 1
    assert verify(vault, "--project", "trial") == 1
    result = cli("audit", "verify", "--vault", vault)
    assert "no re-identifier signed (forged)" in result.stderr


def test_an_operator_cannot_forge_a_signature_either(vault: Path, env: None) -> None:
    with VaultSession(vault) as session:
        session.vault.unlock_operator("trial", OPERATOR)
        row = session.audit.append("reidentify", "x", "success", project="trial")
    con = sqlite3.connect(vault / "pseudo.db")
    con.execute(
        "INSERT INTO audit_signature (seq, project, signature) VALUES (?, 'trial', ?)",
        (row.seq, os.urandom(64).hex()),
    )
    con.commit()
    assert verify(vault) == 1


def test_deleting_a_reidentification_record_is_detected(
    vault: Path, env: None, tmp_path: Path
) -> None:
    """The operator deletes the DPO's record and rewrites the rest with valid MACs: its
    signature names a record that is gone; if they delete the signature too, the head the DPO
    exported after the re-identification (`pseudo audit head`) fails `--expect`."""
    reidentify_once(vault, tmp_path)
    head = cli("audit", "head", "--vault", vault).stdout.strip()
    cli("audit", "verify", "--vault", vault)  # more records after it
    assert verify(vault, "--expect", head, "--project", "trial") == 0
    gone = last_seq(vault, "reidentify")
    count = sqlite3.connect(vault / "pseudo.db").execute("SELECT count(*) FROM audit").fetchone()
    keep = [seq for seq in range(1, count[0] + 1) if seq != gone]
    rewrite(vault, keep)
    assert verify(vault) == 1  # the signature of the deleted record is left over
    con = sqlite3.connect(vault / "pseudo.db")
    con.execute("DELETE FROM audit_signature WHERE seq >= ?", (gone,))
    con.commit()
    con.close()
    assert verify(vault, "--expect", head, "--project", "trial") == 1


def test_a_wiped_log_never_verifies(vault: Path) -> None:
    """Every row, the head row and the checkpoint reset to empty: not "intact"."""
    con = sqlite3.connect(vault / "pseudo.db")
    con.execute("DELETE FROM audit")
    con.execute("DELETE FROM audit_signature")
    con.execute("UPDATE audit_head SET seq = 0, hash = ?", (GENESIS,))
    con.commit()
    con.close()
    (vault / "audit-checkpoint.json").write_text(json.dumps({"seq": 0, "hash": GENESIS}))
    result = cli("audit", "verify", "--vault", vault)
    assert result.code == 1 and "wiped" in result.stderr


def test_stripped_macs_never_verify(vault: Path) -> None:
    """Setting only ``mac`` to NULL fails even the check without a key."""
    con = sqlite3.connect(vault / "pseudo.db")
    con.execute("UPDATE audit SET mac = NULL")
    con.commit()
    con.close()
    result = cli("audit", "verify", "--vault", vault)
    assert result.code == 1 and "stripped" in result.stderr


# -- the re-identification key ---------------------------------------------------------------
def swap_public_key(vault: Path, *, with_pin: bool = False) -> None:
    """The operator puts a key pair of their own in the project file and recomputes the
    settings MAC with the project secret (and, with ``with_pin``, a pin of their own)."""
    secret, _ = operator_keys(vault)
    path = vault / "projects" / "trial.json"
    data = json.loads(path.read_text())
    project = Vault.open(vault).project("trial")
    private, public = crypto.generate_x25519()
    data["reid_public_key"] = base64.b64encode(public).decode()
    data["settings_mac"] = base64.b64encode(settings_mac(secret, project.settings, public)).decode()
    if with_pin:
        data["reid_pin"] = ReidPin.make("trial", private).to_json()
    path.write_text(json.dumps(data))


def sealed_count(vault: Path) -> int:
    """Linkage records stored."""
    con = sqlite3.connect(vault / "pseudo.db")
    return int(con.execute("SELECT count(*) FROM linkage").fetchone()[0])


def test_a_swapped_public_key_stops_the_run_with_exit_2_before_sealing(
    vault: Path, env: None, tmp_path: Path
) -> None:
    swap_public_key(vault)
    source = tmp_path / "in"
    build_inputs(source)
    result = cli("run", source, tmp_path / "out", "--project", "trial", "--vault", vault)
    assert result.code == 2, result.stderr
    assert "not the one its re-identifiers signed" in result.stderr
    assert sealed_count(vault) == 0
    assert not any((tmp_path / "out").rglob("*.dcm"))


def test_a_swapped_key_and_pin_are_caught_by_the_dpo(
    vault: Path, env: None, tmp_path: Path
) -> None:
    """With a pin of their own the operator's run goes through (no anchor the operator cannot
    write exists at run time), but the DPO's routine check, the DPO's next unlock and the
    audit log's signatures all show the swap."""
    swap_public_key(vault, with_pin=True)
    checked = cli("audit", "check-key", "--project", "trial", "--vault", vault)
    assert checked.code == 2, checked.stderr
    with VaultSession(vault) as session, pytest.raises(PinnedKeyError):
        session.vault.unlock_reidentifier("trial", REID)
    assert verify(vault) == 1  # project.create was signed with the real key


def test_the_dpo_routine_check_passes_and_probes_the_newest_records(
    vault: Path, env: None, tmp_path: Path
) -> None:
    reidentify_once(vault, tmp_path)
    checked = cli("audit", "check-key", "--project", "trial", "--vault", vault, "--json")
    assert checked.code == 0, checked.stderr
    answer = checked.json()
    assert answer["probed"] == 5
    pin = Vault.open(vault).project("trial").reid_pin
    assert pin is not None and answer["reid_pin"] == pin.fingerprint
    assert verify(vault, "--expect", answer["head"], "--project", "trial") == 0


# -- passphrases -----------------------------------------------------------------------------
def test_the_throttle_counts_per_slot_and_is_not_reset_by_another_slot(vault: Path) -> None:
    """Guesses at the DPO's slot between successes with the operator's own passphrase (the
    `audit verify --project` bypass) keep counting and keep waiting."""
    policy = ThrottlePolicy(free_attempts=2, base_delay=0.3, max_delay=5)
    with VaultSession(vault, throttle=policy) as session:
        guard = session.vault.guard
        assert guard is not None
        for guess in range(3):
            with pytest.raises(AuthenticationError):
                session.vault.open_audit_key("trial", f"guess number {guess}")
            session.vault.open_audit_key("trial", OPERATOR)  # the operator's own: no reset
        assert guard.failures("trial", "reidentifier") == 3
        assert guard.failures("trial", "operator") == 0
        start = time.perf_counter()
        with pytest.raises(AuthenticationError) as caught:
            session.vault.unlock_reidentifier("trial", "yet another guess")
        assert time.perf_counter() - start >= 0.25  # 0.6 s after the 3rd failure
        assert caught.value.failures == 4 and caught.value.next_delay == 1.2
        assert guard.failures("trial", "reidentifier") == 4
        assert guard.vault_failures() >= 4
        session.vault.unlock_reidentifier("trial", REID)  # only its own success resets it
        assert guard.failures("trial", "reidentifier") == 0


@pytest.mark.parametrize(
    "weak",
    ["password", "12345678", "password1234", "Password123!", "qwertyuiop123", "a" * 16],
)
def test_weak_passphrases_are_refused(tmp_path: Path, weak: str) -> None:
    Vault.init(tmp_path / "v")
    with VaultSession(tmp_path / "v") as session:
        with pytest.raises(WeakPassphraseError, match="operator passphrase refused"):
            session.vault.create_project("p", weak, REID, kdf=FAST_KDF)
        with pytest.raises(WeakPassphraseError, match="re-identification passphrase refused"):
            session.vault.create_project("p", OPERATOR, weak, kdf=FAST_KDF)


@pytest.mark.parametrize(
    "other",
    [
        "operator passphrase for tests!",
        "Operator Passphrase For Tests",
        "operator passphrase for testz",
        "the operator passphrase for tests, again",
    ],
)
def test_near_identical_passphrases_of_two_roles_are_refused(tmp_path: Path, other: str) -> None:
    Vault.init(tmp_path / "v")
    with VaultSession(tmp_path / "v") as session:
        with pytest.raises(WeakPassphraseError, match="must differ"):
            session.vault.create_project("p", OPERATOR, other, kdf=FAST_KDF)
        session.vault.create_project("p", OPERATOR, REID, kdf=FAST_KDF)


def test_weak_passphrases_are_one_line_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli("vault", "init", "--vault", tmp_path / "v").code == 0
    monkeypatch.setenv("PSEUDO_PASSPHRASE", "password")
    monkeypatch.setenv("PSEUDO_REID_PASSPHRASE", REID)
    result = cli("project", "create", "p", "--vault", tmp_path / "v", "--scrypt-n", "16384")
    assert result.code == 2
    assert "refused" in result.stderr and len(result.stderr.strip().splitlines()) == 1


# -- the journal -----------------------------------------------------------------------------
def journal_rows(vault: Path) -> list[tuple[str, str, str | None]]:
    con = sqlite3.connect(vault / "pseudo.db")
    return list(con.execute("SELECT input_key, fingerprint, output FROM journal"))


def test_a_stolen_journal_links_nothing_to_a_listing_of_the_inputs(
    vault: Path, env: None, tmp_path: Path
) -> None:
    source = tmp_path / "in"
    build_inputs(source)
    cli("run", source, tmp_path / "out", "--project", "trial", "--vault", vault, "--quiet")
    listing = [(p.stat().st_size, p.stat().st_mtime_ns, p) for p in source.rglob("*.dcm")]
    pseudonyms = [p.name for p in (tmp_path / "out").iterdir()]
    rows = journal_rows(vault)
    assert rows and listing and pseudonyms
    stored = " ".join(" ".join(str(v) for v in row) for row in rows)
    for size, mtime, path in listing:
        assert f"{size}:{mtime}" not in stored and str(mtime) not in stored
        assert path.parent.name not in stored
    assert not any(p in stored for p in pseudonyms)
    _nothing_left_to_write(source, tmp_path / "out", vault)


def test_clear_journal_rows_of_an_older_version_are_rekeyed_and_still_skip(
    vault: Path, env: None, tmp_path: Path
) -> None:
    source = tmp_path / "in"
    build_inputs(source)
    cli("run", source, tmp_path / "out", "--project", "trial", "--vault", vault, "--quiet")
    # put the rows back as 0.1.0 wrote them: clear fingerprint and output path
    with VaultSession(vault) as session:
        keyring = session.vault.unlock_operator("trial", OPERATOR)
        from keystore.linkage import open_journal

        clear = [
            (*open_journal(keyring, key, output), key)
            for key, _, output in journal_rows(vault)
            if output
        ]
    con = sqlite3.connect(vault / "pseudo.db")
    con.executemany("UPDATE journal SET fingerprint = ?, output = ? WHERE input_key = ?", clear)
    con.commit()
    con.close()
    assert any(":" in fp for _, fp, _ in journal_rows(vault))
    _nothing_left_to_write(source, tmp_path / "out", vault)
    assert all(":" not in fp and len(fp) == 64 for _, fp, _ in journal_rows(vault))


def _nothing_left_to_write(source: Path, output: Path, vault: Path) -> None:
    """A re-run finds every file done (the journal still recognizes them)."""
    again = cli("run", source, output, "--project", "trial", "--vault", vault, "--json", "--quiet")
    assert again.code == 0 and again.json()["written"] == 0, again.stdout
