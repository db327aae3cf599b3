"""Interrupted runs: killed at any point (SIGKILL included) or stopped with Ctrl-C, a second run
of the same command finishes the job with the same output as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlmodel import Session, func, select

from keystore.db import JournalRow, LinkageRow
from keystore.session import VaultSession
from pseudo.batch.report import run_reports
from tests.conftest import (
    CANARY_SECRET,
    OPERATOR,
    CanaryRun,
    make_vault,
    run_command,
    tree_digest,
)
from tests.events import (
    DEADLINE,
    ready_for_ctrl_c,
    runs,
    stop_mid_run,
    temporary_files,
    wait_for,
    wait_for_run,
)


def _start(source: Path, target: Path, vault: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        run_command(source, target, vault, "--workers", "2", "--quiet", *extra, project="canary"),
        env=dict(os.environ, PSEUDO_PASSPHRASE=OPERATOR),
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _store_counts(vault: Path) -> tuple[int, int, int]:
    with VaultSession(vault) as session, Session(session.engine) as db:
        rows = db.exec(select(func.count()).select_from(LinkageRow)).one()
        keys = db.exec(
            select(func.count()).select_from(
                select(LinkageRow.kind, LinkageRow.key).distinct().subquery()
            )
        ).one()
        journal = db.exec(select(func.count()).select_from(JournalRow)).one()
    return int(rows), int(keys), int(journal)


def _outputs_and_leftovers(target: Path) -> tuple[dict[str, str], list[Path]]:
    leftovers = [p for p in target.rglob("*") if p.suffix == ".part" or ".pseudo-tmp" in p.parts]
    return tree_digest(target), leftovers


def _kill_when(
    source: Path,
    target: Path,
    vault: Path,
    files: Callable[[int], bool] | None = None,
    held: bool = False,
    extra: tuple[str, ...] = (),
) -> None:
    """Start a run and SIGKILL its whole process group once it has its lock file, or once
    ``files(number of its temporary files)`` holds; the kill is sent while the test holds the
    vault's write lock, so the run cannot have committed everything by then. ``held``: take
    the lock as soon as the workers have written a first file (the run needs the database
    before that, not after until it commits), and wait for ``files`` under it. ``extra``: more
    options of the run."""
    known = runs(target)
    process = _start(source, target, vault, *extra)
    try:
        run = wait_for_run(target, process, known)
        event = None
        if files is not None:
            wanted = (lambda count: count > 0) if held else files
            wait_for(lambda: wanted(len(temporary_files(target, run))), "temporary files", process)
        if files is not None and held:
            check = files
            event = ("all temporary files", lambda: check(len(temporary_files(target, run))))
        stop_mid_run(process, vault, run, signal.SIGKILL, before_commit=JOURNAL, then=event)
    finally:
        process.wait(timeout=DEADLINE)


#: Journal rows of a complete run over the canary corpus: one per input file.
JOURNAL = 95


@pytest.mark.parametrize(
    "pixels", ["off", pytest.param("on", marks=pytest.mark.slow)], ids=["pixels-off", "pixels-on"]
)
def test_sigkill_at_any_point_then_rerun_gives_the_uninterrupted_output(
    canary_dir: Path, tmp_path: Path, request: pytest.FixtureRequest, pixels: str
) -> None:
    """SIGKILL as the run starts, as its workers write, and once they have written everything
    while the parent waits to commit; each time the next run picks up what the last one left.
    By default without the pixel step, whose OCR would be most of the time of the four runs
    (the commit protocol is the same; the pixel step's output is compared with an
    uninterrupted run's by the node, Dask and canary tests); with it under ``-m slow``."""
    reference = "canary_run" if pixels == "on" else "canary_run_without_pixels"
    canary_run: CanaryRun = request.getfixturevalue(reference)
    extra = ("--pixels", pixels)
    vault = make_vault(tmp_path / "vault", "canary", secret=CANARY_SECRET)
    target = tmp_path / "out"
    outputs = len(tree_digest(canary_run.output))
    # as the run starts: nothing written yet
    _kill_when(canary_dir, target, vault, extra=extra)
    # as the workers write: some temporary files, nothing committed
    _kill_when(canary_dir, target, vault, files=lambda count: count > 0, extra=extra)
    # every file written to its temporary name, the parent waiting to commit
    _kill_when(
        canary_dir, target, vault, files=lambda count: count >= outputs, held=True, extra=extra
    )
    final = _start(canary_dir, target, vault, *extra)
    _, stderr = final.communicate(timeout=DEADLINE)
    assert final.returncode == 0, stderr
    outputs_now, leftovers = _outputs_and_leftovers(target)
    assert outputs_now == tree_digest(canary_run.output), "byte-identical to an uninterrupted run"
    assert not leftovers
    rows, keys, journal = _store_counts(vault)
    assert rows == keys == 8 + 20 + 41 + 95, "no duplicate and no missing linkage record"
    assert journal == JOURNAL


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_stops_cleanly_with_a_summary(
    canary_run_without_pixels: CanaryRun, canary_dir: Path, tmp_path: Path, signum: int
) -> None:
    """The signal goes to the whole process group once the run handles it (its workers are up
    and ignore SIGINT) and before it has committed every file (the test holds the vault's
    write lock meanwhile): the run commits what it has, says so, and exits 130. Without the
    pixel step (the SIGKILL test above has it)."""
    canary_run = canary_run_without_pixels
    vault = make_vault(tmp_path / "vault", "canary", secret=CANARY_SECRET)
    target = tmp_path / "out"
    process = _start(canary_dir, target, vault, "--pixels", "off")
    run = wait_for_run(target, process)
    wait_for(
        lambda: ready_for_ctrl_c(process.pid, workers=2), "the run's workers to be up", process
    )
    stop_mid_run(process, vault, run, signum, before_commit=JOURNAL)
    _, stderr = process.communicate(timeout=DEADLINE)
    assert process.returncode == 130, stderr
    assert "interrupted; run the same command again" in stderr and "Traceback" not in stderr
    reports = run_reports(tmp_path / "out.pseudo-run")
    assert len(reports) == 1
    assert json.loads(reports[0].read_text())["status"] == "interrupted"
    _, _, journal = _store_counts(vault)
    assert journal < JOURNAL, "stopped before the end"
    final = _start(canary_dir, target, vault, "--pixels", "off")
    _, stderr = final.communicate(timeout=DEADLINE)
    assert final.returncode == 0, stderr
    assert tree_digest(target) == tree_digest(canary_run.output)


#: A run that kills itself (SIGKILL) once its first batch is released, whatever the
#: machine's speed: the moment is an event of the run itself (its 64th recorded outcome).
_KILLED_AFTER_FIRST_BATCH = """
import os, signal, sys
from pathlib import Path
from keystore.session import VaultSession
from pseudo.batch.runner import COMMIT_EVERY, Runner
from pseudo.policy import load_policy
vault, source, target, passphrase = sys.argv[1:]
recorded = []

def outcome(result):
    recorded.append(result)
    if len(recorded) == COMMIT_EVERY:
        print(len(recorded), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

with VaultSession(Path(vault)) as session:
    keyring = session.vault.unlock_operator("canary", passphrase)
    policy = load_policy("default")
    policy.pixels = policy.pixels.off()  # as the run below: the pixel step is not the subject
    runner = Runner(keyring, policy, session.linkage, Path(source), Path(target),
                    on_outcome=outcome, audit=session.audit, actor="killed-run")
    print(runner.summary.run_id, flush=True)
    runner.run()
"""


def test_a_killed_run_shows_in_the_audit_log_with_what_it_released(
    canary_dir: Path, tmp_path: Path
) -> None:
    """Killed after releasing its first batch: the log says it started and never that it
    ended; the next run into the same output closes it as killed, with the files it released
    (its journal rows), in the run table and the audit log."""
    vault = make_vault(tmp_path / "vault", "canary", secret=CANARY_SECRET)
    target = tmp_path / "out"
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_AFTER_FIRST_BATCH, vault, canary_dir, target, OPERATOR],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    run, released_text = killed.stdout.split()
    released = int(released_text)
    assert released == _released(vault, run) and 0 < released < 95
    with VaultSession(vault) as session:
        said = [(r.outcome, json.loads(r.details)) for r in session.audit.records()]
    assert [outcome for outcome, details in said if details.get("run_id") == run] == ["started"]
    final = _start(canary_dir, target, vault, "--pixels", "off")
    _, stderr = final.communicate(timeout=DEADLINE)
    assert final.returncode == 0, stderr
    with VaultSession(vault) as session:
        records = [r for r in session.audit.records() if r.action == "run"]
        ours = [(r.outcome, json.loads(r.details)) for r in records]
    closed = [details for outcome, details in ours if outcome == "killed"]
    assert [(d["run_id"], d["written"]) for d in closed] == [(run, released)]
    with sqlite3.connect(vault / "pseudo.db") as connection:
        (status,) = connection.execute("SELECT status FROM run WHERE run_id = ?", (run,)).fetchone()
    assert status == "killed"


def _released(vault: Path, run: str, connection: sqlite3.Connection | None = None) -> int:
    """Files run ``run`` has released: its journal rows of written files."""
    query = "SELECT count(*) FROM journal WHERE run_id = ? AND status = 'written'"
    if connection is not None:
        return int(connection.execute(query, (run,)).fetchone()[0])
    with sqlite3.connect(vault / "pseudo.db", timeout=DEADLINE) as own:
        return int(own.execute(query, (run,)).fetchone()[0])
