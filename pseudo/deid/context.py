"""Everything the actions need while one dataset is processed."""

from __future__ import annotations

from dataclasses import dataclass, field

from keystore.keyring import Keyring
from pseudo.deid.clean import TextCleaner
from pseudo.deid.identity import Site
from pseudo.deid.uids import remap_uid
from pseudo.findings import Finding
from pseudo.policy.compiled import CompiledPolicy


@dataclass
class FileContext:
    """Per-dataset state: the patient's pseudonym and offset, caches and findings."""

    keyring: Keyring
    policy: CompiledPolicy
    pseudonym: str
    date_offset_days: int
    cleaner: TextCleaner | None = None
    findings: list[Finding] = field(default_factory=list)
    _uids: dict[str, str] = field(default_factory=dict)
    #: the UIDs of this dataset that were remapped, original -> new (for the linkage)
    remapped: dict[str, str] = field(default_factory=dict)
    #: the run's site (``pseudo run --site``): its name and Clinical Trial Site ID; None
    #: without one
    site: Site | None = None

    def remap(self, uid: str) -> str:
        """The remapped form of an instance UID (cached; standard UIDs unchanged)."""
        result = self._uids.get(uid)
        if result is None:
            result = remap_uid(self.keyring, uid)
            self._uids[uid] = result
        if result != uid:
            self.remapped[uid] = result
        return result

    def note(self, path: str, code: str, message: str) -> None:
        """Record a finding for the run report."""
        self.findings.append(Finding(path, code, message))
