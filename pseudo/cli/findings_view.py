"""Verification findings for a person to read: identical findings once, with their count.

``pseudo verify`` and the summary of ``pseudo run`` print one line per kind of finding
("12 files: Burned In Annotation is not NO: check the pixels (BurnedInAnnotation)") and under
it the first few output files, each on one line and shortened so that it fits a terminal; the
complete list is in ``--json`` and in the run report.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from rich.text import Text

from pseudo.cli.common import printable

#: Output files named under each kind of finding (the rest are counted).
FILES_SHOWN = 3
#: A path component longer than this (a UID) is shortened to its start and end.
LONG_PART = 24


class FindingLike(Protocol):
    """What is read of a finding (a :class:`pseudo.verify.finding.VerificationFinding`)."""

    output: str
    path: str
    check: str
    kind: str
    severity: str
    value: str | None


@dataclass
class FindingGroup:
    """Identical findings (same severity, check, kind, attribute and value) in several files."""

    severity: str
    check: str
    kind: str
    attribute: str
    value: str | None
    outputs: list[str] = field(default_factory=list)

    @property
    def files(self) -> int:
        """How many different output files have this finding."""
        return len(dict.fromkeys(self.outputs))


def group_findings(findings: Iterable[FindingLike]) -> list[FindingGroup]:
    """Identical findings grouped; leaks first, then the largest groups, then by kind."""
    groups: dict[tuple[str, str, str, str, str | None], FindingGroup] = {}
    for finding in findings:
        key = (finding.severity, finding.check, finding.kind, finding.path, finding.value)
        group = groups.setdefault(key, FindingGroup(*key))
        group.outputs.append(finding.output)
    return sorted(
        groups.values(), key=lambda g: (g.severity != "leak", -g.files, g.kind, g.attribute)
    )


def short_path(path: str) -> str:
    """An output path with each long part (a UID, a pseudonym) cut to its start and end:
    ``TRIAL-IHCXU2LBLOUAJCZX/2.25.6…73367127/...``, so that a path fits an 80-column line;
    the parts stay in order and each keeps its most distinctive end."""
    parts = path.split("/")
    return "/".join(part if len(part) <= LONG_PART else f"{part[:6]}…{part[-8:]}" for part in parts)


def _files(count: int) -> str:
    return "1 file" if count == 1 else f"{count} files"


def group_lines(groups: Iterable[FindingGroup], shown: int = FILES_SHOWN) -> Iterator[Text]:
    """For each group: a line with its count, severity and kind, then up to ``shown`` of its
    files, one a line, and how many more there are. Every value is shown, never obeyed."""
    for group in groups:
        style = "red" if group.severity == "leak" else "yellow"
        where = f"{printable(group.attribute)}; " if group.attribute else ""
        value = f" value {printable(group.value)!r}" if group.value is not None else ""
        yield Text.assemble(
            (f"{_files(group.files)}: ", style),
            f"{printable(group.kind)}{value} ({where}",
            (group.severity, style),
            ")",
        )
        files = list(dict.fromkeys(group.outputs))
        for output in files[:shown]:
            yield Text("    " + printable(short_path(output)), style="dim")
        if len(files) > shown:
            yield Text(f"    and {len(files) - shown} more", style="dim")
