"""Where the workers of a run execute: in this process, in local worker processes, or on a
Dask distributed cluster.

Every pool runs the same worker function on the same tasks and hands the results back to the
parent in input order, so the output does not depend on the pool or its size. A pool is given
a :class:`WorkerSetup` (keys, policy, temporary folder) that each worker installs once before
its first task: a ``ProcessPoolExecutor`` initializer locally, a Dask ``WorkerPlugin`` on a
cluster. The setup is keyed by the run's id, so runs of different projects can share one
cluster without seeing each other's keys.
"""

from __future__ import annotations

import contextlib
import functools
import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from keystore.keyring import Keyring
from pseudo.errors import PseudoError
from pseudo.policy.compiled import CompiledPolicy

T = TypeVar("T")
R = TypeVar("R")

#: Tasks sent to a worker process together: one round trip (pickling, wake-ups, a future)
#: per chunk instead of per file. Small enough that the workers end a run nearly together.
CHUNK = 8


class PoolError(PseudoError):
    """The pool cannot be started (e.g. the Dask scheduler is unreachable)."""


@dataclass(frozen=True)
class WorkerSetup:
    """What a worker needs before its first task; ``context`` names it (the run id).

    ``sync_each_file``: the worker makes each file durable itself (fsync), because the parent
    cannot flush the filesystem it writes on (see :mod:`pseudo.io.durable`).
    """

    context: str
    keyring: Keyring
    policy: CompiledPolicy
    temp_dir: Path
    check: bool
    sync_each_file: bool = True


class Installer(Protocol):
    """Installs a :class:`WorkerSetup` in the current process, or removes it."""

    def __call__(self, setup: WorkerSetup) -> None: ...


class Pool(Protocol):
    """A set of workers that runs tasks and yields their results in input order."""

    #: how many tasks run at the same time
    width: int

    def ordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        """``map(fn, items)``, with a bounded number of tasks in flight."""
        ...

    def close(self) -> None:
        """Stop the workers; tasks not yet started are cancelled."""
        ...


class InlinePool:
    """Runs tasks in this process, one at a time (one worker, or a single file)."""

    width = 1

    def __init__(self, setup: WorkerSetup, install: Installer, remove: Installer) -> None:
        self._setup, self._remove = setup, remove
        install(setup)

    def ordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        """Results one by one, in order."""
        return map(fn, items)

    def close(self) -> None:
        """Forget the setup."""
        self._remove(self._setup)


def _ignore_interrupt_then(install: Installer, setup: WorkerSetup) -> None:
    """Initializer of a local worker process: Ctrl-C is the parent's to handle."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    install(setup)


def _ordered_futures(submit: Callable[[T], Any], items: Iterable[T], window: int) -> Iterator[Any]:
    """Submit tasks keeping at most ``window`` in flight; yield results in submission order."""
    pending: deque[Any] = deque()
    for item in items:
        pending.append(submit(item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """``items`` in lists of ``size`` (the last one shorter)."""
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _map_chunk(fn: Callable[[T], R], chunk: list[T]) -> list[R]:
    """What a worker runs for one chunk of tasks."""
    return [fn(item) for item in chunk]


def _ordered_chunks(
    submit: Callable[[Callable[..., list[R]], Callable[[T], R], list[T]], Any],
    fn: Callable[[T], R],
    items: Iterable[T],
    width: int,
) -> Iterator[R]:
    """``map(fn, items)`` in chunks of :data:`CHUNK`, two chunks per worker in flight."""
    chunks = _chunked(items, CHUNK)
    for results in _ordered_futures(lambda chunk: submit(_map_chunk, fn, chunk), chunks, width * 2):
        yield from results


class ProcessPool:
    """Local worker processes (``concurrent.futures``), one per core by default."""

    def __init__(self, setup: WorkerSetup, install: Installer, workers: int) -> None:
        self.width = workers
        self._executor = ProcessPoolExecutor(
            max_workers=workers, initializer=_ignore_interrupt_then, initargs=(install, setup)
        )

    def ordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        """Results in order, sent in chunks; a bounded number in flight keeps memory bounded."""
        return _ordered_chunks(self._executor.submit, fn, items, self.width)

    def close(self) -> None:
        """Wait for running tasks, cancel queued ones."""
        self._executor.shutdown(wait=True, cancel_futures=True)


class DaskPool:
    """Workers of a Dask distributed cluster, through its standard client.

    ``address`` is a scheduler address (``tcp://host:8786``) or ``local:N`` for a
    ``LocalCluster`` of N single-threaded worker processes on this machine. Input and output
    folders must be on a filesystem that every worker sees at the same path.
    """

    def __init__(self, setup: WorkerSetup, install: Installer, remove: Installer, address: str):
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:
            raise PoolError(
                "Dask is not installed: pip install 'pseudo[dask]' (dask distributed)"
            ) from exc
        from pseudo.batch.dask_plugin import SetupPlugin

        self._cluster: Any = None
        try:
            if address.startswith("local:"):
                workers = _local_workers(address)
                self._cluster = LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    silence_logs=50,
                )
                self._client = Client(self._cluster)
            else:
                self._client = Client(address, timeout="10s")
        except (OSError, TimeoutError) as exc:
            self._shutdown_cluster()
            raise PoolError(f"--scheduler {address}: cannot connect ({exc})") from exc
        self._plugin_name = f"pseudo-{setup.context}"
        self._client.register_plugin(SetupPlugin(setup, install, remove), name=self._plugin_name)
        threads = sum(self._client.nthreads().values())
        self.width = max(1, threads)

    def ordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        """Results in order, sent in chunks, a bounded number per worker thread in flight."""
        return _ordered_chunks(
            functools.partial(self._client.submit, pure=False), fn, items, self.width
        )

    def close(self) -> None:
        """Remove the setup from the workers and disconnect (stopping a local cluster)."""
        with contextlib.suppress(Exception):  # a cluster that is gone holds nothing of ours
            self._client.unregister_worker_plugin(self._plugin_name)
        self._client.close()
        self._shutdown_cluster()

    def _shutdown_cluster(self) -> None:
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None


def _local_workers(address: str) -> int:
    count = address.removeprefix("local:")
    if not count.isdigit() or int(count) < 1:
        raise PoolError(f"--dask {address}: expected local:N with N >= 1")
    return int(count)


def open_pool(
    setup: WorkerSetup,
    install: Installer,
    remove: Installer,
    workers: int,
    tasks: int,
    scheduler: str | None = None,
) -> Pool:
    """The pool for a run: Dask when a scheduler is given, else local processes or inline."""
    if scheduler:
        return DaskPool(setup, install, remove, scheduler)
    if workers > 1 and tasks > 1:
        return ProcessPool(setup, install, min(workers, tasks))
    return InlinePool(setup, install, remove)
