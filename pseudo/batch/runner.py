"""Pseudonymize a tree of files: plan, hand files to the workers, commit, count, record.

Each file goes through the per-file pipeline (:mod:`pseudo.pipeline`) in a worker
(:mod:`pseudo.batch.worker`); the parent commits the outcomes in batches by the crash-safe
protocol of :mod:`pseudo.batch.commit` and writes the run's audit record when it ends.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keystore.actions import AuditOutcome
from keystore.errors import DatabaseError
from keystore.identities import IdentityBook, IdentityStore
from keystore.keyring import Keyring
from keystore.linkage import LinkageStore, journal_key
from pseudo.batch.commit import Committer
from pseudo.batch.discovery import check_output_owner, check_paths, fingerprint
from pseudo.batch.errors import OutputError
from pseudo.batch.identities import NAME_WARNING, settle
from pseudo.batch.pools import Pool, WorkerSetup, open_pool
from pseudo.batch.report import RunSummary, new_run_id, now
from pseudo.batch.worker import (
    Task,
    install_worker,
    lost_file,
    lost_scan,
    process_file,
    remove_worker,
)
from pseudo.deid import anchors
from pseudo.deid.anchors import scan_file
from pseudo.deid.identity import Site
from pseudo.deid.trial import TrialValues
from pseudo.findings import Finding
from pseudo.io import durable
from pseudo.io.listing import scan_tree
from pseudo.pipeline.outcome import FileOutcome, FileStatus
from pseudo.policy.compiled import CompiledPolicy
from pseudo.verify.crossfile import CrossFileCheck

if TYPE_CHECKING:
    from keystore.audit import AuditLog

#: Outcomes committed in one transaction.
COMMIT_EVERY = 64


class Runner:
    """Runs one ``pseudo run``; commits linkage and journal, renames outputs, counts.

    With ``audit``, the run leaves its records in the audit log (whatever the caller: the CLI,
    the Python API or a script), in the name of ``actor``: ``started`` before any file is
    released, and how it ended, with its counts.
    """

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
        *,
        audit: AuditLog | None = None,
        actor: str = "",
        allow_mixed_output: bool = False,
        policy_change: dict[str, Any] | None = None,
        inputs_folder: Path | None = None,
        site: Site | None = None,
        trial: TrialValues | None = None,
    ) -> None:
        self.keyring = keyring
        self.policy = policy
        self.trial = trial
        self.store = store
        self.check = check
        self.on_plan = on_plan
        self.scheduler = scheduler
        self.audit = audit
        self.actor = actor
        self.site = site
        self.identities = IdentityStore(store.engine)
        #: input path -> the warning its patient's identity gave (a name that differs)
        self.identity_warnings: dict[str, str] = {}
        self.references = CrossFileCheck()
        self.input, self.output = check_paths(input_path, output)
        check_output_owner(self.output, keyring.settings.prefix, allow_mixed=allow_mixed_output)
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
            policy_change=policy_change,
            inputs_folder=inputs_folder,
            trial=trial.report() if trial is not None else None,
        )
        # Local workers write on a filesystem this process can flush once per batch.
        sync_each_file = bool(scheduler) or not durable.can_sync_filesystem()
        #: why the run's audit record could not be written (the database failed), if it could not
        self.audit_error: DatabaseError | None = None
        self.committer = Committer(
            keyring,
            store,
            self.output,
            self.summary.run_id,
            self._record,
            sync_each_file=sync_each_file,
        )
        self.temp_dir = self.committer.temp_dir

    def plan(self) -> tuple[list[Task], list[FileOutcome]]:
        """Files to process, and files already done by an earlier run (unchanged)."""
        listing = scan_tree(self.input, exclude=self.output)
        trial_digest = self.trial.digest if self.trial is not None else ""
        printed = {
            path: (fingerprint(size, mtime, self.policy, trial_digest), size)
            for path, size, mtime in listing.files
        }
        keys = {path: journal_key(self.keyring, path) for path in printed}
        journal = self.store.journal_lookup(self.keyring, keys.values())
        todo, done = [], []
        for path, reason in listing.skipped:  # FIFOs, dangling links...: listed, never read
            done.append(
                FileOutcome(
                    path,
                    "",
                    FileStatus.SKIPPED,
                    reason=reason,
                    input_id=journal_key(self.keyring, path)[:16],
                )
            )
        for path, (print_, size) in printed.items():
            row = journal.get(keys[path])
            if (
                row is not None
                and row.status == FileStatus.WRITTEN
                and row.fingerprint == print_
                and row.output
                and (self.output / row.output).is_file()
            ):
                done.append(
                    FileOutcome(
                        path,
                        print_,
                        FileStatus.UNCHANGED,
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
        committer = self.committer
        try:
            self.output.mkdir(parents=True, exist_ok=True)
            committer.claim()
        except OSError as exc:
            raise OutputError(f"{self.output}: cannot write the output ({exc.strerror})") from exc
        setup = WorkerSetup(
            self.summary.run_id,
            self.keyring,
            self.policy,
            self.temp_dir,
            self.check,
            sync_each_file=committer.sync_each_file,
            site=self.site,
            book=self.identities.book(self.keyring),
            trial=self.trial,
        )
        batch: list[FileOutcome] = []
        pool: Pool | None = None
        try:
            self.store.start_run(self.summary.run_id, self.keyring.project, self.policy.name)
            self._audit_start()
            self._account_for_dead_runs()
            todo, done = self.plan()
            if self.on_plan is not None:
                self.on_plan(len(todo) + len(done))
            for outcome in done:
                self._record(outcome)
            pool = open_pool(
                setup, install_worker, remove_worker, self.workers, len(todo), self.scheduler
            )
            todo, refused = self._check_identities(todo, pool, setup)
            batch.extend(refused)
            for outcome in pool.ordered(process_file, todo, lost_file):
                if outcome.status == FileStatus.FAILED:
                    committer.commit_flushed()
                    finished, batch = batch, []
                    committer.commit(finished)  # what the workers finished before the failure
                    raise OutputError(
                        f"{self.output}: {outcome.reason}; the run stopped, nothing partial was "
                        "left: run the same command again once this is fixed"
                    )
                warning = self.identity_warnings.get(outcome.input)
                if warning is not None and outcome.status == FileStatus.WRITTEN:
                    outcome.findings.append(Finding("(0010,0010)", NAME_WARNING, warning))
                batch.append(outcome)
                if len(batch) >= COMMIT_EVERY:
                    # handed over before it is committed: a commit that Ctrl-C interrupts is
                    # never tried a second time (its files are gone; the next run redoes them)
                    full, batch = batch, []
                    committer.commit_later(full)
            committer.commit_flushed()
            last, batch = batch, []
            committer.commit(last)
            self.summary.reference_findings = self.references.findings()
            self.summary.status = "completed"
        except KeyboardInterrupt:
            committer.commit_flushed()
            committer.commit(batch)
            self.summary.status = "interrupted"
            raise
        except BaseException:
            self.summary.status = "failed"
            raise
        finally:
            committer.close()
            if pool is not None:
                pool.close()
            self.summary.finished = now()
            self.summary.new_linkage_records = committer.new_linkage_records
            try:
                self.store.finish_run(self.summary.run_id, self.summary.status, self.summary.counts)
            except DatabaseError:
                if self.summary.status != "failed":
                    raise  # else the first error (the database's too, most likely) is shown
            finally:
                committer.release()
                self._audit()
        return self.summary

    def _audit_start(self) -> None:
        """The run's first audit record, written before any file is released: a run killed
        later shows in the log as started and not finished."""
        if self.audit is not None:
            self.audit.record_run(
                self.summary.run_id,
                self.keyring.project,
                self.policy.sha256,
                AuditOutcome.STARTED,
                actor=self.actor,
            )

    def _account_for_dead_runs(self) -> None:
        """Close the runs into this output that died (killed, or their machine lost) with what
        they released, in the run table and the audit log: a killed run shows as started,
        then killed with its count, never as still running."""
        for dead in self.committer.dead_runs:
            released = self.store.close_dead_run(dead, self.keyring.project)
            if released is not None and self.audit is not None:
                self.audit.record_run(
                    dead,
                    self.keyring.project,
                    self.policy.sha256,
                    AuditOutcome.RUN_KILLED,
                    {"written": released},
                    actor=self.actor,
                )

    def _audit(self) -> None:
        """The run's last audit record: how it ended, with its counts. When the run failed
        because the database did, this may fail too: the first error is the one shown."""
        if self.audit is None:
            return
        try:
            self.audit.record_run(
                self.summary.run_id,
                self.keyring.project,
                self.policy.sha256,
                self.summary.status,
                self.summary.counts,
                actor=self.actor,
            )
        except DatabaseError as exc:
            self.audit_error = exc

    def _check_identities(
        self, todo: list[Task], pool: Pool, setup: WorkerSetup
    ) -> tuple[list[Task], list[FileOutcome]]:
        """A header-only pass over the batch: each file's patient is checked against the
        project's (:mod:`pseudo.batch.identities`) and, under an anchored policy, given its
        anchored offset. Returns the tasks to process and the files quarantined for an
        identity conflict (never processed)."""
        paths = [task.path for task in todo]
        scans = list(pool.ordered(scan_file, paths, lost_scan))
        verdicts = settle(
            self.keyring, self.identities, setup.book or IdentityBook(), self.site, paths, scans
        )
        self.identity_warnings = verdicts.warnings
        offsets: dict[str, int] = {}
        if self.policy.anchor is not None:
            days = [
                (verdicts.pseudonyms[path], scan.day)
                for path, scan in zip(paths, scans, strict=True)
                if scan is not None
                and scan.day
                and path in verdicts.pseudonyms
                and path not in verdicts.conflicts
            ]
            offsets = anchors.resolve_days(self.keyring, self.policy, self.store, days)
        tasks, refused = [], []
        for task in todo:
            reason = verdicts.conflicts.get(task.path)
            if reason is not None:
                refused.append(
                    FileOutcome(
                        task.path,
                        task.fingerprint,
                        FileStatus.QUARANTINED,
                        size=task.size,
                        reason=reason,
                    )
                )
                continue
            patient = verdicts.pseudonyms.get(task.path)
            anchored: tuple[tuple[str, int], ...] = ()
            if patient is not None and patient in offsets:
                anchored = ((patient, offsets[patient]),)
            tasks.append(
                Task(
                    task.path,
                    task.fingerprint,
                    task.size,
                    task.context,
                    anchored,
                    verdicts.checks[task.path],
                )
            )
        return tasks, refused

    def _record(self, outcome: FileOutcome) -> None:
        outcome.linkage = []
        if outcome.evidence is not None and outcome.output:
            self.references.add(outcome.evidence, outcome.output)
            outcome.evidence = None
        self.summary.outcomes.append(outcome)
        if self.on_outcome is not None:
            self.on_outcome(outcome)
