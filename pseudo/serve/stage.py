"""The node's pipeline stage: spooled instances through the per-file path of ``pseudo run``,
committed by the run's crash-safe protocol.

Each batch of waiting instances goes to the run's workers (:mod:`pseudo.batch.worker`, the one
per-file path), then to :class:`pseudo.batch.commit.Committer`: files on disk, linkage and the
run journal in one transaction, then each file renamed to its pseudonymous path in the target
(the outbox, or ``--output``); only then does the node's journal move the instance on and its
spool copy go. A crash anywhere redoes the instance from the spool: the output is the same
byte for byte and the linkage store keeps no duplicate record.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from pydicom.filereader import read_file_meta_info

from keystore.actions import AuditOutcome
from keystore.audit import AuditLog
from keystore.keyring import Keyring
from keystore.linkage import LinkageStore
from pseudo.batch.commit import Committer
from pseudo.batch.errors import OutputError
from pseudo.batch.pools import Pool, WorkerSetup, open_pool
from pseudo.batch.report import new_run_id
from pseudo.batch.worker import Task, install_worker, lost_file, process_file, remove_worker
from pseudo.io import durable
from pseudo.pipeline.outcome import FileOutcome, FileStatus
from pseudo.policy.compiled import CompiledPolicy
from pseudo.serve.folder import NodeFolder, sync_folder
from pseudo.serve.journal import Journal, Row, State

log = logging.getLogger("pseudo.serve")

#: Instances taken from the spool and committed together.
BATCH = 64

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
    ) -> None:
        self.keyring = keyring
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
            sync_each_file=not durable.can_sync_filesystem(),
        )
        self._pool: Pool | None = None
        #: the instances of the batch being committed, by spool path
        self._pending: dict[str, tuple[Row, str]] = {}
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
        setup = WorkerSetup(
            self.run_id,
            self.keyring,
            self.policy,
            self.committer.temp_dir,
            check=True,
            sync_each_file=self.committer.sync_each_file,
        )
        self._pool = open_pool(setup, install_worker, remove_worker, self.workers, self.workers)

    def close(self, counts: dict[str, int]) -> None:
        """Stop the workers, record the run's end with ``counts``, release the target."""
        if self.status == "running":  # the pipeline never ran (the node did not start)
            self.status = "failed"
        try:
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
        """Pseudonymize and commit the oldest waiting instances; return how many were taken
        (0: the spool is empty). Raises :class:`OutputError` when the target or the linkage
        store cannot be written (nothing of the batch is released; it is tried again)."""
        assert self._pool is not None, "start() first"
        rows = self.journal.rows(State.RECEIVED, BATCH)
        if not rows:
            return 0
        tasks = [Task(str(self.folder.spool / row.spool), "", 0, self.run_id) for row in rows]
        outcomes = list(self._pool.ordered(process_file, tasks, lost_file))
        failed = next((o for o in outcomes if o.status == FileStatus.FAILED), None)
        if failed is not None:
            for outcome in outcomes:
                if outcome.temp:
                    Path(outcome.temp).unlink(missing_ok=True)
            raise OutputError(f"{self.target}: {failed.reason}")
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
        try:
            self.committer.commit(batch)
        finally:
            self._pending.clear()
        return len(rows)

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
        self.journal.set_state(
            row.id,
            self.done_state,
            output=outcome.output,
            digest=digest,
            sop_class=str(meta.MediaStorageSOPClassUID),
            transfer_syntax=str(meta.TransferSyntaxUID),
        )
        log.info("instance #%d pseudonymized: %s", row.id, outcome.output)
        (self.folder.spool / row.spool).unlink(missing_ok=True)

    def _duplicate(self, row: Row) -> None:
        """The same output as an earlier instance, byte for byte: not sent twice."""
        self.journal.set_state(row.id, State.DUPLICATE)
        log.info("instance #%d is a duplicate of an earlier one: not sent again", row.id)
        (self.folder.spool / row.spool).unlink(missing_ok=True)

    def _quarantine(self, row: Row, reason: str) -> None:
        """Keep the received instance in the quarantine (a link first, so that a crash never
        loses it), record why, then drop its spool copy."""
        source = self.folder.spool / row.spool
        try:
            os.link(source, self.folder.quarantine / row.spool)
        except FileExistsError:
            pass  # linked before a crash
        except FileNotFoundError:
            reason = f"its spool copy is missing ({reason})"
        sync_folder(self.folder.quarantine)
        self.journal.set_state(row.id, State.QUARANTINED, reason=reason)
        log.warning("instance #%d quarantined: %s", row.id, reason)
        source.unlink(missing_ok=True)


def _digest(path: Path) -> str:
    """SHA-256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(4 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()
