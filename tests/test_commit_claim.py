"""Runs into one output folder claim their temporary folders one at a time: a run that is
starting is never taken for a dead one by another run starting or ending beside it."""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path
from typing import Any, cast

from pseudo.batch.commit import Committer, _claiming
from pseudo.io.layout import TEMP_DIR_NAME


def _committer(output: Path, run_id: str) -> Committer:
    """A committer for claiming and releasing only (no keyring or store is used there)."""
    nothing = cast(Any, None)
    return Committer(nothing, nothing, output, run_id, lambda _: None, sync_each_file=False)


def test_a_run_between_making_and_locking_its_lock_is_not_taken_for_dead(tmp_path: Path) -> None:
    output = tmp_path / "out"
    output.mkdir()
    root = output / TEMP_DIR_NAME
    made, lock_it, claimed = threading.Event(), threading.Event(), threading.Event()
    held: list[int] = []

    def starting_run() -> None:
        # what Committer.claim does for run "a", held at its most fragile moment: the lock
        # file made, not locked yet
        with _claiming(root, output):
            fd = os.open(root / "a.lock", os.O_RDWR | os.O_CREAT, 0o600)
            (root / "a").mkdir()
            made.set()
            assert lock_it.wait(30)
            fcntl.flock(fd, fcntl.LOCK_EX)
            held.append(fd)

    first = threading.Thread(target=starting_run)
    first.start()
    assert made.wait(30)
    other = _committer(output, "b")

    def other_run() -> None:
        other.claim()
        claimed.set()

    second = threading.Thread(target=other_run)
    second.start()
    # the other run waits for the claim, whatever the time it is given
    assert not claimed.wait(0.5)
    lock_it.set()
    first.join(30)
    second.join(30)
    assert claimed.is_set()
    assert other.dead_runs == []
    assert (root / "a").is_dir() and (root / "a.lock").is_file()

    # run "b" ends: run "a"'s folder and the root stay; "a" ends: nothing is left
    other.release()
    assert (root / "a").is_dir() and not (root / "b").exists()
    os.close(held.pop())
    ending = _committer(output, "a")
    ending.release()
    assert not root.exists()


def test_a_dead_run_is_still_found_and_the_last_release_removes_the_root(tmp_path: Path) -> None:
    output = tmp_path / "out"
    output.mkdir()
    dead = _committer(output, "dead")
    dead.claim()
    assert dead._lock is not None
    os.close(dead._lock)  # as a killed run's lock: the file stays, unheld
    run = _committer(output, "alive")
    run.claim()
    assert run.dead_runs == ["dead"]
    assert sorted(p.name for p in (output / TEMP_DIR_NAME).iterdir()) == [
        "alive",
        "alive.lock",
        "claim",
    ]
    run.release()
    assert list(output.iterdir()) == []


def test_a_release_after_the_output_folder_was_removed_is_quiet(tmp_path: Path) -> None:
    output = tmp_path / "out"
    output.mkdir()
    run = _committer(output, "gone")
    run.claim()
    moved = tmp_path / "moved"
    output.rename(moved)
    run.release()
    assert run._lock is None
