"""Faults of the machine, not of the files: disk full, a read-only or vanished output, a locked
or lost database, and concurrent users of one vault. Each gives one clear line and no partial
output file, and running the same command again finishes the job."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from tests import postgres
from tests.conftest import (
    CANARY_SECRET,
    FAST_KDF,
    OPERATOR,
    REID,
    REPO,
    CanaryRun,
    cli,
    make_vault,
    run_command,
    tree_digest,
)
from tests.events import (
    DEADLINE,
    database_held,
    run_state,
    temporary_files,
    wait_for,
    wait_for_run,
)

EXIT_ENVIRONMENT = 5


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs (to fill it up or make it read-only) needs root")


@contextmanager
def tmpfs(path: Path, size: str, *, read_only: bool = False) -> Iterator[Path]:
    """A small RAM filesystem at ``path`` (to fill it up, or to make it read-only)."""
    _need_root()
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()[:80]!r})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)


def _cohort(folder: Path, count: int, template: str = "CT_small.dcm") -> Path:
    """``count`` instances of one bundled file, as 4 patients with distinct UIDs."""
    source = get_testdata_file(template)
    assert isinstance(source, str)
    ds = pydicom.dcmread(source)
    folder.mkdir(parents=True)
    for index in range(count):
        ds.PatientID = f"FAULT-{index % 4}"
        ds.StudyInstanceUID = generate_uid(entropy_srcs=["fault-study", str(index % 4)])
        ds.SeriesInstanceUID = generate_uid(entropy_srcs=["fault-series", str(index % 4)])
        ds.SOPInstanceUID = generate_uid(entropy_srcs=["fault", str(index)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = index
        ds.save_as(folder / f"{index:04d}.dcm", enforce_file_format=True)
    return folder


def _run(source: Path, target: Path, vault: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        run_command(source, target, vault, "--quiet", *extra),
        env=dict(os.environ, PSEUDO_PASSPHRASE=OPERATOR),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


def _finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=600)
    return process.returncode, stderr


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("pseudo: error")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def _no_partial_files(target: Path) -> None:
    assert not [p for p in target.rglob("*") if p.suffix == ".part"]
    for path in target.rglob("*.dcm"):
        pydicom.dcmread(path)  # every file in place is complete


@pytest.fixture()
def reference(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A 150-file cohort and the output of an uninterrupted run on it."""
    source = _cohort(tmp_path / "in", 150)
    vault = make_vault(tmp_path / "reference-vault", secret=CANARY_SECRET)
    code, stderr = _finish(_run(source, tmp_path / "reference", vault))
    assert code == 0, stderr
    return source, tree_digest(tmp_path / "reference")


def test_disk_full_stops_cleanly_and_a_rerun_completes(
    tmp_path: Path, reference: tuple[Path, dict[str, str]]
) -> None:
    source, expected = reference
    vault = make_vault(tmp_path / "vault", secret=CANARY_SECRET)
    with tmpfs(tmp_path / "small", "2m") as disk:
        code, stderr = _finish(_run(source, disk / "out", vault, "--workers", "2"))
        assert code == EXIT_ENVIRONMENT
        assert "No space left on device" in _one_line(stderr)
        _no_partial_files(disk / "out")
        written = tree_digest(disk / "out")
        assert written and all(expected[name] == digest for name, digest in written.items())
        remount(disk, "size=64m")
        code, stderr = _finish(_run(source, disk / "out", vault))
        assert code == 0, stderr
        assert tree_digest(disk / "out") == expected


def test_a_read_only_output_is_one_line_and_writes_nothing(tmp_path: Path, vault: Path) -> None:
    source = _cohort(tmp_path / "in", 3)
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as disk:
        code, stderr = _finish(_run(source, disk / "out", vault))
        assert code == EXIT_ENVIRONMENT
        assert "Read-only file system" in _one_line(stderr)
        remount(disk, "rw")
        code, stderr = _finish(_run(source, disk / "out", vault))
        assert code == 0, stderr
        assert len(list((disk / "out").rglob("*.dcm"))) == 3


def test_an_output_folder_removed_mid_run(
    tmp_path: Path, reference: tuple[Path, dict[str, str]]
) -> None:
    source, expected = reference
    vault = make_vault(tmp_path / "vault", secret=CANARY_SECRET)
    target = tmp_path / "out"
    process = _run(source, target, vault, "--workers", "1")
    run = wait_for_run(target, process)
    wait_for(lambda: temporary_files(target, run), "a temporary file of the run", process)
    with database_held(vault) as connection:  # the run cannot commit its last batch now
        journal, status = run_state(connection, run)
        assert process.poll() is None and status in (None, "running")
        assert journal < len(expected), f"the run had committed every file ({journal})"
        shutil.rmtree(target, ignore_errors=True)
    code, stderr = _finish(process)
    assert code == EXIT_ENVIRONMENT, stderr
    assert "output" in _one_line(stderr)
    code, stderr = _finish(_run(source, target, vault))
    assert code == 0, stderr
    assert tree_digest(target) == expected


def test_a_locked_sqlite_store_is_waited_for(tmp_path: Path, vault: Path) -> None:
    source = _cohort(tmp_path / "in", 5)
    lock = sqlite3.connect(
        vault / "pseudo.db", isolation_level=None, timeout=30, check_same_thread=False
    )
    lock.execute("BEGIN IMMEDIATE")  # another writer holds the database
    release = threading.Timer(3.0, lambda: lock.execute("ROLLBACK"))
    started = time.monotonic()
    release.start()
    try:
        code, stderr = _finish(_run(source, tmp_path / "out", vault))
    finally:
        release.join()
        lock.close()
    assert code == 0, stderr
    assert time.monotonic() - started >= 3.0
    assert len(list((tmp_path / "out").rglob("*.dcm"))) == 5


@postgres.needs_server()
def test_postgresql_down_then_up(tmp_path: Path, reference: tuple[Path, dict[str, str]]) -> None:
    import psycopg

    from keystore.session import VaultSession
    from keystore.vault import Vault

    source, expected = reference
    with postgres.controlled_server() as server:
        Vault.init(tmp_path / "vault", database_url=server.url)
        with VaultSession(tmp_path / "vault") as session:
            session.vault.create_project(
                "trial", OPERATOR, REID, kdf=FAST_KDF, secret=CANARY_SECRET
            )
        target = tmp_path / "out"
        process = _run(source, target, tmp_path / "vault", "--workers", "1")
        run = wait_for_run(target, process)
        wait_for(lambda: temporary_files(target, run), "a temporary file of the run", process)
        connection = psycopg.connect(server.url.replace("+psycopg", ""))
        try:
            # the run can still read but no longer commit: it is mid-way when the server goes
            connection.execute("LOCK TABLE journal IN EXCLUSIVE MODE")
            row = connection.execute("SELECT status FROM run WHERE run_id = %s", (run,))
            (status,) = row.fetchone() or (None,)
            (journal,) = connection.execute("SELECT count(*) FROM journal").fetchone() or (0,)
            assert process.poll() is None and status in (None, "running")
            assert journal < len(expected), f"the run had committed every file ({journal})"
            server.stop()
        finally:
            with contextlib.suppress(psycopg.Error):
                connection.close()
        code, stderr = _finish(process)
        assert code == EXIT_ENVIRONMENT, stderr
        assert "linkage store" in _one_line(stderr)
        _no_partial_files(target)
        server.start()
        code, stderr = _finish(_run(source, target, tmp_path / "vault"))
        assert code == 0, stderr
        assert tree_digest(target) == expected
        assert cli("audit", "verify", "--vault", tmp_path / "vault").code == 0


def _not_written(reports: Path) -> str:
    """What the run reports in ``reports`` say of the files that were not written, and of the
    leaks they found (to explain a run's exit status 1 under ``--quiet``)."""
    said = []
    for report in sorted(reports.glob("run-*.json")):
        data = json.loads(report.read_text())
        said += [
            f"{entry['status']}: {entry.get('reason')}"
            for entry in data.get("files", [])
            if entry.get("status") != "written"
        ]
        said.append(f"counts: {data.get('counts')}, findings: {data.get('reference_findings')}")
    return "\n".join(said)


def test_two_runs_and_a_reidentification_at_once_on_one_vault(
    canary_run_without_pixels: CanaryRun, canary_dir: Path, tmp_path: Path
) -> None:
    canary_run = canary_run_without_pixels  # the runs' own reference: no pixel step either
    vault = make_vault(tmp_path / "vault", "canary", secret=CANARY_SECRET)
    environment = dict(os.environ, PSEUDO_PASSPHRASE=OPERATOR, PSEUDO_REID_PASSPHRASE=REID)

    def start(target: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            run_command(
                *(canary_dir, tmp_path / target, vault, "--quiet", "--workers", "1"),
                *("--pixels", "off"),
                project="canary",
            ),
            env=environment,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )

    runs = [start("a"), start("b")]
    pseudonym = sorted(p.name for p in canary_run.output.iterdir())[0]
    answers: list[tuple[int, str]] = []
    while any(r.poll() is None for r in runs) or not answers:
        answer = subprocess.run(
            [
                *(sys.executable, "-m", "pseudo", "reidentify", "--project", "canary"),
                *("--pseudonym", pseudonym, "--requester", "DPO", "--reason", "during a run"),
                *("--vault", str(vault), "--json"),
            ],
            env=environment,
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        answers.append((answer.returncode, answer.stderr))
    for name, process in zip(("a", "b"), runs, strict=True):
        _, stderr = process.communicate(timeout=DEADLINE)
        assert process.returncode == 0, stderr + _not_written(tmp_path / f"{name}.pseudo-run")
    errors = [stderr for code, stderr in answers if code not in (0, 1)]
    assert not errors, f"found, or not yet stored: never an error ({errors[:3]})"
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    assert tree_digest(tmp_path / "a") == tree_digest(canary_run.output)
    verify = cli("audit", "verify", "--vault", vault)
    assert verify.code == 0, verify.stdout + verify.stderr
    from sqlmodel import Session, func, select

    from keystore.db import LinkageRow
    from keystore.session import VaultSession

    with VaultSession(vault) as session, Session(session.engine) as db:
        rows = db.exec(select(func.count()).select_from(LinkageRow)).one()
    assert rows == 8 + 20 + 41 + 95, "no duplicate and no missing linkage record"


@pytest.mark.usefixtures("env")
def test_a_failed_flush_to_disk_puts_nothing_of_its_batch_in_place(
    tmp_path: Path, vault: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch is flushed to disk in the background while the next one is processed; when
    that flush fails, the run stops with one line, the batch is neither committed nor put in
    place, and running again finishes the job."""
    from pseudo.io import durable

    source = _cohort(tmp_path / "in", 150)
    flushes: list[Path] = []
    flush = durable.sync_filesystem

    def second_flush_fails(folder: Path) -> None:
        flushes.append(folder)
        if len(flushes) == 2:  # the second batch's
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        flush(folder)

    monkeypatch.setattr(durable, "sync_filesystem", second_flush_fails)
    target = tmp_path / "out"
    args = ("run", source, target, "--project", "trial", "--vault", vault, "--workers", "1")
    failed = cli(*args, "--quiet")
    assert failed.code == EXIT_ENVIRONMENT
    assert "cannot flush to disk (Input/output error)" in _one_line(failed.stderr)
    _no_partial_files(target)
    assert len(list(target.rglob("*.dcm"))) == 64, "the first batch, and nothing after it"
    monkeypatch.setattr(durable, "sync_filesystem", flush)
    rerun = cli(*args, "--json")
    assert rerun.code == 0, rerun.stderr
    assert rerun.json()["written"] == 150 - 64 and rerun.json()["unchanged"] == 64
    assert len(list(target.rglob("*.dcm"))) == 150
