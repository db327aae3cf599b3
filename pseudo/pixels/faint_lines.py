"""Lines of a small image's annotation that the detector missed beside the ones it found.

Images under 300 pixels (a 256 x 256 MR) carry their annotation in a 4-6 pixel font, in a
stack of lines of one font at one pitch. Where such text is drawn black over the dark noise of
the background (15-30 grey levels below it), neither the scan's contrast gate (relative to the
end of the display range) nor RapidOCR's detector sees it, while the lines of the same stack
drawn over anatomy are found. The gate here is relative to the local background instead:
*ink* is a pixel at the end of the range (within _EXTREME of 0, or of 255 for bright text)
with its local background (the brightest of a 5 x 5 neighbourhood of the 3 x 3 median, for
dark text) at least _CONTRAST beyond it. The noise of the corpus's MR backgrounds has almost
none of it (0.2 % of a band of dark noise), its lines of text 11-26 %.

Only next to a line found, and only where the ink makes a line of the same font: the band one
line pitch above or below it (and the next, while lines are found, up to _MAX_LINES) is a line
when its rows are as tall as the found line's and its ink fills _MIN_INK of it in several
characters (runs of columns, not the one run of an edge of anatomy or of a black border); and
one character of ink just past either end of a found line belongs to it (a short value the
detector left out, such as the sex after a name).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from pseudo.pixels.boxes import Box, overlaps, runs
from pseudo.pixels.opencv import cv2

Gray8 = npt.NDArray[np.uint8]

#: a found line this tall at most is one line of a 4-6 pixel font (the rows of its strokes)
_MAX_HEIGHT = 8
#: how far from the end of the range ink is (as the scan's strokes)
_EXTREME = 8
#: ink lies this far (grey levels) beyond its local background
_CONTRAST = 20
#: a band is a line when this share of it is ink, in at least _MIN_CHARACTERS runs of columns
#: (columns without ink between them), none of which is wider than _MAX_RUN line heights
_MIN_INK = 0.06
_MIN_CHARACTERS = 3
_MAX_RUN = 4.0
#: the rows of a line: those with this many pixels of ink (within a word's gap of the found
#: line's ends)
_ROW_PIXELS = 3
#: a line's height is within this factor of the found line's
_HEIGHT_RATIO = 1.6
#: the next line starts within this many line heights of the found one (its pitch, with the
#: space between the lines), and goes on sideways past the found line's ends across gaps of
#: at most _WORD_GAP line heights
_PITCH = 2.2
_WORD_GAP = 2.0
#: ink past a line's end is a character of it when it spans this share of the line's rows
_CHARACTER_ROWS = 0.6
_CHARACTER_WIDTH = 1.5
#: at most this many lines are added above and below the lines found
_MAX_LINES = 6


def faint_neighbours(image: Gray8, lines: list[Box]) -> list[Box]:
    """Lines of ``image`` beside ``lines`` (the detector's, tightened to their strokes) made
    of ink relative to the local background, dark or bright (see the module), and the found
    lines that go on by one character of it; inclusive boxes of the image, tightened to their
    ink. Found lines taller than _MAX_HEIGHT are not looked beside. Deterministic."""
    if not lines:
        return []
    inks = (_ink(image, bright=False), _ink(image, bright=True))
    found = sorted(set(lines))
    added: list[Box] = []
    for line in found:
        if line.height > _MAX_HEIGHT:
            continue  # lines merged into one box, or not of a small font
        for ink in inks:
            longer = _continued(ink, line)
            if longer is not None:
                added.append(longer)
            for step in (-1, 1):
                current = line
                for _ in range(_MAX_LINES):
                    nxt = _next_line(ink, current, step)
                    if nxt is None or any(overlaps(nxt, other) for other in found + added):
                        break
                    added.append(nxt)
                    current = nxt
    return sorted(added)


def _ink(image: Gray8, bright: bool) -> npt.NDArray[np.bool_]:
    """Where ``image`` is ink of that polarity: at the end of the range, and _CONTRAST beyond
    the brightest (darkest, for bright ink) of its neighbourhood, once the noise is smoothed."""
    gray = 255 - image if bright else image
    background = cv2.dilate(cv2.medianBlur(gray, 3), np.ones((5, 5), np.uint8))
    return np.asarray((gray <= _EXTREME) & (background.astype(np.int16) - gray >= _CONTRAST))


def _share(mask: npt.NDArray[np.bool_], box: Box) -> float:
    """The share of ``box`` that ``mask`` covers."""
    patch = mask[box.y1 : box.y2 + 1, box.x1 : box.x2 + 1]
    return float(patch.mean()) if patch.size else 0.0


def _columns(patch: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """Which columns of ``patch`` hold ink."""
    return np.asarray(patch.any(axis=0), dtype=bool)


def _next_line(ink: npt.NDArray[np.bool_], line: Box, step: int) -> Box | None:
    """The line of ink just above (``step`` -1) or below (+1) ``line``, or None."""
    rows, columns = ink.shape
    height = line.height
    reach = int(np.ceil(_PITCH * height))
    if step < 0:
        top, bottom = max(0, line.y1 - reach), line.y1 - 1
    else:
        top, bottom = line.y2 + 1, min(rows - 1, line.y2 + reach)
    if bottom - top + 1 < height:
        return None
    gap = max(1, int(_WORD_GAP * height))
    left_end, right_end = max(0, line.x1 - 2 * gap), min(columns - 1, line.x2 + gap)
    band = ink[top : bottom + 1, left_end : right_end + 1]
    # the run of rows of a line's height nearest the found line, a row of space between them
    # (a row of noise with a few pixels of ink is not a line)
    inked_rows = [
        (first + top, last + top)
        for first, last in runs(band.sum(axis=1) >= _ROW_PIXELS, 0)
        if height / _HEIGHT_RATIO <= last - first + 1 <= height * _HEIGHT_RATIO
        and (last + top < line.y1 - 1 if step < 0 else first + top > line.y2 + 1)
    ]
    if not inked_rows:
        return None
    first, last = inked_rows[-1] if step < 0 else inked_rows[0]
    strip = ink[first : last + 1]
    per_column = _columns(strip[:, left_end : right_end + 1])
    spans = [
        (a + left_end, b + left_end)
        for a, b in runs(per_column, gap)
        if a + left_end <= line.x2 and b + left_end >= line.x1
    ]
    if not spans:
        return None
    x1, x2 = min(a for a, _ in spans), max(b for _, b in spans)
    # the line goes on past the found line's ends while its ink does
    while x2 + 1 < columns:
        ahead = strip[:, x2 + 1 : min(columns, x2 + 1 + gap)].any(axis=0)
        if not ahead.any():
            break
        x2 = x2 + 1 + int(np.flatnonzero(ahead)[-1])
    while x1 > 0:
        behind = strip[:, max(0, x1 - gap) : x1].any(axis=0)
        if not behind.any():
            break
        x1 = max(0, x1 - gap) + int(np.flatnonzero(behind)[0])
    candidate = Box(x1, first, x2, last)
    characters = runs(_columns(strip[:, x1 : x2 + 1]), 0)
    widest = max(b - a + 1 for a, b in characters)
    if (
        _share(ink, candidate) < _MIN_INK
        or len(characters) < _MIN_CHARACTERS
        or widest > _MAX_RUN * height
    ):
        return None
    return candidate


def _continued(ink: npt.NDArray[np.bool_], line: Box) -> Box | None:
    """``line`` with one character of ink on its rows just past either end (within a word's
    gap), or None when there is none: a short value the detector left out beyond the strokes
    the scan saw, such as the sex after a name. A character is a run of ink columns at most
    _CHARACTER_WIDTH line heights wide whose ink spans _CHARACTER_ROWS of the line's rows."""
    columns = ink.shape[1]
    height = line.height
    gap = max(1, int(_WORD_GAP * height))
    strip = ink[line.y1 : line.y2 + 1]
    x1, x2 = line.x1, line.x2
    ahead = [
        (a + x2 + 1, b + x2 + 1)
        for a, b in runs(_columns(strip[:, x2 + 1 : min(columns, x2 + 1 + gap)]), 0)
    ]
    behind = [
        (a + max(0, x1 - gap), b + max(0, x1 - gap))
        for a, b in runs(_columns(strip[:, max(0, x1 - gap) : x1]), 0)
    ]
    if ahead and _character(strip[:, ahead[0][0] : ahead[0][1] + 1], height):
        x2 = ahead[0][1]
    if behind and _character(strip[:, behind[-1][0] : behind[-1][1] + 1], height):
        x1 = behind[-1][0]
    if (x1, x2) == (line.x1, line.x2):
        return None
    return Box(x1, line.y1, x2, line.y2)


def _character(patch: npt.NDArray[np.bool_], height: int) -> bool:
    """Whether the ink of ``patch`` (a line's rows) is one character: at most
    _CHARACTER_WIDTH line heights wide, spanning _CHARACTER_ROWS of its rows."""
    rows = np.flatnonzero(patch.any(axis=1))
    return bool(
        patch.shape[1] <= _CHARACTER_WIDTH * height
        and rows.size
        and rows[-1] - rows[0] + 1 >= _CHARACTER_ROWS * height
    )
