"""Find burned-in text in one grayscale image, offline.

Two stages, so that an image without text costs little:

1. The scan (``text_candidates``): a classical text-region finder (OpenCV morphology, no
   model). Burned-in text is drawn at an end of the display range in thin strokes, so a
   top-hat and a local median keep it and drop smooth anatomy; strokes are grouped into
   characters and characters into blocks by size and spacing. Most images without text end
   here, with no candidate.
2. RapidOCR (PP-OCR models shipped inside its wheel as ONNX, one thread, nothing downloaded)
   on the images the scan passes: its text detector gives the lines to blank, its recognizer
   what they say (for verification).

The boxes are in the image's own (full-resolution) pixels, inclusive, ``source`` =
``detector:rapidocr``; docs/pixels.md gives the measurements behind the thresholds.
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar

import cv2
import numpy as np
import numpy.typing as npt

from pseudo.pixels.boxes import Box, overlaps, runs
from pseudo.pixels.faint_lines import faint_neighbours

# OpenCV's own thread pool does not survive a fork: a worker forked from a process that has
# used it hangs at its next OpenCV call. Sequential from the start (before any OpenCV call),
# so that every process can fork workers whatever it ran before; the pool gives parallelism.
cv2.setNumThreads(0)

DETECTOR_NAME = "rapidocr"
SOURCE = f"detector:{DETECTOR_NAME}"

Gray8 = npt.NDArray[np.uint8]
T = TypeVar("T")

# Images are scanned at most this large (longest side); text smaller than a few pixels after
# the reduction is below what any OCR reads, and the scan's cost stays bounded.
_SCAN_SIDE = 1024
# Smaller images are enlarged by a whole factor to at least this size before the scan.
_SCAN_ENLARGE_BELOW = 300
_ENLARGE = cv2.INTER_NEAREST
# A character is this tall at least and at most, in scanned pixels.
_CHAR_MIN_HEIGHT = 4
_CHAR_MAX_HEIGHT = 48
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
# OCR must read at least this many letters or digits, with this confidence, for a line to count.
_MIN_CHARACTERS = 2
# The fewest rows a character can be drawn in (the smallest burned-in fonts seen are 4 pixels).
_LEGIBLE_ROWS = 4
_MIN_SCORE = 0.5
# RapidOCR's detector, lowered from its defaults (0.3, 0.5, 1.6) for recall, and images
# enlarged by a whole factor until their longest side reaches _UPSCALE_TO.
_DET_THRESHOLD = 0.2
_DET_BOX_THRESHOLD = 0.3
_DET_UNCLIP = 2.0
_UPSCALE_TO = 600
# Images the scan enlarges too (under _SCAN_ENLARGE_BELOW) carry fonts of 4-6 pixels: the
# detector finds more of them at four times their size than at three.
_UPSCALE_SMALL_TO = 1000
# Then, as RapidOCR did when it was given the whole image: brought down to this longest side,
# and up to this shortest side (the detector's scale, which its thresholds were measured at).
_OCR_MAX_SIDE = 2000
_OCR_MIN_SIDE = 736
# The OCR reads bands of the image around the scan's candidate blocks, not the whole image: its
# detector's activations take about 135 bytes per input pixel (140 MB for a 1024-pixel square).
# A band is every column of the rows of a block and _OCR_CONTEXT more above and below it (a
# block is often part of a line, and the detector needs the rest of it and the lines next to
# it); bands are read in pieces of at most _OCR_TILE_PIXELS (about 45 MB of activations), at
# least _OCR_MIN_BAND rows tall, overlapping by _OCR_OVERLAP rows (taller than a line of the
# largest characters the scan groups), so that every line is whole in one piece. Sizes in the
# detector's pixels (after the enlargement). The context was chosen on the burned-in corpus:
# 64 found 7 value boxes fewer than the whole image, 96 as many with fewer pixels blanked
# outside them, 128 two more but blanked 0.1 % more of the pixels outside them.
_OCR_TILE_PIXELS = 2048 * 160
_OCR_MIN_BAND = 160
_OCR_OVERLAP = 96
_OCR_CONTEXT = 96
# The detector's input is a multiple of this many pixels a side (padded, never resized).
_OCR_STRIDE = 32
# A detected line is burned-in text when this share of it is strokes (_EXTREME, contrast);
# a line over none of the scan's blocks with fewer than _MIN_OFF_BLOCK_SHARE, over pixels
# most of which (_COLOURED_SHARE) are coloured, is colour Doppler (``_colour_blob``).
_MIN_STROKE_SHARE = 0.02
# On an image the scan enlarges, a line taller than _SMALL_FONT_LINE pixels counts only with
# _TALL_LINE_STROKES of strokes. Measured on the 256 x 256 MR of the burned-in corpus: the
# detector's lines over text are 4-13 pixels tall; the 9 lines over anatomy that passed the
# share above were 10-38 pixels tall with 0.03-0.13 of strokes, and the 7 of them taller than
# 16 (0.03-0.06 of strokes) put the boxes in the centre of 4 images (the scorer pairs by it).
_SMALL_FONT_LINE = 16
_TALL_LINE_STROKES = 0.1
_MIN_OFF_BLOCK_SHARE = 0.06
_COLOURED_SHARE = 0.5
# A candidate block is blanked whole when the detector's lines cover this share of it.
_BLOCK_CONFIRMED = 0.3
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
# Pixels added around a line the verifier reads, in full-resolution pixels.
_LINE_MARGIN = 2
# Pixels added around a line found for blanking (the policy's margin comes on top of it).
# Measured on the burned-in corpus: 2 (as the verifier's) blanked 2.17 % of the pixels
# outside the value boxes, 1 blanks 1.9 % and removes as many value boxes.
_FOUND_MARGIN = 1


@dataclass(frozen=True)
class _Line:
    """A candidate text line: inclusive box in full-resolution pixels, and its polarity."""

    x1: int
    y1: int
    x2: int
    y2: int
    bright: bool


def text_candidates(image: Gray8) -> list[Box]:
    """Regions of ``image`` that look like lines of text, by shape alone (no OCR).

    Cheap (a few milliseconds for a 1024-pixel image): an empty list means the image carries no
    text the detector could find, and ``find_text`` stops there.
    """
    return [
        Box(line.x1, line.y1, line.x2, line.y2, source="detector:scan")
        for line in _candidate_lines(image)
    ]


@dataclass(frozen=True)
class Detection:
    """What the detector saw of one image: what to blank, and what it read to decide it."""

    #: the burned-in text to blank (see :func:`find_text`)
    boxes: list[Box]
    #: every line RapidOCR's detector found, blanked or not (image pixels)
    lines: list[Box]
    #: the bands of rows (first, last, inclusive; every column) the detector read
    rows: list[tuple[int, int]]


def find_text(image: Gray8, coloured: npt.NDArray[np.bool_] | None = None) -> list[Box]:
    """Boxes of the burned-in text in ``image`` (2-D uint8, full resolution), for blanking
    (the ``boxes`` of :func:`detect_text`)."""
    return detect_text(image, coloured).boxes


def detect_text(image: Gray8, coloured: npt.NDArray[np.bool_] | None = None) -> Detection:
    """The burned-in text of ``image`` (2-D uint8, full resolution), and what the detector read.

    When the scan finds candidates, RapidOCR's text detector (DBNet, nothing read) runs on
    bands of the image around them (``_ocr_windows``), its thresholds lowered for recall.
    Every line it finds that the scan saw strokes in (burned-in text is drawn at the end of
    the display range; anatomy the detector mistakes for text mostly is not) is to be blanked,
    and so is every candidate block those lines cover in part (a block holds the lines the
    detector missed between the ones it found); each grown by a margin: a missed character is
    a leak, an extra blank strip over a text line's background costs little. Deterministic: same
    image, same boxes. The lines found and the bands read are what the verification of the
    written image builds on (:func:`read_text_after`).

    ``coloured`` (the frame's coloured pixels, ``pseudo.pixels.frames.chromatic``; None for a
    grey image) keeps out the lines that are colour Doppler, not text (``_colour_blob``).

    On an image the scan enlarges (a 4-6 pixel font), the lines of the same annotation next to
    the ones found, drawn over a dark noisy background that neither the scan nor the detector
    sees text in, are blanked too (``pseudo.pixels.faint_lines``).
    """
    scan = _scan(image)
    if not scan.lines:
        return Detection([], [], [])
    rows, columns = image.shape
    scale = _ocr_scale(rows, columns)
    bands = _ocr_bands(rows, scan.lines, scale)
    found = [_box(quad) for quad, _text in _ocr().detect(image, bands, scale)]
    lines = [
        box
        for box in found
        if scan.stroke_share(box) >= _MIN_STROKE_SHARE
        and scan.line_sized(box)
        and not _colour_blob(box, scan, coloured)
    ]
    confirmed = [
        Box(block.x1, block.y1, block.x2, block.y2)
        for block in scan.lines
        if _covered_share(block, lines) >= _BLOCK_CONFIRMED
    ]
    tight = _merge_same_line([part for box in lines + confirmed for part in scan.tightened(box)])
    if scan.scale < 1.0:
        tight = _merge_same_line(tight + faint_neighbours(image, tight))
    boxes = sorted(
        Box(box.x1, box.y1, box.x2, box.y2, source=SOURCE).grown(_FOUND_MARGIN, columns, rows)
        for box in tight
    )
    return Detection(boxes, sorted(found), bands)


def _colour_blob(box: Box, scan: _Scan, coloured: npt.NDArray[np.bool_] | None) -> bool:
    """Whether the detector's line ``box`` is a patch of colour Doppler, not text: it lies
    over none of the scan's blocks, few of its pixels are strokes (under
    _MIN_OFF_BLOCK_SHARE: the dark gaps between the blobs of flow, turned grey), and most of
    its pixels (_COLOURED_SHARE) are coloured.

    Measured on the ultrasound images of the corpora with colour (pydicom's examples_jpeg2k,
    its copies in the canary corpus, WG04's US1_J2KI): the Doppler the detector took for a
    line has 0.023-0.034 of strokes and 57-75 % of its pixels coloured; their text lines over
    no block have 0.21-0.37 of strokes, and text over a coloured band 0.11 or more. Thin
    grey text has few strokes too (0.02-0.06 in dcm4che's US-PAL-8-10x-echo) but no colour.
    """
    if coloured is None or any(overlaps(box, block) for block in scan.lines):
        return False
    if scan.stroke_share(box) >= _MIN_OFF_BLOCK_SHARE:
        return False
    rows, columns = coloured.shape
    patch = coloured[
        max(0, box.y1) : min(rows, box.y2 + 1), max(0, box.x1) : min(columns, box.x2 + 1)
    ]
    return patch.size > 0 and float(patch.mean()) >= _COLOURED_SHARE


def _merge_same_line(boxes: list[Box]) -> list[Box]:
    """``boxes`` with those that overlap on one line (rows shared by half the lower one, or one
    inside the other) replaced by the box around them, until none do: the detector's lines and
    the scan's blocks find the same text twice."""
    return _merge_until_stable(
        sorted(set(boxes)), _same_line, lambda a, b: Box(*_around(a, b)), order=sorted
    )


def _around(a: Box | _Line, b: Box | _Line) -> tuple[int, int, int, int]:
    """The corners of the box around ``a`` and ``b``."""
    return min(a.x1, b.x1), min(a.y1, b.y1), max(a.x2, b.x2), max(a.y2, b.y2)


def _merge_until_stable(
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


def _same_line(a: Box, b: Box) -> bool:
    """Whether ``a`` and ``b`` overlap, one inside the other or sharing half the rows of the
    lower one."""
    x1, x2 = max(a.x1, b.x1), min(a.x2, b.x2)
    y1, y2 = max(a.y1, b.y1), min(a.y2, b.y2)
    if x1 > x2 or y1 > y2:
        return False
    inside = (x1, y1, x2, y2) in {(a.x1, a.y1, a.x2, a.y2), (b.x1, b.y1, b.x2, b.y2)}
    return inside or (y2 - y1 + 1) * 2 >= min(a.height, b.height)


def read_text(image: Gray8) -> list[Box]:
    """The text lines of ``image`` with what the OCR read in each (``Box.text``).

    Gated by the same scan as ``find_text`` (no candidate, nothing read), then RapidOCR on the
    whole image (in pieces of bounded memory, ``_ocr_pieces``), not only around the candidates:
    the verifier is there for what the detection left; lines where it read at least two letters
    or digits are returned. The text may be identifying: callers compare it, never log it.
    """
    if not _candidate_lines(image):
        return []
    rows, columns = image.shape
    whole = Box(0, 0, columns - 1, rows - 1)
    return sorted(box.grown(_LINE_MARGIN, columns, rows) for box in _read(image, [(whole, whole)]))


def read_text_after(image: Gray8, detection: Detection, blanked: Sequence[Box] = ()) -> list[Box]:
    """The text lines of ``image``, a written image whose input the detector read
    (``detection``: what it found there; ``blanked``: the regions of this frame blanked since),
    with what the OCR read in each, as ``read_text``.

    The same coverage as ``read_text`` for less: outside the blanked regions the image is the
    detector's input, so where the detector already ran RapidOCR's text detector (its bands
    of rows), the lines it found there are only read again (the recognizer, at the detector's
    scale), whether it blanked them or not; a line of which nothing is left outside the
    blanked regions that could hold a character is skipped. The rest of the image
    (rows the detector did not read) gets the text detector and the recognizer, as in
    ``read_text``, when the scan finds a candidate in the image.
    """
    rows, columns = image.shape
    known = [line for line in detection.lines if not _nothing_to_read(image, line, blanked)]
    scale = _ocr_scale(rows, columns)
    overlap = int(np.ceil(_OCR_OVERLAP / scale.total))
    read = np.zeros(rows, dtype=bool)
    for first, last in detection.rows:
        read[first : last + 1] = True
    regions = [
        (
            Box(0, max(0, y1 - overlap), columns - 1, min(rows - 1, y2 + overlap)),
            Box(0, y1, columns - 1, y2),
        )
        for y1, y2 in runs(~read, 0)
    ]
    if regions and not _candidate_lines(image):
        regions = []  # the gate of read_text, for the rows the detector did not read
    if not known and not regions:
        return []
    lines = _read(image, regions, known)
    return sorted(box.grown(_LINE_MARGIN, columns, rows) for box in lines)


def _nothing_to_read(image: Gray8, line: Box, blanked: Sequence[Box]) -> bool:
    """Whether the pixels of ``line`` outside the ``blanked`` regions (all of it, when none
    meets it) can hold no character: there are none, they have one value, or no column has
    ``_LEGIBLE_ROWS`` of them one above the other (the slivers of background that a line's box
    holds above and below the ink that was blanked)."""
    x1, y1 = max(0, line.x1), max(0, line.y1)
    x2, y2 = min(image.shape[1] - 1, line.x2), min(image.shape[0] - 1, line.y2)
    if x1 > x2 or y1 > y2:
        return True
    crop = image[y1 : y2 + 1, x1 : x2 + 1]
    left = np.ones(crop.shape, dtype=bool)
    for box in blanked:
        bx1, by1, bx2, by2 = max(box.x1, x1), max(box.y1, y1), min(box.x2, x2), min(box.y2, y2)
        if bx1 <= bx2 and by1 <= by2:
            left[by1 - y1 : by2 - y1 + 1, bx1 - x1 : bx2 - x1 + 1] = False
    rest = crop[left]
    if rest.size == 0 or rest.min() == rest.max():
        return True
    run = np.zeros(crop.shape[1], dtype=np.int32)
    for row in left:
        run = (run + 1) * row
        if run.max() >= _LEGIBLE_ROWS:
            return False
    return True


def _read(
    image: Gray8, regions: list[tuple[Box, Box]], known: list[Box] | None = None
) -> list[Box]:
    """RapidOCR's lines of ``image`` where it read characters (``source`` and ``text`` set):
    those its detector finds in the ``regions`` (window, core: a line is kept in the region
    whose core holds its centre), and the ``known`` lines."""
    lines = []
    for quad, text in _ocr().read(image, regions, known or []):
        if sum(ch.isalnum() for ch in text) >= _MIN_CHARACTERS:
            box = _box(quad)
            lines.append(Box(box.x1, box.y1, box.x2, box.y2, source=SOURCE, text=text))
    return lines


def _covered_share(block: _Line, lines: list[Box]) -> float:
    """The share of ``block``'s area that the OCR's ``lines`` cover."""
    mask = np.zeros((block.y2 - block.y1 + 1, block.x2 - block.x1 + 1), dtype=bool)
    for line in lines:
        x1, x2 = max(line.x1, block.x1), min(line.x2, block.x2)
        y1, y2 = max(line.y1, block.y1), min(line.y2, block.y2)
        if x1 <= x2 and y1 <= y2:
            mask[y1 - block.y1 : y2 - block.y1 + 1, x1 - block.x1 : x2 - block.x1 + 1] = True
    return float(mask.mean())


def _box(quad: npt.NDArray[np.float64]) -> Box:
    """The inclusive box around a detector's quadrilateral (full-resolution pixels)."""
    x1, y1 = np.floor(quad.min(axis=0)).astype(int)
    x2, y2 = np.ceil(quad.max(axis=0)).astype(int)
    return Box(int(x1), int(y1), int(x2), int(y2))


def _check_image(image: Gray8) -> None:
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"expected a 2-D uint8 image, got {image.ndim}-D {image.dtype}")


def _candidate_lines(image: Gray8) -> list[_Line]:
    return _scan(image).lines


@dataclass(frozen=True)
class _Scan:
    """What the scan found: candidate blocks, the scanned copy (reduced or enlarged by
    ``scale``), the mask of its strokes, and the pixels of that copy that stand out of their
    neighbourhood (``_contrast``) for bright and for dark text."""

    lines: list[_Line]
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

    def line_sized(self, box: Box) -> bool:
        """Whether ``box`` (full-resolution pixels) is no taller than a line of the largest
        characters the scan groups (twice _CHAR_MAX_HEIGHT scanned pixels) and no taller than
        twice its width: a patch of anatomy the OCR took for text often is. On an enlarged
        image, taller than a line of its small font (_SMALL_FONT_LINE) only when mostly
        strokes."""
        if box.height > 2 * _CHAR_MAX_HEIGHT * self.scale or box.height > 2 * box.width:
            return False
        # an enlarged image's text is a 4-6 pixel font: a taller line is anatomy unless it
        # is mostly strokes, as larger text is
        return (
            self.scale >= 1.0
            or box.height <= _SMALL_FONT_LINE
            or self.stroke_share(box) >= _TALL_LINE_STROKES
        )

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


def _scan(image: Gray8) -> _Scan:
    _check_image(image)
    rows, columns = image.shape
    scale = max(1.0, max(rows, columns) / _SCAN_SIDE)
    scan = image
    if scale > 1.0:
        size = (round(columns / scale), round(rows / scale))
        scan = np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)
    elif max(rows, columns) < _SCAN_ENLARGE_BELOW:
        # small images carry fonts of 4-6 pixels, which the character shapes cannot tell
        # apart: enlarged (each pixel repeated, so values at the end of the range stay there)
        factor = int(np.ceil(_SCAN_ENLARGE_BELOW / max(rows, columns)))
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
                _Line(
                    int(x1 * scale),
                    int(y1 * scale),
                    min(columns - 1, int(np.ceil((x2 + 1) * scale)) - 1),
                    min(rows - 1, int(np.ceil((y2 + 1) * scale)) - 1),
                    bright,
                )
            )
    return _Scan(_merge_overlapping(lines), scale, scan, masks[0] | masks[1], contrast)


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
    side = _CHAR_MAX_HEIGHT // 2
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
        & (heights <= _CHAR_MAX_HEIGHT)
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


def _merge_overlapping(lines: list[_Line]) -> list[_Line]:
    return _merge_until_stable(
        sorted(lines, key=lambda line: (line.y1, line.x1, line.y2, line.x2, line.bright)),
        lambda a, b: a.x1 <= b.x2 and b.x1 <= a.x2 and a.y1 <= b.y2 and b.y1 <= a.y2,
        lambda line, other: _Line(*_around(line, other), other.bright),
    )


@dataclass(frozen=True)
class _Scale:
    """How the OCR sees an image: enlarged by a whole ``factor`` (cubic), then resized by
    ``ratio`` (linear), the scale RapidOCR's detector was measured at on whole images."""

    factor: int
    ratio: float

    @property
    def total(self) -> float:
        """Detector pixels per image pixel."""
        return self.factor * self.ratio


def _ocr_scale(rows: int, columns: int) -> _Scale:
    """The scale at which the OCR reads an image of ``rows`` x ``columns``: small images carry
    small fonts, and the detector is trained on text about 10-40 pixels tall."""
    side = max(rows, columns)
    target = _UPSCALE_SMALL_TO if side < _SCAN_ENLARGE_BELOW else _UPSCALE_TO
    factor = max(1, int(np.ceil(target / side)))
    ratio = min(1.0, _OCR_MAX_SIDE / (side * factor))
    shortest = min(rows, columns) * factor * ratio
    if shortest < _OCR_MIN_SIDE:
        ratio *= _OCR_MIN_SIDE / shortest
    return _Scale(factor, ratio)


def _ocr_bands(rows: int, candidates: list[_Line], scale: _Scale) -> list[tuple[int, int]]:
    """The bands of rows the OCR reads (first, last, inclusive; every column): for each
    candidate block, its rows and _OCR_CONTEXT detector pixels above and below, bands that
    overlap joined."""
    context = int(np.ceil(_OCR_CONTEXT / scale.total))
    occupied = np.zeros(rows, dtype=bool)
    for line in candidates:
        occupied[max(0, line.y1 - context) : line.y2 + context + 1] = True
    return runs(occupied, 0)


def _ocr_windows(columns: int, bands: list[tuple[int, int]], scale: _Scale) -> list[Box]:
    """The parts of an image the OCR reads for ``bands`` (see ``_ocr_bands``): each band cut
    into pieces whose detector input stays within _OCR_TILE_PIXELS (the OCR's memory);
    inclusive boxes of the image."""
    return [piece for y1, y2 in bands for piece in _ocr_pieces(Box(0, y1, columns - 1, y2), scale)]


def _ocr_pieces(window: Box, scale: _Scale) -> list[Box]:
    """``window`` cut into pieces of full rows (and, for a window wider than a piece can be,
    of columns too) that the OCR reads within _OCR_TILE_PIXELS, overlapping by _OCR_OVERLAP."""
    return [piece for piece, _core in _ocr_pieces_and_cores(window, scale)]


def _ocr_pieces_and_cores(window: Box, scale: _Scale) -> list[tuple[Box, Box]]:
    """The pieces of ``_ocr_pieces``, each with its core: the part of it nearer its own middle
    than its neighbours' (the overlaps are cut at their middle), so that the cores tile
    ``window``. A line no taller than the overlap whose centre is in a piece's core is whole
    in that piece."""
    width = max(1, int(_OCR_TILE_PIXELS / _OCR_MIN_BAND / scale.total))
    stride = _OCR_STRIDE  # the input is padded to it: counted in the budget
    padded_width = -(-round(min(window.width, width) * scale.total) // stride) * stride
    rows = max(_OCR_MIN_BAND, _OCR_TILE_PIXELS // padded_width // stride * stride)
    height = max(1, int(rows / scale.total))
    overlap = int(np.ceil(_OCR_OVERLAP / scale.total))
    return [
        (Box(x1, y1, x2, y2), Box(cx1, cy1, cx2, cy2))
        for y1, y2, cy1, cy2 in _spans(window.y1, window.y2, height, overlap)
        for x1, x2, cx1, cx2 in _spans(window.x1, window.x2, width, overlap)
    ]


def _spans(first: int, last: int, size: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Pieces of ``size`` that cover ``first..last``, overlapping by ``overlap`` at least (the
    last one ends at ``last``): first and last index of each, and of its core."""
    if last - first + 1 <= size:
        return [(first, last, first, last)]
    step = max(1, size - overlap)
    starts = [*range(first, last - size + 1, step), last - size + 1]
    ends = [start + size - 1 for start in starts]
    # each overlap cut at its middle
    cuts = [(ends[i] + starts[i + 1]) // 2 for i in range(len(starts) - 1)]
    core_starts = [first, *(cut + 1 for cut in cuts)]
    core_ends = [*cuts, last]
    return list(zip(starts, ends, core_starts, core_ends, strict=True))


class _RapidOCR:
    """RapidOCR's detector and recognizer, one thread each, models from its own wheel; it
    reads the windows ``_ocr_windows`` gives, never a whole image at once."""

    def __init__(self) -> None:
        from rapidocr_onnxruntime import RapidOCR

        self._engine: Any = RapidOCR(
            intra_op_num_threads=1,
            inter_op_num_threads=1,
            use_cls=False,
            print_verbose=False,
            det_thresh=_DET_THRESHOLD,
            det_box_thresh=_DET_BOX_THRESHOLD,
            det_unclip_ratio=_DET_UNCLIP,
            # each window is given at the detector's scale already (``_Scale``), padded to its
            # stride: RapidOCR neither resizes nor letterboxes it
            det_limit_type="max",
            det_limit_side_len=1 << 30,
            max_side_len=1 << 30,
            min_height=0,
            width_height_ratio=-1,
        )
        self._lock = threading.Lock()

    def detect(
        self, image: Gray8, bands: list[tuple[int, int]], scale: _Scale
    ) -> list[tuple[npt.NDArray[np.float64], str]]:
        """Text quadrilaterals in the ``bands`` of rows of ``image`` (see ``_ocr_bands``) read
        at ``scale`` (full-resolution coordinates), nothing read."""
        windows = _ocr_windows(image.shape[1], bands, scale)
        return [found for window in windows for found in self._run(image, window, scale)]

    def read(
        self, image: Gray8, regions: list[tuple[Box, Box]], known: list[Box]
    ) -> list[tuple[npt.NDArray[np.float64], str]]:
        """Text quadrilaterals in the ``regions`` of the image (window, core) and what was read
        in each, with confidence ``_MIN_SCORE``; and what was read in each of the ``known``
        lines (image pixels). Each line a region's
        window holds is read once, in the piece whose core holds its centre (where it is
        whole), if that centre is in the region's core: the slivers of lines that a piece's
        edge cuts are not read, nor lines that belong to the next region."""
        rows, columns = image.shape
        scale = _ocr_scale(rows, columns)
        quads: list[npt.NDArray[np.float64]] = []
        crops: list[npt.NDArray[np.uint8]] = []
        with self._lock:
            for region, region_core in regions:
                for piece, core in _ocr_pieces_and_cores(region, scale):
                    colour, per_pixel = _ocr_input(image, piece, scale)
                    kept = [
                        (quad, placed)
                        for quad in (np.asarray(q, dtype=np.float32) for q in self._lines(colour))
                        if _centre_in(placed := _to_image(quad, piece, per_pixel), core)
                        and _centre_in(placed, region_core)
                    ]
                    if kept:
                        quads += [placed for _quad, placed in kept]
                        crops += self._engine.get_crop_img_list(colour, [q for q, _ in kept])
            for found in known:
                line = Box(
                    max(0, found.x1),
                    max(0, found.y1),
                    min(columns - 1, found.x2),
                    min(rows - 1, found.y2),
                )
                if line.x1 > line.x2 or line.y1 > line.y2:
                    continue
                colour, _ = _ocr_input(image, line, scale, pad=False)
                quads.append(_corners(line))
                crops.append(colour)
            # the lines of every piece at once: the recognizer batches them by shape
            _return_large_buffers(_MMAP_THRESHOLD_RECOGNIZER)
            try:
                recognized, _ = self._engine.text_rec(crops) if crops else ([], 0.0)
            finally:
                _return_large_buffers()
        return [
            (quad, str(text))
            for quad, (text, score, *_rest) in zip(quads, recognized, strict=True)
            if float(score) >= _MIN_SCORE
        ]

    def _run(
        self, image: Gray8, window: Box, scale: _Scale
    ) -> list[tuple[npt.NDArray[np.float64], str]]:
        colour, per_pixel = _ocr_input(image, window, scale)
        # a line cut by the top or bottom edge of the image is found when the detector sees
        # background beyond it: rows of the edge's median value are added there
        rows = image.shape[0]
        above = _OCR_STRIDE if window.y1 == 0 else 0
        below = _OCR_STRIDE if window.y2 == rows - 1 else 0
        if above or below:
            edge = int(np.median(image[[0, rows - 1]]))
            colour = np.ascontiguousarray(
                cv2.copyMakeBorder(
                    colour, above, below, 0, 0, cv2.BORDER_CONSTANT, value=(edge, edge, edge)
                )
            )
        with self._lock:
            found = self._lines(colour)
        shift = np.array([0.0, float(above)])
        return [(_to_image(np.maximum(quad - shift, 0.0), window, per_pixel), "") for quad in found]

    def _lines(self, colour: npt.NDArray[np.uint8]) -> list[npt.NDArray[Any]]:
        """The text quadrilaterals RapidOCR's detector finds in one OCR input (its pixels),
        nothing read; the caller holds the lock."""
        found, _ = self._engine(
            colour,
            use_cls=False,
            use_rec=False,
            box_thresh=_DET_BOX_THRESHOLD,
            unclip_ratio=_DET_UNCLIP,
        )
        return [np.asarray(quad) for quad in found or []]


def _ocr_input(
    image: Gray8, window: Box, scale: _Scale, *, pad: bool = True
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float64]]:
    """The OCR's input for ``window`` of ``image``: enlarged to ``scale``, padded to the
    detector's stride (edge rows and columns repeated; not with ``pad``=False, for the
    recognizer), in colour; and its pixels per image pixel (columns, rows)."""
    crop = image[window.y1 : window.y2 + 1, window.x1 : window.x2 + 1]
    scaled = crop
    if scale.factor > 1:
        scaled = np.asarray(
            cv2.resize(crop, None, fx=scale.factor, fy=scale.factor, interpolation=cv2.INTER_CUBIC),
            dtype=np.uint8,
        )
    if scale.ratio != 1.0:
        size = (
            max(1, round(scaled.shape[1] * scale.ratio)),
            max(1, round(scaled.shape[0] * scale.ratio)),
        )
        scaled = np.asarray(
            cv2.resize(scaled, size, interpolation=cv2.INTER_LINEAR), dtype=np.uint8
        )
    height, width = scaled.shape
    below, right = (-height % _OCR_STRIDE, -width % _OCR_STRIDE) if pad else (0, 0)
    padded = cv2.copyMakeBorder(scaled, 0, below, 0, right, cv2.BORDER_REPLICATE)
    colour = np.ascontiguousarray(cv2.cvtColor(padded, cv2.COLOR_GRAY2BGR), dtype=np.uint8)
    return colour, np.array([width / crop.shape[1], height / crop.shape[0]])


def _to_image(
    quad: npt.NDArray[np.floating[Any]], window: Box, per_pixel: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """A quadrilateral of the OCR's input for ``window`` in the image's pixels (clipped to the
    window: the padding is not the image)."""
    limit = np.array([window.width, window.height], dtype=np.float64)
    offset = np.array([window.x1, window.y1], dtype=np.float64)
    return np.minimum(np.asarray(quad, dtype=np.float64) / per_pixel, limit) + offset


def _centre_in(quad: npt.NDArray[np.float64], core: Box) -> bool:
    """Whether the centre of ``quad`` (image pixels) is in ``core``."""
    x, y = quad.mean(axis=0)
    return bool(core.x1 <= x < core.x2 + 1 and core.y1 <= y < core.y2 + 1)


def _corners(box: Box) -> npt.NDArray[np.float64]:
    """The quadrilateral of ``box`` (clockwise from its top left), as the detector gives one."""
    return np.array(
        [[box.x1, box.y1], [box.x2, box.y1], [box.x2, box.y2], [box.x1, box.y2]], dtype=np.float64
    )


#: the OCR engine of this process, with the process id it was made in
_ENGINE: tuple[int, _RapidOCR] | None = None


def _ocr() -> _RapidOCR:
    # One engine per process: a worker forked from a process that had one (a library caller,
    # a test process, the node) makes its own, never uses a copy whose lock or threads the
    # fork left behind. onnxruntime's thread pools are fixed to one thread above.
    global _ENGINE
    pid = os.getpid()
    if _ENGINE is None or _ENGINE[0] != pid:
        _return_large_buffers()
        _ENGINE = (pid, _RapidOCR())
    return _ENGINE[1]


#: glibc's mallopt parameter, and the sizes from which it maps each buffer on its own: its
#: default (128 kB) while the detector runs, and a size no buffer of the recognizer reaches
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 128 * 1024
_MMAP_THRESHOLD_RECOGNIZER = 64 * 1024 * 1024


def _return_large_buffers(threshold: int = _MMAP_THRESHOLD) -> None:
    """Make glibc's malloc map every buffer of ``threshold`` bytes or more on its own, and give
    it back to the system when it is freed.

    onnxruntime (its arena off) allocates the detector's activations with malloc, tens of MB
    each. glibc maps such a buffer on its own, but when one is freed it raises its threshold to
    that size, so the next ones come from the heap, where freed memory stays with the process
    and is fragmented: a worker's peak varied by 80 MB from run to run for the same frame.
    Fixing the threshold at its default turns that adjustment off (measured: the peak of reading
    a 512-pixel frame went from 230-275 MB to 182 MB, the same in every run). The recognizer
    allocates many buffers of a few hundred kB: mapping each of them made it four times slower,
    so it runs with a threshold above its buffers (``_MMAP_THRESHOLD_RECOGNIZER``), which its
    small inputs keep from growing the heap by much. Other C libraries are left as they are."""
    if platform.libc_ver()[0] != "glibc":
        return
    libc = ctypes.CDLL(None)
    libc.mallopt(_M_MMAP_THRESHOLD, threshold)
