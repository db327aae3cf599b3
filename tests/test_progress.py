"""What a run prints: a progress bar on a terminal only, a summary unless --quiet, and a
summary also when Ctrl-C stops it."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
from pathlib import Path

from tests.conftest import OPERATOR, REPO, run_command
from tests.events import (
    DEADLINE,
    ready_for_ctrl_c,
    stop_mid_run,
    temporary_files,
    wait_for,
    wait_for_run,
)


def _command(source: Path, target: Path, vault: Path, *extra: str) -> list[str]:
    return run_command(source, target, vault, "--workers", "1", *extra)


def _env() -> dict[str, str]:
    return dict(os.environ, PSEUDO_PASSPHRASE=OPERATOR, COLUMNS="120", TERM="xterm")


def _inputs(tmp_path: Path) -> Path:
    from pseudo.demo import build_cohort

    build_cohort(tmp_path / "in")
    return tmp_path / "in"


def test_a_terminal_gets_a_progress_bar_with_rate_and_patients(tmp_path: Path, vault: Path) -> None:
    source = _inputs(tmp_path)
    primary, secondary = pty.openpty()
    process = subprocess.Popen(
        _command(source, tmp_path / "out", vault),
        env=_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=secondary,
        cwd=REPO,
    )
    os.close(secondary)
    shown = b""
    while True:
        ready, _, _ = select.select([primary], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the other end closed
            break
        if not chunk:
            break
        shown += chunk
    process.wait(timeout=60)
    os.close(primary)
    text = shown.decode("utf-8", "replace")
    assert process.returncode == 0, text
    assert "pseudonymizing" in text and "18/18" in text
    assert "MB/s" in text and "3 patients" in text
    assert "Run report:" in text


def test_a_pipe_gets_no_bar_and_quiet_prints_nothing(tmp_path: Path, vault: Path) -> None:
    source = _inputs(tmp_path)

    def run(output: str, *extra: str) -> subprocess.CompletedProcess[str]:
        command = _command(source, tmp_path / output, vault, *extra)
        return subprocess.run(
            command, env=_env(), capture_output=True, text=True, cwd=REPO, timeout=120
        )

    piped = run("out")
    assert piped.returncode == 0
    assert "pseudonymizing" not in piped.stderr and "MB/s" not in piped.stderr
    assert "written" in piped.stderr and "Run report:" in piped.stderr
    quiet = run("out2", "--quiet")
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == ""
    assert len(list((tmp_path / "out2").rglob("*.dcm"))) == 18
    assert list((tmp_path / "out2.pseudo-run").glob("run-*.json")), "a report all the same"


def test_ctrl_c_prints_the_summary_of_what_was_done(
    canary_dir: Path, tmp_path: Path, vault: Path
) -> None:
    """SIGINT to the process group once the run handles it and has written a first file, while
    the test holds the vault's write lock (so the run has files left to commit)."""
    from tests.conftest import make_vault

    vault = make_vault(tmp_path / "canary-vault", "trial")
    process = subprocess.Popen(
        _command(canary_dir, tmp_path / "out", vault),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        start_new_session=True,
    )
    target = tmp_path / "out"
    run = wait_for_run(target, process)
    wait_for(lambda: temporary_files(target, run), "a first temporary file", process)
    wait_for(lambda: ready_for_ctrl_c(process.pid, workers=1), "Ctrl-C handled", process)
    stop_mid_run(process, vault, run, signal.SIGINT, before_commit=95)
    _, stderr = process.communicate(timeout=DEADLINE)
    assert process.returncode == 130, stderr
    assert "written" in stderr and "Run report:" in stderr, "the summary of what was done"
    assert "interrupted; run the same command again" in stderr
    assert "Traceback" not in stderr
