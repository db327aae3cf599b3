"""Key rotation, closing, backup and throttling with the linkage store on a real PostgreSQL."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from keystore.db import connect
from keystore.errors import AuthenticationError
from keystore.session import VaultSession
from keystore.vault import Vault
from pseudo.demo import build_cohort
from tests import postgres
from tests.conftest import FAST_KDF, OPERATOR, REID, cli
from tests.test_vault_close import all_bytes
from tests.test_vault_rotation import (
    fill_linkage,
    kill_rotation_at,
    opens,
    private_key,
    sealed_rows,
)
from tests.test_vault_slots import reidentify, run_cohort

pytestmark = postgres.needs_server()


@pytest.fixture()
def pg_vault(tmp_path: Path, database: str) -> Path:
    """A vault whose linkage store is a fresh database on the server."""
    url = postgres.new_database(database, tmp_path)
    Vault.init(tmp_path / "vault", database_url=url)
    with VaultSession(tmp_path / "vault") as session:
        session.vault.create_project("trial", OPERATOR, REID, kdf=FAST_KDF)
    return tmp_path / "vault"


def test_rotate_backup_and_close_on_postgresql(tmp_path: Path, pg_vault: Path, env: None) -> None:
    out = run_cohort(tmp_path, pg_vault)
    pseudonyms = sorted(p.name for p in out.iterdir())
    answers = {p: reidentify(pg_vault, p)[1] for p in pseudonyms}
    old_key = private_key(pg_vault)
    rotated = cli("project", "rotate-reid-key", "trial", "--vault", pg_vault, "--json")
    assert rotated.code == 0, rotated.stderr
    assert rotated.json()["records"] == 39  # patients, studies, series, instances
    assert not any(opens(pg_vault, old_key)) and all(opens(pg_vault, private_key(pg_vault)))
    for pseudonym in pseudonyms:
        assert reidentify(pg_vault, pseudonym)[1] == answers[pseudonym]

    made = cli("vault", "backup", tmp_path / "bk", "--vault", pg_vault)
    assert made.code == 0, made.stderr
    assert "pg_dump" in made.stderr
    assert not (tmp_path / "bk" / "pseudo.db").exists()
    restored = cli("vault", "restore", tmp_path / "bk", "--vault", tmp_path / "restored")
    assert restored.code == 0, restored.stderr
    assert reidentify(tmp_path / "restored", pseudonyms[0])[1] == answers[pseudonyms[0]]

    assert cli("project", "close", "trial", "--yes", "--vault", pg_vault).code == 0
    code, _, stderr = reidentify(pg_vault, pseudonyms[0])
    assert code == 2 and "was closed" in stderr
    # the restored vault shares the database: its (older) project file is refused there too
    code, _, stderr = reidentify(tmp_path / "restored", pseudonyms[0])
    assert code == 2 and "was closed" in stderr
    assert cli("audit", "verify", "--vault", pg_vault).code == 0
    # the close destroyed every slot of this vault, so its audit MACs cannot be checked here
    assert cli("audit", "verify", "--vault", pg_vault, "--project", "trial").code == 2


def test_a_rotation_killed_mid_transaction_on_postgresql_changes_nothing(
    tmp_path: Path, pg_vault: Path
) -> None:
    fill_linkage(pg_vault, 600)
    before = sealed_rows(pg_vault)
    old_key = private_key(pg_vault)
    kill_rotation_at(pg_vault, tmp_path, "resealing")
    with VaultSession(pg_vault) as session:
        assert len(session.recovered) == 1 and "discarded" in session.recovered[0]
    assert sealed_rows(pg_vault) == before
    assert all(opens(pg_vault, old_key))


def test_failed_attempts_are_counted_in_postgresql(pg_vault: Path, env: None) -> None:
    from keystore.errors import AuthenticationError

    with VaultSession(pg_vault) as session:
        for _ in range(3):
            with pytest.raises(AuthenticationError):
                session.vault.unlock_reidentifier("trial", "a wrong guess")
        assert session.vault.guard is not None
        assert session.vault.guard.failures("trial", "reidentifier") == 3
    with VaultSession(pg_vault) as session:
        session.vault.unlock_reidentifier("trial", REID)
        assert session.vault.guard is not None
        assert session.vault.guard.failures("trial", "reidentifier") == 0
        outcomes = [r.outcome for r in session.audit.records() if r.action == "unlock"]
    assert outcomes == ["denied: wrong passphrase"] * 3


def test_a_sqlite_vault_run_on_postgresql_keeps_a_checkpoint_per_database(
    tmp_path: Path, database: str, env: None
) -> None:
    """The reviewer's case: a vault made with SQLite, a run with --db on PostgreSQL."""
    vault = tmp_path / "vault"
    assert cli("vault", "init", "--vault", vault).code == 0
    made = cli("project", "create", "trial", "--vault", vault, "--scrypt-n", "16384")
    assert made.code == 0, made.stderr
    url = postgres.new_database(database, tmp_path, "pseudo_other")
    parsed = make_url(url)
    # with a password in the URL (the test server trusts loopback and ignores it)
    given = (
        url
        if parsed.password
        else parsed.set(password="pw-not-stored").render_as_string(hide_password=False)
    )
    build_cohort(tmp_path / "in")
    for output in ("out", "out2"):  # two runs: five records in that log (see below)
        run = cli(
            "run", tmp_path / "in", tmp_path / output, "--project", "trial",
            "--vault", vault, "--db", given, "--quiet",
        )  # fmt: skip
        assert run.code == 0, run.stderr

    # Each database verifies against its own witness: the vault's file, and one for --db.
    assert _verify(vault) == (0, [])
    assert _verify(vault, "--db", given) == (0, [])
    assert _verify(vault, "--db", url) == (0, [])  # the same database without the password
    own = json.loads((vault / "audit-checkpoint.json").read_text())
    assert own["seq"] == 2  # vault.init and project.create, not the runs on PostgreSQL
    (other,) = (vault / "audit-checkpoints").glob("*.json")
    witness = json.loads(other.read_text())
    # two runs (started and ended each) and the project's policy recorded by the first
    assert witness["seq"] == 5 and witness["database"].startswith("postgresql://")
    assert b"pw-not-stored" not in all_bytes(vault)
    assert stat.S_IMODE(other.stat().st_mode) == 0o600
    assert stat.S_IMODE(other.parent.stat().st_mode) == 0o700
    head = cli("audit", "head", "--vault", vault, "--db", url).stdout.strip()
    assert head == f"5:{witness['hash']}"

    # Truncating the PostgreSQL log (and fixing its head row) is still detected ...
    engine = connect(url)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit WHERE seq = 5"))
        conn.execute(
            text("UPDATE audit_head SET seq = 4, hash = (SELECT hash FROM audit WHERE seq = 4)")
        )
    engine.dispose()
    code, problems = _verify(vault, "--db", url)
    assert code == 1 and any("this vault saw record 5" in p for p in problems), problems
    # ... also after later appends (a wrong passphrase will do) pass the witnessed record,
    with VaultSession(vault, url) as session:
        for _ in range(3):
            with pytest.raises(AuthenticationError):
                session.vault.unlock_operator("trial", "a wrong guess")
        assert session.audit.head()[0] == 7
    code, problems = _verify(vault, "--db", url)
    assert code == 1 and any("differs from the one this vault saw" in p for p in problems)
    assert json.loads(other.read_text()) == witness  # not advanced over the cut
    # while the vault's own database is untouched and still verifies.
    assert _verify(vault) == (0, [])


def _verify(vault: Path, *args: str) -> tuple[int, list[str]]:
    result = cli("audit", "verify", "--vault", vault, *args, "--json")
    assert "Traceback" not in result.stderr
    return result.code, result.json()["problems"]
