"""``pseudo vault backup`` and ``pseudo vault restore``: the documented restore procedure."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

from keystore.session import VaultSession
from tests.conftest import REPO, cli
from tests.test_vault_slots import reidentify, run_cohort


def modes(root: Path) -> dict[str, int]:
    """Permission bits of everything under ``root`` (and ``root`` itself)."""
    return {
        str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]
    }


def test_backup_then_restore_into_a_new_folder(tmp_path: Path, vault: Path, env: None) -> None:
    out = run_cohort(tmp_path, vault)
    pseudonyms = sorted(p.name for p in out.iterdir())
    answers = {p: reidentify(vault, p)[1] for p in pseudonyms}
    head = cli("audit", "head", "--vault", vault).stdout.strip()

    dest = tmp_path / "backups" / "monday"
    made = cli("vault", "backup", dest, "--vault", vault, "--json")
    assert made.code == 0, made.stderr
    manifest = made.json()
    assert manifest["audit_head"] == head and manifest["database"] == "sqlite"
    assert set(manifest["files"]) == {
        "vault.json",
        "audit-checkpoint.json",
        "projects/trial.json",
        "pseudo.db",
    }
    for name, mode in modes(dest).items():
        assert mode == (0o700 if (dest / name).is_dir() else 0o600), name
    assert (
        cli("audit", "show", "--vault", vault, "--json", "--last", "1").json()[0]["action"]
        == "vault.backup"
    )

    # The disaster: the vault folder is lost.
    shutil.rmtree(vault)
    restored = tmp_path / "restored-vault"
    result = cli("vault", "restore", dest, "--vault", restored)
    assert result.code == 0, result.stderr
    assert stat.S_IMODE(restored.stat().st_mode) == 0o700
    assert all(m == 0o600 for n, m in modes(restored).items() if (restored / n).is_file())
    verified = cli("audit", "verify", "--vault", restored, "--expect", head, "--json")
    assert verified.code == 0, verified.stdout
    for pseudonym in pseudonyms:
        code, identity, stderr = reidentify(restored, pseudonym)
        assert code == 0, stderr
        assert identity == answers[pseudonym]
    # the journal came along: the same run on the restored vault reprocesses nothing
    again = cli("run", tmp_path / "in", out, "--project", "trial", "--vault", restored, "--json")
    assert again.code == 0 and again.json()["unchanged"] == 18
    actions = [r["action"] for r in cli("audit", "show", "--vault", restored, "--json").json()]
    assert "vault.restore" in actions


_APPENDER = """
import sys
from pathlib import Path
from keystore.session import VaultSession

with VaultSession(Path(sys.argv[1])) as session:
    Path(sys.argv[2]).write_text("started")
    for i in range(400):
        session.audit.append("run", "writer", "success", details={"i": i})
"""


def test_a_backup_taken_while_another_process_writes_is_consistent(
    tmp_path: Path, vault: Path
) -> None:
    marker = tmp_path / "writer-started"
    writer = subprocess.Popen(
        [sys.executable, "-c", _APPENDER, str(vault), str(marker)],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert time.monotonic() < deadline and writer.poll() is None
            time.sleep(0.02)
        made = cli("vault", "backup", tmp_path / "bk", "--vault", vault, "--json")
        assert made.code == 0, made.stderr
    finally:
        writer.wait(timeout=120)
    assert writer.returncode == 0
    restored = tmp_path / "restored"
    result = cli("vault", "restore", tmp_path / "bk", "--vault", restored, "--json")
    assert result.code == 0, result.stdout + result.stderr
    assert result.json()["ok"] is True
    with VaultSession(restored) as session:
        count = len(session.audit.records())
    assert 0 < count <= 400  # one whole snapshot, whenever during the writes it was taken
    assert cli("audit", "verify", "--vault", vault).code == 0


def test_a_changed_or_incomplete_backup_is_refused(tmp_path: Path, vault: Path) -> None:
    assert cli("vault", "backup", tmp_path / "bk", "--vault", vault).code == 0
    project = tmp_path / "bk" / "projects" / "trial.json"
    data = json.loads(project.read_text())
    data["prefix"] = "EVIL"
    project.write_text(json.dumps(data))
    result = cli("vault", "restore", tmp_path / "bk", "--vault", tmp_path / "r1")
    assert result.code == 2 and result.stderr.count("\n") == 1
    assert "changed since the backup was made" in result.stderr
    (tmp_path / "bk" / "projects" / "trial.json").unlink()
    result = cli("vault", "restore", tmp_path / "bk", "--vault", tmp_path / "r2")
    assert result.code == 2 and "missing or changed" in result.stderr
    assert cli("vault", "restore", tmp_path / "nothing", "--vault", tmp_path / "r3").code == 2


def test_backup_refuses_a_used_or_nested_destination(tmp_path: Path, vault: Path) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "something").write_text("x")
    result = cli("vault", "backup", busy, "--vault", vault)
    assert result.code == 2 and "not an empty folder" in result.stderr
    inside = cli("vault", "backup", vault / "copy", "--vault", vault)
    assert inside.code == 2 and "inside the vault" in inside.stderr
    restored_over = cli("vault", "restore", busy, "--vault", vault)
    assert restored_over.code == 2


def test_restoring_a_backup_whose_log_was_rewritten_fails(tmp_path: Path, vault: Path) -> None:
    with VaultSession(vault) as session:
        for i in range(3):
            session.audit.append("run", "writer", "success", details={"i": i})
    assert cli("vault", "backup", tmp_path / "bk", "--vault", vault).code == 0
    manifest = json.loads((tmp_path / "bk" / "backup.json").read_text())
    # the backup's own database is edited and its hash in the manifest updated to match
    with sqlite3.connect(tmp_path / "bk" / "pseudo.db") as con:
        con.execute("UPDATE audit SET outcome = 'failure' WHERE seq = 2")
    manifest["files"]["pseudo.db"] = hashlib.sha256(
        (tmp_path / "bk" / "pseudo.db").read_bytes()
    ).hexdigest()
    (tmp_path / "bk" / "backup.json").write_text(json.dumps(manifest))
    result = cli("vault", "restore", tmp_path / "bk", "--vault", tmp_path / "r")
    assert result.code == 1 and "FAILED verification" in result.stderr


def test_backups_keep_the_checkpoints_of_the_other_databases_a_vault_used(
    tmp_path: Path, vault: Path
) -> None:
    other = f"sqlite:///{tmp_path / 'other.db'}"
    with VaultSession(vault, other) as session:
        for i in range(2):
            session.audit.append("run", "writer", "success", details={"i": i})
    (witness,) = (vault / "audit-checkpoints").glob("*.json")
    rel = f"audit-checkpoints/{witness.name}"
    made = cli("vault", "backup", tmp_path / "bk", "--vault", vault, "--json")
    assert made.code == 0, made.stderr
    assert rel in made.json()["files"]
    restored = tmp_path / "restored"
    assert cli("vault", "restore", tmp_path / "bk", "--vault", restored).code == 0
    assert (restored / rel).read_bytes() == witness.read_bytes()
    assert modes(restored)["audit-checkpoints"] == 0o700
    assert modes(restored)[rel] == 0o600
    # the restored vault still witnesses the other database: a cut there is caught
    assert cli("audit", "verify", "--vault", restored, "--db", other).code == 0
    with sqlite3.connect(tmp_path / "other.db") as con:
        con.execute("DELETE FROM audit WHERE seq = 2")
        con.execute("UPDATE audit_head SET seq = 1, hash = (SELECT hash FROM audit WHERE seq = 1)")
    verified = cli("audit", "verify", "--vault", restored, "--db", other)
    assert verified.code == 1 and "this vault saw record 2" in verified.stderr
