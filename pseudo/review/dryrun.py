"""``pseudo run --dry-run``: what would change, per attribute, writing nothing.

Every file goes through the same per-file pipeline as a real run (read, pseudonymize, write,
verify), into a temporary folder that is thrown away; so a dry run and a run agree on every
file's fate.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from keystore.keyring import Keyring
from keystore.linkage import LinkageStore
from pseudo.batch.commit import SameOutputCheck
from pseudo.deid import anchors
from pseudo.deid.trial import TrialValues
from pseudo.io.listing import scan_tree
from pseudo.pipeline.outcome import FileStatus
from pseudo.pipeline.process import FileProcessor
from pseudo.policy.compiled import CompiledPolicy
from pseudo.review.diff import compare, summarize

#: A dry run's name for each fate of a file.
FATES = {
    FileStatus.WRITTEN: "would write",
    FileStatus.SKIPPED: "skip",
    FileStatus.QUARANTINED: "quarantine",
    FileStatus.FAILED: "quarantine",
}


@dataclass
class DryRun:
    """Counts of changes by attribute and kind, and the files' fates."""

    files: dict[str, int] = field(
        default_factory=lambda: {"would write": 0, "skip": 0, "quarantine": 0}
    )
    changes: dict[tuple[str, str], int] = field(default_factory=dict)
    quarantined: list[tuple[str, str]] = field(default_factory=list)
    #: each input's fate, by path, as a real run would record it
    outcomes: dict[str, FileStatus] = field(default_factory=dict)

    def count_changes(self, original: Dataset, pseudonymized: Dataset) -> None:
        """Add what changed between one input and its output."""
        for key, count in summarize(compare(original, pseudonymized)).items():
            self.changes[key] = self.changes.get(key, 0) + count

    def to_json(self) -> dict[str, Any]:
        """Plain data for ``--json``."""
        return {
            "files": self.files,
            "changes": [
                {"attribute": path, "change": kind, "count": count}
                for (path, kind), count in sorted(self.changes.items())
            ],
            "quarantined": [{"input": path, "reason": reason} for path, reason in self.quarantined],
        }


def dry_run(
    keyring: Keyring,
    policy: CompiledPolicy,
    store: LinkageStore,
    source: Path,
    *,
    check: bool = True,
    trial: TrialValues | None = None,
) -> DryRun:
    """Pseudonymize every file of ``source`` as a run would, keep nothing, count what would
    change. Anchored offsets are looked up, never recorded."""
    result = DryRun()
    listing = scan_tree(source.resolve())  # the files a run takes, named as a run names them
    paths = [Path(path) for path, _, _ in listing.files]
    for entry, _reason in listing.skipped:  # FIFOs, dangling links...: a run lists them too
        result.outcomes[entry] = FileStatus.SKIPPED
        result.files[FATES[FileStatus.SKIPPED]] += 1
    offsets = None
    if policy.anchor is not None:
        scans = [anchors.scan_file(str(p)) for p in paths]
        offsets = anchors.resolve(keyring, policy, store, scans, record=False)
    processor = FileProcessor(keyring, policy, check=check, anchored_offsets=offsets, trial=trial)
    same_output = SameOutputCheck(None)
    with tempfile.TemporaryDirectory(prefix="pseudo-dry-run-") as temp:
        for path in paths:
            outcome = processor.process(path, Path(temp), sync=False, inspect=result.count_changes)
            same_output.check(outcome)
            if outcome.temp:
                Path(outcome.temp).unlink()
            result.outcomes[str(path)] = outcome.status
            result.files[FATES[outcome.status]] += 1
            if outcome.status in (FileStatus.QUARANTINED, FileStatus.FAILED):
                result.quarantined.append((str(path), outcome.reason or ""))
    return result
