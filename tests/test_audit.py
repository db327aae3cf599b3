"""The audit log is append-only in effect: any edit, deletion, reordering or truncation shows."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from keystore.session import VaultSession
from tests.conftest import cli


def _fill(vault: Path, n: int = 6) -> None:
    with VaultSession(vault) as session:
        for i in range(n):
            session.audit.append(
                "reidentify",
                f"person {i}",
                "success",
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
    assert result.json() == {"ok": True, "records": 3, "problems": []}
    shown = cli("audit", "show", "--vault", vault, "--json", "--last", "2").json()
    assert [r["seq"] for r in shown] == [2, 3]
    assert shown[-1]["reason"] == "reason 2"


def test_appends_continue_the_chain_across_sessions(vault: Path) -> None:
    _fill(vault, 2)
    _fill(vault, 2)
    with VaultSession(vault) as session:
        records = session.audit.records()
        assert [r.seq for r in records] == [1, 2, 3, 4]
        assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(records))
        assert session.audit.verify().ok
