"""The scan: a classical text-region finder (OpenCV morphology, no model), the gate of the
burned-in text detector (:mod:`pseudo.pixels.detect`).

Burned-in text is drawn at an end of the display range in thin strokes, so a top-hat and a
local median keep it and drop smooth anatomy; strokes are grouped into characters and
characters into blocks by size and spacing. An image with no block has no text the detector
could find, and costs the scan alone; the lines the OCR finds in the others are measured
against the scan's strokes and tightened to its ink (:class:`Scan`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

from pseudo.pixels.boxes import Box, around, merge_until_stable, runs
from pseudo.pixels.opencv import cv2

Gray8 = npt.NDArray[np.uint8]

# Images are scanned at most this large (longest side); text smaller than a few pixels after
# the reduction is below what any OCR reads, and the scan's cost stays bounded.
_SCAN_SIDE = 1024
# Smaller images are enlarged by a whole factor to at least this size before the scan.
SCAN_ENLARGE_BELOW = 300
_ENLARGE = cv2.INTER_NEAREST
# A character is this tall at least and at most, in scanned pixels.
_CHAR_MIN_HEIGHT = 4
CHAR_MAX_HEIGHT = 48
# Burned-in text is drawn at the end of the display range: its strokes are within this much
# of 255 (bright text) or of 0 (dark text) in the displayed image.
_EXTREME = 8
# Lines the OCR confirmed, in images the scan enlarges, are tightened to their ink: strokes
# within this much of the end of the range (an anti-aliased 4-5 pixel font keeps few pixels
# within _EXTREME, and lines tightened to those were cut to slivers of their rows). Measured
# on the burned-in corpus: 24 removed 4 more value boxes, 40 seven, 64 six and blanked more
# beside the text; on larger images it blanked 0.45 % more of the pixels outside the values.
_INK_EXTREME = 40
# A stroke stands out of its neighbourhood by this much (0-255: white top-hat or black-hat),
# and out of its local median (which, unlike the top-hat, follows edges) by this much.
_STROKE_CONTRAST = 60
_EDGE_CONTRAST = 10
# Characters closer than this (columns, rows of the scan) belong to one block of text.
_JOINER = (11, 9)
# A block of text: at least this many characters (or one wide word), this share of them of
# one height, at most this many lines, at least this wide for its line height.
_MIN_BLOCK_CHARS = 3
_SIMILAR_HEIGHTS = 0.75
_MAX_BLOCK_LINES = 12
_MIN_BLOCK_ASPECT = 2.0
# Lines are tightened to their strokes: rows of strokes closer than _ROW_GAP are one line; a
# line is cut where its strokes leave a gap of more than _SPLIT_GAP line heights (and
# _MIN_SPLIT pixels), wider than any word space.
_ROW_GAP = 1
_ROW_SHARE = 0.2
_COLUMN_STROKES = 1
_SPLIT_GAP = 2.0
_MIN_SPLIT = 8
# Each end of a line is covered by this many line heights beyond its last stroke (a faint
# character the scan lost). Measured on the burned-in corpus: 0.5 blanked 1.95 % of the
# pixels outside the value boxes, 0.25 1.85 %, 0 1.75 %, all with the same boxes removed.
_END_WIDTH = 0.25
# On images the scan enlarges, a character alone within _LONE_GAP line heights of a line's
# end, on its rows, is blanked with it (the OCR's detector leaves out a lone ``F`` after a
# name in a 4-pixel font): at most _LONE_WIDTH line heights wide, and its ink over _LONE_ROWS
# of the line's rows. Measured on the burned-in corpus: 3 more value boxes removed, 0.04 %
# more of the pixels outside them blanked; on larger images the same search only blanked
# bits of anatomy beside the lines (0.07 % of the pixels outside, no value box), so it is
# not done there.
_LONE_GAP = 6.0
_LONE_WIDTH = 1.5
_LONE_ROWS = 0.6


@dataclass(frozen=True)
class Line:
    """A candidate text line: inclusive box in full-resolution pixels, and its polarity."""

    x1: int
    y1: int
    x2: int
    y2: int
    bright: bool


@dataclass(frozen=True)
class Scan:
    """What the scan found: candidate blocks, the scanned copy (reduced or enlarged by
    ``scale``), the mask of its strokes, and the pixels of that copy that stand out of their
    neighbourhood (``_contrast``) for bright and for dark text."""

    lines: list[Line]
    scale: float
    image: Gray8
    mask: Gray8
    contrast: tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]

    # The two below are only needed once a line is found: most images have none.
    @cached_property
    def strokes(self) -> npt.NDArray[np.int64]:
        """The summed-area table of the stroke mask."""
        return np.asarray(cv2.integral(self.mask, sdepth=cv2.CV_64F), dtype=np.int64)

    @cached_property
    def ink(self) -> Gray8:
        """The mask lines are tightened to: the strokes, or on an enlarged image the pixels
        that stand out within _INK_EXTREME of either end of the range (the ink of
        anti-aliased and tiny fonts)."""
        if self.scale >= 1.0:
            return self.mask
        bright, dark = self.contrast
        near_end = (bright & (self.image >= 255 - _INK_EXTREME)) | (
            dark & (self.image <= _INK_EXTREME)
        )
        return near_end.view(np.uint8)

    def tightened(self, box: Box) -> list[Box]:
        """``box`` shrunk to the strokes inside it, line by line: each band of rows with
        strokes, cut where the strokes leave a gap wider than _SPLIT_GAP line heights, becomes
        the box around its strokes (full-resolution pixels). A line goes on past the box's
        left or right side while its strokes do (within that gap: a last word the OCR cut
        short, such as a lone ``F`` after a name). No stroke: ``box`` itself."""
        s = self.scale
        height, width = self.mask.shape
        x1 = min(width - 1, max(0, int(box.x1 / s)))
        y1 = min(height - 1, max(0, int(box.y1 / s)))
        x2 = min(width - 1, max(x1, int(np.ceil((box.x2 + 1) / s)) - 1))
        y2 = min(height - 1, max(y1, int(np.ceil((box.y2 + 1) / s)) - 1))
        window = self.ink[y1 : y2 + 1, x1 : x2 + 1]
        if not window.any():
            return [box]
        parts = []
        # rows of text hold many strokes, rows of noisy anatomy a few
        per_row = window.sum(axis=1, dtype=np.int64)
        for top, bottom in runs(per_row >= _ROW_SHARE * per_row.max(), _ROW_GAP):
            line = bottom - top + 1
            gap = max(_MIN_SPLIT, int(_SPLIT_GAP * line))
            left_end, right_end = max(0, x1 - gap), min(width - 1, x2 + gap)
            band = self.ink[y1 + top : y1 + bottom + 1, left_end : right_end + 1]
            per_column = band.sum(axis=0, dtype=np.int64)
            # a character at either end whose strokes the scan lost (faint, or merged into
            # the background) is covered by _END_WIDTH line heights more
            extra = int(np.ceil(_END_WIDTH * line))
            for left, right in runs(per_column >= _COLUMN_STROKES, gap):
                left, right = left + left_end, right + left_end
                if right < x1 or left > x2:
                    continue  # strokes beside the box, not of its line
                left, right = max(left_end, left - extra), min(right_end, right + extra)
                parts.append(
                    Box(
                        max(0, int(left * s)),
                        max(box.y1, int((y1 + top) * s)),
                        int(np.ceil((right + 1) * s)) - 1,
                        min(box.y2, int(np.ceil((y1 + bottom + 1) * s)) - 1),
                    )
                )
            if s < 1.0:
                parts += self._lone_characters(y1 + top, y1 + bottom, left_end, right_end, line)
        return parts

    def _lone_characters(
        self, top: int, bottom: int, left: int, right: int, line: int
    ) -> list[Box]:
        """Characters alone on the rows ``top..bottom`` of a line (scan pixels) beyond its
        ends ``left`` and ``right``, within _LONE_GAP line heights: a value set apart from the
        rest of its line, such as the sex after a name. A character here is a group of ink
        one or two characters wide (at most _LONE_WIDTH line heights) that spans most of the
        line's rows (_LONE_ROWS of them); its box (full-resolution pixels) grown as a line's
        end is."""
        s = self.scale
        width = self.ink.shape[1]
        far = int(_LONE_GAP * line)
        start, stop = max(0, left - far), min(width - 1, right + far)
        band = self.ink[top : bottom + 1, start : stop + 1]
        extra = int(np.ceil(_END_WIDTH * line))
        found = []
        for first, last in runs(band.sum(axis=0, dtype=np.int64) >= _COLUMN_STROKES, 1):
            first, last = first + start, last + start
            if left <= last and first <= right:
                continue  # part of the line itself
            rows = np.flatnonzero(band[:, first - start : last - start + 1].any(axis=1))
            if last - first + 1 > _LONE_WIDTH * line or rows[-1] - rows[0] + 1 < _LONE_ROWS * line:
                continue
            found.append(
                Box(
                    max(0, int((first - extra) * s)),
                    int(top * s),
                    int(np.ceil((last + extra + 1) * s)) - 1,
                    int(np.ceil((bottom + 1) * s)) - 1,
                )
            )
        return found

    def stroke_share(self, box: Box) -> float:
        """The share of ``box`` (full-resolution pixels) that the scan took for strokes."""
        height, width = self.strokes.shape[0] - 1, self.strokes.shape[1] - 1
        x1 = min(width, max(0, int(box.x1 / self.scale)))
        y1 = min(height, max(0, int(box.y1 / self.scale)))
        x2 = min(width, max(x1 + 1, int(np.ceil((box.x2 + 1) / self.scale))))
        y2 = min(height, max(y1 + 1, int(np.ceil((box.y2 + 1) / self.scale))))
        table = self.strokes
        total = table[y2, x2] - table[y1, x2] - table[y2, x1] + table[y1, x1]
        return float(total / max(1, (x2 - x1) * (y2 - y1)))


def scan_image(image: Gray8) -> Scan:
    """Scan ``image`` (2-D uint8, full resolution) for blocks of text-like strokes, on a copy
    reduced to _SCAN_SIDE or enlarged to SCAN_ENLARGE_BELOW; the blocks in full-resolution
    pixels."""
    check_image(image)
    rows, columns = image.shape
    scale = max(1.0, max(rows, columns) / _SCAN_SIDE)
    scan = image
    if scale > 1.0:
        size = (round(columns / scale), round(rows / scale))
        scan = np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)
    elif max(rows, columns) < SCAN_ENLARGE_BELOW:
        # small images carry fonts of 4-6 pixels, which the character shapes cannot tell
        # apart: enlarged (each pixel repeated, so values at the end of the range stay there)
        factor = int(np.ceil(SCAN_ENLARGE_BELOW / max(rows, columns)))
        scale = 1.0 / factor
        scan = np.asarray(
            cv2.resize(image, None, fx=factor, fy=factor, interpolation=_ENLARGE), dtype=np.uint8
        )
    lines = []
    median = _local_median(scan)
    contrast = (_contrast(scan, median, True), _contrast(scan, median, False))
    masks = []
    for bright, stands_out in zip((True, False), contrast, strict=True):
        mask = _stroke_mask(scan, stands_out, bright)
        masks.append(mask)
        for x1, y1, x2, y2 in _blocks(mask):
            lines.append(
                Line(
                    int(x1 * scale),
                    int(y1 * scale),
                    min(columns - 1, int(np.ceil((x2 + 1) * scale)) - 1),
                    min(rows - 1, int(np.ceil((y2 + 1) * scale)) - 1),
                    bright,
                )
            )
    return Scan(_merge_overlapping(lines), scale, scan, masks[0] | masks[1], contrast)


def _local_median(scan: Gray8) -> Gray8:
    """The median of each pixel's neighbourhood in ``scan`` (about 10 pixels across).

    A top-hat also keeps the rim of a curved edge of anatomy against air (the square does not
    fit in the curve); the local median follows edges, so text stands out of it and a rim
    does not. The median is taken on a half-size copy: 5 pixels there (OpenCV's fast path)
    span 10 here, and a 9-pixel median costs thirty times as much."""
    half = cv2.resize(scan, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    return np.asarray(
        cv2.resize(
            cv2.medianBlur(half, 5), (scan.shape[1], scan.shape[0]), interpolation=cv2.INTER_NEAREST
        ),
        dtype=np.uint8,
    )


def _contrast(scan: Gray8, median: Gray8, bright: bool) -> npt.NDArray[np.bool_]:
    """Where a pixel of ``scan`` could be a stroke of bright (or dark) text: it stands out of
    its neighbourhood (top-hat or black-hat, _STROKE_CONTRAST) and of its local median
    (``_local_median(scan)``, _EDGE_CONTRAST)."""
    side = CHAR_MAX_HEIGHT // 2
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (side, side))
    operation = cv2.MORPH_TOPHAT if bright else cv2.MORPH_BLACKHAT
    strokes = cv2.morphologyEx(scan, operation, kernel)
    # saturating: a pixel on the wrong side of its median gives 0
    local = cv2.subtract(scan, median) if bright else cv2.subtract(median, scan)
    return (strokes >= _STROKE_CONTRAST) & (local >= _EDGE_CONTRAST)


def _stroke_mask(scan: Gray8, contrast: npt.NDArray[np.bool_], bright: bool) -> Gray8:
    """1 where a pixel of ``scan`` is a stroke of text of that polarity, else 0: it stands
    out (``contrast``, from :func:`_contrast`) and is within _EXTREME of the end of the range."""
    extreme = scan >= 255 - _EXTREME if bright else scan <= _EXTREME
    return (contrast & extreme).view(np.uint8)


def _blocks(mask: Gray8) -> Iterator[tuple[int, int, int, int]]:
    """Text-like blocks of characters in a stroke mask (inclusive boxes of the scan)."""
    # Labelling costs about 6 ns a pixel, empty or not, and a mask is mostly empty: only its
    # strokes' bounding rectangle is labelled, with room for the joiner's reach around them.
    x, y, width, height = cv2.boundingRect(mask)
    if width == 0:
        return
    left, top = max(0, x - _JOINER[0]), max(0, y - _JOINER[1])
    right = min(mask.shape[1], x + width + _JOINER[0])
    bottom = min(mask.shape[0], y + height + _JOINER[1])
    for x1, y1, x2, y2 in _blocks_in(mask[top:bottom, left:right]):
        yield x1 + left, y1 + top, x2 + left, y2 + top


def _blocks_in(mask: Gray8) -> Iterator[tuple[int, int, int, int]]:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return
    widths = stats[1:, cv2.CC_STAT_WIDTH]
    heights = stats[1:, cv2.CC_STAT_HEIGHT]
    areas = stats[1:, cv2.CC_STAT_AREA]
    fill = areas / np.maximum(1, widths * heights)
    is_char = (
        (heights >= _CHAR_MIN_HEIGHT)
        & (heights <= CHAR_MAX_HEIGHT)
        & (widths <= 40 * heights)
        & (fill >= 0.12)
        # a full rectangle is a blob, unless it is a stem (I, l, 1) of a thin font
        & ((fill <= 0.8) | (widths <= 2))
    )
    chars = np.concatenate(([False], is_char))[labels].astype(np.uint8)
    if not chars.any():
        return
    # Characters are joined into blocks of text: across a word space horizontally, across a
    # line space vertically. A block is blanked whole, so a line whose characters merge into
    # a saturated background is still covered when its neighbours are found.
    joined = cv2.dilate(chars, cv2.getStructuringElement(cv2.MORPH_RECT, _JOINER))
    count, blocks, block_stats, _ = cv2.connectedComponentsWithStats(joined, connectivity=8)
    char_stats = stats[1:][is_char]
    centre_x = char_stats[:, cv2.CC_STAT_LEFT] + char_stats[:, cv2.CC_STAT_WIDTH] // 2
    centre_y = char_stats[:, cv2.CC_STAT_TOP] + char_stats[:, cv2.CC_STAT_HEIGHT] // 2
    block_of = blocks[centre_y, centre_x]
    for block in range(1, count):
        x, y, w, h, _area = block_stats[block]
        members = char_stats[block_of == block]
        if _looks_like_text(members, int(w), int(h)):
            yield int(x), int(y), int(x + w - 1), int(y + h - 1)


def _looks_like_text(members: npt.NDArray[np.int32], width: int, height: int) -> bool:
    """Whether a block's characters (their component statistics) read as lines of text:
    several of them, mostly of one height, in a block a few lines tall and wider than tall."""
    if len(members) == 0:
        return False
    heights = members[:, cv2.CC_STAT_HEIGHT]
    widths = members[:, cv2.CC_STAT_WIDTH]
    line = float(np.median(heights))
    if len(members) < _MIN_BLOCK_CHARS and widths.max() < 2 * line:
        return False
    similar = float(np.mean((heights >= line / 2) & (heights <= line * 2)))
    return (
        similar >= _SIMILAR_HEIGHTS
        and height <= _MAX_BLOCK_LINES * 2 * line + _JOINER[1]
        and width >= _MIN_BLOCK_ASPECT * min(height, 2 * line + _JOINER[1])
    )


def _merge_overlapping(lines: list[Line]) -> list[Line]:
    return merge_until_stable(
        sorted(lines, key=lambda line: (line.y1, line.x1, line.y2, line.x2, line.bright)),
        lambda a, b: a.x1 <= b.x2 and b.x1 <= a.x2 and a.y1 <= b.y2 and b.y1 <= a.y2,
        lambda line, other: Line(*around(line, other), other.bright),
    )


def check_image(image: Gray8) -> None:
    """Raise ValueError unless ``image`` is a 2-D uint8 image."""
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"expected a 2-D uint8 image, got {image.ndim}-D {image.dtype}")
