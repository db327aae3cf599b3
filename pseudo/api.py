"""The Python API: pseudonymize pydicom datasets in memory, e.g. from 3D Slicer or a PACS hook.

Example::

    import pydicom
    from pseudo.api import open_project

    with open_project("pseudo-vault", "lung-trial", passphrase=secret) as project:
        ds = pydicom.dcmread("in.dcm")
        result = project.pseudonymize(ds)      # a pseudonymized copy; ``ds`` is untouched
        project.store(result)                  # seal and commit its linkage records
        result.dataset.save_as(result.relative_path.replace("/", "_"), enforce_file_format=True)

The same keys give the same pseudonyms, UIDs and date offsets as ``pseudo run``, so files
pseudonymized here and on the command line belong to one consistent cohort. Both go through
the same per-file pipeline (:mod:`pseudo.pipeline`): a data set is verified for residual PHI
as a written file is, and :meth:`Project.run` is ``pseudo run`` itself (journal, resume,
crash-safe commit, run report and audit record)::

    with open_project("pseudo-vault", "lung-trial", passphrase=secret) as project:
        summary = project.run("/data/incoming", "/data/export", workers=4)
        print(summary.counts)
"""

from __future__ import annotations

import copy
from pathlib import Path
from types import TracebackType

from pydicom.dataset import Dataset

from keystore.identities import IdentityStore
from keystore.keyring import Keyring
from keystore.session import VaultSession
from keystore.vault import PolicyCheck
from pseudo.batch.project_policy import choose_policy
from pseudo.batch.report import RunSummary, inputs_folder, write_report
from pseudo.batch.runner import Runner
from pseudo.deid import anchors
from pseudo.deid.engine import PseudonymizedDataset
from pseudo.deid.identity import Site, read_fields
from pseudo.deid.trial import TrialValues, settings_of
from pseudo.pipeline.process import FileProcessor
from pseudo.policy import CompiledPolicy

__all__ = ["Project", "PseudonymizedDataset", "open_project"]


class Project:
    """An unlocked project with a compiled policy."""

    def __init__(
        self,
        session: VaultSession,
        keyring: Keyring,
        policy: CompiledPolicy,
        actor: str,
        policy_check: PolicyCheck | None = None,
        site: Site | None = None,
        trial: TrialValues | None = None,
    ) -> None:
        self._session = session
        self.keyring = keyring
        self.policy = policy
        #: what opening found of the project's recorded policy (recorded now, changed, same)
        self.policy_check = policy_check
        #: the site the data sets come from (the namespace of patient IDs without an issuer)
        self.site = site
        #: the clinical trial values written into every output (:mod:`pseudo.deid.trial`)
        self.trial = trial
        self.book = IdentityStore(session.engine).book(keyring)
        self._processor = FileProcessor(keyring, policy, site=site, book=self.book, trial=trial)
        self._actor = actor
        self._stored = 0

    def pseudonymize(self, ds: Dataset, *, in_place: bool = False) -> PseudonymizedDataset:
        """Pseudonymize ``ds`` (a deep copy unless ``in_place``).

        Under a policy with an anchor date, the patient's anchored offset is looked up (or
        recorded, from this dataset's study date, if the patient is new). The result is
        verified for residual PHI as ``pseudo run`` verifies a written file.
        Raises :class:`pseudo.findings.RejectedFile` if the dataset cannot be processed safely
        or the verification finds an identifying value in the result.
        """
        target = ds if in_place else copy.deepcopy(ds)
        processor = self._processor
        if self.policy.anchor is not None:
            day = anchors.study_date(target)
            scans = [anchors.Scan(read_fields(target), day.isoformat())] if day else []
            offsets = anchors.resolve(
                self.keyring,
                self.policy,
                self._session.linkage,
                scans,
                site=self.site,
                book=self.book,
            )
            processor = FileProcessor(
                self.keyring,
                self.policy,
                anchored_offsets=offsets,
                site=self.site,
                book=self.book,
                trial=self.trial,
            )
        return processor.pseudonymize_dataset(target)

    def run(
        self,
        source: str | Path,
        output: str | Path,
        *,
        workers: int = 1,
        verify: bool = True,
        report_dir: str | Path | None = None,
        allow_mixed_output: bool = False,
    ) -> RunSummary:
        """``pseudo run SOURCE OUTPUT``: pseudonymize a file or a tree into ``output``, with the
        journal (a re-run skips what is done), the crash-safe commit, the run report (in
        ``report_dir``, default ``OUTPUT.pseudo-run/``; its inputs file in the vault) and the
        run's audit record. An ``output`` holding another project's pseudonyms is refused
        unless ``allow_mixed_output``."""
        out = Path(output)
        runner = Runner(
            self.keyring,
            self.policy,
            self._session.linkage,
            Path(source),
            out,
            workers=workers,
            check=verify,
            audit=self._session.audit,
            actor=self._actor,
            allow_mixed_output=allow_mixed_output,
            policy_change=self.policy_check.to_json() if self.policy_check else None,
            inputs_folder=inputs_folder(self._session.vault.path, self.keyring.project),
            site=self.site,
            trial=self.trial,
        )
        summary = runner.run()
        reports = Path(report_dir) if report_dir else out.parent / f"{out.name}.pseudo-run"
        write_report(summary, reports)
        return summary

    def store(self, *results: PseudonymizedDataset) -> int:
        """Seal and commit the linkage records of ``results``; returns how many were new."""
        entries = [entry for result in results for entry in result.linkage]
        added = self._session.linkage.commit_batch(self.keyring, "api", entries, [])
        self._stored += len(results)
        return added

    def close(self) -> None:
        """Record the session in the audit log and release the database."""
        if self._stored:
            self._session.audit.record_api_session(
                self.keyring.project, self._stored, self.policy.sha256, actor=self._actor
            )
        self._session.close()

    def __enter__(self) -> Project:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_project(
    vault: str | Path,
    project: str,
    passphrase: str,
    *,
    policy: str | None = None,
    change_policy: bool = False,
    database_url: str | None = None,
    actor: str = "python-api",
    site: str | None = None,
    timepoint: str | None = None,
    timepoint_description: str | None = None,
) -> Project:
    """Open a vault, unlock ``project`` with the operator passphrase and compile ``policy``
    (default: the project's recorded policy, or ``default`` before its first use).

    The project's trial settings and ``timepoint`` fill the clinical trial attributes of
    every output, as ``pseudo run --timepoint`` does.

    The project remembers its policy: the first opening records it, and another policy later
    raises :class:`keystore.vault.PolicyChangedError` unless ``change_policy`` (audited), as
    ``pseudo run --change-policy`` does. ``site`` names the site the data come from, as
    ``pseudo run --site`` does (required when the project has several).
    """
    session = VaultSession(Path(vault), database_url)
    try:
        recorded = None if policy is not None else session.vault.project(project).policy
        compiled, record = choose_policy(policy, recorded)
        keyring, check = session.vault.unlock_for_run(
            project, passphrase, record, change_policy=change_policy, actor=actor
        )
        chosen = run_site(session, project, site)
        trial = TrialValues.of(
            settings_of(session.vault.project(project).trial),
            site=chosen,
            timepoint_id=timepoint,
            timepoint_description=timepoint_description,
        )
    except BaseException:
        session.close()
        raise
    return Project(session, keyring, compiled, actor, check, chosen, trial)


def run_site(session: VaultSession, project: str, site: str | None) -> Site | None:
    """The site of a run or an API session of ``project`` (see
    :meth:`keystore.vault.Vault.run_site`), as the pseudonymizer takes it."""
    entry = session.vault.run_site(project, site)
    return Site(entry.name, entry.site_id, entry.namespace) if entry is not None else None
