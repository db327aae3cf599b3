"""Reading input files and writing output files.

Reading tells three kinds of files apart: DICOM (processed), files that are not DICOM at all
(skipped and listed) and DICOM files that cannot be read completely (quarantined with a
reason). Writing goes to a temporary file in the output tree, flushed to disk; the caller
renames it into place only after the file's linkage records are committed.
"""

from __future__ import annotations

import io
import os
import re
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal, cast

import pydicom
from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import data_element_generator
from pydicom.filewriter import write_data_element, write_dataset, write_file_meta_info
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, tag_in_exception
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from pseudo.dicom.tags import tag_text
from pseudo.findings import RejectedFile
from pseudo.io import headscan
from pseudo.io.inflate import check_inflated_size, deflated_start
from pseudo.io.pydicom_internals import character_set, element_map

UNDEFINED_LENGTH = 0xFFFFFFFF
#: ``drop(tag, vr)``: whether the caller would only delete this top-level element.
Drop = Callable[[int, str | None], bool]
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


class NotDicom(Exception):
    """A file that is not DICOM at all; it is skipped, not quarantined."""


class OutputFailure(Exception):
    """The output cannot be written (disk full, permissions, folder gone): not the input's
    fault, so the run stops instead of quarantining every file that follows."""


def sanitize(message: str) -> str:
    """An exception message with quoted parts (which may be values) masked."""
    return _QUOTED.sub("'…'", message).splitlines()[0][:200] if message else ""


def sniff(path: Path) -> str:
    """``"part10"`` for a DICOM file, ``"no-preamble"`` for one whose 128-byte preamble is
    missing (it starts with ``DICM``), ``"raw"`` for a bare data set, else raise."""
    with path.open("rb") as handle:
        head = handle.read(132)
    if len(head) == 132 and head[128:132] == b"DICM":
        return "part10"
    if head[:4] == b"DICM":
        return "no-preamble"
    if len(head) >= 8:
        group = int.from_bytes(head[0:2], "little")
        vr = head[4:6]
        if group in (0x0002, 0x0008) and ((vr.isalpha() and vr.isupper()) or group == 0x0008):
            return "raw"
    raise NotDicom("no DICOM preamble and no recognizable data set")


def _validate(ds: Dataset, size: int, reached_end: bool) -> None:
    """Refuse a data set that is not whole or not unambiguous, in one pass over its elements.

    When the header was read to the end of the file (``reached_end``), its last elements may be
    cut short: shorter than their declared length, or the file ends inside an element header.
    Always, an attribute present twice is refused: pydicom keeps the last copy in the place of
    the first, so the bytes of the first copy are missing between the elements it kept, and
    which value is the patient's is unknown.
    """
    implicit = bool(getattr(ds, "is_implicit_VR", False))
    truncated: RejectedFile | None = None
    ambiguous: RejectedFile | None = None
    last_end = 0  # the furthest end of a value
    end: int | None = None  # the end of the previous element, when known
    for tag in ds.keys():
        element = ds.get_item(tag)
        if not isinstance(element, RawDataElement) or element.length == UNDEFINED_LENGTH:
            end = None  # a parsed sequence: its extent is not known here
            continue
        length = element.length
        if reached_end and element.value is not None and len(element.value) < length:
            truncated = truncated or RejectedFile(
                f"truncated: element {tag_text(tag)} declares {length} bytes but the file "
                f"holds {len(element.value)} (or the transfer syntax is wrong)"
            )
        last_end = max(last_end, element.value_tell + length)
        header = 8 if implicit or element.VR not in _LONG_VR_NAMES else 12
        if end is not None and element.value_tell - header != end and ambiguous is None:
            ambiguous = RejectedFile(
                f"element {tag_text(tag)} appears twice or out of place: the file is ambiguous"
            )
        end = element.value_tell + length
    if truncated is not None:
        raise truncated
    if reached_end and last_end and 0 < size - last_end < 8:
        raise RejectedFile(
            f"truncated: the file ends {size - last_end} bytes into an element header"
        )
    if len(ds) == 0:
        raise RejectedFile("no data set after the file meta (an empty or truncated file)")
    if ambiguous is not None:
        raise ambiguous


class _PrefixedFile(io.RawIOBase):
    """A Part 10 file seen with its missing 128-byte preamble in front (zeros), so that pydicom
    reads it as it reads any other. Positions are those of the prefixed view."""

    def __init__(self, raw: BinaryIO, prefix: int = 128) -> None:
        self._raw, self._prefix, self._position = raw, prefix, 0
        raw.seek(0, os.SEEK_END)
        self._size = raw.tell() + prefix
        raw.seek(0)

    @property
    def name(self) -> str:
        """The file's name (pydicom records it)."""
        return str(getattr(self._raw, "name", ""))

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        done = 0
        if self._position < self._prefix:
            done = min(len(view), self._prefix - self._position)
            view[:done] = bytes(done)
            self._position += done
        if done < len(view):
            self._raw.seek(self._position - self._prefix)
            data = self._raw.read(len(view) - done)
            view[done : done + len(data)] = data
            self._position += len(data)
            done += len(data)
        return done

    def close(self) -> None:
        self._raw.close()
        super().close()


def _open(path: Path, kind: str) -> tuple[BinaryIO, int]:
    """The file opened for pydicom, and the shift from pydicom's positions to the file's."""
    handle = path.open("rb")
    if kind == "no-preamble":
        return io.BufferedReader(_PrefixedFile(handle)), 128
    return handle, 0


_PARSE_ERRORS = (
    EOFError,
    OSError,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    NotImplementedError,
)
#: Pixel data tags at which the header ends and the bulk data begins.
PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_LONG_VR_NAMES = frozenset(vr.decode() for vr in _LONG_VRS)
_COPY_CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class PixelSpan:
    """Where the top-level pixel data element lies in the source file (header and value)."""

    path: Path
    start: int
    end: int


@dataclass
class Source:
    """An input file read for pseudonymization: the data set without its pixel data, and where
    the pixel data lies, to be copied byte for byte without ever being held in memory."""

    dataset: Dataset
    pixels: PixelSpan | None
    #: Tags of the elements that follow the pixel data in the file. They are left out of the
    #: output (the writer puts the pixel data last); the caller reports them.
    after_pixels: list[int] = field(default_factory=list)
    #: Top-level elements left out of ``dataset`` at the caller's request (see read_source).
    dropped: dict[BaseTag, RawDataElement | DataElement] = field(default_factory=dict)


def _fail(exc: Exception) -> RejectedFile:
    if isinstance(exc, InvalidDicomError):
        return RejectedFile(f"not a readable DICOM file: {sanitize(str(exc))}")
    return RejectedFile(
        f"cannot parse ({exc.__class__.__name__}: {sanitize(str(exc))}); truncated or corrupt"
    )


def _bound_inflation(handle: BinaryIO, kind: str) -> None:
    """Refuse a deflated file whose data set inflates beyond the bound (see
    :mod:`pseudo.io.inflate`) before pydicom inflates it in one piece; rewind the handle."""
    if kind != "raw":
        start = deflated_start(handle, 132)
        if start is not None:
            check_inflated_size(handle, start)
    handle.seek(0)


def read_dataset(path: Path, *, bounded: bool = False) -> Dataset:
    """Read a DICOM file completely, or raise :class:`NotDicom` / :class:`RejectedFile`
    (``bounded``: the caller has already checked what a deflated file inflates to)."""
    try:
        kind = sniff(path)
    except OSError as exc:
        raise RejectedFile(f"cannot read: {exc.strerror}") from exc
    try:
        handle, _ = _open(path, kind)
        with handle:
            if not bounded:
                _bound_inflation(handle, kind)
            ds = pydicom.dcmread(handle, force=(kind == "raw"))
            size = handle.seek(0, os.SEEK_END)
    except (InvalidDicomError, *_PARSE_ERRORS) as exc:
        raise _fail(exc) from exc
    _validate(ds, size, reached_end=True)
    return ds


def read_source(
    path: Path, drop: Drop | None = None, *, keep_dropped: bool | Drop = True
) -> Source:
    """Read everything but the top-level pixel data, and locate the pixel data in the file.

    Memory stays bounded by the size of the header whatever the size of the file. Deflated
    files (compressed as a whole) are read completely, as pydicom must inflate them. Ordinary
    files are read by :mod:`pseudo.io.headscan` (the same data set, faster), the others by pydicom.

    ``drop(tag, vr)`` names top-level elements the caller would only delete: when the fast
    reader reads the file, they are left out of the data set and put in ``Source.dropped``:
    all of them, none (``keep_dropped`` false: nothing but a verification reads them), or
    those for which ``keep_dropped(tag, vr)`` is true (those a verification reads).
    """
    try:
        fast = _read_scanned(path, drop, keep_dropped)
    except RejectedFile:
        raise
    except Exception:
        fast = None  # read again below by pydicom, whose findings name the problem
    if fast is not None:
        return fast
    try:
        kind = sniff(path)
    except OSError as exc:
        raise RejectedFile(f"cannot read: {exc.strerror}") from exc
    try:
        handle, shift = _open(path, kind)
        with handle:
            _bound_inflation(handle, kind)
            ds = pydicom.dcmread(handle, stop_before_pixels=True, force=(kind == "raw"))
            position = handle.tell()
            size = handle.seek(0, os.SEEK_END)
            meta = getattr(ds, "file_meta", None)
            syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
            if syntax == DeflatedExplicitVRLittleEndian:
                return Source(read_dataset(path, bounded=True), None)
            span = trailer = None
            if position < size:
                span = _pixel_span(handle, path, position, size, ds)
                if span.end < size:
                    trailer = _trailer(handle, span.end, size, ds)
                span = PixelSpan(path, span.start - shift, span.end - shift)
    except (InvalidDicomError, *_PARSE_ERRORS) as exc:
        raise _fail(exc) from exc
    _validate(ds, size, reached_end=span is None)
    return Source(ds, span, trailer or [])


def _read_scanned(
    path: Path, drop: Drop | None = None, keep_dropped: bool | Drop = True
) -> Source | None:
    """The source read by :func:`pseudo.io.headscan.scan`, or None if pydicom must read it."""
    with path.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        data = handle.read(min(size, headscan.HEAD_BYTES))
        scanned = headscan.scan(data, size, drop, keep_dropped)
        if scanned is None:
            return None
        ds = FileDataset(
            handle,
            scanned.elements,
            scanned.preamble,
            scanned.file_meta,
            scanned.is_implicit_vr,
            True,
        )
        ds.set_original_encoding(scanned.is_implicit_vr, True, character_set(ds))
        for tag in scanned.empty:
            ds.get_item(tag)  # converts an empty element in place, as _validate does
        span, trailer = None, []
        if scanned.pixel_start is not None:
            span = _pixel_span(handle, path, scanned.pixel_start, size, ds)
            if span.end < size:
                trailer = _trailer(handle, span.end, size, ds)
    return Source(ds, span, trailer, scanned.dropped)


def _trailer(handle: BinaryIO, start: int, size: int, ds: Dataset) -> list[int]:
    """The tags of the elements after the pixel data (padding, signatures, private groups);
    refuse a file that cuts one of them short. Their values are not kept (see Source)."""
    implicit, little = getattr(ds, "original_encoding", None) or (False, True)
    handle.seek(start)
    tags, end = [], start
    for element in data_element_generator(handle, implicit, little, defer_size=64):
        tags.append(int(element.tag))
        if isinstance(element, RawDataElement) and element.length != UNDEFINED_LENGTH:
            end = max(end, element.value_tell + element.length)
        if end > size:
            raise RejectedFile(f"truncated: element {tag_text(element.tag)} after the pixel data")
    return tags


def _pixel_span(handle: BinaryIO, path: Path, start: int, size: int, ds: Dataset) -> PixelSpan:
    """The extent of the pixel data element at ``start``; refuse one that the file cuts short."""
    implicit, little = getattr(ds, "original_encoding", None) or (False, True)
    order: Literal["little", "big"] = "little" if little else "big"
    handle.seek(start)
    head = handle.read(8)
    if len(head) < 8:
        raise RejectedFile("truncated: pixel data element header cut short")
    tag = int.from_bytes(head[0:2], order) << 16 | int.from_bytes(head[2:4], order)
    if tag not in PIXEL_TAGS:
        raise RejectedFile(f"unexpected element {tag_text(tag)} where pixel data begins")
    if implicit:
        value_start, length = start + 8, int.from_bytes(head[4:8], order)
    elif head[4:6] in _LONG_VRS:
        rest = handle.read(4)
        if len(rest) < 4:
            raise RejectedFile("truncated: pixel data element header cut short")
        value_start, length = start + 12, int.from_bytes(rest, order)
    else:
        value_start, length = start + 8, int.from_bytes(head[6:8], order)
    end = (
        value_start + length
        if length != UNDEFINED_LENGTH
        else _encapsulated_end(handle, value_start, order, size)
    )
    if end > size:
        raise RejectedFile(
            f"truncated: pixel data declares {end - value_start} bytes "
            f"but the file holds {size - value_start}"
        )
    return PixelSpan(path, start, end)


def pixel_header(handle: BinaryIO, pixels: PixelSpan, ds: Dataset) -> bytes:
    """The header (tag, VR, length) of the pixel data element at ``pixels.start``: 8 bytes, or
    12 for an explicit VR with a 4-byte length (OB, OW)."""
    implicit, _ = _encoding(ds)
    handle.seek(pixels.start)
    head = handle.read(8)
    if not implicit and head[4:6] in _LONG_VRS:
        head += handle.read(4)
    return head


def pixel_value_start(handle: BinaryIO, pixels: PixelSpan, ds: Dataset) -> int:
    """The offset in the source file of the pixel data element's value."""
    return pixels.start + len(pixel_header(handle, pixels, ds))


def transfer_syntax(ds: Dataset) -> UID:
    """The Transfer Syntax UID in ``ds``'s file meta; that of its original encoding (implicit
    or explicit VR little endian, explicit big endian) when it has none."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and 0x00020010 in meta:
        return _transfer_syntax(meta)
    implicit, little = _encoding(ds)
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def _encoding(ds: Dataset) -> tuple[bool, bool]:
    """(implicit VR, little endian) of the file ``ds`` was read from."""
    implicit, little = getattr(ds, "original_encoding", None) or (None, None)
    if implicit is None or little is None:
        meta = getattr(ds, "file_meta", None)
        if meta is not None and 0x00020010 in meta:
            syntax = _transfer_syntax(meta)
            return syntax.is_implicit_VR, syntax.is_little_endian
        return False, True
    return bool(implicit), bool(little)


def _encapsulated_end(
    handle: BinaryIO, position: int, order: Literal["little", "big"], size: int
) -> int:
    """Walk the items of encapsulated pixel data to the sequence delimiter; return its end."""
    item, delimiter = 0xFFFEE000, 0xFFFEE0DD
    while True:
        handle.seek(position)
        head = handle.read(8)
        if len(head) < 8:
            raise RejectedFile("truncated: encapsulated pixel data has no sequence delimiter")
        tag = int.from_bytes(head[0:2], order) << 16 | int.from_bytes(head[2:4], order)
        length = int.from_bytes(head[4:8], order)
        if tag == delimiter:
            return position + 8
        if tag != item or length == UNDEFINED_LENGTH or position + 8 + length > size:
            raise RejectedFile("truncated or corrupt encapsulated pixel data")
        position += 8 + length


def write_temporary(
    ds: Dataset, directory: Path, pixels: PixelSpan | None = None, *, sync: bool = True
) -> tuple[Path, bytes | None]:
    """Write ``ds`` (then the source's pixel data, copied byte for byte) into ``directory``
    under a temporary name, synced to disk unless ``sync`` is false (the caller then makes it
    durable with the rest of its batch, see :mod:`pseudo.io.durable`). Returns the path and every
    byte written but the top-level pixel data, for the verification of the output (None when
    the data set held its own pixel data, as a deflated file does: it is then checked attribute
    by attribute)."""
    data = encode(ds)
    try:
        fd, name = tempfile.mkstemp(prefix=".pseudo-", suffix=".part", dir=directory)
    except OSError as exc:
        raise OutputFailure(f"cannot create a file in {directory}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if pixels is not None:
                _copy_pixels(pixels, handle)
            handle.flush()
            if sync:
                os.fsync(handle.fileno())
    except OSError as exc:
        Path(name).unlink(missing_ok=True)
        raise OutputFailure(f"cannot write in {directory}: {exc.strerror}") from exc
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name), None if PIXEL_TAGS.intersection(ds.keys()) else data


def encode(ds: Dataset) -> bytes:
    """The bytes ``pydicom.dcmwrite(..., enforce_file_format=True)`` writes for ``ds``, faster.

    pydicom's writer spends most of its time on the bookkeeping around each element. Elements
    still raw (kept as they were read, in the same transfer syntax and character set) are
    written here directly: tag, VR, length and the value's original bytes, exactly as pydicom
    writes a raw element. Everything else (changed values, sequences, the file meta) is written
    by pydicom itself, and so is any data set whose encoding changes or that is deflated.
    ``tests/test_engine.py`` checks that the bytes are identical to pydicom's.
    """
    meta = ds.file_meta
    syntax = _transfer_syntax(meta)
    encoding = (syntax.is_implicit_VR, syntax.is_little_endian)
    if (
        syntax == DeflatedExplicitVRLittleEndian
        or tuple(getattr(ds, "original_encoding", (None, None))) != encoding
        or ds.original_character_set != character_set(ds)
    ):
        buffer = io.BytesIO()
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
        return buffer.getvalue()
    fp = DicomBytesIO()
    fp.write(ds.preamble + b"DICM")
    _write_file_meta(fp, meta)
    fp.is_implicit_VR, fp.is_little_endian = encoding
    implicit, order = encoding[0], "<" if encoding[1] else ">"
    implicit_header = struct.Struct(order + "HHI")
    short_header = struct.Struct(order + "HH2sH")
    long_header = struct.Struct(order + "HH2sHI")
    charset = ds.get("SpecificCharacterSet", default_encoding)
    ascii_text = _ascii_compatible(charset)
    write = fp.write
    for tag in sorted(ds.keys(), key=int):  # int: BaseTag compares in Python
        if tag & 0xFFFF == 0 and tag >> 16 > 6:
            continue  # retired group lengths are not written (PS3.5 7.2), as pydicom does
        element = ds.get_item(tag)
        data = _ascii_value(element, ascii_text) if element.__class__ is DataElement else None
        if data is not None:
            vr = element.VR
            if implicit:
                write(implicit_header.pack(tag >> 16, tag & 0xFFFF, len(data)))
            elif vr in _LONG_VR_NAMES:
                write(long_header.pack(tag >> 16, tag & 0xFFFF, vr.encode(), 0, len(data)))
            else:
                write(short_header.pack(tag >> 16, tag & 0xFFFF, vr.encode(), len(data)))
            write(data)
        elif (
            isinstance(element, RawDataElement)
            and element.value is not None
            and element.length != UNDEFINED_LENGTH
            and (element.VR or implicit)
        ):
            value, vr = element.value, element.VR
            if implicit:
                write(implicit_header.pack(tag >> 16, tag & 0xFFFF, len(value)))
            elif vr in _LONG_VR_NAMES:
                write(long_header.pack(tag >> 16, tag & 0xFFFF, vr.encode(), 0, len(value)))
            elif len(value) <= 0xFFFF:
                write(short_header.pack(tag >> 16, tag & 0xFFFF, vr.encode(), len(value)))
            else:
                write_data_element(fp, element, charset)
                continue
            write(value)
        else:
            with tag_in_exception(tag):
                write_data_element(fp, element, charset)
    return fp.getvalue()


def raw_elements(ds: Dataset, syntax: UID) -> dict[BaseTag, RawDataElement]:
    """The elements of ``ds`` encoded in ``syntax`` by pydicom and read back, still raw: they
    are then written as they are, byte for byte what pydicom writes for ``ds``."""
    implicit, little = syntax.is_implicit_VR, syntax.is_little_endian
    fp = DicomBytesIO()
    fp.is_implicit_VR, fp.is_little_endian = implicit, little
    write_dataset(fp, ds)
    fp.seek(0)
    stream = cast(BinaryIO, fp)
    return {e.tag: e for e in data_element_generator(stream, implicit, little)}  # type: ignore[misc]


_META_VRS = {0x00020001: "OB", 0x00020002: "UI", 0x00020003: "UI", 0x00020010: "UI"}
_META_VRS |= {0x00020012: "UI", 0x00020013: "SH"}


def new_file_meta(
    sop_class: str, sop_instance: str, syntax: UID, implementation: str, version: str
) -> FileMetaDataset:
    """A minimal file meta of raw elements: what pydicom's writer adds and checks
    (``enforce_file_format``) is there, so :func:`encode` writes it directly (with its group
    length, which it computes as pydicom does)."""
    values = {
        0x00020001: b"\x00\x01",
        0x00020002: _padded(sop_class, b"\x00"),
        0x00020003: _padded(sop_instance, b"\x00"),
        0x00020010: _padded(str(syntax), b"\x00"),
        0x00020012: _padded(implementation, b"\x00"),
        0x00020013: _padded(version, b" "),
    }
    elements: dict[BaseTag, RawDataElement | DataElement] = {}
    for tag, value in values.items():
        key = BaseTag(tag)
        elements[key] = RawDataElement(key, _META_VRS[tag], len(value), value, 0, False, True)
    return FileMetaDataset(elements)


def raw_uid(element: object) -> str | None:
    """The value of a still raw, single-valued UI element, decoded as pydicom decodes it but
    without building the element; None for any other element."""
    if (
        isinstance(element, RawDataElement)
        and element.VR in (None, "UI")
        and isinstance(raw := element.value, bytes)
        and b"\\" not in raw
    ):
        return raw.decode(default_encoding).rstrip("\x00 ")
    return None


def _transfer_syntax(meta: FileMetaDataset) -> UID:
    """The Transfer Syntax UID of a file meta, without converting a raw element in place."""
    element = meta.get_item(0x00020010)
    if element is None:
        raise AttributeError("the file meta has no Transfer Syntax UID")
    text = raw_uid(element)
    return UID(str(element.value) if text is None else text)


def _padded(text: str, pad: bytes) -> bytes:
    data = text.encode("ascii")
    return data + pad if len(data) % 2 else data


def _write_file_meta(fp: DicomBytesIO, meta: FileMetaDataset) -> None:
    """Write a file meta made by :func:`new_file_meta` directly; any other through pydicom."""
    elements = element_map(meta)
    if set(elements) - {0x00020000} != set(_META_VRS) or not all(
        isinstance(e, RawDataElement) and e.value for e in elements.values()
    ):
        write_file_meta_info(fp, meta, enforce_standard=True)
        return
    parts = []
    for tag, element in sorted(elements.items()):
        value = cast(bytes, element.value)
        if tag == 0x00020001:
            parts.append(struct.pack("<HH2sHL", 2, 1, b"OB", 0, len(value)) + value)
        elif tag != 0x00020000:
            vr = cast(str, element.VR).encode()
            parts.append(struct.pack("<HH2sH", 2, tag & 0xFFFF, vr, len(value)) + value)
    body = b"".join(parts)
    fp.write(struct.pack("<HH2sHL", 2, 0, b"UL", 4, len(body)) + body)


#: String VRs pydicom writes as their values joined by backslashes, padded to even length.
_ASCII_PADDING = {vr: b" " for vr in ("AE", "AS", "CS", "DA", "DT", "TM", "UR")} | {"UI": b"\x00"}
#: ... and those whose values are encoded with the character set (the same bytes for ASCII
#: text in the character sets of ``_ASCII_CHARSETS``). Not PN: pydicom may write a person
#: name's original bytes.
_TEXT_PADDING = {vr: b" " for vr in ("LO", "LT", "SH", "ST", "UC", "UT")}
_ASCII_CHARSETS = frozenset({"iso8859", "latin_1", "UTF8", "utf_8"})


def _ascii_compatible(charset: object) -> bool:
    """Whether ASCII text is encoded as ASCII bytes in this Specific Character Set."""
    try:
        return set(convert_encodings(charset)) <= _ASCII_CHARSETS  # type: ignore[arg-type]
    except Exception:
        return False


def _ascii_value(element: DataElement, ascii_text: bool) -> bytes | None:
    """The value bytes pydicom writes for a converted string element holding only ASCII text,
    or None when pydicom must write it (anything else: numbers, bytes, other text)."""
    vr = element.VR
    pad = _ASCII_PADDING.get(vr) or (_TEXT_PADDING.get(vr) if ascii_text else None)
    if pad is None or element.is_undefined_length:
        return None
    value = element.value
    if isinstance(value, str):
        text = value
    elif isinstance(value, MultiValue | list) and all(isinstance(v, str) for v in value):
        text = "\\".join(str(v) for v in value)
    else:
        return None
    if not text.isascii() or len(text) > 0xFFFE:
        return None
    data = text.encode("ascii")
    return data + pad if len(data) % 2 else data


def _copy_pixels(pixels: PixelSpan, handle: BinaryIO) -> None:
    """Copy the source's pixel data element into ``handle``; a failure to read the source
    rejects the file, a failure to write is the output's (an OSError for the caller)."""
    try:
        source = pixels.path.open("rb")
    except OSError as exc:
        raise RejectedFile(f"cannot read the pixel data: {exc.strerror}") from exc
    with source:
        position = _kernel_copy(source, handle, pixels.start, pixels.end)
        remaining = pixels.end - position
        source.seek(position)
        while remaining:
            try:
                chunk = source.read(min(_COPY_CHUNK, remaining))
            except OSError as exc:
                raise RejectedFile(f"cannot read the pixel data: {exc.strerror}") from exc
            if not chunk:
                raise RejectedFile("the input file changed while it was read")
            handle.write(chunk)
            remaining -= len(chunk)


def _kernel_copy(source: BinaryIO, handle: BinaryIO, start: int, end: int) -> int:
    """Copy bytes ``start`` to ``end`` of ``source`` to the end of ``handle`` in the kernel
    (``copy_file_range``: the pixels do not pass through this process) as far as it can; the
    position in ``source`` reached. Where the kernel cannot (another system, filesystems it
    cannot copy between) or an error stops it, the caller's loop goes on from there and names
    the error."""
    if not hasattr(os, "copy_file_range"):
        return start
    handle.flush()  # what is buffered goes first; the copy appends at the file's position
    position = start
    try:
        while position < end:
            copied = os.copy_file_range(
                source.fileno(), handle.fileno(), min(_COPY_CHUNK, end - position), position
            )
            if not copied:
                break  # the source is shorter than it was: the loop finds out
            position += copied
    except OSError:
        pass
    return position


def bytes_outside_pixels(path: Path, source: Source) -> bytes | None:
    """The bytes of the file ``source`` was read from, with the value of its top-level pixel
    data left out (what can hold identifying text), or None for a deflated file."""
    meta = getattr(source.dataset, "file_meta", None)
    if (
        meta is not None
        and str(meta.get("TransferSyntaxUID", "")) == DeflatedExplicitVRLittleEndian
    ):
        return None
    with path.open("rb") as handle:
        if source.pixels is None:
            return handle.read()
        head = handle.read(source.pixels.start)
        handle.seek(source.pixels.end)
        return head + handle.read()
