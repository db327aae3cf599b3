"""The SQLite busy timeout: ``$PSEUDO_DB_BUSY_TIMEOUT`` seconds, then one clear line and exit 5."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from sqlalchemy import text

from keystore.db import connect
from tests.conftest import OPERATOR, REPO, cli, make_vault, run_command

#: How long the other writer holds the lock: well beyond the 2 s timeout, well below 60 s.
HOLD = 20.0


def make_inputs(folder: Path, count: int = 3) -> Path:
    """``count`` copies of pydicom's CT_small.dcm, each with its own SOP Instance UID."""
    source = get_testdata_file("CT_small.dcm")
    assert source is not None, "pydicom's test data is missing"
    folder.mkdir(parents=True)
    for index in range(count):
        dataset = pydicom.dcmread(source)
        uid = generate_uid()
        dataset.SOPInstanceUID = uid
        dataset.file_meta.MediaStorageSOPInstanceUID = uid
        dataset.save_as(folder / f"ct-{index}.dcm")
    return folder


class Writer:
    """Another process's write lock on a SQLite database (BEGIN IMMEDIATE), released once."""

    def __init__(self, database: Path) -> None:
        self.connection = sqlite3.connect(
            database, isolation_level=None, timeout=30, check_same_thread=False
        )
        self.connection.execute("BEGIN IMMEDIATE")
        self._guard = threading.Lock()
        self._held = True

    def release(self) -> None:
        with self._guard:
            if self._held:
                self.connection.execute("ROLLBACK")
                self.connection.close()
                self._held = False


def test_a_lock_held_past_the_busy_timeout_is_one_line_exit_5_then_the_run_works(
    tmp_path: Path,
) -> None:
    vault = make_vault(tmp_path / "vault")
    source = make_inputs(tmp_path / "in")
    output = tmp_path / "out"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PSEUDO_")}
    environment.update(PSEUDO_PASSPHRASE=OPERATOR, PSEUDO_DB_BUSY_TIMEOUT="2")
    command = run_command(source, output, vault, "--workers", "1", "--quiet")

    writer = Writer(vault / "pseudo.db")
    # Should the timeout be ignored (60 s), the lock goes away after HOLD and the run succeeds.
    timer = threading.Timer(HOLD, writer.release)
    timer.start()
    started = time.monotonic()
    try:
        locked = subprocess.run(
            command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=300
        )
        elapsed = time.monotonic() - started
    finally:
        timer.cancel()
        writer.release()

    assert locked.returncode == 5, locked.stderr
    assert elapsed < HOLD, f"the run waited {elapsed:.1f} s: PSEUDO_DB_BUSY_TIMEOUT=2 ignored"
    assert "Traceback" not in locked.stderr
    errors = [line for line in locked.stderr.splitlines() if line.startswith("pseudo: error")]
    assert len(errors) == 1, locked.stderr
    assert "locked" in errors[0] and "PSEUDO_DB_BUSY_TIMEOUT" in errors[0]
    left = list(output.rglob("*")) if output.exists() else []
    assert not [p for p in left if p.name.endswith((".part", ".dcm"))], left

    again = subprocess.run(
        command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stderr
    assert len(list(output.rglob("*.dcm"))) == 3
    assert not list(output.rglob("*.part"))


@pytest.mark.parametrize("value", ["abc", "0", "-5", "nan", "inf", "86401", "60s"])
def test_an_invalid_busy_timeout_is_one_line_exit_2(
    value: str, vault: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = make_inputs(tmp_path / "in", 1)
    monkeypatch.setenv("PSEUDO_DB_BUSY_TIMEOUT", value)
    monkeypatch.setenv("PSEUDO_PASSPHRASE", OPERATOR)
    commands: list[list[str | Path]] = [
        ["audit", "verify", "--vault", vault],
        ["run", source, tmp_path / "out", "--project", "trial", "--vault", vault],
    ]
    for args in commands:
        result = cli(*args)
        assert result.code == 2, result.stderr
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("pseudo: error: ")
        assert f"PSEUDO_DB_BUSY_TIMEOUT={value!r}" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("value", "milliseconds"), [("", 60000), ("2.5", 2500), (" 7 ", 7000)])
def test_the_busy_timeout_reaches_sqlite(
    value: str, milliseconds: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PSEUDO_DB_BUSY_TIMEOUT", value)
    engine = connect(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        with engine.connect() as connection:
            busy = connection.execute(text("PRAGMA busy_timeout")).scalar_one()
    finally:
        engine.dispose()
    assert busy == milliseconds
