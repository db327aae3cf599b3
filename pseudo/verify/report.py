"""The result of verifying an output tree against its input tree."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pseudo.verify.finding import VerificationFinding


@dataclass
class TreeReport:
    """The result of verifying an output tree against its input tree."""

    findings: list[VerificationFinding] = field(default_factory=list)
    outputs: int = 0
    paired: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    @property
    def leaks(self) -> int:
        """Findings that fail the check."""
        return sum(1 for f in self.findings if f.severity == "leak")

    def to_json(self) -> dict[str, Any]:
        """Plain data for ``--json``; values only if they were asked for."""
        return {
            "outputs": self.outputs,
            "paired_with_input": self.paired,
            "leaks": self.leaks,
            "warnings": len(self.findings) - self.leaks,
            "findings": [f.to_json() for f in self.findings],
            "skipped_values": dict(self.skipped),
            "notes": self.notes,
        }
