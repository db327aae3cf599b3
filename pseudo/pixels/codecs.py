"""The transfer syntax a redacted image is written in, and encoding its frames losslessly.

Native data is blanked in place (see :mod:`pseudo.pixels.redact`): it keeps its transfer
syntax. Encapsulated data is decoded, blanked and encoded again, always losslessly:

* a lossless syntax with an encoder (RLE, JPEG-LS Lossless, JPEG 2000 Lossless) is kept;
* JPEG Lossless (Process 14, SV1 or not) has no encoder: it becomes JPEG-LS Lossless;
* a lossy syntax (JPEG baseline or extended, JPEG-LS near-lossless, JPEG 2000) is written in a
  lossless one (its own family's where there is one), so the redaction adds no second
  generation of loss; the data set keeps Lossy Image Compression ``01`` and its method.

When the preferred encoder refuses an image (bit depth, colour model), the next lossless
syntax is tried, and Explicit VR Little Endian (native) always can. Every encoded frame is
decoded back and compared with what was meant to be written: a codec that would change one
value makes the file rejected, never written.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.encoders.base import get_encoder
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from pseudo.pixels.failures import ReencodeFailed, UnsupportedPixels
from pseudo.pixels.frames import fastest_plugin

#: Transfer syntaxes whose pixel data is blanked in place, byte for byte.
NATIVE = frozenset(
    {
        ImplicitVRLittleEndian,
        ExplicitVRLittleEndian,
        ExplicitVRBigEndian,
        DeflatedExplicitVRLittleEndian,
    }
)
#: Lossy syntaxes, with the Lossy Image Compression Method of PS3.3 C.7.6.1.1.5.1.
LOSSY_METHOD = {
    JPEGBaseline8Bit: "ISO_10918_1",
    JPEGExtended12Bit: "ISO_10918_1",
    JPEGLSNearLossless: "ISO_14495_1",
    JPEG2000: "ISO_15444_1",
}
_LOSSLESS_ORDER = (JPEGLSLossless, JPEG2000Lossless, RLELossless, ExplicitVRLittleEndian)
#: Where each encapsulated syntax is written, most preferred first.
_TARGETS: dict[UID, tuple[UID, ...]] = {
    RLELossless: (RLELossless, JPEGLSLossless, JPEG2000Lossless, ExplicitVRLittleEndian),
    JPEGLSLossless: _LOSSLESS_ORDER,
    JPEG2000Lossless: (JPEG2000Lossless, JPEGLSLossless, RLELossless, ExplicitVRLittleEndian),
    JPEGLossless: _LOSSLESS_ORDER,
    JPEGLosslessSV1: _LOSSLESS_ORDER,
    JPEGBaseline8Bit: _LOSSLESS_ORDER,
    JPEGExtended12Bit: _LOSSLESS_ORDER,
    JPEGLSNearLossless: _LOSSLESS_ORDER,
    JPEG2000: (JPEG2000Lossless, JPEGLSLossless, RLELossless, ExplicitVRLittleEndian),
}


def targets(source: UID) -> tuple[UID, ...]:
    """The lossless syntaxes an image in ``source`` may be written in, preferred first."""
    if source not in _TARGETS:
        raise UnsupportedPixels(f"redaction does not handle the transfer syntax {source}")
    return _TARGETS[source]


def written_photometric(ds: Dataset, syntax: UID) -> str:
    """The Photometric Interpretation of decoded frames of ``ds`` written in ``syntax``:
    colour is decoded to RGB, and JPEG 2000 keeps its reversible colour transform."""
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if int(ds.get("SamplesPerPixel", 1) or 1) == 1:
        return photometric
    if syntax == JPEG2000Lossless and photometric in ("YBR_RCT", "YBR_ICT"):
        return "YBR_RCT"
    return "RGB"


class FrameEncoder:
    """Encodes decoded frames of one image in one lossless syntax, each checked by decoding
    it back."""

    def __init__(self, ds: Dataset, syntax: UID) -> None:
        self.syntax = syntax
        self.photometric = written_photometric(ds, syntax)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        self.bits_allocated = int(ds.BitsAllocated)
        self.signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
        self.options: dict[str, Any] = {
            "rows": int(ds.Rows),
            "columns": int(ds.Columns),
            "number_of_frames": 1,
            "samples_per_pixel": samples,
            "bits_allocated": self.bits_allocated,
            "bits_stored": int(ds.get("BitsStored") or self.bits_allocated),
            "pixel_representation": int(self.signed),
            "photometric_interpretation": self.photometric,
            "planar_configuration": 0,
            "pixel_keyword": "PixelData",
        }
        if self.bits_allocated not in (8, 16, 32, 64):
            raise UnsupportedPixels(
                f"encapsulated pixel data of {self.bits_allocated} bits allocated"
            )

    @property
    def encapsulated(self) -> bool:
        """Whether frames are written as items of encapsulated pixel data."""
        return self.syntax != ExplicitVRLittleEndian

    def encode(self, frame: np.ndarray) -> bytes:
        """``frame`` encoded; raises :class:`ReencodeFailed` when the encoder refuses it or
        the result does not decode back to exactly ``frame``."""
        if not self.encapsulated:
            return self.native(frame)
        try:
            # pydicom's table for RLE stops at 16 bits; PS3.5 G allows 32 (12 segments of RGB
            # in 15), its encoder writes them, and the decoding below proves the result
            validate = self.syntax != RLELossless
            encoded = bytes(
                get_encoder(self.syntax).encode(frame, validate=validate, **self.options)
            )
            decoder = get_decoder(self.syntax)
            decoded, _ = decoder.as_array(
                encapsulate([encoded]), decoding_plugin=fastest_plugin(decoder), **self.options
            )
        except Exception as exc:
            raise ReencodeFailed(
                f"cannot encode the redacted image as {self.syntax.name}: {exc.__class__.__name__}"
            ) from exc
        if decoded.shape != frame.shape or not np.array_equal(decoded, frame):
            raise ReencodeFailed(f"{self.syntax.name} did not keep the redacted image losslessly")
        return encoded

    def native(self, frame: np.ndarray) -> bytes:
        """``frame`` as native little-endian pixel data (samples interleaved)."""
        kind = "i" if self.signed else "u"
        return frame.astype(f"<{kind}{self.bits_allocated // 8}", copy=False).tobytes()


def choose_encoder(ds: Dataset, source: UID, frame: np.ndarray) -> tuple[FrameEncoder, bytes]:
    """The first of ``source``'s :func:`targets` whose encoder takes ``frame`` (the first
    redacted frame) and gives it back unchanged, and ``frame`` so encoded (encoding it is
    the test: it is not encoded twice)."""
    reasons = []
    for syntax in targets(source):
        try:
            encoder = FrameEncoder(ds, syntax)
            if encoder.encapsulated and not get_encoder(syntax).is_available:
                continue
            return encoder, encoder.encode(frame)
        except ReencodeFailed as exc:
            reasons.append(exc.reason)
    raise ReencodeFailed("; ".join(reasons) or "no lossless encoder for this image")
