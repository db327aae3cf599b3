"""The elements inside a sequence, read from the sequence's raw bytes without building data sets.

A removed sequence is read only for what it held (the verification records its values): pydicom
would build a :class:`~pydicom.dataset.Dataset` per item and a
:class:`~pydicom.sequence.Sequence` per nested sequence, to be thrown away at once. Here the
bytes of a little-endian sequence are walked once and every element that is not a sequence,
at every depth and in the order of the file, is given as the
:class:`~pydicom.dataelem.RawDataElement` pydicom's reader would have put in its item.

Only the plain case is read: anything pydicom reads in a way of its own (an item encoded in
the other VR encoding, an unknown VR, a Specific Character Set inside an item, an undefined
length that is not a sequence's, attributes out of order, a value cut short...) gives None, and
the caller reads the sequence with pydicom. ``tests/test_rawsequence.py`` compares both on
every sequence of the test corpora.
"""

from __future__ import annotations

import struct
from typing import cast

from pydicom.dataelem import RawDataElement, empty_value_for_VR
from pydicom.tag import BaseTag
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, VR

from pseudo.dicom.tags import decision_vr, element_vr

_VRS = {vr.encode(): str(vr) for vr in VR}
_LONG = frozenset(vr.encode() for vr in EXPLICIT_VR_LENGTH_32)
_TAG_LENGTH = struct.Struct("<HHL")
_EXPLICIT = struct.Struct("<HH2sH")
_UL = struct.Struct("<L")
_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQUENCE_END = 0xFFFEE0DD
_CHARSET = 0x00080005

#: An element found inside a sequence: the raw element, as pydicom reads it, and its VR (see
#: :func:`pseudo.dicom.tags.element_vr`).
Leaf = tuple[RawDataElement, str]


class _Unusual(Exception):
    """Something this reader leaves to pydicom."""


def sequence_leaves(element: object) -> list[Leaf] | None:
    """Every element inside the sequence ``element`` (a raw element of defined length, little
    endian) that is not itself a sequence, at every depth, in file order; None when the
    element is not such a sequence or its bytes are not plain (read it with pydicom then)."""
    if element.__class__ is not RawDataElement:
        return None
    raw = element
    data = raw.value
    if not raw.is_little_endian or not isinstance(data, bytes) or raw.length == _UNDEFINED:
        return None
    leaves: list[Leaf] = []
    try:
        _sequence(data, 0, len(data), raw.is_implicit_VR, 0, leaves)
    except (_Unusual, struct.error, IndexError, RecursionError):
        return None
    return leaves


def _sequence(
    data: bytes, position: int, end: int | None, implicit: bool, base: int, leaves: list[Leaf]
) -> int:
    """Read the items of a sequence from ``position`` up to ``end`` (None: up to its
    delimiter); return where it ends. ``base``: where the bytes pydicom would read this
    sequence from begin (its positions are counted from there)."""
    while end is None or position < end:
        tag_high, tag_low, length = _TAG_LENGTH.unpack_from(data, position)
        tag = tag_high << 16 | tag_low
        position += 8
        if tag == _SEQUENCE_END:
            if end is not None:
                raise _Unusual  # a delimiter inside a sequence of defined length
            return position
        if tag != _ITEM:
            raise _Unusual
        if length == _UNDEFINED:
            position = _item(data, position, None, implicit, base, leaves)
        else:
            item_end = position + length
            if item_end > len(data) or (end is not None and item_end > end):
                raise _Unusual
            _item(data, position, item_end, implicit, base, leaves)
            position = item_end
    return position


def _item(
    data: bytes, position: int, end: int | None, implicit: bool, base: int, leaves: list[Leaf]
) -> int:
    """Read the elements of one item (``end`` None: up to its delimiter); return where the
    item ends."""
    last = -1
    first = True
    while end is None or position < end:
        tag_high, tag_low, length = _TAG_LENGTH.unpack_from(data, position)
        tag = tag_high << 16 | tag_low
        if tag == _ITEM_END:
            if end is not None:
                raise _Unusual
            return position + 8
        if tag <= last or tag == _CHARSET or tag_high == 0xFFFE:
            raise _Unusual  # pydicom keeps the last of a repeated tag; items of their own
        last = tag
        vr: str | None
        if implicit:
            vr, start = None, position + 8
        else:
            raw_vr = data[position + 4 : position + 6]
            if first and not (0x40 < raw_vr[0] < 0x5B and 0x40 < raw_vr[1] < 0x5B):
                raise _Unusual  # pydicom reads such an item as Implicit VR
            vr = _VRS.get(raw_vr)
            if vr is None:
                raise _Unusual
            if raw_vr in _LONG:
                (length,) = _UL.unpack_from(data, position + 8)
                start = position + 12
            else:
                length = _EXPLICIT.unpack_from(data, position)[3]
                start = position + 8
        first = False
        if length == _UNDEFINED:
            if vr not in (None, "SQ") or decision_vr(vr, tag) != "SQ":
                raise _Unusual  # e.g. an undefined-length UN: pydicom infers a sequence its way
            position = _sequence(data, start, None, implicit, base, leaves)
            continue
        value_end = start + length
        if value_end > len(data) or (end is not None and value_end > end):
            raise _Unusual
        value = (
            data[start:value_end]
            if length
            else cast(bytes | None, empty_value_for_VR(vr, raw=True))
        )
        element = RawDataElement(BaseTag(tag), vr, length, value, start - base, implicit, True)
        found = element_vr(element, tag)
        if found == "SQ":
            if vr not in (None, "SQ"):
                raise _Unusual  # a UN that the dictionary calls a sequence: pydicom's way
            if length:
                _sequence(data, start, value_end, implicit, start, leaves)
        else:
            leaves.append((element, found))
        position = value_end
    if end is None:
        raise _Unusual  # no item delimiter
    return position
