"""A pydicom decoding plugin for JPEG Extended whose scan headers break the sequential rule.

The sequential DCT processes (JPEG Baseline and Extended, SOF0 and SOF1) code every scan with
spectral selection 0 to 63 and no successive approximation (ITU-T T.81 B.2.3: Ss = 0, Se = 63,
Ah = Al = 0). Some encoders write other values there (GE's 12-bit nuclear medicine files write
Se = 0, as the NEMA WG-04 ``NM1_JPLY`` and pydicom's ``JPEG-lossy.dcm`` do). The IJG library and
GDCM decode such streams as sequential (IJG warns, ``JWRN_NOT_SEQUENTIAL``); pylibjpeg-libjpeg,
the only installed decoder of 12-bit JPEG, refuses them. In a sequential stream those four
values have one meaning, so this plugin writes them as the standard says and lets
pylibjpeg-libjpeg decode the result: the same image IJG decodes.
"""

from __future__ import annotations

from pydicom.pixels.decoders import pylibjpeg
from pydicom.pixels.decoders.base import DecodeRunner
from pydicom.uid import JPEGExtended12Bit

#: The plugin's name among pydicom's decoding plugins.
PLUGIN = "pseudo-jpeg-sequential"
#: What pydicom needs to know when the plugin cannot run.
DECODER_DEPENDENCIES = {JPEGExtended12Bit: pylibjpeg.DECODER_DEPENDENCIES[JPEGExtended12Bit]}

_SOI, _SOS, _EOI = 0xD8, 0xDA, 0xD9
#: Start of frame markers of the sequential DCT processes with Huffman coding.
_SEQUENTIAL = frozenset({0xC0, 0xC1})
#: Ss = 0, Se = 63, Ah = Al = 0: what every scan of a sequential DCT frame says.
_SEQUENTIAL_SCAN = b"\x00\x3f\x00"
#: Markers without a length (start and end of image, restart markers, TEM).
_STANDALONE = frozenset({_SOI, _EOI, 0x01, *range(0xD0, 0xD8)})


def is_available(uid: str) -> bool:
    """Whether the plugin can decode ``uid`` (pylibjpeg-libjpeg is installed)."""
    return uid == JPEGExtended12Bit and pylibjpeg.is_available(uid)


def decode_pixel_data(src: bytes, runner: DecodeRunner) -> bytearray:
    """Decode one frame of JPEG Extended with pylibjpeg-libjpeg, its scan headers made
    sequential first (:func:`sequential_scans`)."""
    return pylibjpeg._decode_frame(sequential_scans(src), runner)


def sequential_scans(stream: bytes) -> bytes:
    """``stream`` with every scan header of a sequential DCT frame saying Ss = 0, Se = 63,
    Ah = Al = 0; ``stream`` itself when they already do, or when it is not a sequential DCT
    stream (progressive, lossless: left alone). A stream cut short is returned as it is, for
    the decoder to refuse."""
    data: bytearray | None = None
    sequential = False
    position = 2 if stream[:2] == b"\xff\xd8" else len(stream)
    while position + 4 <= len(stream):
        if stream[position] != 0xFF:
            return stream  # not at a marker: leave the stream to the decoder
        marker = stream[position + 1]
        if marker == 0xFF:
            position += 1  # fill byte
            continue
        if marker in _STANDALONE:
            if marker == _EOI:
                break
            position += 2
            continue
        length = int.from_bytes(stream[position + 2 : position + 4], "big")
        end = position + 2 + length
        if marker in _SEQUENTIAL:
            sequential = True
        if marker == _SOS:
            components = stream[position + 4] if position + 4 < len(stream) else 0
            spectral = position + 5 + 2 * components
            made_sequential = stream[spectral : spectral + 3] == _SEQUENTIAL_SCAN
            if sequential and spectral + 3 <= min(end, len(stream)) and not made_sequential:
                data = data if data is not None else bytearray(stream)
                data[spectral : spectral + 3] = _SEQUENTIAL_SCAN
            position = _after_entropy_data(stream, end)
            continue
        position = end
    return bytes(data) if data is not None else stream


def _after_entropy_data(stream: bytes, position: int) -> int:
    """The position of the first marker after the entropy-coded data that starts at
    ``position`` (stuffed zero bytes and restart markers belong to the data)."""
    while True:
        position = stream.find(b"\xff", position)
        if position < 0 or position + 1 >= len(stream):
            return len(stream)
        following = stream[position + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7 or following == 0xFF:
            position += 1 if following == 0xFF else 2
            continue
        return position
