"""``pseudo diff`` in a terminal: one line per change, grouped by file, readable at 80 columns.

A file's header names B (long UID folders shortened when the path does not fit, with a legend
at the end); below it each change is ``  attribute  change  detail`` (and ``old -> new`` with
values). An attribute too long for its column goes on a line of its own, the change below it:
nothing is cut. Unchanged attributes are left out unless asked for.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from pseudo.review.diff import Change
from pseudo.review.diff_tree import Pair, TreeDiff
from pseudo.review.lines import wrap_at
from pseudo.review.report_data import UNCHANGED

#: The change column: as wide as the longest change name.
KIND_WIDTH = max(len(kind) for kind in ("removed", "emptied", "replaced", "remapped", "cleaned"))
#: Attribute columns never narrower than this (long names go on their own line instead).
MIN_ATTRIBUTE = 20
LEGEND = "'…' in a path: long folder names shortened (--json or --csv gives whole paths)"


def attribute_label(change: Change) -> str:
    """The attribute's path, with the private creator of a private attribute."""
    return f"{change.path} [{change.creator}]" if change.creator else change.path


def short_path(path: str, width: int) -> str:
    """``path`` as is when it fits ``width``, else with its long components shortened."""
    if len(path) <= width:
        return path
    parts = path.split("/")
    return "/".join(f"{p[:8]}…{p[-6:]}" if len(p) > 18 else p for p in parts)


def _value_text(change: Change) -> str:
    """``old -> new`` (values are only carried when asked for)."""
    if change.before is None and change.after is None:
        return ""
    before = "(absent)" if change.before is None else change.before or "(empty)"
    after = "(absent)" if change.after is None else change.after or "(empty)"
    return f"{before} -> {after}"


@dataclass
class TextDiff:
    """Lays a :class:`TreeDiff` out as lines for a ``width``-column terminal."""

    diff: TreeDiff
    width: int = 80
    show_all: bool = False
    shortened: bool = False

    def shown(self, pair: Pair) -> list[Change]:
        """The changes of ``pair`` to print."""
        if self.show_all:
            return pair.changes
        return [c for c in pair.changes if c.kind not in UNCHANGED]

    def lines(self) -> Iterator[str]:
        """Every file's header and changes."""
        total = len(self.diff.pairs)
        for number, pair in enumerate(self.diff.pairs, start=1):
            changes = self.shown(pair)
            yield self.header(pair, number, total, len(changes))
            yield from self.change_lines(changes)
        if self.shortened:
            yield LEGEND

    def header(self, pair: Pair, number: int, total: int, count: int) -> str:
        """``file 3/95 (A: input 00003), 412 changes`` then B's path on the same line if it fits."""
        what = "attributes" if self.show_all else "changes"
        head = f"file {number}/{total} (A: {pair.a}), {count} {what}:"
        room = self.width - len(head) - 1
        if len(pair.b) <= room:
            return f"{head} {pair.b}"
        path = short_path(pair.b, self.width - 2)
        self.shortened = self.shortened or path != pair.b
        return f"{head}\n  {path}"

    def change_lines(self, changes: list[Change]) -> Iterator[str]:
        """``  attribute  change  detail old -> new``, the attributes in one aligned column."""
        labels = [attribute_label(c) for c in changes]
        limit = max(MIN_ATTRIBUTE, self.width - KIND_WIDTH - 6 - 14)
        column = min(max((len(label) for label in labels), default=0), limit)
        for change, label in zip(changes, labels, strict=True):
            rest = " ".join(part for part in (change.detail, _value_text(change)) if part)
            tail = f"{change.kind:<{KIND_WIDTH}}  {rest}".rstrip()
            if len(label) <= column:
                yield f"  {label:<{column}}  {tail}"
            elif len(label) + len(tail) + 4 <= self.width:
                yield f"  {label}  {tail}"
            else:
                yield from wrap_at(label, ".", self.width, indent="  ")
                yield f"  {'':<{column}}  {tail}"


def summary_lines(diff: TreeDiff, *, show_all: bool = False) -> Iterator[str]:
    """Counts across files: ``attribute  change  count``, with ``[*]`` for any item."""
    counts = sorted(diff.summary().items())
    rows = [(path, kind, n) for (path, kind), n in counts if show_all or kind not in UNCHANGED]
    column = min(max((len(path) for path, _, _ in rows), default=9), 50)
    yield f"{'attribute':<{column}}  {'change':<{KIND_WIDTH}}  count"
    for path, kind, count in rows:
        if len(path) > column:
            yield path
            path = ""
        yield f"{path:<{column}}  {kind:<{KIND_WIDTH}}  {count}"
