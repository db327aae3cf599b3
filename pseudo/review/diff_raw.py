"""Raw elements for ``pseudo diff``: which attributes are equal without converting their values.

Converting a value from the bytes read (pydicom's ``ds[tag]``) is most of what comparing two data
sets costs, and most attributes a diff does not show are kept unchanged. Two elements read with
the same explicit VR, the same byte order, the same bytes and (for text) the same character set
convert to the same value, so they are equal. The VRs where that does not follow are left to
the conversion: those decided by the dictionary or by other elements (implicit VR, ``UN`` and
ambiguous VRs, sequences) and those whose values may not equal themselves (floating point: a
NaN is not equal to itself, and ``DS`` and ``IS`` may be read as floats).
"""

from __future__ import annotations

import functools
from typing import Any

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from pseudo.io.pydicom_internals import character_set, element_map

#: Explicit VRs whose values do not depend on the character set.
_BINARY_VRS = frozenset(
    ("AT", "OB", "OD", "OF", "OL", "OV", "OW", "SL", "SS", "SV", "UL", "US", "UV")
)
#: Explicit VRs read as text: equal bytes are equal values only with the same character set.
_TEXT_VRS = frozenset(
    ("AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT")
)


def elements_by_tag(ds: Dataset) -> dict[int, Any]:
    """The elements of ``ds`` (raw or converted) by tag as a plain ``int``, none converted."""
    return {int(tag): element for tag, element in element_map(ds).items()}


def is_deferred(element: Any) -> bool:
    """Whether ``element`` is a raw element whose value is still to be read from its file."""
    return isinstance(element, RawDataElement) and element.value is None


@functools.cache
def tag_label(tag: int) -> str:
    """``(gggg,eeee)``, in upper-case hexadecimal."""
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


class SameRaw:
    """Tells whether two elements, of ``before`` and of ``after``, are equal without converting
    them (see the module's description); False means "not known", not "different"."""

    def __init__(self, before: Dataset, after: Dataset) -> None:
        self.before = before
        self.after = after
        self._same_text: bool | None = None

    def __call__(self, old: Any, new: Any) -> bool:
        """Whether the raw elements ``old`` and ``new`` hold values known to be equal."""
        if not (isinstance(old, RawDataElement) and isinstance(new, RawDataElement)):
            return False
        vr = old.VR
        if (
            vr != new.VR
            or old.value is None
            or old.value != new.value
            or old.is_little_endian != new.is_little_endian
        ):
            return False
        if vr in _BINARY_VRS:
            return True
        return vr in _TEXT_VRS and (old.tag == 0x00080005 or self.same_text())

    def same_text(self) -> bool:
        """Whether both data sets decode text with the same character set (as ``ds[tag]``
        decodes it)."""
        if self._same_text is None:
            self._same_text = _encodings(self.before) == _encodings(self.after)
        return self._same_text


def _encodings(ds: Dataset) -> Any:
    return ds.original_character_set or character_set(ds)
