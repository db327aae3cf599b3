"""Pseudonymize a tree of files: discovery, workers, atomic output, quarantine and the report.

The order of events for one file makes a crash harmless at any point:

1. a worker reads the input, pseudonymizes it and writes a temporary file in the output tree;
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
import errno
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import stat
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydicom.uid import DeflatedExplicitVRLittleEndian

from keystore.errors import DatabaseError
from keystore.keyring import Keyring
from keystore.linkage import JournalEntry, LinkageEntry, LinkageStore, journal_key
from pseudo import __version__
from pseudo.batch.pools import Pool, WorkerSetup, open_pool
from pseudo.deid import anchors
from pseudo.deid.anchors import scan_file
from pseudo.deid.engine import PseudonymizedDataset, Pseudonymizer
from pseudo.deid.tokens import pseudonym
from pseudo.dicom.tags import tag_text
from pseudo.errors import PseudoError
from pseudo.findings import Finding, NotAnInstance, RejectedFile
from pseudo.io import durable
from pseudo.io.dicomio import NotDicom, OutputFailure, read_source, sanitize, write_temporary
from pseudo.io.pydicom_internals import quiet_pydicom
from pseudo.policy.compiled import CompiledPolicy
from pseudo.verify import core as verify

TEMP_DIR_NAME = ".pseudo-tmp"
COMMIT_EVERY = 64


class RunError(PseudoError):
    """The run cannot start (bad paths); nothing was written."""


class OutputError(RunError):
    """The output or the linkage store cannot be written (disk full, permissions, the output
    folder removed, the database down): the run stops; what was committed stays, nothing
    partial is left, and running the same command again finishes the job."""

    exit_code = 5


@dataclass(slots=True)
class FileOutcome:
    """What happened to one input file (the parent keeps one per file for the run report,
    hence slots)."""

    input: str
    fingerprint: str
    status: str  # written | unchanged | skipped | quarantined (| failed: never recorded)
    input_id: str = ""  # keyed digest of the input path: the run report names files by it
    output: str | None = None
    reason: str | None = None
    temp: str | None = None
    size: int = 0
    linkage: list[LinkageEntry] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    verification: list[verify.Finding] = field(default_factory=list)
    evidence: verify.PairEvidence | None = None
    skipped_checks: dict[str, int] = field(default_factory=dict)


@dataclass
class RunSummary:
    """Counts and outcomes of one run; :meth:`report` is the machine-readable run report."""

    run_id: str
    project: str
    policy: CompiledPolicy
    input: Path
    output: Path
    started: str
    finished: str = ""
    status: str = "running"
    outcomes: list[FileOutcome] = field(default_factory=list)
    new_linkage_records: int = 0
    verified: bool = True
    reference_findings: list[verify.Finding] = field(default_factory=list)

    def count(self, status: str) -> int:
        """Number of files with this status."""
        return sum(1 for o in self.outcomes if o.status == status)

    def _outputs(self) -> list[list[str]]:
        return [
            o.output.split("/")
            for o in self.outcomes
            if o.output and o.status in ("written", "unchanged")
        ]

    @property
    def counts(self) -> dict[str, int]:
        """Files by status, and the patients, studies and series in the output."""
        parts = self._outputs()
        return {
            "files": len(self.outcomes),
            "written": self.count("written"),
            "unchanged": self.count("unchanged"),
            "skipped": self.count("skipped"),
            "quarantined": self.count("quarantined"),
            "patients": len({p[0] for p in parts}),
            "studies": len({p[1] for p in parts}),
            "series": len({p[2] for p in parts}),
            "findings": sum(len(o.findings) for o in self.outcomes),
            "new_linkage_records": self.new_linkage_records,
            "leaks": self.leaks,
            "verification_warnings": sum(
                1 for o in self.outcomes for f in o.verification if f.severity == "warning"
            ),
        }

    @property
    def leaks(self) -> int:
        """Leak-level verification findings: in quarantined files, and broken references."""
        in_files = sum(1 for o in self.outcomes for f in o.verification if f.severity == "leak")
        return in_files + len(self.reference_findings)

    def report(self) -> dict[str, Any]:
        """The run report: nothing identifying (no DICOM value, no input path: folders are
        often named after patients). Input files are named by a keyed digest of their path;
        :meth:`inputs` maps these to the paths, for the operator."""
        return {
            "format": "pseudo-run-report/1",
            "run_id": self.run_id,
            "pseudo_version": __version__,
            "project": self.project,
            "policy": {
                "name": self.policy.name,
                "title": self.policy.title,
                "sha256": self.policy.sha256,
                "chain": self.policy.chain,
                "options": self.policy.options,
                "standard_edition": f"PS3.15 {self.policy.edition}",
            },
            "inputs": f"run-{self.run_id}.inputs.json",
            "output": str(self.output),
            "started": self.started,
            "finished": self.finished,
            "status": self.status,
            "counts": self.counts,
            "files": [
                {
                    "input_id": o.input_id,
                    "status": o.status,
                    "output": o.output,
                    "reason": o.reason,
                    "findings": [asdict(f) for f in o.findings],
                    "verification": [f.to_json() for f in o.verification],
                }
                for o in self.outcomes
            ],
            "verification": {
                "enabled": self.verified,
                "references": [f.to_json() for f in self.reference_findings],
                "skipped_values": dict(
                    sum((Counter(o.skipped_checks) for o in self.outcomes), Counter())
                ),
            },
        }

    def inputs(self) -> dict[str, Any]:
        """The input paths of the run, by their id in the report (identifying: operator-side)."""
        root = self.input if self.input.is_dir() else self.input.parent
        return {
            "format": "pseudo-run-inputs/1",
            "run_id": self.run_id,
            "note": "input paths can name patients: keep this file with the input data",
            "input": str(self.input),
            "root": str(root),
            "files": {o.input_id: _relative(o.input, root) for o in self.outcomes},
        }


def _relative(path: str, root: Path) -> str:
    prefix = str(root).rstrip(os.sep) + os.sep  # a string test: pathlib costs 30 us a file
    return path[len(prefix) :] if path.startswith(prefix) else path


def now() -> str:
    """The current UTC time in ISO 8601."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def new_run_id() -> str:
    """A sortable, unique run identifier."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def check_paths(input_path: Path, output: Path) -> tuple[Path, Path]:
    """Resolve INPUT and OUTPUT; refuse an OUTPUT inside INPUT or a missing INPUT."""
    if not input_path.exists():
        raise RunError(f"{input_path}: input not found")
    source = input_path.resolve()
    target = output.resolve()
    if source.is_dir() and (target == source or target.is_relative_to(source)):
        raise RunError(f"{output}: the output folder must not be inside the input folder")
    if target.exists() and not target.is_dir():
        raise RunError(f"{output}: exists and is not a folder")
    return source, target


def discover(root: Path) -> list[Path]:
    """Every regular file under ``root`` (or ``root`` itself), sorted; folder links not followed."""
    return [Path(path) for path, _, _ in inventory(root)]


def inventory(root: Path) -> list[tuple[str, int, int]]:
    """The paths of :func:`discover` as strings, with their size and modification time (ns):
    one ``stat`` a file (a run of 500,000 files on a network filesystem feels each one), and
    neither a ``Path`` nor a whole ``stat_result`` kept for each."""
    if root.is_file():
        status = root.stat()
        return [(str(root), status.st_size, status.st_mtime_ns)]
    found: list[tuple[str, int, int]] = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            try:
                status = os.stat(path)  # follows a link to a file, as Path.is_file does
            except (FileNotFoundError, NotADirectoryError):
                continue  # a broken link, or a file gone since the folder was listed
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.EBADF):
                    continue  # what Path.is_file also takes for "not a file"
                raise
            if stat.S_ISREG(status.st_mode):
                found.append((path, status.st_size, status.st_mtime_ns))
    return found


def fingerprint(size: int, mtime_ns: int, policy: CompiledPolicy) -> str:
    """What must be unchanged for a file to be skipped on a re-run: size, mtime and policy."""
    return f"{size}:{mtime_ns}:{policy.short_hash}"


# -- worker side ------------------------------------------------------------------------------
@dataclass
class _WorkerState:
    keyring: Keyring
    policy: CompiledPolicy
    engine: Pseudonymizer
    temp: Path
    verify: bool
    sync: bool


#: The setups installed in this process, by run id (a Dask worker may serve several runs).
_installed: dict[str, _WorkerState] = {}


@dataclass(frozen=True, slots=True)
class Task:
    """One file to process; ``anchored`` holds its patient's anchored offset, if any."""

    path: str
    fingerprint: str
    size: int
    context: str
    anchored: tuple[tuple[str, int], ...] = ()


def install_worker(setup: WorkerSetup) -> None:
    """Prepare this process (a worker, or the parent with one worker) for a run's tasks."""
    _installed[setup.context] = _WorkerState(
        setup.keyring,
        setup.policy,
        Pseudonymizer(setup.keyring, setup.policy),
        setup.temp_dir,
        setup.check,
        setup.sync_each_file,
    )


def remove_worker(setup: WorkerSetup) -> None:
    """Forget a run's keys and policy in this process."""
    _installed.pop(setup.context, None)


def _state(context: str) -> _WorkerState:
    try:
        return _installed[context]
    except KeyError:
        raise RuntimeError("this worker was not set up for the run (plugin missing)") from None


def process_file(task: Task) -> FileOutcome:
    """Read, pseudonymize and write one file to a temporary name; never raise for bad input."""
    outcome = FileOutcome(task.path, task.fingerprint, status="quarantined", size=task.size)
    state = _state(task.context)
    engine = state.engine
    if task.anchored:
        engine = engine.with_offsets(dict(task.anchored))
    with quiet_pydicom():
        try:
            keep = verify.records_removed if state.verify else False
            source = read_source(Path(task.path), engine.droppable, keep_dropped=keep)
            ds = source.dataset
            pending = verify.prepare(ds, engine.policy) if state.verify else None
            result = engine.pseudonymize(ds, pending.recorder if pending else None, source.dropped)
            temp, header = write_temporary(
                result.dataset, state.temp, source.pixels, sync=state.sync
            )
            if pending is not None and not _verified(outcome, pending, result, header, state):
                temp.unlink(missing_ok=True)
                return outcome
        except NotDicom as exc:
            outcome.status, outcome.reason = "skipped", f"not DICOM: {exc}"
            return outcome
        except OutputFailure as exc:
            outcome.status, outcome.reason = "failed", str(exc)
            return outcome
        except NotAnInstance as exc:
            outcome.status, outcome.reason = "skipped", exc.reason
            return outcome
        except RejectedFile as exc:
            outcome.reason = exc.reason
            return outcome
        except RecursionError:
            outcome.reason = "nesting too deep to parse"
            return outcome
        except Exception as exc:
            outcome.reason = f"cannot process ({exc.__class__.__name__}: {sanitize(str(exc))})"
            return outcome
    outcome.status = "written"
    outcome.output = result.relative_path
    outcome.temp = str(temp)
    outcome.linkage = result.linkage
    outcome.findings = result.findings
    if source.after_pixels:
        tags = ", ".join(tag_text(t) for t in source.after_pixels[:8])
        outcome.findings.append(
            Finding("(after the pixel data)", "after-pixel-data", f"removed: {tags}")
        )
    return outcome


def _verified(
    outcome: FileOutcome,
    pending: verify.Pending,
    result: PseudonymizedDataset,
    header: bytes | None,
    state: _WorkerState,
) -> bool:
    """Check the written file for residual PHI; a leak quarantines it (it is never released)."""
    compressed = str(result.dataset.file_meta.TransferSyntaxUID) == DeflatedExplicitVRLittleEndian
    raw = None if compressed else header
    findings, evidence = verify.finish(
        pending, result.dataset, result.relative_path, result.date_offset_days, raw, state.policy
    )
    outcome.verification = findings
    outcome.evidence = evidence
    outcome.skipped_checks = dict(pending.needles.skipped)
    leaks = [f for f in findings if f.severity == "leak"]
    if leaks:
        kinds = ", ".join(sorted({f"{f.kind} at {f.path}" for f in leaks})[:5])
        outcome.reason = f"verification found {len(leaks)} leak(s): {kinds}"
        return False
    return True


# -- parent side ------------------------------------------------------------------------------
def _digest(path: Path) -> str:
    """SHA-256 of a file, read in chunks (outputs can be gigabytes)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(4 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


class Runner:
    """Runs one ``pseudo run``; commits linkage and journal, renames outputs, counts."""

    def __init__(
        self,
        keyring: Keyring,
        policy: CompiledPolicy,
        store: LinkageStore,
        input_path: Path,
        output: Path,
        workers: int = 1,
        on_outcome: Callable[[FileOutcome], None] | None = None,
        check: bool = True,
        on_plan: Callable[[int], None] | None = None,
        scheduler: str | None = None,
    ) -> None:
        self.keyring = keyring
        self.policy = policy
        self.store = store
        self.check = check
        self.on_plan = on_plan
        self.scheduler = scheduler
        self.references = verify.CrossFileCheck()
        self.input, self.output = check_paths(input_path, output)
        self.workers = max(1, workers)
        self.on_outcome = on_outcome
        self.summary = RunSummary(
            run_id=new_run_id(),
            project=keyring.project,
            policy=policy,
            input=self.input,
            output=self.output,
            started=now(),
            verified=check,
        )
        self._written_this_run: dict[str, str] = {}  # output -> its temporary file
        # Local workers write on a filesystem this process can flush once per batch.
        self._sync_each_file = bool(scheduler) or not durable.can_sync_filesystem()
        self.temp_dir = self.output / TEMP_DIR_NAME / self.summary.run_id
        self._lock: int | None = None
        self._flusher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pseudo-flush")
        #: the batch whose files are being flushed to disk, not yet committed
        self._flushing: tuple[list[FileOutcome], Future[None]] | None = None

    def plan(self) -> tuple[list[Task], list[FileOutcome]]:
        """Files to process, and files already done by an earlier run (unchanged)."""
        printed = {
            path: (fingerprint(size, mtime, self.policy), size)
            for path, size, mtime in inventory(self.input)
        }
        keys = {path: journal_key(self.keyring, path) for path in printed}
        journal = self.store.journal_lookup(self.keyring, keys.values())
        todo, done = [], []
        for path, (print_, size) in printed.items():
            row = journal.get(keys[path])
            if (
                row is not None
                and row.status == "written"
                and row.fingerprint == print_
                and row.output
                and (self.output / row.output).is_file()
            ):
                done.append(
                    FileOutcome(
                        path,
                        print_,
                        "unchanged",
                        output=row.output,
                        size=size,
                        input_id=keys[path][:16],
                    )
                )
            else:
                todo.append(Task(path, print_, size, self.summary.run_id))
        return todo, done

    def run(self) -> RunSummary:
        """Process every file; on Ctrl-C, commit what is done and stop."""
        try:
            self.output.mkdir(parents=True, exist_ok=True)
            self._claim_temporary_folder()
        except OSError as exc:
            raise OutputError(f"{self.output}: cannot write the output ({exc.strerror})") from exc
        setup = WorkerSetup(
            self.summary.run_id,
            self.keyring,
            self.policy,
            self.temp_dir,
            self.check,
            sync_each_file=self._sync_each_file,
        )
        batch: list[FileOutcome] = []
        pool: Pool | None = None
        try:
            self.store.start_run(self.summary.run_id, self.keyring.project, self.policy.name)
            todo, done = self.plan()
            if self.on_plan is not None:
                self.on_plan(len(todo) + len(done))
            for outcome in done:
                self._record(outcome)
            pool = open_pool(
                setup, install_worker, remove_worker, self.workers, len(todo), self.scheduler
            )
            if self.policy.anchor is not None:
                todo = self._anchor(todo, pool)
            for outcome in pool.ordered(process_file, todo):
                if outcome.status == "failed":
                    self._commit_flushed()
                    finished, batch = batch, []
                    self._commit(finished)  # what the workers finished before the failure
                    raise OutputError(
                        f"{self.output}: {outcome.reason}; the run stopped, nothing partial was "
                        "left: run the same command again once this is fixed"
                    )
                batch.append(outcome)
                if len(batch) >= COMMIT_EVERY:
                    # handed over before it is committed: a commit that Ctrl-C interrupts is
                    # never tried a second time (its files are gone; the next run redoes them)
                    full, batch = batch, []
                    self._commit_later(full)
            self._commit_flushed()
            last, batch = batch, []
            self._commit(last)
            self.summary.reference_findings = self.references.findings()
            self.summary.status = "completed"
        except KeyboardInterrupt:
            self._commit_flushed()
            self._commit(batch)
            self.summary.status = "interrupted"
            raise
        except BaseException:
            self.summary.status = "failed"
            raise
        finally:
            self._flusher.shutdown(wait=True)  # a batch not committed stays uncommitted
            if pool is not None:
                pool.close()
            self.summary.finished = now()
            try:
                self.store.finish_run(self.summary.run_id, self.summary.status, self.summary.counts)
            except DatabaseError:
                if self.summary.status != "failed":
                    raise  # else the first error (the database's too, most likely) is shown
            finally:
                self._release_temporary_folder()
        return self.summary

    def _anchor(self, todo: list[Task], pool: Pool) -> list[Task]:
        """Resolve each patient's anchored offset with a header-only pass over the batch."""
        scans = list(pool.ordered(scan_file, [task.path for task in todo]))
        offsets = anchors.resolve(self.keyring, self.policy, self.store, scans)
        tasks = []
        for task, scan in zip(todo, scans, strict=True):
            anchored: tuple[tuple[str, int], ...] = ()
            if scan is not None:
                patient = pseudonym(self.keyring, scan[0])
                if patient in offsets:
                    anchored = ((patient, offsets[patient]),)
            tasks.append(Task(task.path, task.fingerprint, task.size, task.context, anchored))
        return tasks

    def _commit_later(self, batch: list[FileOutcome]) -> None:
        """Start flushing ``batch`` to disk in the background; commit the batch before it."""
        self._commit_flushed()
        if self._sync_each_file or not any(o.temp for o in batch):
            self._commit(batch)
            return
        self._flushing = (batch, self._flusher.submit(durable.sync_filesystem, self.temp_dir))

    def _commit_flushed(self) -> None:
        """Commit the batch being flushed, once its flush is done."""
        if self._flushing is None:
            return
        batch, flush = self._flushing
        flush.exception()  # waits; a Ctrl-C here leaves the batch to the interrupt's commit
        self._flushing = None  # from here on, a Ctrl-C does not try this batch again
        self._commit(batch, flush)

    def _commit(self, batch: list[FileOutcome], flushed: Future[None] | None = None) -> None:
        """Commit ``batch``: files on disk (flushed here, or by ``flushed``), then linkage and
        journal in one transaction, then the files renamed into place."""
        if not batch:
            return
        if not (self.output / TEMP_DIR_NAME / f"{self.summary.run_id}.lock").exists():
            for outcome in batch:
                if outcome.temp:
                    Path(outcome.temp).unlink(missing_ok=True)
            raise OutputError(
                f"{self.output}: the output folder was removed or moved during the run; "
                "run the same command again to write it completely"
            )
        for outcome in batch:
            self._check_conflict(outcome)
        journal = []
        for o in batch:
            key = journal_key(self.keyring, o.input)
            o.input_id = key[:16]  # the report's name for the file: the same digest
            journal.append(JournalEntry(key, o.fingerprint, o.status, o.output, o.reason))
        linkage = [entry for o in batch if o.status == "written" for entry in o.linkage]
        try:
            if flushed is not None:
                flushed.result()  # file data on disk before the commit
            elif not self._sync_each_file and any(o.temp for o in batch):
                durable.sync_filesystem(self.temp_dir)
            self.summary.new_linkage_records += self.store.commit_batch(
                self.keyring, self.summary.run_id, linkage, journal
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
            self._record(outcome)

    def _check_conflict(self, outcome: FileOutcome) -> None:
        """Two inputs of this run that give one output path must give the same bytes."""
        if outcome.status != "written" or not outcome.output or not outcome.temp:
            return
        earlier_name = self._written_this_run.get(outcome.output)
        if earlier_name is None:
            self._written_this_run[outcome.output] = outcome.temp
            return
        earlier = Path(earlier_name)
        if not earlier.exists():  # renamed into place since
            earlier = self.output / outcome.output
        if earlier.is_file() and _digest(earlier) == _digest(Path(outcome.temp)):
            return
        Path(outcome.temp).unlink(missing_ok=True)
        outcome.status = "quarantined"
        outcome.reason = "another input file has the same SOP Instance UID but different content"
        outcome.temp, outcome.output, outcome.linkage = None, None, []

    def _record(self, outcome: FileOutcome) -> None:
        outcome.linkage = []
        if outcome.evidence is not None and outcome.output:
            self.references.add(outcome.evidence, outcome.output)
            outcome.evidence = None
        self.summary.outcomes.append(outcome)
        if self.on_outcome is not None:
            self.on_outcome(outcome)

    def _claim_temporary_folder(self) -> None:
        """Lock this run's temporary folder; remove those of runs that died (unlocked)."""
        root = self.output / TEMP_DIR_NAME
        root.mkdir(exist_ok=True)
        for lock_path in root.glob("*.lock"):
            fd = os.open(lock_path, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a run that is still going
            finally:
                os.close(fd)
            shutil.rmtree(root / lock_path.stem, ignore_errors=True)
            lock_path.unlink(missing_ok=True)
        self._lock = os.open(root / f"{self.summary.run_id}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self.temp_dir.mkdir(exist_ok=True)

    def _release_temporary_folder(self) -> None:
        root = self.output / TEMP_DIR_NAME
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        (root / f"{self.summary.run_id}.lock").unlink(missing_ok=True)
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None
        with contextlib.suppress(OSError):  # another run may still use it
            root.rmdir()


def _put_in_place(temp: str, final: str) -> None:
    """Rename ``temp`` to ``final``, making ``final``'s folder the first time it is missing
    (a series' folder: not looked for again for each of its files). Plain strings: pathlib
    would cost more than the rename."""
    try:
        os.replace(temp, final)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(final), exist_ok=True)
        os.replace(temp, final)


def write_report(summary: RunSummary, folder: Path) -> Path:
    """Write the run report, and beside it the input paths it refers to, as JSON into
    ``folder`` (owner-only); return the report's path."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / f"run-{summary.run_id}.json"
    _write_json(folder / f"run-{summary.run_id}.inputs.json", summary.inputs())
    _write_json(path, summary.report())
    return path


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(_json_text(data))
    os.replace(tmp, path)


def _json_text(data: dict[str, Any]) -> str:
    """``data`` as JSON, one top-level key a line and, in a list or mapping of many, one
    entry a line: as readable as an indented dump, and written by the C encoder (an indented
    dump is pure Python: seconds for the report of a run of 100,000 files)."""
    lines = []
    for key, value in data.items():
        name = json.dumps(key)
        if isinstance(value, list) and len(value) > 1:
            entries = ",\n    ".join(json.dumps(item) for item in value)
            lines.append(f"  {name}: [\n    {entries}\n  ]")
        elif isinstance(value, dict) and len(value) > 1:
            entries = ",\n    ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in value.items())
            lines.append(f"  {name}: {{\n    {entries}\n  }}")
        else:
            lines.append(f"  {name}: {json.dumps(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def run_reports(folder: Path) -> list[Path]:
    """The run reports in a report folder, oldest first (not their inputs files)."""
    return sorted(p for p in folder.glob("run-*.json") if not p.name.endswith(".inputs.json"))


def load_report(path: Path) -> dict[str, Any]:
    """A run report with each file's ``input`` path filled in from the inputs file beside it
    (when it is there; without it, files are known by ``input_id`` only)."""
    report: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    inputs_path = path.with_name(str(report.get("inputs") or ""))
    if report.get("inputs") and inputs_path.is_file():
        inputs = json.loads(inputs_path.read_text(encoding="utf-8"))
        root = Path(inputs["root"])
        for item in report["files"]:
            relative = inputs["files"].get(item["input_id"])
            if relative is not None:
                item["input"] = str(root / relative)
        report["input"] = inputs["input"]
    return report
