"""A project that remembers: its vault is named, its policy recorded, its output its own.

Issue 17: no implicit vault (only ``vault init`` creates one); a run with another policy than
the project's is refused unless ``--change-policy`` (audited, said in the report); batch 2
without ``--policy`` gets batch 1's offsets; OUTPUT inside INPUT and INPUT inside OUTPUT are
refused, and so is an output holding another project's pseudonyms; the inputs file is kept in
the vault, not beside the export.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pseudo.demo import build_cohort
from tests.conftest import cli


@pytest.fixture()
def cohort(tmp_path: Path) -> Path:
    """The demo cohort: 3 patients, 18 files."""
    folder = tmp_path / "input"
    build_cohort(folder)
    return folder


@pytest.mark.parametrize(
    "command",
    [
        ("vault", "init"),
        ("project", "create", "study", "--prefix", "S"),
        ("project", "list"),
        ("audit", "verify"),
        ("audit", "show"),
        ("reidentify", "--project", "p", "--pseudonym", "X", "--requester", "r", "--reason", "w"),
    ],
)
def test_without_a_vault_every_command_stops_and_creates_nothing(
    command: tuple[str, ...], tmp_path: Path, env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = cli(*command)
    assert result.code == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "no vault given" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_run_without_a_vault_stops_and_creates_nothing(
    cohort: Path, tmp_path: Path, env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    result = cli("run", cohort, work / "out", "--project", "trial")
    assert result.code == 2 and "no vault given" in result.stderr
    assert list(work.iterdir()) == []


def test_a_missing_vault_is_not_created_by_any_command_but_init(
    tmp_path: Path, env: None
) -> None:
    missing = tmp_path / "missing"
    for command in (("project", "create", "s", "--prefix", "S"), ("audit", "show")):
        result = cli(*command, "--vault", missing)
        assert result.code == 2 and "no vault here" in result.stderr
        assert not missing.exists()
    assert "vault init" in result.stderr and "link to nothing" in result.stderr
    assert cli("vault", "init", "--vault", missing).code == 0
    assert (missing / "vault.json").is_file()
    assert os.stat(missing).st_mode & 0o777 == 0o700
