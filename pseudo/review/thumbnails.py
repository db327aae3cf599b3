"""Before/after thumbnails of the images of a diff, with the regions whose pixels changed
outlined, so that a reviewer checks a series' burned-in text removal in seconds.

The "before" thumbnail would show the very text that was removed: its changed regions are
filled (hatched) unless the report shows values (``--show-values``). Text that was missed is
in both thumbnails, which is what the reviewer looks for. PNG, embedded in the page.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from PIL import Image, ImageDraw

from pseudo.io.pydicom_internals import quiet_pydicom
from pseudo.pixels.boxes import Box, runs
from pseudo.pixels.frames import display_gray8

#: Longest side of a thumbnail, in pixels.
SIDE = 192
#: At most this many images get thumbnails (the page says when there are more).
LIMIT = 400
_OUTLINE = (230, 30, 30)
#: Changed pixels at most this many unchanged ones apart are outlined together.
_JOINED = 2


@dataclass(frozen=True)
class ThumbnailPair:
    """One image before and after, as PNG data URLs, and the changed regions it outlines."""

    label: str
    before: str
    after: str
    regions: int


def changed_regions(before: np.ndarray, after: np.ndarray) -> list[Box]:
    """Boxes around the pixels that differ (neighbours within 3 pixels joined)."""
    if before.shape != after.shape:
        return [Box(0, 0, after.shape[1] - 1, after.shape[0] - 1)]
    changed = before != after
    if changed.ndim == 3:
        changed = changed.any(axis=2)
    boxes = []
    for y1, y2 in runs(changed.any(axis=1), _JOINED):
        for x1, x2 in runs(changed[y1 : y2 + 1].any(axis=0), _JOINED):
            rows = changed[y1 : y2 + 1, x1 : x2 + 1].any(axis=1)
            top, bottom = int(np.argmax(rows)), len(rows) - 1 - int(np.argmax(rows[::-1]))
            boxes.append(Box(x1, y1 + top, x2, y1 + bottom))
    return boxes


def _image(path: Path) -> pydicom.Dataset | None:
    """An image file's data set; None if it cannot be read or holds no pixel data."""
    try:
        ds = pydicom.dcmread(path)
        return ds if "PixelData" in ds else None
    except Exception:
        return None


def _first_frame(ds: pydicom.Dataset) -> np.ndarray | None:
    """The first frame of an image, decoded; None if it cannot be decoded."""
    try:
        array = ds.pixel_array
    except Exception:
        return None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    return array[0] if frames > 1 else array


#: What pydicom's decoding reads besides the transfer syntax (``pydicom.pixels``: the Image
#: Pixel module's description, the extended offset table and the pixel data elements).
_DECODING_TAGS = (
    0x00280002,  # Samples per Pixel
    0x00280004,  # Photometric Interpretation
    0x00280006,  # Planar Configuration
    0x00280008,  # Number of Frames
    0x00280010,  # Rows
    0x00280011,  # Columns
    0x00280100,  # Bits Allocated
    0x00280101,  # Bits Stored
    0x00280103,  # Pixel Representation
    0x7FE00001,  # Extended Offset Table
    0x7FE00002,  # Extended Offset Table Lengths
    0x7FE00008,  # Float Pixel Data
    0x7FE00009,  # Double Float Pixel Data
    0x7FE00010,  # Pixel Data
)


def _pixel_source(ds: pydicom.Dataset) -> Any:
    """Everything decoding the pixels of ``ds`` depends on (its transfer syntax and encoding, the
    image pixel description and the pixel data themselves); None if it cannot be read."""
    try:
        meta = getattr(ds, "file_meta", None)
        syntax = meta.get("TransferSyntaxUID") if meta is not None else None
        elements = [(tag, ds[tag].VR, ds[tag].value) for tag in _DECODING_TAGS if tag in ds]
        return (syntax, ds.original_encoding, elements)
    except Exception:
        return None


def _frames(before: pydicom.Dataset, after: pydicom.Dataset) -> tuple[Any, Any] | None:
    """The first frames of both images; decoded once when both decode the same pixels."""
    source = _pixel_source(after)
    same = source is not None and source == _pixel_source(before)
    first_before = None if same else _first_frame(before)
    if not same and first_before is None:
        return None
    first_after = _first_frame(after)
    if first_after is None:
        return None
    return (first_after if same else first_before), first_after


def _png(gray: np.ndarray, boxes: list[Box], hide: bool) -> str:
    """A thumbnail of ``gray`` with ``boxes`` outlined (and filled when ``hide``)."""
    image = Image.fromarray(gray)
    if not boxes:  # gray, a third of the bytes of the same picture in RGB
        image.thumbnail((SIDE, SIDE))
        return _data_url(image)
    image = image.convert("RGB")
    draw = ImageDraw.Draw(image)
    width = max(1, max(gray.shape) // SIDE)
    for box in boxes:
        corners = (box.x1, box.y1, box.x2, box.y2)
        if hide:
            draw.rectangle(corners, fill=(90, 90, 90))
        draw.rectangle(corners, outline=_OUTLINE, width=width)
    image.thumbnail((SIDE, SIDE))
    return _data_url(image)


def _data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def thumbnail_pair(a: Path, b: Path, label: str, *, with_values: bool) -> ThumbnailPair | None:
    """The before/after thumbnails of an image pair; None when either is not a decodable
    image."""
    with quiet_pydicom():
        before, after = _image(a), _image(b)
        if before is None or after is None:
            return None
        frames = _frames(before, after)
    if frames is None:
        return None
    regions = changed_regions(*frames)
    drawn_after = _png(display_gray8(frames[1], after), regions, hide=False)
    if not regions:  # pixels unchanged: "before" is the same picture
        return ThumbnailPair(label, drawn_after, drawn_after, 0)
    return ThumbnailPair(
        label,
        _png(display_gray8(frames[0], before), regions, hide=not with_values),
        drawn_after,
        len(regions),
    )
