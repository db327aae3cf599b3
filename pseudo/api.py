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
pseudonymized here and on the command line belong to one consistent cohort.
"""

from __future__ import annotations

import copy
from pathlib import Path
from types import TracebackType

from pydicom.dataset import Dataset

from keystore.keyring import Keyring
from keystore.session import VaultSession
from pseudo.deid import anchors
from pseudo.deid.engine import PseudonymizedDataset, Pseudonymizer
from pseudo.deid.identity import read_identity
from pseudo.policy import CompiledPolicy, load_policy

__all__ = ["Project", "PseudonymizedDataset", "open_project"]


class Project:
    """An unlocked project with a compiled policy."""

    def __init__(
        self, session: VaultSession, keyring: Keyring, policy: CompiledPolicy, actor: str
    ) -> None:
        self._session = session
        self.keyring = keyring
        self.policy = policy
        self._engine = Pseudonymizer(keyring, policy)
        self._actor = actor
        self._stored = 0

    def pseudonymize(self, ds: Dataset, *, in_place: bool = False) -> PseudonymizedDataset:
        """Pseudonymize ``ds`` (a deep copy unless ``in_place``).

        Under a policy with an anchor date, the patient's anchored offset is looked up (or
        recorded, from this dataset's study date, if the patient is new).
        Raises :class:`pseudo.findings.RejectedFile` if the dataset cannot be processed safely.
        """
        target = ds if in_place else copy.deepcopy(ds)
        engine = self._engine
        if self.policy.anchor is not None:
            day = anchors.study_date(target)
            scans = [(read_identity(target).key, day.isoformat())] if day else []
            offsets = anchors.resolve(self.keyring, self.policy, self._session.linkage, scans)
            engine = Pseudonymizer(self.keyring, self.policy, offsets)
        return engine.pseudonymize(target)

    def store(self, *results: PseudonymizedDataset) -> int:
        """Seal and commit the linkage records of ``results``; returns how many were new."""
        entries = [entry for result in results for entry in result.linkage]
        added = self._session.linkage.commit_batch(self.keyring, "api", entries, [])
        self._stored += len(results)
        return added

    def close(self) -> None:
        """Record the session in the audit log and release the database."""
        if self._stored:
            self._session.audit.append(
                "pseudonymize.api",
                self._actor,
                "success",
                project=self.keyring.project,
                details={"datasets": self._stored, "policy": self.policy.sha256},
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
    policy: str = "default",
    database_url: str | None = None,
    actor: str = "python-api",
) -> Project:
    """Open a vault, unlock ``project`` with the operator passphrase and compile ``policy``."""
    compiled = load_policy(policy)
    session = VaultSession(Path(vault), database_url)
    try:
        keyring = session.vault.unlock_operator(project, passphrase)
    except BaseException:
        session.close()
        raise
    return Project(session, keyring, compiled, actor)
