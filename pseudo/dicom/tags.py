"""Naming attributes: keywords, ``(gggg,eeee)`` tags and masks such as ``(60xx,3000)``."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from pydicom.datadict import dictionary_VR, get_entry, keyword_for_tag, tag_for_keyword

_TAG = re.compile(r"^\(?\s*([0-9A-Fa-fxX]{4})\s*,\s*([0-9A-Fa-fxX]{4})\s*\)?$")
_PLAIN = re.compile(r"^[0-9A-Fa-fxX]{8}$")


@dataclass(frozen=True)
class TagPattern:
    """A tag or a tag pattern: ``x`` digits match any hex digit.

    ``(0010,0010)`` matches one tag; ``(60xx,3000)`` every overlay group's Overlay Data.
    """

    mask: int
    value: int
    text: str

    @property
    def is_exact(self) -> bool:
        """True when the pattern names a single tag."""
        return self.mask == 0xFFFFFFFF

    def matches(self, tag: int) -> bool:
        """Whether ``tag`` fits the pattern."""
        return (tag & self.mask) == self.value


def parse_tag_pattern(text: str) -> TagPattern | None:
    """Parse ``(gggg,eeee)``, ``gggg,eeee`` or ``ggggeeee``, with ``x`` wildcards; else None."""
    match = _TAG.match(text.strip())
    digits = match[1] + match[2] if match else text.strip() if _PLAIN.match(text.strip()) else None
    if digits is None:
        return None
    mask = value = 0
    for char in digits:
        mask <<= 4
        value <<= 4
        if char not in "xX":
            mask |= 0xF
            value |= int(char, 16)
    canonical = f"({digits[:4]},{digits[4:]})".upper().replace("X", "x")
    return TagPattern(mask=mask, value=value, text=canonical)


def keyword_tag(keyword: str) -> int | None:
    """The tag of a DICOM keyword from pydicom's data dictionary, or None."""
    return tag_for_keyword(keyword)


def tag_text(tag: int) -> str:
    """``0x00100010`` -> ``(0010,0010)``."""
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def is_standard(tag: int) -> bool:
    """Whether ``tag`` is in the DICOM data dictionary (repeating groups included)."""
    try:
        get_entry(tag)
    except KeyError:
        return False
    return True


def standard_vr(tag: int) -> str | None:
    """The dictionary VR of a standard tag (may be ``'US or SS'``), or None."""
    try:
        return dictionary_VR(tag)
    except KeyError:
        return None


def element_vr(element: object, tag: int) -> str:
    """The VR to decide by: the file's explicit VR, else the dictionary's, else ``UN``."""
    return decision_vr(getattr(element, "VR", None), tag)


def decision_vr(vr: str | None, tag: int) -> str:
    """The VR to decide by, from the VR in the file (None in Implicit VR)."""
    if vr in (None, "UN"):
        vr = standard_vr(tag) or vr or "UN"
    return vr.split(" or ")[0] if " or " in vr else vr


@functools.cache
def attribute_name(tag: int) -> str:
    """Keyword of a standard attribute, else its ``(gggg,eeee)`` tag."""
    if (tag >> 16) & 1:
        return tag_text(tag)
    return keyword_for_tag(tag) or tag_text(tag)
