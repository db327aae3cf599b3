"""Find burned-in text in one grayscale image, offline.

Two stages, so that an image without text costs little:

1. The scan (:mod:`pseudo.pixels.scan`, ``text_candidates``): a classical text-region finder
   (OpenCV morphology, no model). Most images without text end there, with no candidate.
2. RapidOCR (:mod:`pseudo.pixels.ocr`) on the images the scan passes: its text detector gives
   the lines to blank, its recognizer what they say (for verification).

The boxes are in the image's own (full-resolution) pixels, inclusive, ``source`` =
``detector:rapidocr``; docs/pixels.md gives the measurements behind the thresholds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pseudo.pixels.boxes import Box, around, merge_until_stable, overlaps, runs
from pseudo.pixels.faint_lines import faint_neighbours
from pseudo.pixels.ocr import OCR_OVERLAP, engine, ocr_bands, ocr_scale
from pseudo.pixels.scan import CHAR_MAX_HEIGHT, Gray8, Line, Scan, scan_image

DETECTOR_NAME = "rapidocr"
SOURCE = f"detector:{DETECTOR_NAME}"

# OCR must read at least this many letters or digits, with this confidence, for a line to count.
_MIN_CHARACTERS = 2
# The fewest rows a character can be drawn in (the smallest burned-in fonts seen are 4 pixels).
_LEGIBLE_ROWS = 4
# A detected line is burned-in text when this share of it is strokes (the scan's strokes);
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
# Pixels added around a line the verifier reads, in full-resolution pixels.
_LINE_MARGIN = 2
# Pixels added around a line found for blanking (the policy's margin comes on top of it).
# Measured on the burned-in corpus: 2 (as the verifier's) blanked 2.17 % of the pixels
# outside the value boxes, 1 blanks 1.9 % and removes as many value boxes.
_FOUND_MARGIN = 1


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
    bands of the image around them (``pseudo.pixels.ocr``), its thresholds lowered for recall.
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
    scan = scan_image(image)
    if not scan.lines:
        return Detection([], [], [])
    rows, columns = image.shape
    scale = ocr_scale(rows, columns)
    bands = ocr_bands(rows, scan.lines, scale)
    found = [_box(quad) for quad, _text in engine().detect(image, bands, scale)]
    lines = [
        box
        for box in found
        if scan.stroke_share(box) >= _MIN_STROKE_SHARE
        and _line_sized(scan, box)
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


def _line_sized(scan: Scan, box: Box) -> bool:
    """Whether the detector's line ``box`` (full-resolution pixels) is no taller than a line of
    the largest characters the scan groups (twice CHAR_MAX_HEIGHT scanned pixels) and no taller
    than twice its width: a patch of anatomy the OCR took for text often is. On an enlarged
    image, taller than a line of its small font (_SMALL_FONT_LINE) only when mostly strokes."""
    if box.height > 2 * CHAR_MAX_HEIGHT * scan.scale or box.height > 2 * box.width:
        return False
    # an enlarged image's text is a 4-6 pixel font: a taller line is anatomy unless it
    # is mostly strokes, as larger text is
    return (
        scan.scale >= 1.0
        or box.height <= _SMALL_FONT_LINE
        or scan.stroke_share(box) >= _TALL_LINE_STROKES
    )


def _colour_blob(box: Box, scan: Scan, coloured: npt.NDArray[np.bool_] | None) -> bool:
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
    return merge_until_stable(
        sorted(set(boxes)), _same_line, lambda a, b: Box(*around(a, b)), order=sorted
    )


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
    whole image (in pieces of bounded memory, :mod:`pseudo.pixels.ocr`), not only around the
    candidates: the verifier is there for what the detection left; lines where it read at least
    two letters or digits are returned. The text may be identifying: callers compare it, never
    log it.
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
    scale = ocr_scale(rows, columns)
    overlap = int(np.ceil(OCR_OVERLAP / scale.total))
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
    for quad, text in engine().read(image, regions, known or []):
        if sum(ch.isalnum() for ch in text) >= _MIN_CHARACTERS:
            box = _box(quad)
            lines.append(Box(box.x1, box.y1, box.x2, box.y2, source=SOURCE, text=text))
    return lines


def _covered_share(block: Line, lines: list[Box]) -> float:
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


def _candidate_lines(image: Gray8) -> list[Line]:
    return scan_image(image).lines
