"""INTERIM stand-ins for the pixel interfaces that the detector and redaction work delivers
(``pseudo.pixels.detect.find_text``, ``pseudo.pixels.frames.iter_frames`` /
``display_gray8``, ``pseudo.pixels.redact.redact``), so that the pipeline step can be built and
tested before they land. Replaced by those modules as soon as they are merged; nothing else
imports this module but :mod:`pseudo.pixels.protect`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from PIL import Image, ImageFilter
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from pseudo.findings import RejectedFile
from pseudo.io.dicomio import PixelSpan
from pseudo.pixels.boxes import Box

_PIXEL_KEYWORDS = (
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "NumberOfFrames",
)


def _image(ds: Dataset, pixels: PixelSpan | None) -> Dataset:
    """A data set holding only what decoding needs: the image attributes and pixel data."""
    full = pydicom.dcmread(pixels.path, force=True) if pixels is not None else ds
    image = Dataset()
    image.file_meta = full.file_meta
    for keyword in _PIXEL_KEYWORDS:
        if keyword in full:
            setattr(image, keyword, full[keyword].value)
    image.PixelData = full.PixelData
    image["PixelData"].VR = full["PixelData"].VR
    return image


def iter_frames(ds: Dataset, pixels: PixelSpan | None) -> Iterator[np.ndarray]:
    """Each frame of the image, decoded."""
    try:
        array = _image(ds, pixels).pixel_array
    except Exception as exc:
        raise RejectedFile(f"pixel data cannot be decoded ({exc.__class__.__name__})") from exc
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        yield from array
    else:
        yield array


def display_gray8(frame: np.ndarray, ds: Dataset) -> np.ndarray:
    """The frame as 8-bit gray as displayed: stretched to its own range, MONOCHROME1
    inverted, colour reduced to its luminance (for detection and thumbnails only)."""
    values = frame.astype(np.float32)
    if values.ndim == 3:
        values = values @ np.array([0.299, 0.587, 0.114], np.float32)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    gray: np.ndarray = np.rint((values - low) * (255.0 / (high - low))).astype(np.uint8)
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        gray = np.subtract(255, gray, dtype=np.uint8)
    return gray


def find_text(image: np.ndarray) -> list[Box]:
    """Bright thin strokes grouped into lines (a white top-hat, then an XY cut)."""
    picture = Image.fromarray(image)
    opened = picture.filter(ImageFilter.MinFilter(7)).filter(ImageFilter.MaxFilter(7))
    tophat = image.astype(np.int16) - np.asarray(opened, np.int16)
    strokes = tophat > 80
    merged = (
        np.asarray(Image.fromarray(strokes.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(5)))
        > 0
    )
    boxes: list[Box] = []
    for y1, y2 in _runs(merged.any(axis=1), 2):
        band = merged[y1 : y2 + 1]
        for x1, x2 in _runs(band.any(axis=0), 8):
            height, width = y2 - y1 + 1, x2 - x1 + 1
            density = float(strokes[y1 : y2 + 1, x1 : x2 + 1].mean())
            if 6 <= height <= 48 and width >= 2 * height and 0.05 <= density <= 0.6:
                boxes.append(Box(x1, y1, x2, y2, source="detector:interim"))
    return boxes


def _runs(flags: Any, gap: int) -> list[tuple[int, int]]:
    """The index ranges where ``flags`` is true, joining runs separated by < ``gap``."""
    runs: list[tuple[int, int]] = []
    for index in np.flatnonzero(flags):
        i = int(index)
        if runs and i - runs[-1][1] <= gap:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs


def redact(
    ds: Dataset, pixels: PixelSpan | None, boxes: list[Box], temp_dir: Path, margin: int
) -> tuple[DataElement, UID]:
    """Blank ``boxes`` (grown by ``margin``) in every frame they name; native data keeps its
    syntax, encapsulated data is written native (Explicit VR Little Endian)."""
    image = _image(ds, pixels)
    syntax = UID(str(image.file_meta.TransferSyntaxUID))
    try:
        array = image.pixel_array.copy()
    except Exception as exc:
        raise RejectedFile(f"pixel data cannot be decoded ({exc.__class__.__name__})") from exc
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    stack = array if frames > 1 else array[np.newaxis]
    rows, columns = stack.shape[1], stack.shape[2]
    for box in boxes:
        grown = box.grown(margin, columns, rows)
        targets = range(frames) if box.frame is None else [box.frame]
        for index in targets:
            stack[index, grown.y1 : grown.y2 + 1, grown.x1 : grown.x2 + 1] = 0
    if int(image.get("BitsAllocated", 8)) == 1:
        raise RejectedFile("cannot redact 1-bit pixel data")
    data = stack.tobytes()
    if len(data) % 2:
        data += b"\0"
    vr = "OW" if int(image.get("BitsAllocated", 8)) > 8 else "OB"
    target = syntax if not syntax.is_compressed else ExplicitVRLittleEndian
    if target.is_implicit_VR or not target.is_little_endian:
        target = ExplicitVRLittleEndian if not target.is_little_endian else target
    return DataElement(0x7FE00010, vr, data), target
