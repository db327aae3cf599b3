"""The audit log is append-only in effect: any edit, deletion, reordering or truncation shows."""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from keystore.audit import record_hash
from keystore.db import AuditRow
from keystore.session import VaultSession
from keystore.stamps import GENESIS
from keystore.vault import Vault
from tests.conftest import OPERATOR, REID, cli

#: The records a test vault starts with: ``vault.init`` and ``project.create`` (keyed).
BASE = 2


def _fill(vault: Path, n: int = 6, *, keyed: bool = False) -> None:
    """Append ``n`` records; with ``keyed``, as a session that opened the project's slot.

    They are refused re-identifications: a *successful* one must be signed by a re-identifier
    (see tests/test_insider.py), which an operator's session cannot do."""
    with VaultSession(vault) as session:
        if keyed:
            session.vault.unlock_operator("trial", OPERATOR)
        for i in range(n):
            session.audit.append(
                "reidentify",
                f"person {i}",
                "not found",
                project="trial",
                subject=f"pseudonym:T-{i}",
                reason=f"reason {i}",
            )


def _db(vault: Path) -> sqlite3.Connection:
    return sqlite3.connect(vault / "pseudo.db")


def edit(con: sqlite3.Connection) -> None:
    con.execute("UPDATE audit SET reason = 'nothing to see' WHERE seq = 3")


def edit_and_rehash_one(con: sqlite3.Connection) -> None:
    """A careful forger recomputes the edited record's own hash; the chain still breaks."""
    from keystore.audit import record_hash
    from keystore.db import AuditRow

    row = con.execute("SELECT * FROM audit WHERE seq = 3").fetchone()
    columns = [c[1] for c in con.execute("PRAGMA table_info(audit)")]
    record = AuditRow(**dict(zip(columns, row, strict=True)))
    record.actor = "someone else"
    con.execute(
        "UPDATE audit SET actor = ?, hash = ? WHERE seq = 3", (record.actor, record_hash(record))
    )


def delete(con: sqlite3.Connection) -> None:
    con.execute("DELETE FROM audit WHERE seq = 2")


def reorder(con: sqlite3.Connection) -> None:
    """Swap the contents of two records, keeping their sequence numbers."""
    rows = {
        r[0]: r
        for r in con.execute("SELECT seq, actor, reason, subject FROM audit WHERE seq IN (2, 4)")
    }
    for seq, other in ((2, 4), (4, 2)):
        _, actor, reason, subject = rows[other]
        con.execute(
            "UPDATE audit SET actor = ?, reason = ?, subject = ? WHERE seq = ?",
            (actor, reason, subject, seq),
        )


def truncate(con: sqlite3.Connection) -> None:
    con.execute("DELETE FROM audit WHERE seq >= 5")


def truncate_and_fix_head(con: sqlite3.Connection) -> None:
    """Truncate and make the database's head agree; the vault's checkpoint still knows."""
    con.execute("DELETE FROM audit WHERE seq >= 5")
    seq, digest = con.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    con.execute("UPDATE audit_head SET seq = ?, hash = ?", (seq, digest))


@pytest.mark.parametrize(
    "tamper", [edit, edit_and_rehash_one, delete, reorder, truncate, truncate_and_fix_head]
)
def test_tampering_is_detected(vault: Path, tamper: Callable[[sqlite3.Connection], None]) -> None:
    _fill(vault)
    assert cli("audit", "verify", "--vault", vault).code == 0
    with _db(vault) as con:
        tamper(con)
    result = cli("audit", "verify", "--vault", vault)
    assert result.code == 1, result.stderr
    assert "FAILED" in result.stderr


def test_intact_log_verifies_and_shows(vault: Path) -> None:
    _fill(vault, 3)
    result = cli("audit", "verify", "--vault", vault, "--json")
    assert result.code == 0
    data = result.json()
    assert (data["ok"], data["records"], data["problems"]) == (True, BASE + 3, [])
    assert data["head"] == cli("audit", "head", "--vault", vault).stdout.strip()
    shown = cli("audit", "show", "--vault", vault, "--json", "--last", "2").json()
    assert [r["seq"] for r in shown] == [BASE + 2, BASE + 3]
    assert shown[-1]["reason"] == "reason 2"


def test_appends_continue_the_chain_across_sessions(vault: Path) -> None:
    _fill(vault, 2)
    _fill(vault, 2)
    with VaultSession(vault) as session:
        records = session.audit.records()
        assert [r.seq for r in records] == list(range(1, BASE + 5))
        assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(records))
        assert session.audit.verify().ok


def _rows(con: sqlite3.Connection) -> list[AuditRow]:
    columns = [c[1] for c in con.execute("PRAGMA table_info(audit)")]
    return [
        AuditRow(**dict(zip(columns, row, strict=True)))
        for row in con.execute("SELECT * FROM audit ORDER BY seq")
    ]


def _rewrite_everything(vault: Path, seq: int) -> None:
    """The reviewer's forgery: edit record ``seq``, recompute every later hash, the head row
    and the vault's checkpoint, as someone who can write the database and the vault can."""
    with _db(vault) as con:
        rows = _rows(con)
        previous = GENESIS
        for row in rows:
            if row.seq == seq:
                row.reason = "nothing to see here"
            row.prev_hash = previous
            row.hash = record_hash(row)
            previous = row.hash
            con.execute(
                "UPDATE audit SET reason = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                (row.reason, row.prev_hash, row.hash, row.seq),
            )
        con.execute("UPDATE audit_head SET seq = ?, hash = ?", (rows[-1].seq, previous))
    (vault / "audit-checkpoint.json").write_text(
        json.dumps({"seq": rows[-1].seq, "hash": previous})
    )


def _verify(vault: Path, *args: str) -> tuple[int, str]:
    result = cli("audit", "verify", "--vault", vault, *args)
    assert "Traceback" not in result.stderr
    return result.code, result.stderr


def test_a_full_rewrite_is_caught_by_an_external_head_and_by_the_audit_key(
    vault: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fill(vault, 6, keyed=True)
    head = cli("audit", "head", "--vault", vault).stdout.strip()
    _rewrite_everything(vault, 3)
    # Honest limit: without a key or an external head, a consistent rewrite passes.
    assert _verify(vault)[0] == 0
    code, stderr = _verify(vault, "--expect", head)
    assert code == 1 and "differs from the one given with --expect" in stderr
    monkeypatch.setenv("PSEUDO_PASSPHRASE", OPERATOR)
    code, stderr = _verify(vault, "--project", "trial")
    assert code == 1 and "MAC under the audit key of project 'trial'" in stderr


def test_the_audit_key_authenticates_records_and_any_slot_opens_it(
    vault: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fill(vault, 2)  # not keyed
    _fill(vault, 3, keyed=True)
    monkeypatch.setenv("PSEUDO_REID_PASSPHRASE", REID)
    monkeypatch.delenv("PSEUDO_PASSPHRASE", raising=False)
    result = cli("audit", "verify", "--vault", vault, "--project", "trial", "--json")
    assert result.code == 0, result.stderr
    data = result.json()
    assert (data["authenticated"], data["authenticated_through"]) == (4, 7)
    shown = cli("audit", "show", "--vault", vault, "--json").json()
    assert [r["action"] for r in shown][:BASE] == ["vault.init", "project.create"]
    assert [r["authenticated_by"] for r in shown] == [
        None,  # vault.init: no project
        "trial/operator",  # project.create: by the new project's audit key
        None,
        None,
        *["trial/operator"] * 3,
    ]
    without = cli("audit", "verify", "--vault", vault, "--json").json()
    assert (without["authenticated"], without["unchecked_macs"]) == (0, 4)
    monkeypatch.setenv("PSEUDO_REID_PASSPHRASE", "not a passphrase of this project")
    wrong = cli("audit", "verify", "--vault", vault, "--project", "trial")
    assert wrong.code == 3 and wrong.stderr.count("\n") == 1


def test_stripping_a_records_mac_breaks_the_chain(vault: Path) -> None:
    _fill(vault, 4, keyed=True)
    with _db(vault) as con:
        con.execute("UPDATE audit SET mac = NULL, mac_key = NULL, mac_slot = NULL WHERE seq = 2")
    assert _verify(vault)[0] == 1


def test_a_forged_mac_is_detected_by_the_key_holder(
    vault: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fill(vault, 3, keyed=True)
    with _db(vault) as con:
        con.execute("UPDATE audit SET mac = ? WHERE seq = 2", ("ab" * 32,))
    monkeypatch.setenv("PSEUDO_PASSPHRASE", OPERATOR)
    assert _verify(vault)[0] == 0  # the MAC is outside the hash: only a key holder can tell
    code, stderr = _verify(vault, "--project", "trial")
    assert code == 1 and "record 2: its MAC" in stderr


def test_truncating_to_an_authenticated_record_needs_an_external_head(vault: Path) -> None:
    """Honest limit: a database-and-vault writer can cut the log back to any earlier record."""
    _fill(vault, 6, keyed=True)
    head = cli("audit", "head", "--vault", vault).stdout.strip()
    with _db(vault) as con:
        con.execute("DELETE FROM audit WHERE seq >= 5")
        seq, digest = con.execute(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        con.execute("UPDATE audit_head SET seq = ?, hash = ?", (seq, digest))
    (vault / "audit-checkpoint.json").write_text(json.dumps({"seq": seq, "hash": digest}))
    assert _verify(vault)[0] == 0
    code, stderr = _verify(vault, "--expect", head)
    assert code == 1 and f"record {BASE + 6} given with --expect is not in the log" in stderr


def test_deleting_the_last_record_and_the_checkpoint_is_detected(vault: Path) -> None:
    _fill(vault, 4)
    with _db(vault) as con:
        con.execute("DELETE FROM audit WHERE seq = 4")
        seq, digest = con.execute("SELECT seq, hash FROM audit WHERE seq = 3").fetchone()
        con.execute("UPDATE audit_head SET seq = ?, hash = ?", (seq, digest))
    (vault / "audit-checkpoint.json").unlink()
    code, stderr = _verify(vault)
    assert code == 1 and "checkpoint is missing" in stderr
    # a later append (anyone can cause one: a wrong passphrase will do) does not heal it
    _fill(vault, 1)
    assert not (vault / "audit-checkpoint.json").exists()
    assert _verify(vault)[0] == 1


@pytest.mark.parametrize("content", ["", "{not json", '{"seq": "x"}'])
def test_an_unreadable_checkpoint_is_a_failure(vault: Path, content: str) -> None:
    _fill(vault, 2)
    (vault / "audit-checkpoint.json").write_text(content)
    code, stderr = _verify(vault)
    assert code == 1 and "checkpoint is unreadable" in stderr
    _fill(vault, 1)
    assert (vault / "audit-checkpoint.json").read_text() == content  # not overwritten


def test_a_new_vault_starts_with_a_checkpoint(tmp_path: Path) -> None:
    """``Vault.init`` writes the checkpoint, then the vault's first record, which it witnesses."""
    Vault.init(tmp_path / "v")
    assert json.loads((tmp_path / "v" / "audit-checkpoint.json").read_text()) == {
        "seq": 1,
        "hash": _hash(tmp_path / "v", 1),
    }
    assert _verify(tmp_path / "v", "--expect", f"0:{GENESIS}")[0] == 0


def test_head_and_expect(vault: Path) -> None:
    _fill(vault, 3)
    text = cli("audit", "head", "--vault", vault)
    assert text.code == 0
    seq, digest = text.stdout.strip().split(":")
    data = cli("audit", "head", "--vault", vault, "--json").json()
    assert (data["seq"], data["hash"]) == (BASE + 3, digest) and seq == str(BASE + 3)
    assert data["timestamp"]
    _fill(vault, 2)
    assert (
        _verify(vault, "--expect", text.stdout.strip(), "--expect", f"5:{_hash(vault, 5)}")[0] == 0
    )
    assert _verify(vault, "--expect", f"9:{digest}")[0] == 1
    bad = cli("audit", "verify", "--vault", vault, "--expect", "three:abc")
    assert bad.code == 2 and bad.stderr.count("\n") == 1 and "SEQ:HASH" in bad.stderr


def _hash(vault: Path, seq: int) -> str:
    with _db(vault) as con:
        return str(con.execute("SELECT hash FROM audit WHERE seq = ?", (seq,)).fetchone()[0])


def test_checkpoint_command_reanchors_only_a_sound_log(vault: Path) -> None:
    _fill(vault, 3)
    head = cli("audit", "head", "--vault", vault).stdout.strip()
    (vault / "audit-checkpoint.json").unlink()
    with _db(vault) as con:
        edit(con)
    refused = cli("audit", "checkpoint", "--vault", vault, "--expect", head)
    assert refused.code == 1 and not (vault / "audit-checkpoint.json").exists()
    with _db(vault) as con:
        con.execute("UPDATE audit SET reason = 'reason 0' WHERE seq = 3")  # undo the edit
    done = cli("audit", "checkpoint", "--vault", vault, "--expect", head)
    assert done.code == 0, done.stderr
    assert _verify(vault)[0] == 0
    last = cli("audit", "show", "--vault", vault, "--json", "--last", "1").json()[0]
    assert last["action"] == "audit.checkpoint"


def test_wrong_operator_passphrase_is_one_line_exit_3_and_audited(
    vault: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "in").mkdir()
    monkeypatch.setenv("PSEUDO_PASSPHRASE", "not the operator passphrase")
    result = cli("run", tmp_path / "in", tmp_path / "out", "--project", "trial", "--vault", vault)
    assert result.code == 3
    assert result.stderr.strip() == "pseudo: error: wrong operator passphrase for project 'trial'"
    last = cli("audit", "show", "--vault", vault, "--json", "--last", "1").json()[0]
    assert (last["action"], last["outcome"], last["project"]) == (
        "unlock",
        "denied: wrong passphrase",
        "trial",
    )
    assert last["details"]["role"] == "operator" and "@" in last["actor"]


def test_appends_after_a_cut_do_not_advance_the_checkpoint_past_it(vault: Path) -> None:
    """Cut the log back and fix the head row, then append past the witnessed record: the
    checkpoint names a record the chain no longer holds, so it is not moved over the cut."""
    _fill(vault, 6)
    witnessed = json.loads((vault / "audit-checkpoint.json").read_text())
    assert witnessed["seq"] == BASE + 6
    with _db(vault) as con:
        truncate_and_fix_head(con)
    assert _verify(vault)[0] == 1
    _fill(vault, 4)  # records 5 to 8 again, with other hashes
    code, stderr = _verify(vault)
    assert code == 1 and f"record {BASE + 6}: differs from the one this vault saw" in stderr
    assert json.loads((vault / "audit-checkpoint.json").read_text()) == witnessed


def test_each_database_a_vault_writes_to_has_its_own_checkpoint(
    vault: Path, tmp_path: Path
) -> None:
    _fill(vault, 2)
    other = f"sqlite:///{tmp_path / 'other.db'}"
    with VaultSession(vault, other) as session:  # a new database: its checkpoint starts at 0
        assert session.audit.checkpoint is not None
        assert json.loads(session.audit.checkpoint.read_text())["seq"] == 0
    _fill_at(vault, other, 3)
    assert json.loads((vault / "audit-checkpoint.json").read_text())["seq"] == BASE + 2
    (witness,) = (vault / "audit-checkpoints").glob("*.json")
    data = json.loads(witness.read_text())
    assert data["seq"] == 3 and data["database"] == f"sqlite:///{(tmp_path / 'other.db')}"
    assert _verify(vault)[0] == 0
    assert _verify(vault, "--db", other)[0] == 0
    # the vault's own database named by URL is the vault's own checkpoint, not a new one
    assert _verify(vault, "--db", f"sqlite:///{vault / 'pseudo.db'}")[0] == 0
    assert len(list((vault / "audit-checkpoints").glob("*.json"))) == 1
    # cutting either log back is caught by its own witness only
    with sqlite3.connect(tmp_path / "other.db") as con:
        truncate_and_fix_head_at(con, 2)
    code, stderr = _verify(vault, "--db", other)
    assert code == 1 and "this vault saw record 3" in stderr
    assert _verify(vault)[0] == 0
    # Honest limit: a vault-folder writer who deletes another database's witness as well gets
    # a new one at that database's next use; only a head kept outside catches the cut then.
    _fill_at(vault, other, 2)
    kept = cli("audit", "head", "--vault", vault, "--db", other).stdout.strip()
    witness.unlink()
    with sqlite3.connect(tmp_path / "other.db") as con:
        truncate_and_fix_head_at(con, 1)
    assert _verify(vault, "--db", other)[0] == 0
    code, stderr = _verify(vault, "--db", other, "--expect", kept)
    assert code == 1 and "is not in the log" in stderr


def test_a_database_other_vaults_wrote_to_is_witnessed_from_its_first_use(
    vault: Path, tmp_path: Path
) -> None:
    from tests.conftest import make_vault

    shared = make_vault(tmp_path / "shared-vault", "other")
    _fill(shared, 3)
    url = f"sqlite:///{shared / 'pseudo.db'}"
    with VaultSession(vault, url) as session:  # first use: anchored at the log's last record
        assert session.audit.checkpoint is not None
        assert json.loads(session.audit.checkpoint.read_text())["seq"] == BASE + 3
    assert _verify(vault, "--db", url)[0] == 0
    with _db(shared) as con:
        truncate_and_fix_head_at(con, BASE + 2)
    code, stderr = _verify(vault, "--db", url)
    assert code == 1 and f"this vault saw record {BASE + 3}" in stderr


def truncate_and_fix_head_at(con: sqlite3.Connection, seq: int) -> None:
    """Delete the records after ``seq`` and make the head row name ``seq``."""
    con.execute("DELETE FROM audit WHERE seq > ?", (seq,))
    digest = con.execute("SELECT hash FROM audit WHERE seq = ?", (seq,)).fetchone()[0]
    con.execute("UPDATE audit_head SET seq = ?, hash = ?", (seq, digest))


def _fill_at(vault: Path, url: str, n: int) -> None:
    """Append ``n`` records to the audit log of the database at ``url``."""
    with VaultSession(vault, url) as session:
        for i in range(n):
            session.audit.append("run", "writer", "success", details={"i": i})


def _actions(vault: Path) -> list[tuple[str, str, str | None, str]]:
    with VaultSession(vault) as session:
        return [(r.action, r.outcome, r.project, r.actor) for r in session.audit.records()]


def test_a_script_leaves_the_records_that_the_command_line_leaves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every record is written by the keystore operation itself, not by the command line."""
    from keystore import maintenance
    from keystore.stamps import os_user
    from tests.conftest import FAST_KDF

    monkeypatch.setenv("PSEUDO_PASSPHRASE", OPERATOR)
    monkeypatch.setenv("PSEUDO_REID_PASSPHRASE", REID)
    monkeypatch.setenv("PSEUDO_NEW_PASSPHRASE", "bob's own passphrase")
    by_cli, by_script = tmp_path / "cli", tmp_path / "script"
    fast = ("--scrypt-n", "16384")
    for args in (
        ("vault", "init"),
        ("project", "create", "trial", *fast),
        ("project", "add-slot", "trial", "bob", "--role", "operator", *fast),
        ("vault", "rewrap-slot", "trial", "operator", *fast),
        ("project", "remove-slot", "trial", "bob"),
        ("vault", "backup", tmp_path / "cli-backup"),
    ):
        assert cli(*args, "--vault", by_cli).code == 0, args
    assert cli("vault", "restore", tmp_path / "cli-backup", "--vault", tmp_path / "cli-2").code == 0

    Vault.init(by_script)
    with VaultSession(by_script) as session:
        store = session.vault
        store.create_project("trial", OPERATOR, REID, kdf=FAST_KDF)
        store.add_slot("trial", "operator", "bob", "bob's own passphrase", passphrase=OPERATOR)
        store.rewrap_slot("trial", "operator", OPERATOR, kdf=FAST_KDF)
        store.remove_slot("trial", "bob", passphrase=OPERATOR)
        maintenance.backup(session, tmp_path / "script-backup")
    restored = maintenance.restore(tmp_path / "script-backup", tmp_path / "script-2")
    assert restored.verified.ok

    expected = [
        ("vault.init", "success", None, os_user()),
        ("project.create", "success", "trial", os_user()),
        ("slot.add", "success", "trial", os_user()),
        ("slot.rewrap", "success", "trial", os_user()),
        ("slot.remove", "success", "trial", os_user()),
        ("vault.backup", "success", None, os_user()),
    ]
    assert _actions(by_cli) == _actions(by_script) == expected
    restore = ("vault.restore", "success", None, os_user())
    # the backup holds the log as it was before its own record
    assert (
        _actions(tmp_path / "cli-2")
        == _actions(tmp_path / "script-2")
        == [
            *expected[:-1],
            restore,
        ]
    )


def test_an_action_outside_the_enum_is_refused(vault: Path) -> None:
    """The log holds only known actions, each an :class:`AuditAction` (or its value)."""
    from keystore.actions import AuditAction, AuditOutcome

    with VaultSession(vault) as session:
        row = session.audit.append(AuditAction.RUN, "someone", AuditOutcome.RUN_COMPLETED)
        assert (row.action, row.outcome) == ("run", "completed")
        assert type(row.action) is str and type(row.outcome) is str  # hashed as plain strings
        with pytest.raises(ValueError):
            session.audit.append("run.typo", "someone", "success")
        assert session.audit.verify().ok
