"""Pixel data frame by frame, and the 8-bit grey view that the detector and thumbnails read.

Frames are decoded one at a time where the pixel data lies in the source file (native: each
frame's bytes read at its offset; encapsulated: each frame's fragments), so memory stays
bounded by a frame whatever the size of the file. A deflated file, or a data set built in
memory, holds its pixel data itself; its frames are decoded from there.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, suppress
from typing import Any, BinaryIO

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels.decoders.base import Decoder, get_decoder
from pydicom.pixels.processing import apply_color_lut
from pydicom.pixels.utils import as_pixel_options
from pydicom.uid import UID

from pseudo.io.dicomio import PixelSpan, pixel_header, transfer_syntax
from pseudo.pixels import jpeg_scan
from pseudo.pixels.failures import UndecodablePixels, UnsupportedPixels

#: Luma weights of ITU-R BT.601 (those of DICOM's YBR_FULL).
_LUMA = np.array([0.299, 0.587, 0.114])
#: Samples of a colour pixel that differ by more than this (0-255) make it coloured.
_CHROMA = 48


def frame_count(ds: Dataset) -> int:
    """Number of Frames, 1 when absent or empty."""
    value = ds.get("NumberOfFrames")
    try:
        return max(1, int(value)) if value not in (None, "") else 1
    except (TypeError, ValueError) as exc:
        raise UnsupportedPixels("Number of Frames is not a number") from exc


def decode_options(ds: Dataset, syntax: UID | None = None) -> dict[str, Any]:
    """pydicom's decoding options for the pixel data ``ds`` describes."""
    options = as_pixel_options(ds)
    options["number_of_frames"] = frame_count(ds)
    options["transfer_syntax_uid"] = syntax or transfer_syntax(ds)
    options["pixel_keyword"] = "PixelData"
    if "ExtendedOffsetTable" in ds:
        options["extended_offsets"] = (
            ds.ExtendedOffsetTable,
            ds.get("ExtendedOffsetTableLengths", b""),
        )
    return options


def check_pixel_data(header: bytes) -> bytes:
    """``header`` if it is that of Pixel Data (7FE0,0010) in either byte order; float and
    double float pixel data are refused."""
    if header[:4] not in (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10"):
        raise UnsupportedPixels("float pixel data is not supported")
    return header


#: Decoding plugins used before those pydicom tries first: CharLS for JPEG-LS (3x libjpeg's),
#: pylibjpeg-rle's compiled RLE (pydicom's own is numpy code), and for JPEG Extended
#: pylibjpeg-libjpeg behind the scan-header repair of :mod:`pseudo.pixels.jpeg_scan` (Pillow
#: reads no 12-bit JPEG), when installed.
_FASTEST = {"1.2.840.10008.1.2.4.80": "pyjpegls", "1.2.840.10008.1.2.4.81": "pyjpegls"}
_FASTEST["1.2.840.10008.1.2.5"] = "pylibjpeg"
_FASTEST["1.2.840.10008.1.2.4.51"] = jpeg_scan.PLUGIN


def _register_jpeg_scan_plugin() -> None:
    """Add :mod:`pseudo.pixels.jpeg_scan` to pydicom's JPEG Extended decoder (once per
    process), last: ``Dataset.pixel_array`` (thumbnails) falls back to it too."""
    with suppress(ValueError):  # added already (the module was imported again)
        get_decoder(UID("1.2.840.10008.1.2.4.51")).add_plugin(
            jpeg_scan.PLUGIN, (jpeg_scan.__name__, "decode_pixel_data")
        )


_register_jpeg_scan_plugin()


def fastest_plugin(decoder: Decoder) -> str:
    """The decoding plugin to use for ``decoder``'s syntax: the fastest installed, or ''
    (pydicom's own choice)."""
    plugin = _FASTEST.get(str(decoder.UID), "")
    return plugin if plugin in decoder.available_plugins else ""


def iter_frames(ds: Dataset, pixels: PixelSpan | None) -> Iterator[np.ndarray]:
    """Yield the decoded frames of ``ds``'s pixel data one at a time: (rows, columns) for one
    sample per pixel, (rows, columns, samples) otherwise, in RGB for colour (YBR decoded).

    ``pixels`` is where the source file holds the pixel data (``Source.pixels``); None when
    ``ds`` holds it (a deflated file, a data set built in memory). Raises
    :class:`UndecodablePixels` for pixel data that cannot be decoded.
    """
    if pixels is None and "PixelData" not in ds:
        raise UnsupportedPixels("no Pixel Data to decode (float pixel data is not supported)")
    syntax = transfer_syntax(ds)
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as exc:
        raise UnsupportedPixels(f"no decoder for the transfer syntax {syntax}") from exc
    if not decoder.is_available:
        raise UnsupportedPixels(f"no decoder installed for {syntax.name}")
    expected = frame_count(ds)
    with ExitStack() as stack:
        source: Dataset | BinaryIO = ds
        options: dict[str, Any] = {}
        if pixels is not None:
            try:
                handle = stack.enter_context(pixels.path.open("rb"))
                header = check_pixel_data(pixel_header(handle, pixels, ds))
            except OSError as exc:
                raise UndecodablePixels(f"cannot read the pixel data: {exc.strerror}") from exc
            source, options = handle, decode_options(ds, syntax)
            if len(header) == 12 or not syntax.is_implicit_VR:
                options["pixel_vr"] = header[4:6].decode("ascii", "replace")
        yielded = 0
        try:
            plugin = fastest_plugin(decoder)
            for frame, _ in decoder.iter_array(source, decoding_plugin=plugin, **options):
                if yielded == expected:
                    break  # JPEG may hold more fragments than frames; pydicom says so
                yielded += 1
                yield frame
        except (UnsupportedPixels, UndecodablePixels, GeneratorExit):
            raise
        except Exception as exc:
            raise UndecodablePixels(
                f"cannot decode the pixel data ({syntax.name}): {exc.__class__.__name__}"
            ) from exc
        if yielded != expected:
            raise UndecodablePixels(f"the pixel data holds {yielded} of {expected} frames")


def display_gray8(frame: np.ndarray, ds: Dataset) -> np.ndarray:
    """A 2-D uint8 view of a decoded frame as a viewer shows it: monochrome through its
    rescale and first window (min-max when there is none), MONOCHROME1 inverted, colour and
    palette as luma."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if photometric == "PALETTE COLOR" and frame.ndim == 2:
        frame = apply_color_lut(frame, ds)
    if frame.ndim == 3:
        return _stretch(frame[..., :3].astype(np.float32) @ _LUMA.astype(np.float32))
    values = frame.astype(np.float32)
    slope = _number(ds.get("RescaleSlope"), 1.0) or 1.0
    intercept = _number(ds.get("RescaleIntercept"), 0.0) or 0.0
    if slope != 1.0 or intercept != 0.0:
        values = values * np.float32(slope) + np.float32(intercept)
    center, width = _number(ds.get("WindowCenter"), None), _number(ds.get("WindowWidth"), None)
    if center is not None and width is not None and width >= 1:
        low = center - 0.5 - (width - 1) / 2
        gray = _stretch(values, low, low + width - 1)
    else:
        gray = _stretch(values)
    return 255 - gray if photometric == "MONOCHROME1" else gray


def chromatic(frame: np.ndarray, ds: Dataset) -> np.ndarray | None:
    """Where a decoded colour frame is coloured, not grey (2-D bool: its samples differ by
    more than _CHROMA once shown as RGB); None for a monochrome frame. Colour Doppler is;
    the text and the grey-scale image of an ultrasound are not."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if photometric == "PALETTE COLOR" and frame.ndim == 2:
        frame = apply_color_lut(frame, ds)
    if frame.ndim != 3:
        return None
    samples = frame[..., :3]
    spread: np.ndarray = samples.max(axis=-1).astype(np.int32) - samples.min(axis=-1)
    scale = 255.0 / max(1, int(np.iinfo(samples.dtype).max)) if samples.dtype.kind in "iu" else 1.0
    return np.asarray(spread * scale > _CHROMA)


def _number(value: object, default: float | None) -> float | None:
    """The first value of a (possibly multi-valued) numeric attribute, or ``default``."""
    if isinstance(value, MultiValue | list | tuple):
        value = value[0] if len(value) else None
    try:
        return float(value) if value not in (None, "") else default  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default


def _stretch(values: np.ndarray, low: float | None = None, high: float | None = None) -> np.ndarray:
    """``values`` mapped linearly from ``low..high`` (their range when not given) to 0..255."""
    low = float(values.min()) if low is None else low
    high = float(values.max()) if high is None else high
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (values - np.float32(low)) * np.float32(255.0 / (high - low))
    gray: np.ndarray = np.clip(scaled, 0, 255).astype(np.uint8)
    return gray


def downscale(gray: np.ndarray, factor: int) -> np.ndarray:
    """``gray`` shrunk by an integer ``factor`` (the mean of each block; edges that do not fill
    a block are dropped)."""
    if factor <= 1:
        return gray
    rows, columns = gray.shape[0] // factor, gray.shape[1] // factor
    if rows == 0 or columns == 0:
        return gray
    blocks = gray[: rows * factor, : columns * factor].reshape(rows, factor, columns, factor)
    small: np.ndarray = blocks.mean(axis=(1, 3), dtype=np.float32).astype(np.uint8)
    return small


def thumbnail(gray: np.ndarray, max_side: int = 256) -> tuple[np.ndarray, int]:
    """A copy of ``gray`` no larger than ``max_side`` on either side, and the integer factor
    it was shrunk by (a box of the thumbnail times the factor is a box of the image)."""
    factor = max(1, -(-max(gray.shape[:2]) // max_side))
    return downscale(gray, factor), factor
