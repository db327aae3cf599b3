"""A region of an image that carries (or may carry) burned-in text: the one shape that the
rules, the detector, the redaction and the verification exchange."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np
import numpy.typing as npt

T = TypeVar("T")


@dataclass(frozen=True, order=True)
class Box:
    """A rectangle of pixels, inclusive on both ends (the burned-in corpus's own convention):
    columns ``x1..x2`` and rows ``y1..y2`` of the full-resolution image.

    ``frame`` is the 0-based frame it was found in, or None for every frame (a rule).
    ``source`` says who asked for it: ``rule:<name>`` or ``detector:<name>``. ``text`` is what a
    detector read there, if anything: it may be identifying, so it is never logged or reported.
    """

    x1: int
    y1: int
    x2: int
    y2: int
    frame: int | None = None
    source: str = ""
    text: str = ""

    def grown(self, margin: int, columns: int, rows: int) -> Box:
        """This box with ``margin`` pixels added on every side, clipped to the image."""
        return Box(
            max(0, self.x1 - margin),
            max(0, self.y1 - margin),
            min(columns - 1, self.x2 + margin),
            min(rows - 1, self.y2 + margin),
            self.frame,
            self.source,
            self.text,
        )

    @property
    def width(self) -> int:
        """Columns covered."""
        return self.x2 - self.x1 + 1

    @property
    def height(self) -> int:
        """Rows covered."""
        return self.y2 - self.y1 + 1


class Rectangle(Protocol):
    """Anything with inclusive pixel bounds, as :class:`Box`."""

    @property
    def x1(self) -> int: ...
    @property
    def y1(self) -> int: ...
    @property
    def x2(self) -> int: ...
    @property
    def y2(self) -> int: ...


def overlaps(a: Rectangle, b: Rectangle) -> bool:
    """Whether ``a`` and ``b`` share a pixel."""
    return a.x1 <= b.x2 and b.x1 <= a.x2 and a.y1 <= b.y2 and b.y1 <= a.y2


def runs(occupied: npt.NDArray[np.bool_], gap: int) -> list[tuple[int, int]]:
    """The runs of True in ``occupied`` (first, last index), joined across gaps of at most
    ``gap`` False values."""
    indices = np.flatnonzero(occupied)
    if indices.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(indices) > gap + 1)
    starts = np.concatenate(([indices[0]], indices[breaks + 1]))
    ends = np.concatenate((indices[breaks], [indices[-1]]))
    return [(int(a), int(b)) for a, b in zip(starts, ends, strict=True)]


def around(a: Rectangle, b: Rectangle) -> tuple[int, int, int, int]:
    """The corners of the box around ``a`` and ``b``."""
    return min(a.x1, b.x1), min(a.y1, b.y1), max(a.x2, b.x2), max(a.y2, b.y2)


def merge_until_stable(
    items: list[T],
    joins: Callable[[T, T], bool],
    join: Callable[[T, T], T],
    order: Callable[[list[T]], list[T]] = list,
) -> list[T]:
    """``items`` with each one that ``joins`` one kept before it replaced by their ``join``,
    pass after pass (``order`` puts each pass's result in order for the next) until a pass
    joins nothing."""
    changed = True
    while changed:
        changed = False
        out: list[T] = []
        for item in items:
            for i, other in enumerate(out):
                if joins(item, other):
                    out[i] = join(item, other)
                    changed = True
                    break
            else:
                out.append(item)
        items = order(out)
    return items
