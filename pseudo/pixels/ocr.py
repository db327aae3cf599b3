"""RapidOCR, as the burned-in text detector and the verifier use it: PP-OCR models shipped
inside its wheel as ONNX, one thread, nothing downloaded; one engine per process.

The OCR reads bands of an image (``ocr_bands``), cut into pieces of bounded memory, each
enlarged to the scale its detector was measured at (``ocr_scale``); quadrilaterals come back
in the image's own pixels.
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from pseudo.pixels.boxes import Box, runs
from pseudo.pixels.opencv import cv2
from pseudo.pixels.scan import SCAN_ENLARGE_BELOW, Gray8, Line

# OCR must read a line with this confidence for it to count.
_MIN_SCORE = 0.5
# RapidOCR's detector, lowered from its defaults (0.3, 0.5, 1.6) for recall, and images
# enlarged by a whole factor until their longest side reaches _UPSCALE_TO.
_DET_THRESHOLD = 0.2
_DET_BOX_THRESHOLD = 0.3
_DET_UNCLIP = 2.0
_UPSCALE_TO = 600
# Images the scan enlarges too (under SCAN_ENLARGE_BELOW) carry fonts of 4-6 pixels: the
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
# least _OCR_MIN_BAND rows tall, overlapping by OCR_OVERLAP rows (taller than a line of the
# largest characters the scan groups), so that every line is whole in one piece. Sizes in the
# detector's pixels (after the enlargement). The context was chosen on the burned-in corpus:
# 64 found 7 value boxes fewer than the whole image, 96 as many with fewer pixels blanked
# outside them, 128 two more but blanked 0.1 % more of the pixels outside them.
_OCR_TILE_PIXELS = 2048 * 160
_OCR_MIN_BAND = 160
OCR_OVERLAP = 96
_OCR_CONTEXT = 96
# The detector's input is a multiple of this many pixels a side (padded, never resized).
_OCR_STRIDE = 32


@dataclass(frozen=True)
class Scale:
    """How the OCR sees an image: enlarged by a whole ``factor`` (cubic), then resized by
    ``ratio`` (linear), the scale RapidOCR's detector was measured at on whole images."""

    factor: int
    ratio: float

    @property
    def total(self) -> float:
        """Detector pixels per image pixel."""
        return self.factor * self.ratio


def ocr_scale(rows: int, columns: int) -> Scale:
    """The scale at which the OCR reads an image of ``rows`` x ``columns``: small images carry
    small fonts, and the detector is trained on text about 10-40 pixels tall."""
    side = max(rows, columns)
    target = _UPSCALE_SMALL_TO if side < SCAN_ENLARGE_BELOW else _UPSCALE_TO
    factor = max(1, int(np.ceil(target / side)))
    ratio = min(1.0, _OCR_MAX_SIDE / (side * factor))
    shortest = min(rows, columns) * factor * ratio
    if shortest < _OCR_MIN_SIDE:
        ratio *= _OCR_MIN_SIDE / shortest
    return Scale(factor, ratio)


def ocr_bands(rows: int, candidates: list[Line], scale: Scale) -> list[tuple[int, int]]:
    """The bands of rows the OCR reads (first, last, inclusive; every column): for each
    candidate block, its rows and _OCR_CONTEXT detector pixels above and below, bands that
    overlap joined."""
    context = int(np.ceil(_OCR_CONTEXT / scale.total))
    occupied = np.zeros(rows, dtype=bool)
    for line in candidates:
        occupied[max(0, line.y1 - context) : line.y2 + context + 1] = True
    return runs(occupied, 0)


def _ocr_windows(columns: int, bands: list[tuple[int, int]], scale: Scale) -> list[Box]:
    """The parts of an image the OCR reads for ``bands`` (see ``ocr_bands``): each band cut
    into pieces whose detector input stays within _OCR_TILE_PIXELS (the OCR's memory);
    inclusive boxes of the image."""
    return [piece for y1, y2 in bands for piece in _ocr_pieces(Box(0, y1, columns - 1, y2), scale)]


def _ocr_pieces(window: Box, scale: Scale) -> list[Box]:
    """``window`` cut into pieces of full rows (and, for a window wider than a piece can be,
    of columns too) that the OCR reads within _OCR_TILE_PIXELS, overlapping by OCR_OVERLAP."""
    return [piece for piece, _core in _ocr_pieces_and_cores(window, scale)]


def _ocr_pieces_and_cores(window: Box, scale: Scale) -> list[tuple[Box, Box]]:
    """The pieces of ``_ocr_pieces``, each with its core: the part of it nearer its own middle
    than its neighbours' (the overlaps are cut at their middle), so that the cores tile
    ``window``. A line no taller than the overlap whose centre is in a piece's core is whole
    in that piece."""
    width = max(1, int(_OCR_TILE_PIXELS / _OCR_MIN_BAND / scale.total))
    stride = _OCR_STRIDE  # the input is padded to it: counted in the budget
    padded_width = -(-round(min(window.width, width) * scale.total) // stride) * stride
    rows = max(_OCR_MIN_BAND, _OCR_TILE_PIXELS // padded_width // stride * stride)
    height = max(1, int(rows / scale.total))
    overlap = int(np.ceil(OCR_OVERLAP / scale.total))
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
            # each window is given at the detector's scale already (``Scale``), padded to its
            # stride: RapidOCR neither resizes nor letterboxes it
            det_limit_type="max",
            det_limit_side_len=1 << 30,
            max_side_len=1 << 30,
            min_height=0,
            width_height_ratio=-1,
        )
        self._lock = threading.Lock()

    def detect(
        self, image: Gray8, bands: list[tuple[int, int]], scale: Scale
    ) -> list[tuple[npt.NDArray[np.float64], str]]:
        """Text quadrilaterals in the ``bands`` of rows of ``image`` (see ``ocr_bands``) read
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
        scale = ocr_scale(rows, columns)
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
        self, image: Gray8, window: Box, scale: Scale
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
    image: Gray8, window: Box, scale: Scale, *, pad: bool = True
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


def engine() -> _RapidOCR:
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
