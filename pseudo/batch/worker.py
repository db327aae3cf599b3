"""The worker side of a run: one task is one file, handed to the per-file pipeline.

A worker (a local process, a Dask worker, or the parent itself with one worker) installs a
run's setup once, then processes the run's tasks; it never touches the database.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path

from pseudo.batch.pools import WorkerSetup
from pseudo.pipeline.outcome import FileOutcome, FileStatus
from pseudo.pipeline.process import Anchored, FileProcessor


@dataclass
class _WorkerState:
    processor: FileProcessor
    temp: Path
    sync: bool


#: The setups installed in this process, by run id (a Dask worker may serve several runs).
_installed: dict[str, _WorkerState] = {}
#: The garbage collector's youngest generation is collected after this many more allocations
#: than frees of container objects, while a setup is installed (Python's default: 700). A file
#: allocates thousands (pydicom elements, the verifier's values), most of them freed by their
#: reference counts: at 700 the collector went through the young objects several times per
#: file. On the canary corpus's loop, 20,000 took 8 % off the run without verification and 15 %
#: off the run with it (benchmarks/RESULTS.md); cyclic garbage waits a few files longer.
_YOUNG_THRESHOLD = 20_000
_default_thresholds = gc.get_threshold()


@dataclass(frozen=True, slots=True)
class Task:
    """One file to process; ``anchored`` holds its patient's anchored offset, if any, and
    ``identity_check`` what the run's header scan saw of its patient (see
    :mod:`pseudo.batch.identities`)."""

    path: str
    fingerprint: str
    size: int
    context: str
    anchored: Anchored = ()
    identity_check: str | None = None


def install_worker(setup: WorkerSetup) -> None:
    """Prepare this process (a worker, or the parent with one worker) for a run's tasks."""
    _installed[setup.context] = _WorkerState(
        FileProcessor(
            setup.keyring,
            setup.policy,
            check=setup.check,
            site=setup.site,
            book=setup.book,
            trial=setup.trial,
        ),
        setup.temp_dir,
        setup.sync_each_file,
    )
    gc.set_threshold(_YOUNG_THRESHOLD, *_default_thresholds[1:])


def remove_worker(setup: WorkerSetup) -> None:
    """Forget a run's keys and policy in this process (and, with the last of them, give the
    garbage collector back its thresholds)."""
    _installed.pop(setup.context, None)
    if not _installed:
        gc.set_threshold(*_default_thresholds)


def _state(context: str) -> _WorkerState:
    try:
        return _installed[context]
    except KeyError:
        raise RuntimeError("this worker was not set up for the run (plugin missing)") from None


def process_file(task: Task) -> FileOutcome:
    """Pseudonymize one file of a run to a temporary name; never raise for bad input."""
    state = _state(task.context)
    return state.processor.process(
        Path(task.path),
        state.temp,
        fingerprint=task.fingerprint,
        size=task.size,
        anchored=task.anchored,
        sync=state.sync,
        identity_check=task.identity_check,
    )


#: The reason given for a file whose worker process died while processing it.
WORKER_DIED = (
    "the worker processing it died (out of memory? see PSEUDO_WORKER_MEMORY_MB); "
    "nothing was written"
)


def lost_file(task: Task) -> FileOutcome:
    """The outcome of a file whose worker died processing it (twice: once among others, once
    alone): quarantined, so that one file cannot stop the run."""
    return FileOutcome(
        task.path, task.fingerprint, FileStatus.QUARANTINED, size=task.size, reason=WORKER_DIED
    )


def lost_scan(path: str) -> None:
    """The header scan of a file whose worker died: no scan (the real pass decides)."""
    return None
