"""Icons and overlays: pictures beside the pixel data that can carry the same burned-in text.

An Icon Image Sequence is a small copy of the image (text included) and an overlay plane
(60xx,3000) is a bitmap a viewer draws over it, often with annotations. Neither is checked
by the detector, so both are removed rather than redacted: the default policy removes them
already (PS3.15 Table E.1-1: X), and this is for a policy that keeps them (the Clean Graphics
option) while pixel protection is on. An overlay stored in the unused high bits of the pixel
data itself (retired since 2004) cannot be removed that way: the file is refused.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from pseudo.pixels.failures import UnsupportedPixels

ICON_IMAGE_SEQUENCE = 0x00880200


def _is_overlay(tag: int) -> bool:
    """Whether ``tag`` is in a repeating overlay group (6000-601E, even)."""
    group = tag >> 16
    return 0x6000 <= group <= 0x601E and group % 2 == 0


def check_no_embedded_overlay(ds: Dataset) -> None:
    """Refuse a data set whose overlay bits live in the pixel data's unused bits."""
    for tag in list(ds.keys()):
        if _is_overlay(tag) and tag & 0xFFFF in (0x0100, 0x0102):
            value = ds[tag].value
            embedded = value != 1 if tag & 0xFFFF == 0x0100 else value not in (0, None)
            if embedded:
                raise UnsupportedPixels(
                    "an overlay is stored in the pixel data's unused bits (retired layout)"
                )


def remove_icons_and_overlays(ds: Dataset) -> list[str]:
    """Remove every Icon Image Sequence (at any depth) and every overlay group at the top
    level of ``ds``; the names of what was removed (no values). Raises
    :class:`UnsupportedPixels` for an overlay embedded in the pixel data."""
    check_no_embedded_overlay(ds)
    removed = []
    overlays = sorted({tag >> 16 for tag in ds.keys() if _is_overlay(tag)})
    for tag in [t for t in ds.keys() if _is_overlay(t)]:
        del ds[tag]
    removed += [f"overlay group {group:04X}" for group in overlays]
    if _remove_icons(ds):
        removed.append("Icon Image Sequence")
    return removed


def _remove_icons(ds: Dataset) -> bool:
    """Remove Icon Image Sequences in ``ds`` and its sequences; whether there was one."""
    found = False
    if ICON_IMAGE_SEQUENCE in ds:
        del ds[ICON_IMAGE_SEQUENCE]
        found = True
    for element in ds.values():
        if getattr(element, "VR", None) == "SQ" and isinstance(element.value, Sequence):
            for item in element.value:
                found = _remove_icons(item) or found
    return found
