"""Waiting for what a running ``pseudo run`` does, never for a fixed time.

A test that races a process (to interrupt it, kill it, or pull its output or its database away
mid-run) waits for an event that the run makes observable: its lock file in
``OUTPUT/.pseudo-tmp/``, a temporary file of its workers, its row in the vault's ``run`` table,
its workers' signal dispositions in ``/proc``. Every wait has a generous deadline and fails
the test, saying what it waited for, when the deadline passes or the process ends first.

To be sure that an interruption lands before the run completes, whatever the machine's speed,
the test holds the vault's write lock (:func:`database_held`): every transaction of a run
begins with ``BEGIN IMMEDIATE``, so while the test holds the lock the run can neither commit a
batch nor record its end. What the test sees of the database under that lock is therefore
still true when it sends its signal.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest

from pseudo.io.layout import TEMP_DIR_NAME

T = TypeVar("T")

#: How long a test waits for an event: far beyond what a loaded machine takes.
DEADLINE = 300.0


def wait_for(
    condition: Callable[[], T],
    what: str,
    process: subprocess.Popen[str] | None = None,
    timeout: float = DEADLINE,
) -> T:
    """Poll ``condition`` until it returns something true and return it; fail the test when
    ``timeout`` seconds pass, or when ``process`` ends first."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            stderr = process.stderr.read() if process.stderr else ""
            pytest.fail(f"the process ended (exit {process.returncode}) before {what}: {stderr}")
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout:.0f} s for {what}")
        time.sleep(0.01)


def runs(output: Path) -> set[str]:
    """The ids of the runs that have a lock file in ``output``: a run creates its own once it
    has installed its signal handlers and claimed its temporary folder, and removes it as it
    ends (a killed run's stays until the next run clears it)."""
    return {lock.stem for lock in (output / TEMP_DIR_NAME).glob("*.lock")}


def new_run(output: Path, known: set[str]) -> str | None:
    """The id of a run writing into ``output`` that is not one of ``known``."""
    return next(iter(runs(output) - known), None)


def wait_for_run(
    output: Path, process: subprocess.Popen[str], known: set[str] | None = None
) -> str:
    """Wait for a run writing into ``output`` (not one of ``known``) to claim its temporary
    folder; return its id."""
    found: str = wait_for(
        lambda: new_run(output, known or set()) or "", "the run's lock file", process
    )
    return found


def temporary_files(output: Path, run: str) -> list[Path]:
    """The files the workers of run ``run`` have written so far, not yet committed."""
    return list((output / TEMP_DIR_NAME / run).glob("*.part"))


def _status_mask(pid: int, field: str) -> int | None:
    """A signal mask (``SigIgn``, ``SigCgt``...) of a process, from ``/proc``."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1], 16)
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def _has(mask: int | None, signum: int) -> bool:
    return mask is not None and bool(mask & (1 << (signum - 1)))


def children(pid: int) -> list[int]:
    """The live child processes of ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (name)": state, ppid, ...
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def ready_for_ctrl_c(pid: int, workers: int) -> bool:
    """Whether a run stops cleanly on a signal sent to its whole process group: the command
    handles SIGINT and SIGTERM, and each of its ``workers`` worker processes (none for one
    worker: it works in the command's process) is up and ignores SIGINT."""
    caught = _status_mask(pid, "SigCgt")
    if not (_has(caught, signal.SIGINT) and _has(caught, signal.SIGTERM)):
        return False
    if workers <= 1:
        return True
    pool = children(pid)
    return len(pool) >= workers and all(
        _has(_status_mask(c, "SigIgn"), signal.SIGINT) for c in pool
    )


@contextmanager
def database_held(vault: Path) -> Iterator[sqlite3.Connection]:
    """Hold the write lock of the vault's SQLite database: the run waits at its next
    transaction (for its busy timeout) until the block ends. Yields the test's connection, in
    its transaction, to look at what the run has committed."""
    connection = sqlite3.connect(vault / "pseudo.db", isolation_level=None, timeout=DEADLINE)
    try:
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        finally:
            connection.execute("ROLLBACK")
    finally:
        connection.close()


def run_state(connection: sqlite3.Connection, run: str) -> tuple[int, str | None]:
    """Journal rows, and the status of run ``run`` (None: not recorded yet), as seen in
    ``connection``."""
    (journal,) = connection.execute("SELECT count(*) FROM journal").fetchone()
    row = connection.execute("SELECT status FROM run WHERE run_id = ?", (run,)).fetchone()
    return int(journal), (row[0] if row else None)


def stop_mid_run(
    process: subprocess.Popen[str],
    vault: Path,
    run: str,
    signum: int,
    *,
    before_commit: int,
    group: bool = True,
    then: tuple[str, Callable[[], object]] | None = None,
) -> int:
    """Send ``signum`` while the run is provably mid-way: under the vault's write lock, with
    the run still alive, not recorded as finished, and fewer than ``before_commit`` journal
    rows (files left to commit). Returns the journal rows at that moment. The lock is released
    once the signal is sent: a transaction the run was waiting on goes on, then the signal is
    handled. ``then`` (what, event): an event to wait for once the lock is held, the run going
    on with what needs no database meanwhile (its workers' files)."""
    with database_held(vault) as connection:
        if then is not None:
            wait_for(then[1], then[0], process)
        journal, status = run_state(connection, run)
        assert process.poll() is None, "the run ended before the test held its database"
        assert status in (None, "running") and journal < before_commit, (
            f"the run was not mid-way when the test held its database: {journal} journal rows, "
            f"status {status}"
        )
        if group:
            os.killpg(process.pid, signum)  # as a terminal sends Ctrl-C to the whole group
        else:
            os.kill(process.pid, signum)
    return journal
