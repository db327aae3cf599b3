"""Where the workers of a run execute: in this process, in local worker processes, or on a
Dask distributed cluster.

Every pool runs the same worker function on the same tasks and hands the results back to the
parent in input order, so the output does not depend on the pool or its size. A pool is given
a :class:`WorkerSetup` (keys, policy, temporary folder) that each worker installs once before
its first task: a ``ProcessPoolExecutor`` initializer locally, a Dask ``WorkerPlugin`` on a
cluster. The setup is keyed by the run's id, so runs of different projects can share one
cluster without seeing each other's keys.

Local worker processes are bounded and watched (docs/hardening.md): each one limits its own
address space (``PSEUDO_WORKER_MEMORY_MB``, default :data:`DEFAULT_WORKER_MEMORY_MB`; ``0``
for no limit), exits within a second of its parent's death (it holds the run's keys), and a
worker that dies mid-task (killed for memory, a crash in a library) is replaced: the files it
may have been processing are run again one at a time, and the one that kills a worker again
is handed to ``lost`` (the run quarantines it) while the others go on, in input order.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import resource
import select
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from keystore.identities import IdentityBook
from keystore.keyring import Keyring
from pseudo.deid.identity import Site
from pseudo.deid.trial import TrialValues
from pseudo.errors import PseudoError
from pseudo.policy.compiled import CompiledPolicy

T = TypeVar("T")
R = TypeVar("R")

#: Tasks sent to a worker process together: one round trip (pickling, wake-ups, a future)
#: per chunk instead of per file. Small enough that the workers end a run nearly together.
CHUNK = 8
#: Default bound on the address space of a local worker process, in MiB.
DEFAULT_WORKER_MEMORY_MB = 4096
#: How often a local worker checks that its parent is alive, in seconds.
PARENT_CHECK_SECONDS = 0.5


class PoolError(PseudoError):
    """The pool cannot be started (e.g. the Dask scheduler is unreachable)."""


@dataclass(frozen=True)
class WorkerSetup:
    """What a worker needs before its first task; ``context`` names it (the run id).

    ``sync_each_file``: the worker makes each file durable itself (fsync), because the parent
    cannot flush the filesystem it writes on (see :mod:`pseudo.io.durable`). ``site`` is the
    run's site and ``book`` the project's identity rules.
    """

    context: str
    keyring: Keyring
    policy: CompiledPolicy
    temp_dir: Path
    check: bool
    sync_each_file: bool = True
    site: Site | None = None
    book: IdentityBook | None = None
    #: the clinical trial values written into every output (None: none)
    trial: TrialValues | None = None


class Installer(Protocol):
    """Installs a :class:`WorkerSetup` in the current process, or removes it."""

    def __call__(self, setup: WorkerSetup) -> None: ...


class Pool(Protocol):
    """A set of workers that runs tasks and yields their results in input order."""

    #: how many tasks run at the same time
    width: int

    def ordered(
        self, fn: Callable[[T], R], items: Iterable[T], lost: Callable[[T], R] | None = None
    ) -> Iterator[R]:
        """``map(fn, items)``, with a bounded number of tasks in flight; ``lost(item)`` is the
        result of an item whose worker process died processing it (else the pool raises)."""
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

    def ordered(
        self, fn: Callable[[T], R], items: Iterable[T], lost: Callable[[T], R] | None = None
    ) -> Iterator[R]:
        """Results one by one, in order (a task cannot outlive this process)."""
        return map(fn, items)

    def close(self) -> None:
        """Forget the setup."""
        self._remove(self._setup)


def worker_memory() -> int:
    """The address-space bound of a local worker in bytes (0: none), from
    ``PSEUDO_WORKER_MEMORY_MB`` or :data:`DEFAULT_WORKER_MEMORY_MB`."""
    text = os.environ.get("PSEUDO_WORKER_MEMORY_MB", "").strip()
    megabytes = int(text) if text.isdigit() else DEFAULT_WORKER_MEMORY_MB
    return megabytes * 1024 * 1024


def _limit_memory(limit: int) -> None:
    """Lower this process's address-space limit to ``limit`` bytes (never raise it)."""
    if limit <= 0:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    if soft == resource.RLIM_INFINITY or limit < soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _exit_with_parent(parent: int) -> None:
    """Exit this worker as soon as its parent is gone: an orphan would hold the run's keys.

    A daemon thread compares ``os.getppid()`` with the parent's pid (the worker is re-parented
    when its parent dies) every :data:`PARENT_CHECK_SECONDS`.
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(70)

    if os.getppid() != parent:
        os._exit(70)
    threading.Thread(target=watch, name="pseudo-parent-watch", daemon=True).start()


#: Signals a worker must not get before its initializer has decided what they do.
_HELD = frozenset({signal.SIGINT, signal.SIGTERM})


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM while worker processes may be started: a process forked
    meanwhile starts with them held, and its initializer lets them through only once it
    ignores Ctrl-C (else a Ctrl-C during start-up kills a half-started worker, and the pool
    can wait for it for ever). The parent gets a held signal as soon as this ends."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _exit_with_owner(owner: int) -> None:
    """Exit this worker as soon as the process ``owner`` is gone, for a worker that a fork
    server started: its parent is the server, which outlives the pool's owner as long as a
    worker holds the server's lifeline (every worker inherits it). A daemon thread waits on a
    pidfd of the owner (Linux), else checks every :data:`PARENT_CHECK_SECONDS`."""
    try:
        handle: int | None = os.pidfd_open(owner)
    except ProcessLookupError:
        os._exit(70)
    except (AttributeError, OSError):  # no pidfd here
        handle = None

    def alive() -> bool:
        try:
            os.kill(owner, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def watch() -> None:
        if handle is not None:
            select.select([handle], [], [])  # readable once the owner has exited
        else:
            while alive():
                time.sleep(PARENT_CHECK_SECONDS)
        os._exit(70)

    threading.Thread(target=watch, name="pseudo-owner-watch", daemon=True).start()


def _init_local_worker(
    install: Installer, setup: WorkerSetup, parent: int, memory: int, forkserver: bool = False
) -> None:
    """Initializer of a local worker process: Ctrl-C is the parent's to handle, SIGTERM (the
    pool stopping a worker) ends it quietly; the worker dies with ``parent`` (the pool's
    owner, which is not its parent when a fork server started it) and stays within its memory
    bound."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _HELD)  # held while it was started
    if forkserver:
        _exit_with_owner(parent)
    else:
        _exit_with_parent(parent)
    _limit_memory(memory)
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
    """Local worker processes (``concurrent.futures``), one per core by default; a worker
    that dies is replaced (see the module's docstring).

    ``chunk``: tasks sent to a worker together (:data:`CHUNK`; 1 for a service that hands
    over a few files at a time). ``forkserver``: start the workers from a fork server rather
    than by forking this process, for a process that has threads running (a fork copies their
    locks in whatever state they are).
    """

    def __init__(
        self,
        setup: WorkerSetup,
        install: Installer,
        workers: int,
        *,
        chunk: int = CHUNK,
        forkserver: bool = False,
    ) -> None:
        self.width = workers
        self.chunk = chunk
        self._context = _forkserver_context() if forkserver else None
        self._initargs = (install, setup, os.getpid(), worker_memory(), forkserver)
        #: how many times a worker died and the pool was started again
        self.restarts = 0
        self._executor = self._start()

    def _start(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.width,
            mp_context=self._context,
            initializer=_init_local_worker,
            initargs=self._initargs,
        )

    def _restart(self) -> None:
        """Replace a broken executor (a worker died) by a new one."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.restarts += 1
        self._executor = self._start()

    def _submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """``executor.submit``, or a failed future when the pool broke meanwhile."""
        try:
            with _signals_held():  # a submit may start a worker process
                return self._executor.submit(fn, *args)
        except BrokenProcessPool as exc:
            future: Future[Any] = Future()
            future.set_exception(exc)
            return future

    def ordered(
        self, fn: Callable[[T], R], items: Iterable[T], lost: Callable[[T], R] | None = None
    ) -> Iterator[R]:
        """Results in order, sent in chunks; a bounded number in flight keeps memory bounded.

        When a worker dies, every chunk not finished is a suspect: the pool is started again
        and the suspects are run one at a time, so that a second death names its file.
        """
        chunks = _chunked(items, self.chunk)
        pending: deque[tuple[list[T], Future[list[R]]]] = deque()

        def fill() -> None:
            while len(pending) < self.width * 2:
                chunk = next(chunks, None)
                if chunk is None:
                    return
                pending.append((chunk, self._submit(_map_chunk, fn, chunk)))

        fill()
        while pending:
            chunk, future = pending.popleft()
            try:
                results = future.result()
            except BrokenProcessPool:
                held = [(chunk, future), *pending]
                pending.clear()
                self._restart()
                for suspect_chunk, suspect in held:
                    if suspect.done() and suspect.exception() is None:
                        yield from suspect.result()
                    else:
                        for item in suspect_chunk:
                            yield self._alone(fn, item, lost)
                fill()
                continue
            yield from results
            fill()

    def _alone(self, fn: Callable[[T], R], item: T, lost: Callable[[T], R] | None) -> R:
        """Run one task with nothing else in flight; if its worker dies, it is ``lost``."""
        try:
            result: R = self._submit(fn, item).result()
            return result
        except BrokenProcessPool:
            self._restart()
            if lost is None:
                raise PoolError("a worker process died and the task cannot be retried") from None
            return lost(item)

    def close(self) -> None:
        """Wait for running tasks, cancel queued ones."""
        self._executor.shutdown(wait=True, cancel_futures=True)


def _forkserver_context() -> Any:
    """A ``forkserver`` multiprocessing context whose server imports only the worker's modules
    (not ``__main__``: ``python -m pseudo`` would run the command line again)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["pseudo.batch.worker"])
    return context


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

    def ordered(
        self, fn: Callable[[T], R], items: Iterable[T], lost: Callable[[T], R] | None = None
    ) -> Iterator[R]:
        """Results in order, sent in chunks, a bounded number per worker thread in flight
        (a Dask worker that dies is replaced and its tasks rescheduled by Dask itself)."""
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
