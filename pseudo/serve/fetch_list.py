"""The accession list of ``pseudo fetch``: one accession number a line.

Blank lines and ``#`` comments are ignored. An accession number is a DICOM SH value: at most
16 characters, no backslash, no control character. A wildcard (``*`` or ``?``) is refused:
in a C-FIND it would match other patients' studies. Messages name a line by its number,
never by its value (an accession number identifies a patient's study).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pseudo.errors import PseudoError

#: The longest Accession Number (0008,0050): VR SH, 16 characters.
ACCESSION_MAX = 16
#: Characters that a C-FIND matches as wildcards.
WILDCARDS = frozenset("*?")


class AccessionListError(PseudoError):
    """The accession list cannot be read or holds a line that is not an accession number."""


@dataclass(frozen=True)
class Accession:
    """One accession number of the list, and the line it was read from (its public name)."""

    line: int
    value: str


def read_accession_list(path: Path) -> list[Accession]:
    """Every accession number of the file at ``path``, in order, each once (a repeated one
    keeps its first line); raise :class:`AccessionListError` for a malformed line."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise AccessionListError(f"{path}: the accession list is not UTF-8 text") from exc
    except OSError as exc:
        raise AccessionListError(
            f"{path}: cannot read the accession list ({exc.strerror})"
        ) from exc
    found: dict[str, Accession] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        value = raw.strip()
        if not value or value.startswith("#"):
            continue
        problem = _problem(value)
        if problem:
            raise AccessionListError(f"{path} line {number}: not an accession number ({problem})")
        found.setdefault(value, Accession(number, value))
    return list(found.values())


def _problem(value: str) -> str | None:
    """What makes ``value`` unusable as an accession number, or None."""
    if len(value) > ACCESSION_MAX:
        return f"more than {ACCESSION_MAX} characters"
    if "\\" in value:
        return "a backslash"
    if not value.isprintable():
        return "a control character"
    if WILDCARDS & set(value):
        return "a wildcard * or ?"
    return None
