"""The elements inside a sequence, read from the sequence's raw bytes without building data sets.

A removed sequence is read only for what it held (the verification records its values): pydicom
would build a :class:`~pydicom.dataset.Dataset` per item and a
:class:`~pydicom.sequence.Sequence` per nested sequence, to be thrown away at once. Here the
bytes of a sequence are walked once and every element that is not a sequence,
at every depth and in the order of the file, is given as the
:class:`~pydicom.dataelem.RawDataElement` pydicom's reader would have put in its item.

Only the plain case is read: anything pydicom reads in a way of its own (an item encoded in
the other VR encoding, an unknown VR, a Specific Character Set inside an item, an undefined
length that is not a sequence's, attributes out of order, a value cut short...) gives None, and
the caller reads the sequence with pydicom. ``tests/test_rawsequence.py`` compares both on
every sequence of the test corpora.
"""

from __future__ import annotations

import functools
import struct
from typing import cast

from pydicom.dataelem import RawDataElement, empty_value_for_VR
from pydicom.tag import BaseTag
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, VR

from pseudo.dicom.tags import decision_vr, element_vr
from pseudo.io.pydicom_internals import new_raw_element

_VRS = {vr.encode(): str(vr) for vr in VR}
_LONG = frozenset(vr.encode() for vr in EXPLICIT_VR_LENGTH_32)
#: The structures of an element's header, by byte order (little endian first).
_FORMATS = {
    True: (struct.Struct("<HHL"), struct.Struct("<HH2sH"), struct.Struct("<L")),
    False: (struct.Struct(">HHL"), struct.Struct(">HH2sH"), struct.Struct(">L")),
}
_Formats = tuple[struct.Struct, struct.Struct, struct.Struct]
_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQUENCE_END = 0xFFFEE0DD
_CHARSET = 0x00080005
#: Sequences at most this long are read once per process (see :func:`_recurring_leaves`).
_CACHED_BYTES = 8192

#: An element found inside a sequence: the raw element, as pydicom reads it, and its VR (see
#: :func:`pseudo.dicom.tags.element_vr`).
Leaf = tuple[RawDataElement, str]


class _Unusual(Exception):
    """Something this reader leaves to pydicom."""


def sequence_leaves(element: object) -> list[Leaf] | None:
    """Every element inside the sequence ``element`` (a raw element of defined length) that
    is not itself a sequence, at every depth, in file order; None when the element is not
    such a sequence or its bytes are not plain (read it with pydicom then)."""
    if element.__class__ is not RawDataElement:
        return None
    raw = element
    data = raw.value
    if not isinstance(data, bytes) or raw.length == _UNDEFINED:
        return None
    if len(data) > _CACHED_BYTES:
        return _read_leaves(data, bool(raw.is_implicit_VR), bool(raw.is_little_endian))
    return _recurring_leaves(data, bool(raw.is_implicit_VR), bool(raw.is_little_endian))


@functools.lru_cache(maxsize=1024)
def _recurring_leaves(data: bytes, implicit: bool, little: bool) -> list[Leaf] | None:
    """:func:`_read_leaves`, once per process for the same bytes: the files of a study repeat
    their removed sequences (a third of those of the canary corpus). The list is shared: its
    callers only read it."""
    return _read_leaves(data, implicit, little)


def _read_leaves(data: bytes, implicit: bool, little: bool) -> list[Leaf] | None:
    leaves: list[Leaf] = []
    try:
        _sequence(data, 0, len(data), (implicit, little), 0, leaves)
    except (_Unusual, struct.error, IndexError, RecursionError):
        return None
    return leaves


def _sequence(
    data: bytes,
    position: int,
    end: int | None,
    encoding: tuple[bool, bool],
    base: int,
    leaves: list[Leaf],
) -> int:
    """Read the items of a sequence from ``position`` up to ``end`` (None: up to its
    delimiter); return where it ends. ``encoding``: (Implicit VR, little endian); ``base``:
    where the bytes pydicom would read this sequence from begin (its positions are counted
    from there)."""
    tag_length = _FORMATS[encoding[1]][0]
    while end is None or position < end:
        tag_high, tag_low, length = tag_length.unpack_from(data, position)
        tag = tag_high << 16 | tag_low
        position += 8
        if tag == _SEQUENCE_END:
            if end is not None:
                raise _Unusual  # a delimiter inside a sequence of defined length
            return position
        if tag != _ITEM:
            raise _Unusual
        if length == _UNDEFINED:
            position = _item(data, position, None, encoding, base, leaves)
        else:
            item_end = position + length
            if item_end > len(data) or (end is not None and item_end > end):
                raise _Unusual
            _item(data, position, item_end, encoding, base, leaves)
            position = item_end
    return position


def _item(
    data: bytes,
    position: int,
    end: int | None,
    encoding: tuple[bool, bool],
    base: int,
    leaves: list[Leaf],
) -> int:
    """Read the elements of one item (``end`` None: up to its delimiter); return where the
    item ends."""
    implicit, little = encoding
    tag_length, explicit, long_length = _FORMATS[little]
    last = -1
    first = True
    while end is None or position < end:
        tag_high, tag_low, length = tag_length.unpack_from(data, position)
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
                (length,) = long_length.unpack_from(data, position + 8)
                start = position + 12
            else:
                length = explicit.unpack_from(data, position)[3]
                start = position + 8
        first = False
        if length == _UNDEFINED:
            if vr not in (None, "SQ") or decision_vr(vr, tag) != "SQ":
                raise _Unusual  # e.g. an undefined-length UN: pydicom infers a sequence its way
            position = _sequence(data, start, None, encoding, base, leaves)
            continue
        value_end = start + length
        if value_end > len(data) or (end is not None and value_end > end):
            raise _Unusual
        value = (
            data[start:value_end]
            if length
            else cast(bytes | None, empty_value_for_VR(vr, raw=True))
        )
        element = new_raw_element(
            (BaseTag(tag), vr, length, value, start - base, implicit, little, True, False)
        )
        found = element_vr(element, tag)
        if found == "SQ":
            if vr not in (None, "SQ"):
                raise _Unusual  # a UN that the dictionary calls a sequence: pydicom's way
            if length:
                _sequence(data, start, value_end, encoding, start, leaves)
        else:
            leaves.append((element, found))
        position = value_end
    if end is None:
        raise _Unusual  # no item delimiter
    return position
