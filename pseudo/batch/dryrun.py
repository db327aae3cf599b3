"""``pseudo run --dry-run``: what would change, per attribute, writing nothing."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keystore.keyring import Keyring
from keystore.linkage import LinkageStore
from pseudo.batch.runner import discover
from pseudo.deid import anchors
from pseudo.deid.engine import Pseudonymizer
from pseudo.findings import RejectedFile
from pseudo.io.dicomio import NotDicom, read_dataset, sanitize
from pseudo.io.pydicom_internals import quiet_pydicom
from pseudo.policy.compiled import CompiledPolicy
from pseudo.review.diff import compare, summarize


@dataclass
class DryRun:
    """Counts of changes by attribute and kind, and the files' fates."""

    files: dict[str, int] = field(
        default_factory=lambda: {"would write": 0, "skip": 0, "quarantine": 0}
    )
    changes: dict[tuple[str, str], int] = field(default_factory=dict)
    quarantined: list[tuple[str, str]] = field(default_factory=list)

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


def dry_run(keyring: Keyring, policy: CompiledPolicy, store: LinkageStore, source: Path) -> DryRun:
    """Pseudonymize every file of ``source`` in memory and count what would change."""
    result = DryRun()
    paths = discover(source)
    engine = Pseudonymizer(keyring, policy)
    if policy.anchor is not None:
        scans = [anchors.scan_file(str(p)) for p in paths]
        engine = Pseudonymizer(
            keyring, policy, anchors.resolve(keyring, policy, store, scans, record=False)
        )
    for path in paths:
        with quiet_pydicom():
            try:
                original = read_dataset(path)
                pseudonymized = engine.pseudonymize(copy.deepcopy(original)).dataset
            except NotDicom:
                result.files["skip"] += 1
                continue
            except RejectedFile as exc:
                result.files["quarantine"] += 1
                result.quarantined.append((str(path), exc.reason))
                continue
            except Exception as exc:
                result.files["quarantine"] += 1
                result.quarantined.append(
                    (str(path), f"cannot process ({exc.__class__.__name__}: {sanitize(str(exc))})")
                )
                continue
            changes = compare(original, pseudonymized)
        result.files["would write"] += 1
        for key, count in summarize(changes).items():
            result.changes[key] = result.changes.get(key, 0) + count
    return result
