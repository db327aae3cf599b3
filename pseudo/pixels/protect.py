"""The pixel step of the per-file path: which images, the rule's boxes, the detector's boxes,
whether they can be removed with confidence, the redaction, and what the output says of it.

Called by :mod:`pseudo.pipeline.process` between pseudonymization and writing. An image whose
text cannot be removed with confidence raises :class:`~pseudo.findings.RejectedFile` (the file
is quarantined, never written half-done).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from pseudo.findings import RejectedFile
from pseudo.io.dicomio import PixelSpan
from pseudo.pixels.boxes import Box
from pseudo.pixels.detect import Detection, detect_text
from pseudo.pixels.frames import chromatic, display_gray8, iter_frames
from pseudo.pixels.graphics import remove_icons_and_overlays
from pseudo.pixels.redact import Redaction, redact
from pseudo.pixels.rules import PixelPlan
from pseudo.policy.compiled import PIXELS_OFF_METHOD
from pseudo.policy.pixels import PixelPolicy

#: What De-identification Method says of an image with text blanked, and of one without.
BLANKED = "burned-in text blanked: "
NOTHING_FOUND = "pixels examined: no burned-in text found"
#: CID 7050 "Clean Pixel Data Option" (DCM 113101).
CLEAN_PIXEL_DATA = ("113101", "DCM", "Clean Pixel Data Option")
#: Pixels around a detected box whose spread tells background from anatomy (anatomy_loss).
RING = 3
#: A ring pixel is flat background when it differs from the ring's median by at most this
#: (on the 0-255 display scale the detector sees).
FLAT_TOLERANCE = 12
#: Palette Color Lookup Table Descriptors, Data and Segmented Data (red, green, blue).
_PALETTE_TAGS = (
    *range(0x00281101, 0x00281104),
    *range(0x00281201, 0x00281204),
    *range(0x00281221, 0x00281224),
)
_VIEW_KEYWORDS = frozenset(
    {"PhotometricInterpretation", "SamplesPerPixel", "BitsStored", "PixelRepresentation"}
)


@dataclass
class PixelResult:
    """What the pixel step did to one file."""

    #: whether the pixels were examined (False: --pixels off, or no pixel data)
    examined: bool = False
    #: the pixel rule that matched, if any
    rule: str | None = None
    #: boxes blanked because a rule names them
    ruled: list[Box] = field(default_factory=list)
    #: boxes blanked because the detector found text there
    detected: list[Box] = field(default_factory=list)
    #: what the detector saw of each frame, in frame order (empty when it did not run): the
    #: verification of the written image reads the lines it found again, and the rest
    detections: list[Detection] = field(default_factory=list)
    #: the new pixel data, when the pixels changed (the caller applies it to the data set,
    #: writes it, then discards it)
    redaction: Redaction | None = None

    @property
    def redacted(self) -> bool:
        """Whether any region was blanked."""
        return bool(self.ruled or self.detected)

    def method(self) -> str:
        """The De-identification Method value that says what was done (at most 64
        characters, an LO); ``pseudo inspect`` reads it back (see :func:`pixel_state`)."""
        if not self.redacted:
            return NOTHING_FOUND
        parts = []
        if self.ruled:
            parts.append(f"{len(self.ruled)} by rule {self.rule}")
        if self.detected:
            parts.append(f"{len(self.detected)} by detection")
        return (BLANKED + ", ".join(parts))[:64]

    def notes(self) -> list[str]:
        """What the redaction says it changed besides the boxes (a lossy source written in
        a lossless syntax), as De-identification Method values."""
        return [note[:64] for note in self.redaction.notes] if self.redaction else []


def pixel_state(ds: Dataset) -> str | None:
    """What the pixel step did to a written file, read back from its De-identification
    Method: ``rule:NAME``, ``detection``, ``rule:NAME+detection``, ``clean`` (examined, no
    text), ``off`` (--pixels off) or ``not examined``; None for a file that is not an image
    (no Rows nor pixel data: ``ds`` may have been read without its pixel data)."""
    if "Rows" not in ds and not has_pixels(ds, None):
        return None
    method = ds.get("DeidentificationMethod", None)
    values = [str(v) for v in method] if isinstance(method, MultiValue | list) else [str(method)]
    for value in values:
        if value.startswith(BLANKED):
            parts = []
            ruled = re.search(r"by rule (\S+)", value)
            if ruled:
                parts.append(f"rule:{ruled.group(1).rstrip(',')}")
            if "by detection" in value:
                parts.append("detection")
            return "+".join(parts)
        if value == NOTHING_FOUND:
            return "clean"
        if value == PIXELS_OFF_METHOD:
            return "off"
    return "not examined"


def has_pixels(ds: Dataset, pixels: PixelSpan | None) -> bool:
    """Whether the file carries an image (top-level Pixel Data, Float or Double Float)."""
    return pixels is not None or any(t in ds for t in (0x7FE00008, 0x7FE00009, 0x7FE00010))


def protect(
    plan: PixelPlan,
    out: Dataset,
    pixels: PixelSpan | None,
    policy: PixelPolicy,
    temp_dir: Path,
) -> PixelResult:
    """Find and blank the burned-in text of the pseudonymized ``out`` (whose pixel data lies
    at ``pixels`` in the input, or in ``out`` itself), as ``plan`` (decided from the input's
    header) says; mark what was done in ``out``. Raise RejectedFile when text cannot be
    removed with confidence."""
    result = PixelResult()
    if not policy.enabled:
        return result
    remove_icons_and_overlays(out)
    if not has_pixels(out, pixels):
        return result
    if plan.quarantine is not None:
        raise RejectedFile(f"pixel rule {plan.rule.name if plan.rule else ''}: {plan.quarantine}")
    result.examined = bool(plan.boxes) or plan.detect
    if not result.examined:
        return result
    result.rule = plan.rule.name if plan.rule is not None else None
    result.ruled = list(plan.boxes)
    if plan.detect:
        result.detections = detect(out, pixels, policy)
        result.detected = [box for seen in result.detections for box in seen.boxes]
    if result.redacted:
        result.redaction = redact(
            out, pixels, result.ruled + result.detected, temp_dir, policy.margin
        )
    try:
        _mark(out, result)
    except BaseException:
        if result.redaction is not None:
            result.redaction.discard()  # the caller never sees it: the spool goes now
        raise
    return result


def detect(out: Dataset, pixels: PixelSpan | None, policy: PixelPolicy) -> list[Detection]:
    """What the detector sees in every frame, its boxes tagged with their frame; RejectedFile
    for text that cannot be removed with confidence (over anatomy, or too much of it)."""
    found: list[Detection] = []
    view = detection_view(out)
    for index, frame in enumerate(iter_frames(out, pixels)):
        gray = display_gray8(frame, view)
        seen = detect_text(gray, chromatic(frame, view))
        boxes = seen.boxes
        covered = covered_fraction(gray.shape, boxes)
        if covered > policy.max_text_fraction:
            raise RejectedFile(
                f"text covers {covered:.0%} of frame {index + 1} (more than "
                f"{policy.max_text_fraction:.0%}): a document or screenshot, not removable "
                "with confidence"
            )
        lost = anatomy_loss(gray, boxes, policy.margin)
        if lost > policy.max_anatomy_loss:
            raise RejectedFile(
                f"text found over the image in frame {index + 1}: blanking it would remove "
                f"{lost:.0%} of the anatomy (more than {policy.max_anatomy_loss:.0%}), "
                "not removable with confidence"
            )
        framed = [Box(b.x1, b.y1, b.x2, b.y2, index, b.source) for b in boxes]
        found.append(Detection(framed, seen.lines, seen.rows))
    return found


def detection_view(ds: Dataset) -> Dataset:
    """The attributes :func:`display_gray8` needs to show a frame to the detector: its
    photometric interpretation and palette, but no window nor rescale, so that the frame is
    stretched over its own range. Burned-in text is drawn at an extreme of the stored values;
    a header's window (often that of the original 12-bit data) can clip it away."""
    view = Dataset()
    for keyword in _VIEW_KEYWORDS:
        if keyword in ds:
            view[keyword] = ds[keyword]
    if str(ds.get("PhotometricInterpretation", "")).strip() == "PALETTE COLOR":
        for tag in _PALETTE_TAGS:
            if tag in ds:
                view[tag] = ds[tag]
    return view


def covered_fraction(shape: tuple[int, ...], boxes: list[Box]) -> float:
    """The share of a frame that the union of ``boxes`` covers."""
    mask = np.zeros(shape[:2], bool)
    for box in boxes:
        mask[box.y1 : box.y2 + 1, box.x1 : box.x2 + 1] = True
    return float(mask.mean()) if mask.size else 0.0


def anatomy_loss(gray: np.ndarray, boxes: list[Box], margin: int) -> float:
    """An estimate of the share of a frame's anatomy that blanking ``boxes`` removes: each
    box's area (grown by ``margin``) times the share of the ring around it that is not flat
    background (:func:`flat_border`), over the pixels outside the boxes that differ from the
    frame's background (its most common value) by more than FLAT_TOLERANCE. Text on the black
    border of an image costs nothing; a line of text across the anatomy costs its area."""
    if not boxes:
        return 0.0
    rows, columns = gray.shape[:2]
    covered = np.zeros(gray.shape[:2], bool)
    lost = 0.0
    for box in boxes:
        grown = box.grown(margin, columns, rows)
        covered[grown.y1 : grown.y2 + 1, grown.x1 : grown.x2 + 1] = True
        lost += grown.width * grown.height * (1.0 - flat_border(gray, box, margin, boxes))
    background = int(np.bincount(gray.ravel(), minlength=256).argmax())
    anatomy = int(((np.abs(gray.astype(np.int16) - background) > FLAT_TOLERANCE) & ~covered).sum())
    return lost / max(anatomy, 1)


def flat_border(gray: np.ndarray, box: Box, margin: int, others: list[Box] | None = None) -> float:
    """The fraction of the ring of pixels just outside ``box`` (grown by ``margin``) that is
    flat background: within FLAT_TOLERANCE of the ring's median. Pixels of the ``others``
    boxes (neighbouring lines of text, grown by ``margin`` too) are not part of the ring.
    Text on the black border of an image scores near 1; text over anatomy scores low; 1.0 when
    no ring is left (the box fills the image)."""
    rows, columns = gray.shape[:2]
    inner = box.grown(margin, columns, rows)
    outer = inner.grown(RING, columns, rows)
    window = gray[outer.y1 : outer.y2 + 1, outer.x1 : outer.x2 + 1].astype(np.int16)
    ring = np.ones(window.shape, bool)
    for other in [box, *(others or [])]:
        grown = other.grown(margin, columns, rows)
        y1, y2 = max(grown.y1, outer.y1) - outer.y1, min(grown.y2, outer.y2) - outer.y1
        x1, x2 = max(grown.x1, outer.x1) - outer.x1, min(grown.x2, outer.x2) - outer.x1
        if y1 <= y2 and x1 <= x2:
            ring[y1 : y2 + 1, x1 : x2 + 1] = False
    values = window[ring]
    if values.size == 0:
        return 1.0
    median = float(np.median(values))
    return float((np.abs(values - median) <= FLAT_TOLERANCE).mean())


def _mark(out: Dataset, result: PixelResult) -> None:
    """Say in ``out`` that its pixels were cleaned: Burned In Annotation NO (every ruled and
    detected region is removed by now), the Clean Pixel Data option code, and how."""
    out.BurnedInAnnotation = "NO"
    items = list(out.get("DeidentificationMethodCodeSequence", None) or [])
    if not any(str(getattr(item, "CodeValue", "")) == CLEAN_PIXEL_DATA[0] for item in items):
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = CLEAN_PIXEL_DATA
        items.append(code)
    out.DeidentificationMethodCodeSequence = Sequence(items)
    method = out.get("DeidentificationMethod", None)
    if isinstance(method, MultiValue | list):
        values = [str(v) for v in method]
    else:
        values = [str(method)] if method else []
    out.DeidentificationMethod = [*values, result.method(), *result.notes()]
