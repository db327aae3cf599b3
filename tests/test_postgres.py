"""The linkage store, journal and audit log on a real PostgreSQL server, also under two
concurrent runs of the same project with overlapping patients."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import Session, col, func, select

from keystore.db import JournalRow, LinkageRow, connect
from pseudo.demo import build_cohort
from tests import postgres
from tests.conftest import FAST_KDF, OPERATOR, REID, cli

pytestmark = postgres.needs_server()


@pytest.fixture()
def pg_vault(tmp_path: Path, database: str) -> Iterator[Path]:
    """A vault whose linkage store is a fresh schema-less database on the server."""
    url = postgres.new_database(database, tmp_path, "pseudo")
    from keystore.session import VaultSession
    from keystore.vault import Vault

    Vault.init(tmp_path / "vault", database_url=url)
    with VaultSession(tmp_path / "vault") as session:
        session.vault.create_project("trial", OPERATOR, REID, kdf=FAST_KDF)
    yield tmp_path / "vault"


def _counts(vault: Path) -> tuple[int, int, int]:
    from keystore.vault import Vault

    engine = connect(Vault.open(vault).database_url)
    with Session(engine) as session:
        rows = session.exec(select(func.count()).select_from(LinkageRow)).one()
        distinct = session.exec(
            select(func.count()).select_from(
                select(LinkageRow.kind, LinkageRow.key, LinkageRow.digest).distinct().subquery()
            )
        ).one()
        journal = session.exec(select(func.count(col(JournalRow.id)))).one()
    engine.dispose()
    return int(rows), int(distinct), int(journal)


def test_run_reidentify_and_audit_on_postgresql(tmp_path: Path, pg_vault: Path, env: None) -> None:
    build_cohort(tmp_path / "in")
    run = cli(
        "run",
        tmp_path / "in",
        tmp_path / "out",
        "--project",
        "trial",
        "--vault",
        pg_vault,
        "--json",
        "--quiet",
    )
    assert run.code == 0, run.stderr
    assert run.json()["new_linkage_records"] == 3 + 6 + 12 + 18  # patients ... instances
    again = cli(
        "run",
        tmp_path / "in",
        tmp_path / "out",
        "--project",
        "trial",
        "--vault",
        pg_vault,
        "--json",
        "--quiet",
    )
    assert again.json()["unchanged"] == 18 and again.json()["new_linkage_records"] == 0
    pseudonym = next((tmp_path / "out").iterdir()).name
    found = cli(
        "reidentify",
        "--project",
        "trial",
        "--pseudonym",
        pseudonym,
        "--requester",
        "DPO",
        "--reason",
        "test",
        "--json",
        "--vault",
        pg_vault,
    )
    assert found.code == 0 and found.json()["patient_id"].startswith("MRN")
    assert cli("audit", "verify", "--vault", pg_vault).code == 0
    assert _counts(pg_vault) == (39, 39, 18)


def test_two_concurrent_runs_lose_nothing_and_duplicate_nothing(
    tmp_path: Path, pg_vault: Path
) -> None:
    build_cohort(tmp_path / "all")
    patients = sorted(p.name for p in (tmp_path / "all").iterdir())
    # Run A gets patients 1 and 2, run B patients 2 and 3: patient 2 is in both, file by file.
    for name, chosen in (("a", patients[:2]), ("b", patients[1:])):
        for patient in chosen:
            shutil.copytree(tmp_path / "all" / patient, tmp_path / name / patient)
    environment = dict(os.environ, PSEUDO_PASSPHRASE=OPERATOR)
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pseudo",
                "run",
                str(tmp_path / name),
                str(tmp_path / "out"),
                "--project",
                "trial",
                "--vault",
                str(pg_vault),
                "--quiet",
                "--workers",
                "2",
            ],
            env=environment,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    for process in runs:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
    rows, distinct, journal = _counts(pg_vault)
    assert rows == distinct == 3 + 6 + 12 + 18, "every record once, no duplicate"
    assert journal == 12 + 12
    assert len(list((tmp_path / "out").rglob("*.dcm"))) == 18
    assert not list((tmp_path / "out").rglob("*.part"))
    assert cli("audit", "verify", "--vault", pg_vault).code == 0
    os.environ["PSEUDO_REID_PASSPHRASE"] = REID
    try:
        for folder in (tmp_path / "out").iterdir():
            found = cli(
                "reidentify",
                "--project",
                "trial",
                "--pseudonym",
                folder.name,
                "--requester",
                "DPO",
                "--reason",
                "check",
                "--json",
                "--vault",
                pg_vault,
            )
            assert found.code == 0 and len(found.json()["studies"]) == 2
    finally:
        del os.environ["PSEUDO_REID_PASSPHRASE"]
