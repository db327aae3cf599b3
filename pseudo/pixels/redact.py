"""Blanking boxes of pixel data, frame by frame, into a new pixel data element.

Native data keeps its transfer syntax and every byte outside the boxes: each frame is read at
its offset in the source file, the boxes are set to the blank value in its raw layout (bits
allocated 1 to 64, signed, big endian, samples interleaved or planar) and the frame is
written to a spool file in the output folder. Encapsulated data is decoded, blanked and
encoded again losslessly (:mod:`pseudo.pixels.codecs` says in which syntax), so every value
outside the boxes decodes as before. Memory stays bounded by a frame or two.

The blank value is black as the image is meant to be displayed: the smallest value the pixel
representation can hold for MONOCHROME2, the largest for MONOCHROME1 (whose smallest value is
white), 0 for RGB and palette colour (the palette's first entry), black for native YBR_FULL
and YBR_FULL_422 (Y=0, Cb=Cr=128).
A blanked box is constant, which no text survives.

Any failure raises a :class:`~pseudo.findings.RejectedFile` (see
:mod:`pseudo.pixels.failures`): the file is quarantined, never written half-redacted.
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRBigEndian

from pseudo.io.dicomio import OutputFailure, PixelSpan, pixel_header, transfer_syntax
from pseudo.pixels.boxes import Box
from pseudo.pixels.codecs import LOSSY_METHOD, NATIVE, FrameEncoder, choose_encoder
from pseudo.pixels.failures import UndecodablePixels, UnsupportedPixels
from pseudo.pixels.frames import check_pixel_data, frame_count, iter_frames

#: Native data that must be rearranged as a whole (bit-packed, or 8-bit words byte-swapped
#: in big endian OW) is redacted in memory up to this size, refused above it.
WHOLE_VALUE_LIMIT = 64 * 1024 * 1024
_ITEM = struct.Struct("<HHI")
_ENCAPSULATED_HEADER = b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff"


@dataclass(frozen=True)
class Redaction:
    """What :func:`redact` wrote: the new pixel data element and how the data set changes."""

    #: the transfer syntax of the input, and that of the new pixel data
    source_syntax: UID
    syntax: UID
    #: the boxes blanked, grown by the margin and clipped to the image
    boxes: tuple[Box, ...]
    #: the frames (0-based) in which a box was blanked
    frames: tuple[int, ...]
    #: the new pixel data element (header and value) spooled in the output folder, for
    #: ``write_temporary``; None when the data set holds its pixel data (see ``element``)
    pixels: PixelSpan | None
    #: the new Pixel Data for a data set that holds its own (a deflated file)
    element: DataElement | None = None
    #: image attributes that change (keyword -> value; None removes the attribute)
    attributes: dict[str, object] = field(default_factory=dict)
    #: what changed, in words, for the run report and the De-identification Method
    notes: tuple[str, ...] = ()

    @property
    def reencoded(self) -> bool:
        """Whether the pixel data was decoded and encoded again (not blanked in place)."""
        return self.source_syntax not in NATIVE

    def apply(self, ds: Dataset) -> None:
        """Make ``ds`` (the data set to write) describe the new pixel data: transfer syntax,
        photometric interpretation, planar configuration, lossy compression history, no
        Extended Offset Table; and give it the new Pixel Data when it holds its own."""
        meta = getattr(ds, "file_meta", None)
        if self.syntax != self.source_syntax and meta is not None:
            meta.TransferSyntaxUID = self.syntax
        for keyword, value in self.attributes.items():
            if value is None:
                if keyword in ds:
                    del ds[keyword]
            else:
                setattr(ds, keyword, value)
        if self.element is not None:
            ds[self.element.tag] = self.element

    def discard(self) -> None:
        """Remove the spool file (once the output is written, or when it will not be)."""
        if self.pixels is not None:
            self.pixels.path.unlink(missing_ok=True)


def redact(
    ds: Dataset,
    pixels: PixelSpan | None,
    boxes: Iterable[Box],
    temp_dir: Path,
    margin: int = 2,
) -> Redaction:
    """Blank every box of ``boxes`` (grown by ``margin`` pixels and clipped to the image) in
    the frame it names, or in every frame when its ``frame`` is None.

    ``ds`` describes the image (its Image Pixel attributes and file meta); ``pixels`` is where
    the source file holds the pixel data (``Source.pixels``), None when ``ds`` holds it. The
    new pixel data element is spooled to a file in ``temp_dir``; the caller applies the result
    to the data set it writes (:meth:`Redaction.apply`), writes it with ``pixels`` and then
    discards the spool. Raises a :class:`~pseudo.findings.RejectedFile` when the image cannot
    be redacted completely.
    """
    syntax = transfer_syntax(ds)
    if pixels is None and "PixelData" not in ds:
        raise UnsupportedPixels("no Pixel Data to redact (float pixel data is not supported)")
    rows, columns, frames = _dimension(ds, "Rows"), _dimension(ds, "Columns"), frame_count(ds)
    plan = _plan(boxes, margin, rows, columns, frames)
    blanked = tuple(sorted({b for per_frame in plan.values() for b in per_frame}, key=_order))
    with ExitStack() as stack:
        target, spool = _output(stack, pixels, temp_dir)
        try:
            if syntax in NATIVE:
                written = syntax
                attributes: dict[str, object] = {}
                notes: tuple[str, ...] = ()
                _redact_native(ds, syntax, pixels, plan, target)
            else:
                encoder = _redact_encapsulated(ds, syntax, pixels, plan, target, frames)
                written = encoder.syntax
                attributes, notes = _changed_attributes(ds, syntax, encoder)
            target.flush()
        except OSError as exc:
            if spool is not None:
                spool.unlink(missing_ok=True)
            raise OutputFailure(f"cannot write in {temp_dir}: {exc.strerror}") from exc
        except BaseException:
            if spool is not None:
                spool.unlink(missing_ok=True)
            raise
        element = None
        if spool is None:
            assert isinstance(target, io.BytesIO)
            element = _element(target.getvalue(), written, ds)
    span = PixelSpan(spool, 0, spool.stat().st_size) if spool is not None else None
    return Redaction(
        syntax, written, blanked, tuple(sorted(plan)), span, element, attributes, notes
    )


def _order(box: Box) -> tuple[int, int, int, int, int]:
    return (-1 if box.frame is None else box.frame, box.y1, box.x1, box.y2, box.x2)


def _dimension(ds: Dataset, keyword: str) -> int:
    value = ds.get(keyword)
    if not isinstance(value, int) or value < 1:
        raise UnsupportedPixels(f"{keyword} is missing or not a positive number")
    return value


def _plan(
    boxes: Iterable[Box], margin: int, rows: int, columns: int, frames: int
) -> dict[int, list[Box]]:
    """Frame -> the boxes to blank there (grown and clipped); a frame-less box in all."""
    plan: dict[int, list[Box]] = {}
    for box in boxes:
        if box.frame is not None and not 0 <= box.frame < frames:
            raise UnsupportedPixels(f"a box names frame {box.frame} of {frames} frames")
        grown = box.grown(margin, columns, rows)
        if grown.x1 > grown.x2 or grown.y1 > grown.y2:
            continue  # wholly outside the image: nothing there to blank
        for index in range(frames) if box.frame is None else (box.frame,):
            plan.setdefault(index, []).append(grown)
    return plan


def _output(
    stack: ExitStack, pixels: PixelSpan | None, temp_dir: Path
) -> tuple[BinaryIO, Path | None]:
    """Where the new element goes: a spool file in ``temp_dir``, or memory when the data set
    holds its pixel data (a deflated file: bounded by the inflation check)."""
    if pixels is None:
        return io.BytesIO(), None
    try:
        fd, name = tempfile.mkstemp(prefix=".pseudo-pixels-", suffix=".part", dir=temp_dir)
    except OSError as exc:
        raise OutputFailure(f"cannot create a file in {temp_dir}: {exc.strerror}") from exc
    return stack.enter_context(os.fdopen(fd, "w+b")), Path(name)


def blank_value(ds: Dataset, photometric: str | None = None) -> tuple[int, ...]:
    """The value of each sample of a blanked pixel (see the module's docstring)."""
    photometric = photometric or str(ds.get("PhotometricInterpretation", "")).strip()
    stored = int(ds.get("BitsStored") or ds.BitsAllocated)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    if photometric == "MONOCHROME2":
        return (-(1 << (stored - 1)) if signed else 0,)
    if photometric == "MONOCHROME1":
        return ((1 << (stored - 1)) - 1 if signed else (1 << stored) - 1,)
    if photometric in ("RGB", "PALETTE COLOR", "YBR_RCT"):
        return (0,) * int(ds.get("SamplesPerPixel", 1) or 1)
    if photometric == "YBR_FULL":
        return (0, 1 << (stored - 1), 1 << (stored - 1))
    raise UnsupportedPixels(f"redaction does not handle {photometric or 'no'} photometric data")


def _blank(frame: np.ndarray, boxes: Sequence[Box], value: tuple[int, ...], planar: bool) -> None:
    """Set ``boxes`` of ``frame`` to ``value`` in place: (rows, columns), (rows, columns,
    samples), or (samples, rows, columns) when ``planar``."""
    for box in boxes:
        rows, columns = slice(box.y1, box.y2 + 1), slice(box.x1, box.x2 + 1)
        if frame.ndim == 2:
            frame[rows, columns] = value[0]
        elif planar:
            for sample, sample_value in enumerate(value):
                frame[sample, rows, columns] = sample_value
        else:
            frame[rows, columns, :] = value


# -- native -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _NativeLayout:
    """How the frames of native pixel data lie in its value."""

    rows: int
    columns: int
    samples: int
    frames: int
    bits: int
    planar: bool
    dtype: np.dtype
    value: tuple[int, ...]
    #: YBR_FULL_422: two pixels share their chroma, stored Y1 Y2 Cb Cr (PS3.3 C.7.6.3.1.2)
    pairs: bool = False

    @property
    def frame_shape(self) -> tuple[int, ...]:
        if self.pairs:
            return (self.rows, self.columns // 2, 4)
        if self.samples == 1:
            return (self.rows, self.columns)
        if self.planar:
            return (self.samples, self.rows, self.columns)
        return (self.rows, self.columns, self.samples)

    @property
    def frame_bytes(self) -> int:
        return self.frame_pixels * self.bits // 8

    @property
    def frame_pixels(self) -> int:
        """Stored samples per frame."""
        return self.rows * self.columns * (2 if self.pairs else self.samples)

    def stored(self, boxes: Sequence[Box]) -> list[Box]:
        """``boxes`` in the coordinates of :attr:`frame_shape`: a pair of YBR_FULL_422 pixels
        is blanked whole when a box covers either (its chroma is theirs)."""
        if not self.pairs:
            return list(boxes)
        return [Box(b.x1 // 2, b.y1, b.x2 // 2, b.y2, b.frame, b.source) for b in boxes]


def _native_layout(ds: Dataset, syntax: UID) -> _NativeLayout:
    bits = int(ds.get("BitsAllocated") or 0)
    if bits != 1 and (bits % 8 or not 8 <= bits <= 64):
        raise UnsupportedPixels(f"native pixel data of {bits} bits allocated")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    pairs = photometric == "YBR_FULL_422"
    if pairs and (bits != 8 or samples != 3 or _dimension(ds, "Columns") % 2):
        raise UnsupportedPixels("native YBR_FULL_422 other than 8 bits and even columns")
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    order = ">" if syntax == ExplicitVRBigEndian else "<"
    size = max(1, bits // 8)
    dtype = np.dtype(f"{order}{'i' if signed else 'u'}{size}")
    value = (0, 0, 128, 128) if pairs else blank_value(ds, photometric)
    if bits == 1:
        value = (1 if photometric == "MONOCHROME1" else 0,)
    return _NativeLayout(
        _dimension(ds, "Rows"),
        _dimension(ds, "Columns"),
        samples,
        frame_count(ds),
        bits,
        samples > 1 and int(ds.get("PlanarConfiguration", 0) or 0) == 1,
        dtype,
        value,
        pairs,
    )


def _redact_native(
    ds: Dataset,
    syntax: UID,
    pixels: PixelSpan | None,
    plan: dict[int, list[Box]],
    target: BinaryIO,
) -> None:
    """Write the pixel data element with the boxes blanked in place: same header, same length,
    the same bytes outside the boxes."""
    layout = _native_layout(ds, syntax)
    with ExitStack() as stack:
        if pixels is None:
            source: BinaryIO = io.BytesIO(bytes(ds.PixelData))
            length, pixel_vr = len(ds.PixelData), ds["PixelData"].VR
        else:
            try:
                source = stack.enter_context(pixels.path.open("rb"))
                header = check_pixel_data(pixel_header(source, pixels, ds))
            except OSError as exc:
                raise UndecodablePixels(f"cannot read the pixel data: {exc.strerror}") from exc
            length = pixels.end - pixels.start - len(header)
            pixel_vr = header[4:6].decode("ascii", "replace") if len(header) == 12 else "OW"
            target.write(header)
        needed = (layout.frames * layout.frame_pixels * layout.bits + 7) // 8
        if length < needed:
            raise UndecodablePixels(
                f"the pixel data holds {length} bytes where its frames need {needed}"
            )
        swapped = syntax == ExplicitVRBigEndian and layout.bits == 8 and pixel_vr == "OW"
        if layout.bits == 1 or swapped:
            target.write(_whole_value(source, length, layout, plan, swapped))
            return
        for index in range(layout.frames):
            chunk = _read(source, layout.frame_bytes)
            if index in plan:
                frame = np.frombuffer(bytearray(chunk), layout.dtype).reshape(layout.frame_shape)
                _blank(frame, layout.stored(plan[index]), layout.value, layout.planar)
                chunk = frame.tobytes()
            target.write(chunk)
        _copy(source, target, length - layout.frames * layout.frame_bytes)


def _whole_value(
    source: BinaryIO,
    length: int,
    layout: _NativeLayout,
    plan: dict[int, list[Box]],
    swapped: bool,
) -> bytes:
    """The value redacted in memory: bit-packed frames (which need not start on a byte), or
    8-bit samples whose 16-bit words big endian swapped."""
    if length > WHOLE_VALUE_LIMIT:
        raise UnsupportedPixels(
            f"bit-packed or byte-swapped pixel data over {WHOLE_VALUE_LIMIT >> 20} MB"
        )
    data = np.frombuffer(bytearray(_read(source, length)), np.uint8)
    if swapped:
        data = data.reshape(-1, 2)[:, ::-1].ravel()
    if layout.bits == 1:
        bits = np.unpackbits(data, bitorder="little")
        frames = bits[: layout.frames * layout.frame_pixels].reshape(-1, *layout.frame_shape)
        for index, boxes in plan.items():
            _blank(frames[index], boxes, layout.value, layout.planar)
        data = np.packbits(bits, bitorder="little")
    else:
        frames = data[: layout.frames * layout.frame_bytes].reshape(-1, *layout.frame_shape)
        for index, boxes in plan.items():
            _blank(frames[index], layout.stored(boxes), layout.value, layout.planar)
    if swapped:
        data = data.reshape(-1, 2)[:, ::-1].ravel()
    return data.tobytes()


def _read(source: BinaryIO, size: int) -> bytes:
    try:
        data = source.read(size)
    except OSError as exc:
        raise UndecodablePixels(f"cannot read the pixel data: {exc.strerror}") from exc
    if len(data) != size:
        raise UndecodablePixels("the pixel data is cut short (the input changed?)")
    return data


def _copy(source: BinaryIO, target: BinaryIO, size: int) -> None:
    while size > 0:
        chunk = _read(source, min(size, 1 << 22))
        target.write(chunk)
        size -= len(chunk)


# -- encapsulated -------------------------------------------------------------------------


def _redact_encapsulated(
    ds: Dataset,
    syntax: UID,
    pixels: PixelSpan | None,
    plan: dict[int, list[Box]],
    target: BinaryIO,
    frames: int,
) -> FrameEncoder:
    """Decode each frame, blank its boxes, encode it losslessly, write it; the encoder used."""
    planar = False  # decoded frames are (rows, columns, samples)
    encoder: FrameEncoder | None = None
    writer: _FrameWriter | None = None
    for index, frame in enumerate(iter_frames(ds, pixels)):
        if index in plan:
            value = blank_value(ds, "RGB" if frame.ndim == 3 else None)
            _blank(frame, plan[index], value, planar)
        if encoder is None:
            encoder, encoded = choose_encoder(ds, syntax, frame)
            writer = _FrameWriter(target, encoder, frames, ds)
        else:
            encoded = encoder.encode(frame)
        assert writer is not None
        writer.add(encoded)
    if encoder is None or writer is None:
        raise UndecodablePixels("the pixel data holds no frame")
    writer.finish()
    return encoder


class _FrameWriter:
    """Writes frames as a pixel data element: encapsulated items after a Basic Offset Table,
    or native little endian."""

    def __init__(self, target: BinaryIO, encoder: FrameEncoder, frames: int, ds: Dataset):
        self.target, self.encapsulated, self.frames = target, encoder.encapsulated, frames
        self.start = target.tell()
        self.offsets: list[int] = []
        self.written = 0
        if self.encapsulated:
            target.write(_ENCAPSULATED_HEADER)
            target.write(_ITEM.pack(0xFFFE, 0xE000, 4 * frames) + bytes(4 * frames))
        else:
            size = (
                (int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1))
                * (encoder.bits_allocated // 8)
                * frames
            )
            vr = b"OB" if encoder.bits_allocated <= 8 else b"OW"
            target.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, vr, 0, size + size % 2))
            self.padding = size % 2

    def add(self, data: bytes) -> None:
        """Write the next frame."""
        if self.encapsulated:
            self.offsets.append(self.written)
            padded = data + b"\x00" * (len(data) % 2)
            self.target.write(_ITEM.pack(0xFFFE, 0xE000, len(padded)))
            self.target.write(padded)
            self.written += 8 + len(padded)
        else:
            self.target.write(data)

    def finish(self) -> None:
        """Close the element: the sequence delimiter and the offset table, or the padding."""
        if len(self.offsets if self.encapsulated else range(self.frames)) != self.frames:
            raise UndecodablePixels("the number of frames decoded is not Number of Frames")
        if not self.encapsulated:
            self.target.write(b"\x00" * self.padding)
            return
        self.target.write(_ITEM.pack(0xFFFE, 0xE0DD, 0))
        if self.offsets and self.offsets[-1] > 0xFFFFFFFF:
            raise UnsupportedPixels("re-encoded pixel data over 4 GB (no offset table fits)")
        end = self.target.tell()
        self.target.seek(self.start + len(_ENCAPSULATED_HEADER) + 8)
        self.target.write(struct.pack(f"<{len(self.offsets)}I", *self.offsets))
        self.target.seek(end)


def _changed_attributes(
    ds: Dataset, source: UID, encoder: FrameEncoder
) -> tuple[dict[str, object], tuple[str, ...]]:
    """The attributes a re-encoded image changes, and the notes that say so."""
    attributes: dict[str, object] = {"ExtendedOffsetTable": None}
    attributes["ExtendedOffsetTableLengths"] = None
    notes = []
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if encoder.photometric != photometric:
        attributes["PhotometricInterpretation"] = encoder.photometric
    if int(ds.get("SamplesPerPixel", 1) or 1) > 1:
        attributes["PlanarConfiguration"] = 0
    # short (a De-identification Method value holds 64 characters): the syntaxes' keywords
    if encoder.syntax != source:
        notes.append(f"re-encoded losslessly {source.keyword} to {encoder.syntax.keyword}")
    else:
        notes.append(f"re-encoded losslessly in {source.keyword}")
    if source in LOSSY_METHOD and str(ds.get("LossyImageCompression", "")).strip() != "00":
        # PS3.3 C.7.6.1.1.5: once lossy, always 01; the methods list the lossy steps taken,
        # and writing losslessly adds none
        attributes["LossyImageCompression"] = "01"
        if not ds.get("LossyImageCompressionMethod"):
            attributes["LossyImageCompressionMethod"] = LOSSY_METHOD[source]
        notes.append("lossy source; no further loss added")
    return attributes, tuple(notes)


def _element(data: bytes, syntax: UID, ds: Dataset) -> DataElement:
    """The Pixel Data element of a data set that holds its own, from the bytes written."""
    if data.startswith(_ENCAPSULATED_HEADER):
        return DataElement(
            0x7FE00010, "OB", data[len(_ENCAPSULATED_HEADER) :], is_undefined_length=True
        )
    if syntax in NATIVE and "PixelData" in ds:
        return DataElement(0x7FE00010, ds["PixelData"].VR, data)
    vr, length = data[4:6].decode(), 12
    return DataElement(0x7FE00010, vr, data[length:])
