"""Key rotation, closing, backup and throttling with the linkage store on a real PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from keystore.session import VaultSession
from keystore.vault import Vault
from tests import postgres
from tests.conftest import FAST_KDF, OPERATOR, REID, cli
from tests.test_vault_rotation import (
    fill_linkage,
    kill_rotation_at,
    opens,
    private_key,
    sealed_rows,
)
from tests.test_vault_slots import reidentify, run_cohort

pytestmark = pytest.mark.skipif(
    postgres.unavailable() is not None and not os.environ.get("PSEUDO_CI"),
    reason=str(postgres.unavailable()),
)


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with postgres.server() as url:
        yield url


@pytest.fixture()
def pg_vault(tmp_path: Path, database: str) -> Path:
    """A vault whose linkage store is a fresh database on the server."""
    import psycopg

    name = f"pseudo_vault_{os.getpid()}_{tmp_path.name[-12:].replace('-', '_')}".lower()
    host = database.split("@")[1].split("/")[0]
    admin = f"host={host.split(':')[0]} port={host.split(':')[1]} user=postgres dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = database.rsplit("/", 1)[0] + f"/{name}"
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
    assert rotated.json()["records"] == 9
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
    assert cli("audit", "verify", "--vault", pg_vault, "--project", "trial").code == 0


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
