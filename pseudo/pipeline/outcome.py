"""What happened to one input file."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from keystore.records import LinkageEntry
from pseudo.findings import Finding
from pseudo.verify.crossfile import PairEvidence
from pseudo.verify.finding import VerificationFinding


class FileStatus(StrEnum):
    """The fate of one input file (the values are those stored in journals and reports)."""

    #: pseudonymized and written (by a dry run: would be)
    WRITTEN = "written"
    #: done by an earlier run, input unchanged since
    UNCHANGED = "unchanged"
    #: not an instance to pseudonymize (not DICOM, a DICOMDIR): listed, never copied
    SKIPPED = "skipped"
    #: cannot be pseudonymized safely, or its output failed verification: never written
    QUARANTINED = "quarantined"
    #: the output could not be written (disk full, permissions): the run stops; never recorded
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class PixelSummary:
    """What the pixel step did to a written image: the rule that matched and how many regions
    it blanked by rule and by detection (no text and no coordinates: they may identify)."""

    rule: str | None
    ruled: int
    detected: int

    @property
    def redacted(self) -> bool:
        """Whether any region was blanked."""
        return bool(self.ruled or self.detected)


@dataclass(slots=True)
class FileOutcome:
    """What happened to one input file (the parent of a run keeps one per file for the run
    report, hence slots)."""

    input: str
    fingerprint: str
    status: FileStatus
    input_id: str = ""  # keyed digest of the input path: the run report names files by it
    output: str | None = None
    reason: str | None = None
    temp: str | None = None
    size: int = 0
    linkage: list[LinkageEntry] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    verification: list[VerificationFinding] = field(default_factory=list)
    evidence: PairEvidence | None = None
    skipped_checks: dict[str, int] = field(default_factory=dict)
    #: what the pixel step did (None: pixels not examined)
    pixels: PixelSummary | None = None
