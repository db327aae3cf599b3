"""The node's pipeline stage: spooled instances through the per-file path of ``pseudo run``,
committed by the run's crash-safe protocol.

Each batch of waiting instances goes to the run's workers (:mod:`pseudo.batch.worker`, the one
per-file path), worker processes started from a fork server (the node's process has threads:
it is never forked), each of which flushes the files it writes. Then
:class:`pseudo.batch.commit.Committer`: linkage and the run journal in one transaction, then
each file renamed to its pseudonymous path in the target (the outbox, or ``--output``), whose
folders are flushed; only then does the node's journal move the batch's instances on, in one
transaction, and their spool copies go. A crash anywhere redoes the instance from the spool:
the output is the same byte for byte and the linkage store keeps no duplicate record.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from pydicom.filereader import read_file_meta_info

from keystore.actions import AuditOutcome
from keystore.audit import AuditLog
from keystore.identities import IdentityBook, IdentityStore
from keystore.keyring import Keyring
from keystore.linkage import LinkageStore
from pseudo.batch.commit import Committer
from pseudo.batch.errors import OutputError
from pseudo.batch.identities import settle
from pseudo.batch.pools import ProcessPool, WorkerSetup
from pseudo.batch.report import new_run_id
from pseudo.batch.worker import Task, install_worker, lost_file, lost_scan, process_file
from pseudo.deid import anchors
from pseudo.deid.anchors import scan_file
from pseudo.deid.identity import Site
from pseudo.deid.trial import TrialValues
from pseudo.pipeline.outcome import FileOutcome, FileStatus
from pseudo.pipeline.process import Anchored
from pseudo.policy.compiled import CompiledPolicy
from pseudo.serve.folder import NodeFolder, sync_folder
from pseudo.serve.journal import Journal, Move, Row, State

log = logging.getLogger("pseudo.serve")

#: Instances taken from the spool and committed together.
BATCH = 64

#: Why an instance is quarantined under an anchored policy when its patient has no offset yet.
NOT_ANCHORED = (
    "the policy anchors dates and this patient has no anchored offset yet: the node never "
    "anchors a patient (the offset would depend on the order of arrival); anchor the patient "
    "with pseudo run first (see docs/service.md)"
)

#: Why an instance is quarantined when an earlier one gave its output path with other bytes.
CONFLICT = "another instance has the same SOP Instance UID but different content"


class PipelineStage:
    """Pseudonymizes what the spool holds into ``target`` (outbox or output folder)."""

    def __init__(
        self,
        keyring: Keyring,
        policy: CompiledPolicy,
        store: LinkageStore,
        folder: NodeFolder,
        journal: Journal,
        target: Path,
        *,
        forwarding: bool,
        workers: int = 1,
        audit: AuditLog | None = None,
        actor: str = "",
        site: Site | None = None,
        trial: TrialValues | None = None,
    ) -> None:
        self.keyring = keyring
        self.site = site
        self.trial = trial
        self.identities = IdentityStore(store.engine)
        #: the project's identity rules, read at start (as a run reads them at its start)
        self.book = IdentityBook()
        self.policy = policy
        self.store = store
        self.folder = folder
        self.journal = journal
        self.target = target
        self.done_state = State.OUTBOX if forwarding else State.DELIVERED
        self.workers = max(1, workers)
        self.audit = audit
        self.actor = actor
        self.run_id = "serve-" + new_run_id()
        self.committer = Committer(
            keyring,
            store,
            target,
            self.run_id,
            self._committed,
            sync_each_file=True,  # by the workers, in parallel: never a flush of the filesystem
        )
        self._pool: ProcessPool | None = None
        #: the instances of the batch being committed, by spool path
        self._pending: dict[str, tuple[Row, str]] = {}
        #: the journal moves of the batch being committed, and the spool copies they release
        self._moves: list[Move] = []
        self._released: list[Row] = []
        #: the last journal id taken by the workers (the batch after it is taken next)
        self._taken = 0
        #: commits run one at a time, while the workers pseudonymize the next batch
        self._commit_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pseudo-commit")
        #: the batch being committed: its size and its commit
        self._committing: tuple[int, Future[None]] | None = None
        self.status = "running"

    def start(self) -> None:
        """Claim the target's temporary folder, record the run, start the workers."""
        try:
            self.target.mkdir(parents=True, exist_ok=True)
            self.committer.claim()
        except OSError as exc:
            raise OutputError(f"{self.target}: cannot write ({exc.strerror})") from exc
        project = self.keyring.project
        self.store.start_run(self.run_id, project, self.policy.name)
        self._audit(AuditOutcome.STARTED)
        for dead in self.committer.dead_runs:
            released = self.store.close_dead_run(dead, project)
            if released is not None and self.audit is not None:
                self.audit.record_run(
                    dead,
                    project,
                    self.policy.sha256,
                    AuditOutcome.RUN_KILLED,
                    {"written": released},
                    actor=self.actor,
                )
        self.book = self.identities.book(self.keyring)
        setup = WorkerSetup(
            self.run_id,
            self.keyring,
            self.policy,
            self.committer.temp_dir,
            check=True,
            sync_each_file=self.committer.sync_each_file,
            site=self.site,
            book=self.book,
            trial=self.trial,
        )
        self._pool = ProcessPool(setup, install_worker, self.workers, chunk=1, forkserver=True)
        list(self._pool.ordered(worker_ready, range(self.workers)))  # started before any instance

    def close(self, counts: dict[str, int]) -> None:
        """Stop the workers, record the run's end with ``counts``, release the target."""
        if self.status == "running":  # the pipeline never ran (the node did not start)
            self.status = "failed"
        try:
            with contextlib.suppress(Exception):  # a failed commit was reported by step()
                self._wait_for_commit()
            self._commit_thread.shutdown(wait=True)
            if self._pool is not None:
                self._pool.close()
            self.committer.close()
            self.store.finish_run(self.run_id, self.status, counts)
            self._audit(self.status, counts)
        finally:
            self.committer.release()

    def _audit(self, outcome: str, counts: dict[str, int] | None = None) -> None:
        if self.audit is not None:
            self.audit.record_run(
                self.run_id,
                self.keyring.project,
                self.policy.sha256,
                outcome,
                counts,
                actor=self.actor,
            )

    def step(self) -> int:
        """Pseudonymize the oldest waiting instances not yet taken while the batch before
        them is committed (in the committing thread); return how many were taken or committed
        (0: the spool is empty and every batch committed). Raises :class:`OutputError` when
        the target or the linkage store cannot be written: nothing of the failed batch, or of
        the one pseudonymized meanwhile, is released; both are taken again by the next step."""
        assert self._pool is not None, "start() first"
        rows = self.journal.rows(State.RECEIVED, BATCH, after=self._taken)
        if not rows:
            return self._wait_for_commit()
        self._taken = rows[-1].id
        outcomes: list[FileOutcome] = []
        try:
            outcomes = self._pseudonymize(rows)
            self._wait_for_commit()
        except BaseException:
            for outcome in outcomes:
                if outcome.temp:
                    Path(outcome.temp).unlink(missing_ok=True)
            self._wait_for_commit(failed=True)
            self._taken = 0  # every instance still waiting is taken again
            raise
        self._committing = (
            len(rows),
            self._commit_thread.submit(self._commit_batch, rows, outcomes),
        )
        return len(rows)

    def _pseudonymize(self, rows: list[Row]) -> list[FileOutcome]:
        """The outcomes of ``rows`` through the workers, in order; raises :class:`OutputError`
        when one could not be written for want of room or rights (none is kept)."""
        assert self._pool is not None
        paths = [str(self.folder.spool / row.spool) for row in rows]
        tasks, refused = self._check_identities(paths)
        done = iter(self._pool.ordered(process_file, tasks, lost_file))
        outcomes = [
            FileOutcome(path, "", FileStatus.QUARANTINED, reason=refused[path])
            if path in refused
            else next(done)
            for path in paths
        ]
        failed = next((o for o in outcomes if o.status == FileStatus.FAILED), None)
        if failed is not None:
            for outcome in outcomes:
                if outcome.temp:
                    Path(outcome.temp).unlink(missing_ok=True)
            raise OutputError(f"{self.target}: {failed.reason}")
        return outcomes

    def _check_identities(self, paths: list[str]) -> tuple[list[Task], dict[str, str]]:
        """The header pass of ``pseudo run`` over a batch (:mod:`pseudo.batch.identities`):
        each file's patient checked against the project's, and under an anchored policy given
        the offset a run recorded (whatever the file's own date: a patient has one offset).
        Returns the tasks to process and the files to quarantine with their reason (an
        identity conflict, or a patient not anchored yet: see :data:`NOT_ANCHORED`)."""
        assert self._pool is not None
        scans = list(self._pool.ordered(scan_file, paths, lost_scan))
        verdicts = settle(self.keyring, self.identities, self.book, self.site, paths, scans)
        refused = dict(verdicts.conflicts)
        offsets: dict[str, int] = {}
        if self.policy.anchor is not None:
            patients = set(verdicts.pseudonyms.values())
            offsets = anchors.recorded_offsets(self.keyring, self.policy, self.store, patients)
        tasks = []
        for path in paths:
            if path in refused:
                continue
            patient = verdicts.pseudonyms.get(path)
            anchored: Anchored = ()
            if self.policy.anchor is not None and patient is not None:
                if patient not in offsets:
                    refused[path] = NOT_ANCHORED
                    continue
                anchored = ((patient, offsets[patient]),)
            tasks.append(Task(path, "", 0, self.run_id, anchored, verdicts.checks[path]))
        return tasks, refused

    def _wait_for_commit(self, *, failed: bool = False) -> int:
        """Wait for the batch being committed; return its size (0: none), or raise what
        stopped it (unless ``failed``: the caller is raising already)."""
        committing, self._committing = self._committing, None
        if committing is None:
            return 0
        size, future = committing
        if future.exception() is not None:
            self._taken = 0  # its instances (and those taken since) are taken again
            if not failed:
                future.result()  # raises
            return 0
        return size

    def _commit_batch(self, rows: list[Row], outcomes: list[FileOutcome]) -> None:
        """Commit a pseudonymized batch (in the committing thread), then move its instances
        on in the node's journal and drop their spool copies."""
        self._moves, self._released = [], []
        try:
            self._commit(rows, outcomes)
        finally:
            self._pending.clear()
        self.journal.move(self._moves)
        for row in self._released:
            (self.folder.spool / row.spool).unlink(missing_ok=True)

    def _commit(self, rows: list[Row], outcomes: list[FileOutcome]) -> None:
        """Quarantine, drop as duplicates or commit each outcome of a batch; note the journal
        moves, to be recorded once the outputs and the quarantine are on disk."""
        batch: list[FileOutcome] = []
        in_batch: dict[str, str] = {}
        for row, outcome in zip(rows, outcomes, strict=True):
            if outcome.status != FileStatus.WRITTEN or not outcome.temp or not outcome.output:
                self._quarantine(row, outcome.reason or outcome.status.value)
                continue
            digest = _digest(Path(outcome.temp))
            earlier = in_batch.get(outcome.output) or self.journal.earlier_output(
                outcome.output, row.id
            )
            if earlier is not None:
                Path(outcome.temp).unlink(missing_ok=True)
                if earlier == digest:
                    self._duplicate(row)
                else:
                    self._quarantine(row, CONFLICT)
                continue
            in_batch[outcome.output] = digest
            self._pending[outcome.input] = (row, digest)
            batch.append(outcome)
        self.committer.commit(batch)
        self._sync_output_folders()
        if any(move.state == State.QUARANTINED for move in self._moves):
            sync_folder(self.folder.quarantine)

    def _sync_output_folders(self) -> None:
        """Flush the folders the batch's outputs were renamed into (and those made for them),
        so that an output is on disk before the journal says it is."""
        folders: set[Path] = set()
        for move in self._moves:
            if move.output is None:
                continue
            folder = (self.target / move.output).parent
            while folder != self.target and folder not in folders:
                folders.add(folder)
                folder = folder.parent
        for folder in sorted(folders, key=lambda f: len(f.parts), reverse=True):
            sync_folder(folder)
        if folders:
            sync_folder(self.target)

    def _committed(self, outcome: FileOutcome) -> None:
        """The committer put ``outcome``'s file in place: move its instance on."""
        pending = self._pending.pop(outcome.input, None)
        if pending is None:
            return
        row, digest = pending
        if outcome.status != FileStatus.WRITTEN or not outcome.output:
            self._quarantine(row, outcome.reason or CONFLICT)  # the committer's own check
            return
        meta = read_file_meta_info(self.target / outcome.output)
        self._moves.append(
            Move(
                row.id,
                self.done_state,
                output=outcome.output,
                digest=digest,
                sop_class=str(meta.MediaStorageSOPClassUID),
                transfer_syntax=str(meta.TransferSyntaxUID),
            )
        )
        self._released.append(row)
        log.info("instance #%d pseudonymized: %s", row.id, outcome.output)

    def _duplicate(self, row: Row) -> None:
        """The same output as an earlier instance, byte for byte: not sent twice."""
        self._moves.append(Move(row.id, State.DUPLICATE))
        self._released.append(row)
        log.info("instance #%d is a duplicate of an earlier one: not sent again", row.id)

    def _quarantine(self, row: Row, reason: str) -> None:
        """Keep the received instance in the quarantine (a link first, so that a crash never
        loses it; the folder is flushed before the journal records it), then drop its spool
        copy."""
        try:
            os.link(self.folder.spool / row.spool, self.folder.quarantine / row.spool)
        except FileExistsError:
            pass  # linked before a crash
        except FileNotFoundError:
            reason = f"its spool copy is missing ({reason})"
        self._moves.append(Move(row.id, State.QUARANTINED, reason=reason))
        self._released.append(row)
        log.warning("instance #%d quarantined: %s", row.id, reason)


def worker_ready(index: int) -> int:
    """A task that does nothing: run once on each worker, so that they are started."""
    return index


def _digest(path: Path) -> str:
    """SHA-256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(4 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()
