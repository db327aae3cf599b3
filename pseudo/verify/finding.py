"""What the verification reports: something found in an output file (not to be confused with
:class:`pseudo.findings.Finding`, an event of processing)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class VerificationFinding:
    """Something found in an output file; ``value`` only when values were asked for."""

    output: str
    path: str
    check: str  # leak | kept-value | private-attribute | burned-in | file-name | reference
    kind: str
    severity: str = "leak"  # leak (fails the check) | warning
    value: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Plain data, without the value unless it was asked for."""
        data = asdict(self)
        if data["value"] is None:
            data.pop("value")
        return data
