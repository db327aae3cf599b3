"""``pseudo fetch``: pull studies from a PACS by accession number and pseudonymize them.

For each accession number of the list: C-FIND the studies that carry it, then their instances
(:mod:`pseudo.serve.fetch_scu`); skip the instances an earlier fetch into the same output
already wrote; retrieve the others (C-GET, or C-MOVE to a temporary SCP of ours) into the
vault owner's staging folder (:mod:`pseudo.serve.fetch_staging`); then pseudonymize the
staging folder with the batch runner, exactly as ``pseudo run`` would (the same journal,
commit, report and audit records), and delete each staged file whose output is in place.
A staged file the run did not write (quarantined) stays in the staging folder, private, for
the vault's owner to look at; the next fetch tries it again.

What is said of an accession number names its line in the list, never its value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keystore.keyring import Keyring
from keystore.linkage import LinkageStore, journal_key
from pseudo.batch.discovery import fingerprint
from pseudo.batch.runner import Runner
from pseudo.pipeline.outcome import FileOutcome, FileStatus
from pseudo.policy.compiled import CompiledPolicy
from pseudo.serve.fetch_list import Accession
from pseudo.serve.fetch_scu import (
    FetchError,
    Finder,
    FindFailed,
    Instance,
    get_instances,
    move_instances,
)
from pseudo.serve.fetch_staging import Staging
from pseudo.serve.peer import Peer

if TYPE_CHECKING:
    from keystore.audit import AuditLog
    from pseudo.batch.report import RunSummary

#: Outcomes whose output is in place: their staged file is no longer needed.
_DONE = (FileStatus.WRITTEN, FileStatus.UNCHANGED)


@dataclass
class LineResult:
    """What a fetch did for one line of the accession list."""

    line: int
    studies: int = 0
    instances: int = 0
    #: written by an earlier fetch into the same output: not fetched again
    already: int = 0
    fetched: int = 0
    #: found, asked for, and not received
    missing: int = 0
    written: int = 0
    quarantined: int = 0
    #: why nothing could be fetched for this line (no such study, the search failed)
    problem: str | None = None

    @property
    def needs_attention(self) -> bool:
        """Whether the line did not end with every instance found in the output."""
        return bool(self.problem or self.missing or self.quarantined)

    def to_json(self) -> dict[str, Any]:
        """The line's counts, for ``--json``."""
        return {
            "line": self.line,
            "studies": self.studies,
            "instances": self.instances,
            "already_fetched": self.already,
            "fetched": self.fetched,
            "missing": self.missing,
            "written": self.written,
            "quarantined": self.quarantined,
            "problem": self.problem,
        }


@dataclass
class FetchSummary:
    """A fetch: one result per accession line, the run that pseudonymized what arrived, and
    how many staged files were kept (not written: quarantined or skipped)."""

    lines: list[LineResult] = field(default_factory=list)
    run: RunSummary | None = None
    kept: int = 0

    @property
    def fetched(self) -> int:
        """Instances received from the PACS by this fetch."""
        return sum(line.fetched for line in self.lines)

    @property
    def needs_attention(self) -> bool:
        """Whether a line was not found, not fully received, or quarantined."""
        return any(line.needs_attention for line in self.lines) or self.kept > 0


@dataclass(frozen=True)
class Source:
    """Where a fetch pulls from: the PACS, our calling AE title, and, for C-MOVE, where our
    temporary storage SCP listens (None: C-GET)."""

    peer: Peer
    calling: str
    move_to: Peer | None = None


class Fetcher:
    """Runs one ``pseudo fetch``: find, retrieve into staging, pseudonymize, clean up.

    ``runner_options`` are handed to :class:`pseudo.batch.runner.Runner` as they are (workers,
    check, audit, actor, policy_change, inputs_folder, ...): the run is ``pseudo run``'s.
    """

    def __init__(
        self,
        keyring: Keyring,
        policy: CompiledPolicy,
        store: LinkageStore,
        source: Source,
        staging_root: Path,
        output: Path,
        *,
        on_outcome: Callable[[FileOutcome], None] | None = None,
        audit: AuditLog | None = None,
        **runner_options: Any,
    ) -> None:
        self.keyring = keyring
        self.policy = policy
        self.store = store
        self.source = source
        self.output = output
        self.staging = Staging(staging_root, keyring, output)
        self.on_outcome = on_outcome
        self.audit = audit
        self.runner_options = runner_options
        self.summary = FetchSummary()
        #: the run, once it is made (its summary and audit error are the caller's to show)
        self.runner: Runner | None = None

    def run(self, accessions: list[Accession]) -> FetchSummary:
        """Fetch and pseudonymize the studies of ``accessions``."""
        with self.staging:
            wanted = self._find(accessions)
            self._retrieve(wanted)
            self._pseudonymize(wanted)
        return self.summary

    def _find(self, accessions: list[Accession]) -> dict[str, tuple[Instance, LineResult]]:
        """C-FIND every line's instances; those an earlier fetch wrote are counted, not kept.
        Returns the instances to stage (or staged already), each with its line."""
        wanted: dict[str, tuple[Instance, LineResult]] = {}
        with Finder(self.source.peer, self.source.calling) as finder:
            for accession in accessions:
                result = LineResult(accession.line)
                self.summary.lines.append(result)
                try:
                    studies = finder.studies(accession.value)
                    instances = [i for study in studies for i in finder.instances(study)]
                except FindFailed as exc:
                    result.problem = str(exc)
                    continue
                result.studies, result.instances = len(studies), len(instances)
                if not studies:
                    result.problem = "no study has this accession number"
                for instance in instances:
                    if instance.sop_instance_uid not in wanted:
                        wanted[instance.sop_instance_uid] = (instance, result)
        done = self._written_earlier(list(wanted))
        for uid in done:
            wanted.pop(uid)[1].already += 1
        return wanted

    def _written_earlier(self, uids: list[str]) -> set[str]:
        """The SOP Instance UIDs whose staged file an earlier fetch into this output wrote
        under the same policy (the run's journal says so and the output file is there)."""
        keys = {uid: journal_key(self.keyring, str(self.staging.path_of(uid))) for uid in uids}
        journal = self.store.journal_lookup(self.keyring, keys.values())
        # what follows size and time in a run's fingerprint: the staged file is gone, so only
        # the policy (and whatever else the run adds after them) is compared
        policy_part = fingerprint(0, 0, self.policy).split(":", 2)[-1]
        done = set()
        for uid, key in keys.items():
            row = journal.get(key)
            if (
                row is not None
                and row.status == FileStatus.WRITTEN
                and row.fingerprint.split(":", 2)[-1] == policy_part
                and row.output
                and (self.output / row.output).is_file()
            ):
                done.add(uid)
        return done

    def _retrieve(self, wanted: dict[str, tuple[Instance, LineResult]]) -> None:
        """Retrieve what is not staged yet; count per line what arrived and what did not."""
        staged = self.staging.staged()
        todo = [
            instance
            for instance, _ in wanted.values()
            if self.staging.path_of(instance.sop_instance_uid) not in staged
        ]
        received: set[str] = set()
        if todo:
            source = self.source
            if source.move_to is None:
                received = get_instances(source.peer, source.calling, todo, self.staging.put)
            else:
                received = move_instances(
                    source.peer, source.calling, source.move_to, todo, self.staging.put
                )
        if self.staging.write_error is not None:
            raise FetchError(self.staging.write_error)
        asked = {i.sop_instance_uid for i in todo}
        for uid, (_, line) in wanted.items():
            if uid not in asked or uid in received:
                line.fetched += 1
            else:
                line.missing += 1

    def _pseudonymize(self, wanted: dict[str, tuple[Instance, LineResult]]) -> None:
        """Run the batch runner over the staging folder; delete what it wrote."""
        lines = {str(self.staging.path_of(uid)): line for uid, (_, line) in wanted.items()}

        def counted(outcome: FileOutcome) -> None:
            line = lines.get(outcome.input)
            if line is not None:
                if outcome.status in _DONE:
                    line.written += 1
                elif outcome.status == FileStatus.QUARANTINED:
                    line.quarantined += 1
            if self.on_outcome is not None:
                self.on_outcome(outcome)

        self.runner = Runner(
            self.keyring,
            self.policy,
            self.store,
            self.staging.files,
            self.output,
            on_outcome=counted,
            audit=self.audit,
            **self.runner_options,
        )
        try:
            self.summary.run = self.runner.run()
        finally:
            run = self.runner.summary
            for outcome in run.outcomes:
                if outcome.status in _DONE:
                    self.staging.remove(Path(outcome.input))
            self.summary.kept = len(self.staging.staged())
