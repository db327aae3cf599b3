"""The crash-safe commit protocol of a run, in one place.

The order of events for one file makes a crash harmless at any point:

1. a worker reads the input, pseudonymizes it and writes a temporary file in the output tree
   (``.pseudo-tmp/<run id>/``, locked by the run);
2. the parent flushes the file to disk, then commits its sealed linkage records and its journal
   row in one transaction (a batch at a time; the flush runs on a background thread while the
   workers go on with the next batch, and the commit follows once it is done);
3. only then is the temporary file renamed to its final, pseudonymous path.

A crash before 2 leaves only a temporary file (removed by the next run); a crash between 2 and
3 leaves a journal row whose output is missing, and the next run writes it again (byte for byte
the same). Workers never touch the database; the parent never parses DICOM.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from keystore.errors import DatabaseError
from keystore.keyring import Keyring
from keystore.linkage import JournalEntry, LinkageStore, journal_key
from pseudo.batch.errors import OutputError, RunError
from pseudo.io import durable
from pseudo.io.layout import TEMP_DIR_NAME
from pseudo.pipeline.outcome import FileOutcome, FileStatus


class Committer:
    """Commits the outcomes of one run in batches: files on disk, then linkage and journal in
    one transaction, then the files renamed into place; hands each committed outcome to
    ``record``."""

    def __init__(
        self,
        keyring: Keyring,
        store: LinkageStore,
        output: Path,
        run_id: str,
        record: Callable[[FileOutcome], None],
        *,
        sync_each_file: bool,
    ) -> None:
        self.keyring = keyring
        self.store = store
        self.output = output
        self.run_id = run_id
        self.record = record
        #: workers sync each file themselves (a filesystem this process cannot flush at once)
        self.sync_each_file = sync_each_file
        self.temp_dir = output / TEMP_DIR_NAME / run_id
        self.new_linkage_records = 0
        self.same_output = SameOutputCheck(output)
        #: output folders (relative) found to resolve inside OUTPUT, or not
        self._folders_inside: dict[str, bool] = {}
        #: ids of earlier runs into this output that died (their lock was left, unheld)
        self.dead_runs: list[str] = []
        self._lock: int | None = None
        self._flusher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pseudo-flush")
        #: the batch whose files are being flushed to disk, not yet committed
        self._flushing: tuple[list[FileOutcome], Future[None]] | None = None

    def close(self) -> None:
        """Wait for a background flush to end; a batch not committed stays uncommitted."""
        self._flusher.shutdown(wait=True)

    def commit_later(self, batch: list[FileOutcome]) -> None:
        """Start flushing ``batch`` to disk in the background; commit the batch before it."""
        self.commit_flushed()
        if self.sync_each_file or not any(o.temp for o in batch):
            self.commit(batch)
            return
        self._flushing = (batch, self._flusher.submit(durable.sync_filesystem, self.temp_dir))

    def commit_flushed(self) -> None:
        """Commit the batch being flushed, once its flush is done."""
        if self._flushing is None:
            return
        batch, flush = self._flushing
        flush.exception()  # waits; a Ctrl-C here leaves the batch to the interrupt's commit
        self._flushing = None  # from here on, a Ctrl-C does not try this batch again
        self.commit(batch, flush)

    def commit(self, batch: list[FileOutcome], flushed: Future[None] | None = None) -> None:
        """Commit ``batch``: files on disk (flushed here, or by ``flushed``), then linkage and
        journal in one transaction, then the files renamed into place."""
        if not batch:
            return
        if not (self.output / TEMP_DIR_NAME / f"{self.run_id}.lock").exists():
            for outcome in batch:
                if outcome.temp:
                    Path(outcome.temp).unlink(missing_ok=True)
            raise OutputError(
                f"{self.output}: the output folder was removed or moved during the run; "
                "run the same command again to write it completely"
            )
        for outcome in batch:
            self.same_output.check(outcome)
        self._refuse_folders_outside(batch)
        journal = []
        for o in batch:
            key = journal_key(self.keyring, o.input)
            o.input_id = key[:16]  # the report's name for the file: the same digest
            journal.append(JournalEntry(key, o.fingerprint, o.status, o.output, o.reason))
        linkage = [entry for o in batch if o.status == FileStatus.WRITTEN for entry in o.linkage]
        try:
            if flushed is not None:
                flushed.result()  # file data on disk before the commit
            elif not self.sync_each_file and any(o.temp for o in batch):
                durable.sync_filesystem(self.temp_dir)
            self.new_linkage_records += self.store.commit_batch(
                self.keyring, self.run_id, linkage, journal
            )
        except BaseException as exc:
            for outcome in batch:
                if outcome.temp:
                    Path(outcome.temp).unlink(missing_ok=True)
            if isinstance(exc, DatabaseError):
                raise OutputError(
                    f"linkage store: {exc}; this batch was not released: run the same "
                    "command again once the database is back"
                ) from exc
            if isinstance(exc, OSError):
                raise OutputError(f"{self.output}: cannot flush to disk ({exc.strerror})") from exc
            raise
        output = str(self.output)
        for outcome in batch:
            if outcome.temp and outcome.output:
                try:
                    _put_in_place(outcome.temp, os.path.join(output, outcome.output))
                except OSError as exc:  # committed: the next run sees the file missing
                    raise OutputError(
                        f"{self.output}: cannot put a file in place ({exc.strerror}); run the "
                        "same command again once this is fixed"
                    ) from exc
                outcome.temp = None
            self.record(outcome)

    def _refuse_folders_outside(self, batch: list[FileOutcome]) -> None:
        """Stop the run before committing ``batch`` if a file would be put in a folder that
        leads outside OUTPUT (a link planted in the output tree): nothing is written outside
        OUTPUT. Each folder is resolved once a run."""
        root = os.path.realpath(self.output)
        for outcome in batch:
            if not (outcome.temp and outcome.output):
                continue
            folder = os.path.dirname(outcome.output)
            inside = self._folders_inside.get(folder)
            if inside is None:
                real = os.path.realpath(os.path.join(root, folder))
                inside = self._folders_inside[folder] = real.startswith(root + os.sep)
            if not inside:
                for other in batch:
                    if other.temp:
                        Path(other.temp).unlink(missing_ok=True)
                raise OutputError(
                    f"{self.output}: {folder} leads outside the output folder (a link); "
                    "nothing was written there: remove the link and run the same command again"
                )

    def claim(self) -> None:
        """Lock this run's temporary folder; remove those of runs that died (unlocked), noting
        their ids in :attr:`dead_runs`.

        Runs into one output folder claim and release one at a time (:func:`_claiming`): a
        starting run's lock file is unlocked until the run locks it, and a run looking for
        dead runs at that moment would take it for a dead one and remove its folder."""
        root = self.output / TEMP_DIR_NAME
        with _claiming(root, self.output):
            for lock_path in root.glob("*.lock"):
                try:
                    fd = os.open(lock_path, os.O_RDWR | os.O_NOFOLLOW)
                except OSError:
                    continue  # a link planted as a lock: never followed, never removed through
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # a run that is still going
                finally:
                    os.close(fd)
                shutil.rmtree(root / lock_path.stem, ignore_errors=True)
                lock_path.unlink(missing_ok=True)
                self.dead_runs.append(lock_path.stem)
            self._lock = os.open(
                root / f"{self.run_id}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600
            )
            fcntl.flock(self._lock, fcntl.LOCK_EX)
            with contextlib.suppress(FileExistsError):
                self.temp_dir.mkdir()
            _refuse_link(self.temp_dir, self.output)

    def release(self) -> None:
        """Remove this run's temporary folder (what was not committed in it is dropped) and
        unlock it; remove the output's temporary root when no other run uses it."""
        root = self.output / TEMP_DIR_NAME
        try:
            with _claiming(root, self.output, create=False):
                self._drop_own(root)
                if {entry.name for entry in os.scandir(root)} <= {_CLAIM_NAME}:
                    # the last run: a run waiting for the claim finds its file gone and
                    # makes the root and the file again
                    (root / _CLAIM_NAME).unlink(missing_ok=True)
                    with contextlib.suppress(OSError):
                        root.rmdir()
        except (OSError, RunError):  # the output folder was removed, moved or tampered with
            pass
        finally:
            self._drop_own(root)

    def _drop_own(self, root: Path) -> None:
        """Remove this run's temporary folder and lock file, then unlock it (in this order: an
        unlocked lock file is a dead run's)."""
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        (root / f"{self.run_id}.lock").unlink(missing_ok=True)
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


#: The file of an output's temporary root that runs into that output lock in turn to claim and
#: release their own folders (not ``*.lock``: it is no run's).
_CLAIM_NAME = "claim"


@contextlib.contextmanager
def _claiming(root: Path, output: Path, *, create: bool = True) -> Iterator[None]:
    """Hold the claim lock of an output's temporary root ``root`` (made first, with
    ``create``). The last run to release removes the claim file and the root; a run that was
    waiting for the lock then holds a file that is gone, and starts again with a new one."""
    while True:
        if create:
            with contextlib.suppress(FileExistsError):
                root.mkdir()
        _refuse_link(root, output)
        path = root / _CLAIM_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except FileNotFoundError:
            if not create:
                raise
            continue  # the last run removed the root meanwhile
        except OSError as exc:  # a link planted as the claim file: never followed
            raise RunError(
                f"{path}: cannot be locked ({exc.strerror}); remove it and run again"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            held = os.fstat(fd)
            try:
                named = os.stat(path, follow_symlinks=False)
            except FileNotFoundError:
                continue  # released by the last run while this one waited
            if (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino):
                yield
                return
        finally:
            os.close(fd)


def _refuse_link(folder: Path, output: Path) -> None:
    """Refuse a temporary folder that is a link, or not a folder, or resolves outside OUTPUT:
    the workers would write the pseudonymized files (and their linkage) wherever it points."""
    status = os.lstat(folder)
    inside = os.path.realpath(folder) == os.path.join(
        os.path.realpath(output), folder.relative_to(output)
    )
    if stat.S_ISLNK(status.st_mode) or not stat.S_ISDIR(status.st_mode) or not inside:
        raise RunError(
            f"{folder}: a temporary folder that is a link or not a folder is refused (nothing is "
            "written outside the output folder); remove it and run again"
        )


class SameOutputCheck:
    """Two inputs of one run that give one output path (the same SOP Instance UID) must give
    the same bytes; the later one of a pair that differs is quarantined, never written over
    the first. A run and a dry run both hold their outcomes to it.

    ``output`` is the folder outputs are renamed into; without it (a dry run, whose temporary
    files are thrown away), each first output's digest is kept instead of its file.
    """

    def __init__(self, output: Path | None) -> None:
        self.output = output
        self._seen: dict[str, str] = {}  # output -> its temporary file (or its digest)

    def check(self, outcome: FileOutcome) -> None:
        """Quarantine ``outcome`` (and remove its temporary file) if an earlier outcome of
        the run gave the same output path with other bytes."""
        if outcome.status != FileStatus.WRITTEN or not outcome.output or not outcome.temp:
            return
        earlier_name = self._seen.get(outcome.output)
        if earlier_name is None:
            first = outcome.temp if self.output is not None else _digest(Path(outcome.temp))
            self._seen[outcome.output] = first
            return
        if self.output is None:
            same = earlier_name == _digest(Path(outcome.temp))
        else:
            earlier = Path(earlier_name)
            if not earlier.exists():  # renamed into place since
                earlier = self.output / outcome.output
            same = earlier.is_file() and _digest(earlier) == _digest(Path(outcome.temp))
        if same:
            return
        Path(outcome.temp).unlink(missing_ok=True)
        outcome.status = FileStatus.QUARANTINED
        outcome.reason = "another input file has the same SOP Instance UID but different content"
        outcome.temp, outcome.output, outcome.linkage = None, None, []


def _digest(path: Path) -> str:
    """SHA-256 of a file, read in chunks (outputs can be gigabytes)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(4 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _put_in_place(temp: str, final: str) -> None:
    """Rename ``temp`` to ``final``, making ``final``'s folder the first time it is missing
    (a series' folder: not looked for again for each of its files). Plain strings: pathlib
    would cost more than the rename."""
    try:
        os.replace(temp, final)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(final), exist_ok=True)
        os.replace(temp, final)
