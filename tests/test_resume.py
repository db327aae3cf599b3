"""Interrupted runs: killed at any point (SIGKILL included) or stopped with Ctrl-C, a second run
of the same command finishes the job with the same output as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
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


def _start(source: Path, target: Path, vault: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        run_command(source, target, vault, "--workers", "2", "--quiet", project="canary"),
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


@pytest.mark.parametrize("delays", [(1.2, 1.7, 2.2, 2.7, 3.2)])
def test_sigkill_at_any_point_then_rerun_gives_the_uninterrupted_output(
    canary_run: CanaryRun, canary_dir: Path, tmp_path: Path, delays: tuple[float, ...]
) -> None:
    vault = make_vault(tmp_path / "vault", "canary", secret=CANARY_SECRET)
    target = tmp_path / "out"
    kills = 0
    for delay in delays:
        process = _start(canary_dir, target, vault)
        time.sleep(delay)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            kills += 1
        process.wait(timeout=60)
    assert kills >= 2, "the run was killed mid-way at least twice"
    final = _start(canary_dir, target, vault)
    _, stderr = final.communicate(timeout=300)
    assert final.returncode == 0, stderr
    outputs, leftovers = _outputs_and_leftovers(target)
    assert outputs == tree_digest(canary_run.output), "byte-identical to an uninterrupted run"
    assert not leftovers
    rows, keys, journal = _store_counts(vault)
    assert rows == keys == 8 + 20, "no duplicate and no missing linkage record"
    assert journal == 95


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_stops_cleanly_with_a_summary(
    canary_run: CanaryRun, canary_dir: Path, tmp_path: Path, signum: int
) -> None:
    vault = make_vault(tmp_path / "vault", "canary", secret=CANARY_SECRET)
    target = tmp_path / "out"
    process = _start(canary_dir, target, vault)
    time.sleep(1.8)
    os.killpg(process.pid, signum)  # as a terminal sends Ctrl-C to the whole process group
    _, stderr = process.communicate(timeout=120)
    if process.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    reports = run_reports(tmp_path / "out.pseudo-run")
    # A signal that comes before the run has started (while the vault opens) leaves no report.
    if reports:
        assert json.loads(reports[-1].read_text())["status"] == "interrupted"
    final = _start(canary_dir, target, vault)
    _, stderr = final.communicate(timeout=300)
    assert final.returncode == 0, stderr
    assert tree_digest(target) == tree_digest(canary_run.output)
