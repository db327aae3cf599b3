"""A fast reader of the header of an ordinary DICOM file, for the common case only.

``pydicom.dcmread`` spends most of its time on the generality of its element generator (stop
callbacks, deferred reads, debug logging) and on a file object read in small pieces. For a
well-formed Part 10 file in little-endian Implicit or Explicit VR (every transfer syntax but
Deflated and Big Endian), the header is read here from one buffer into exactly the data set
pydicom would build: the same :class:`~pydicom.dataelem.RawDataElement` tuples, the same
positions, the same encodings. Undefined-length elements (sequences, mostly) are handed to
pydicom's own element generator, and the file meta to pydicom's own reader.

Anything unusual (a missing preamble, a cut element, an attribute out of order or present twice,
an unknown VR, a transfer syntax that disagrees with the first element...) returns ``None``:
the caller then reads the file with pydicom, whose findings name the problem. This module never
rejects a file and never accepts one pydicom would read differently; ``tests/test_headscan.py``
compares both readers on every test file.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, MutableSequence
from dataclasses import dataclass
from typing import cast

from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import DataElement, RawDataElement, empty_value_for_VR
from pydicom.dataset import FileMetaDataset
from pydicom.filereader import data_element_generator
from pydicom.tag import BaseTag
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    PrivateTransferSyntaxes,
)
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, VR
from pydicom.values import convert_string

from pseudo.io.pydicom_internals import new_raw_element

#: Headers up to this size are scanned from one read; a longer one is left to pydicom.
HEAD_BYTES = 1 << 20
PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
_VRS = {vr.encode(): str(vr) for vr in VR}
_LONG = frozenset(vr.encode() for vr in EXPLICIT_VR_LENGTH_32)
_TAG = struct.Struct("<HH")
_IMPLICIT = struct.Struct("<HHL")
_EXPLICIT = struct.Struct("<HH2sH")
_UL = struct.Struct("<L")
_UNDEFINED = 0xFFFFFFFF
_SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_CHARSET = 0x00080005


@dataclass
class ScannedHeader:
    """The parts of a file header, as ``pydicom.dcmread(..., stop_before_pixels=True)`` reads
    them."""

    preamble: bytes
    file_meta: FileMetaDataset
    elements: dict[BaseTag, RawDataElement | DataElement]
    is_implicit_vr: bool
    #: Where the top-level pixel data element begins, or None when the file has none.
    pixel_start: int | None
    #: Tags of the elements whose raw value is None (empty binary values), which pydicom
    #: converts as soon as they are looked at.
    empty: list[BaseTag]
    #: The elements left out on the caller's request (see :func:`scan`).
    dropped: dict[BaseTag, RawDataElement | DataElement]


def _implicit_for(file_meta: FileMetaDataset) -> bool | None:
    """Whether the data set is Implicit VR, or None for a syntax left to pydicom."""
    syntax = file_meta.get("TransferSyntaxUID")
    if syntax is None:
        return None
    syntax = str(syntax)
    if syntax == ImplicitVRLittleEndian:
        return True
    if (
        syntax in (ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian)
        or syntax in PrivateTransferSyntaxes
    ):
        return None
    return False  # Explicit VR Little Endian and every encapsulated syntax


def _every(tag: int, vr: str | None) -> bool:
    return True


def _none(tag: int, vr: str | None) -> bool:
    return False


def scan(
    data: bytes,
    file_size: int,
    drop: Callable[[int, str | None], bool] | None = None,
    keep_dropped: bool | Callable[[int, str | None], bool] = True,
) -> ScannedHeader | None:
    """Read the header held in ``data`` (the first bytes of a file of ``file_size`` bytes), or
    return None when pydicom must read this file itself.

    Elements for which ``drop(tag, vr)`` is true (the VR is None in Implicit VR) are not put in
    the data set: the caller would only delete them. ``keep_dropped`` says which of them are
    built all the same and put in :attr:`ScannedHeader.dropped`: all (true), none (false), or
    those for which ``keep_dropped(tag, vr)`` is true; the others are not built at all.
    """
    keep = keep_dropped if callable(keep_dropped) else (_every if keep_dropped else _none)
    if len(data) < 132 or data[128:132] != b"DICM":
        return None
    parsed_meta = _file_meta(data)
    if parsed_meta is None:
        return None
    file_meta, position = parsed_meta
    implicit = _implicit_for(file_meta)
    if implicit is None:
        return None
    end_of_data = len(data)
    complete = end_of_data >= file_size
    if position + 8 > end_of_data:
        return None
    vr_bytes = data[position + 4 : position + 6]
    looks_implicit = not (0x40 < vr_bytes[0] < 0x5B and 0x40 < vr_bytes[1] < 0x5B)
    if looks_implicit != implicit:
        return None  # pydicom switches encoding with a warning: leave it to pydicom

    elements: dict[BaseTag, RawDataElement | DataElement] = {}
    empty: list[BaseTag] = []
    dropped: dict[BaseTag, RawDataElement | DataElement] = {}
    encoding: str | MutableSequence[str] = default_encoding
    last_tag = 0x0007FFFF  # no command set, no file meta in the data set
    pixel_start = None
    while position < end_of_data:
        if position + 8 > end_of_data:
            return None
        group, number = _TAG.unpack_from(data, position)
        tag = group << 16 | number
        if tag in PIXEL_TAGS:
            pixel_start = position
            break
        if tag <= last_tag:
            return None
        last_tag = tag
        vr: str | None
        if implicit:
            _, _, length = _IMPLICIT.unpack_from(data, position)
            vr, value_start = None, position + 8
        else:
            header = _explicit_header(data, position)
            if header is None:
                return None
            vr, length, value_start = header
        if length == _UNDEFINED:
            parsed = _undefined_length(data, position, implicit, encoding)
            if parsed is None:
                return None
            element, position = parsed
            if drop is None or not drop(tag, vr):
                elements[element.tag] = element
            elif keep(tag, vr):
                dropped[element.tag] = element
            continue
        position = value_start + length
        if position > end_of_data:
            return None
        dropping = drop is not None and drop(tag, vr)
        if dropping and not keep(tag, vr):
            continue
        value = data[value_start:position] if length else _empty(vr)
        key = BaseTag(tag)
        element = new_raw_element(
            (key, vr, length, value, value_start, implicit, True, True, False)
        )
        if dropping:
            dropped[key] = element
            continue
        elements[key] = element
        if value is None:
            empty.append(key)
        if tag == _CHARSET:
            encoding = convert_encodings(convert_string(value or b"", True))
    else:
        if not complete:
            return None  # the header goes on beyond the buffer
    if not elements:
        return None
    return ScannedHeader(data[:128], file_meta, elements, implicit, pixel_start, empty, dropped)


def _empty(vr: str | None) -> bytes | None:
    """The raw value pydicom gives an element of length zero."""
    return cast(bytes | None, empty_value_for_VR(vr, raw=True))


def _explicit_header(data: bytes, position: int) -> tuple[str, int, int] | None:
    """VR, length and where the value begins of the Explicit VR element at ``position`` (at
    least 8 bytes are there); None for an unknown VR or a header cut short."""
    _, _, raw_vr, length = _EXPLICIT.unpack_from(data, position)
    vr = _VRS.get(raw_vr)
    if vr is None:
        return None
    value_start = position + 8
    if raw_vr in _LONG:
        if value_start + 4 > len(data):
            return None
        (length,) = _UL.unpack_from(data, value_start)
        value_start += 4
    return vr, length, value_start


def _file_meta(data: bytes) -> tuple[FileMetaDataset, int] | None:
    """The file meta (group 0002, Explicit VR Little Endian) as pydicom's reader leaves it, and
    where the data set begins; None for anything unusual."""
    position, end = 132, len(data)
    elements: dict[BaseTag, RawDataElement | DataElement] = {}
    while position + 8 <= end:
        group, number = _TAG.unpack_from(data, position)
        if group != 2:
            break
        header = _explicit_header(data, position)
        if header is None:
            return None
        vr, length, value_start = header
        position = value_start + length
        if length == _UNDEFINED or position > end:
            return None
        key = BaseTag(2 << 16 | number)
        if key in elements:
            return None
        value = data[value_start:position] if length else _empty(vr)
        elements[key] = new_raw_element(
            (key, vr, length, value, value_start, False, True, True, False)
        )
    if not elements or list(elements) != sorted(elements):
        return None
    file_meta = FileMetaDataset(elements)
    file_meta.set_original_encoding(False, True, default_encoding)
    # pydicom's reader converts the first element (its encoding check) and the group length
    # and transfer syntax (it reads them); do the same, so that the data sets are identical.
    file_meta[next(iter(elements))]
    file_meta.get("FileMetaInformationGroupLength")
    return file_meta, position


def _undefined_length(
    data: bytes, position: int, implicit: bool, encoding: str | MutableSequence[str]
) -> tuple[RawDataElement | DataElement, int] | None:
    """One undefined-length element read by pydicom, and where it ends; None unless it ends
    with its delimiter inside ``data``."""
    stream = io.BytesIO(data)
    stream.seek(position)
    try:
        element = next(data_element_generator(stream, implicit, True, encoding=encoding))
    except Exception:
        return None
    end = stream.tell()
    if end > len(data) or data[end - 8 : end] != _SEQUENCE_DELIMITER:
        return None
    return element, end
