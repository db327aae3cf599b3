"""Pixel work in bounded memory: frames are decoded, shown to the detector and redacted one at
a time, whatever the size of the file."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pydicom
import pydicom.data
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels.encoders.base import get_encoder
from pydicom.uid import UID, ExplicitVRLittleEndian, JPEGLSLossless

from pseudo.io.dicomio import read_source
from pseudo.pixels.boxes import Box
from pseudo.pixels.frames import display_gray8, iter_frames
from pseudo.pixels.redact import redact
from tests.memory import wait_with_peaks

MEMORY_BOUND_MB = 300
PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"
#: What the child process does with the file: what a worker's pixel step does with an image that
#: a rule covers and the detector scans (every frame decoded, shown to the detector, blanked,
#: written, then read back by the verifier); prints the number of boxes the detector found.
_WORKER = """
import sys
from pathlib import Path
from pseudo.io.dicomio import read_source, write_temporary
from pseudo.pixels.boxes import Box
from pseudo.pixels.frames import display_gray8, iter_frames
from pseudo.pixels.protect import protect
from pseudo.pixels.rules import PixelPlan
from pseudo.policy.pixels import PixelPolicy
from pseudo.verify.pixels import readable_values
source, out = read_source(Path(sys.argv[1])), Path(sys.argv[2])
plan = PixelPlan(None, (Box(0, 0, 60, 10),), True)
done = protect(plan, source.dataset, source.pixels, PixelPolicy(), out)
done.redaction.apply(source.dataset)
written, _ = write_temporary(source.dataset, out, done.redaction.pixels, sync=False)
done.redaction.discard()
output = read_source(written)
frames = (display_gray8(f, output.dataset) for f in iter_frames(output.dataset, output.pixels))
found = readable_values(frames, {"patient name": ["NOBODY^SOMEONE"]})
print(len(done.detected), len(found))
"""
#: What the detector reads in the frames that carry text (no identifying value of the file).
_TEXT = "BURNED IN 12345"


def _frame() -> Dataset:
    return pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")


def _multiframe(
    path: Path,
    megabytes: float,
    syntax: UID = ExplicitVRLittleEndian,
    tiles: int = 1,
    text_every: int = 0,
) -> int:
    """A multi-frame file of CT_small's frame (``tiles`` x ``tiles`` of it, varied a little
    per frame, with lines of text in every ``text_every``-th frame when given), written frame
    by frame, never whole in memory; the size of a decoded frame."""
    ds = _frame()
    frame = np.tile(ds.pixel_array, (tiles, tiles))
    ds.Rows, ds.Columns = frame.shape
    frames = max(2, int(megabytes * 1024 * 1024) // frame.nbytes)
    ds.NumberOfFrames = frames
    ds.file_meta.TransferSyntaxUID = syntax
    del ds.PixelData
    ds.save_as(path, enforce_file_format=True)

    def variant(index: int) -> np.ndarray:
        rolled = np.roll(frame, index % 64, axis=1)
        if text_every and index % text_every == 0:
            ink = np.zeros(frame.shape, np.uint8)
            for line in range(3):
                position = (8, 20 + 18 * line)
                cv2.putText(ink, _TEXT, position, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 255, 1)
            rolled[ink > 0] = frame.max()
        return rolled

    with path.open("ab") as handle:
        if syntax == ExplicitVRLittleEndian:
            handle.write(
                b"\xe0\x7f\x10\x00OW\x00\x00" + (frame.nbytes * frames).to_bytes(4, "little")
            )
            for index in range(frames):
                handle.write(variant(index).astype("<i2").tobytes())
        else:
            encoder = get_encoder(syntax)
            handle.write(b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff")
            handle.write(b"\xfe\xff\x00\xe0\x00\x00\x00\x00")  # an empty offset table
            for index in range(frames):
                data = encoder.encode(variant(index), **_options(ds))
                padded = data + b"\x00" * (len(data) % 2)
                handle.write(b"\xfe\xff\x00\xe0" + len(padded).to_bytes(4, "little") + padded)
            handle.write(b"\xfe\xff\xdd\xe0\x00\x00\x00\x00")
    return int(frame.nbytes)


def _options(ds: Dataset) -> dict[str, Any]:
    return {
        "rows": ds.Rows,
        "columns": ds.Columns,
        "number_of_frames": 1,
        "samples_per_pixel": 1,
        "bits_allocated": 16,
        "bits_stored": ds.BitsStored,
        "pixel_representation": ds.PixelRepresentation,
        "photometric_interpretation": "MONOCHROME2",
    }


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, JPEGLSLossless], ids=lambda s: s.name)
def test_memory_is_bounded_by_a_frame_not_by_the_file(syntax: UID, tmp_path: Path) -> None:
    path = tmp_path / "multiframe.dcm"
    frame_bytes = _multiframe(path, 6, syntax)
    size = path.stat().st_size
    source = read_source(path)
    tracemalloc.start()
    try:
        for frame in iter_frames(source.dataset, source.pixels):
            display_gray8(frame, source.dataset)
        _, decode_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        redaction = redact(source.dataset, source.pixels, [Box(0, 0, 60, 10)], tmp_path)
        _, redact_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert redaction.pixels is not None
    # a few frames' worth (the frame, its blanked copy, its encoding, its check), never the file
    bound = 16 * frame_bytes + (1 << 20)
    print(
        f"{syntax.name}: file {size >> 20} MB, peaks {decode_peak >> 10} / {redact_peak >> 10} kB"
    )
    assert decode_peak < bound and redact_peak < bound, (decode_peak, redact_peak, bound)
    assert max(decode_peak, redact_peak) < size / 4
    redaction.discard()


def _worker_peak_mb(path: Path, out: Path) -> tuple[float, list[int]]:
    """Run the pixel step of a worker on ``path`` in a process of its own: its peak resident
    memory (MB) and what it printed (boxes detected, values read back)."""
    out.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-c", _WORKER, str(path), str(out)], stdout=subprocess.PIPE, text=True
    )
    peaks = wait_with_peaks(process)
    printed = process.stdout.read() if process.stdout else ""
    assert process.returncode == 0
    written = next(out.glob(".pseudo-*.part"))
    assert written.stat().st_size >= path.stat().st_size - 4096
    assert not list(out.glob(".pseudo-pixels-*"))
    return max(peaks.values()) / 1024, [int(n) for n in printed.split()]


@pytest.mark.slow
def test_a_1_gb_multiframe_file_is_redacted_under_300_mb(tmp_path: Path) -> None:
    # every frame decoded, scanned by the detector, blanked by the rule, written and read back
    path = tmp_path / "big.dcm"
    _multiframe(path, 1024, tiles=2)
    peak_mb, (detected, found) = _worker_peak_mb(path, tmp_path / "out")
    print(f"peak memory {peak_mb:.0f} MB for a 1 GB multi-frame file without text")
    assert detected == 0 and found == 0  # no frame passed the scan: the OCR model never loaded
    assert peak_mb < MEMORY_BOUND_MB, f"peak memory {peak_mb:.0f} MB for a 1 GB file"


@pytest.mark.slow
def test_a_1_gb_multiframe_file_with_text_is_redacted_under_300_mb(tmp_path: Path) -> None:
    # the OCR loads for the frames with text: its models, and its detector's activations for
    # the pieces of the frame it reads (bands around the candidates, then the whole frame for
    # the verifier, each piece of bounded size)
    path = tmp_path / "big-text.dcm"
    _multiframe(path, 1024, tiles=4, text_every=256)
    peak_mb, (detected, found) = _worker_peak_mb(path, tmp_path / "out")
    print(f"peak memory {peak_mb:.0f} MB for a 1 GB multi-frame file, text in 1 frame of 256")
    assert detected > 0 and found == 0
    assert peak_mb < MEMORY_BOUND_MB, f"peak memory {peak_mb:.0f} MB for a 1 GB file with text"
