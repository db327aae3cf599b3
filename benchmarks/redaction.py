#!/usr/bin/env python3
"""Throughput of pixel redaction, per transfer syntax, against baselines of the same run.

For each syntax, a multi-frame image of 512x512 16-bit frames (CT_small's frame tiled 4x4,
shifted a little per frame) is written once; then, interleaved round by round so that a slow
minute of a shared machine weighs on both sides of a ratio, three things are timed on it:

* ``copy``: the pixel data element copied as ``pseudo run`` copies it when nothing is
  redacted (``write_temporary`` of the header and the source's pixel data);
* ``decode``: every frame decoded (``iter_frames``), what any redaction must at least do;
* ``redact``: ``redact`` with a box in every frame, then ``write_temporary`` of the result.

MB/s counts decoded pixel data (frames x rows x columns x 2 bytes). The ratios are the
median of each round's ratio, with the lowest and highest.

Usage: python benchmarks/redaction.py [--megabytes 32] [--rounds 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from pseudo.io.dicomio import Source, read_source, write_temporary  # noqa: E402
from pseudo.io.pydicom_internals import quiet_pydicom  # noqa: E402
from pseudo.pixels.boxes import Box  # noqa: E402
from pseudo.pixels.frames import iter_frames  # noqa: E402
from pseudo.pixels.redact import redact  # noqa: E402
from tests.test_pixel_memory import _multiframe  # noqa: E402

HEADER = (
    "| syntax | stored MB | copy MB/s | decode MB/s | redact MB/s "
    "| redact speed vs copy | redact speed vs decode |"
)
SYNTAXES = (ExplicitVRLittleEndian, RLELossless, JPEGLSLossless, JPEG2000Lossless)


def _timed(action: Callable[[], None]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def _copy(source: Source, scratch: Path) -> None:
    out, _ = write_temporary(source.dataset, scratch, source.pixels, sync=False)
    out.unlink()


def _decode(source: Source, scratch: Path) -> None:
    for _ in iter_frames(source.dataset, source.pixels):
        pass


def _redact(source: Source, scratch: Path) -> None:
    ds = source.dataset.copy()
    result = redact(ds, source.pixels, [Box(0, 0, 60, 10)], scratch)
    result.apply(ds)
    out, _ = write_temporary(ds, scratch, result.pixels, sync=False)
    out.unlink()
    result.discard()


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=32, help="decoded size per image")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="pseudo-redaction-"))
    images: dict[UID, tuple[Path, int, int]] = {}
    for syntax in SYNTAXES:
        path = scratch / f"{syntax.keyword}.dcm"
        frame_bytes = _multiframe(path, args.megabytes, syntax, tiles=4)
        frames = int(args.megabytes * 1024 * 1024) // frame_bytes
        images[syntax] = (path, frames * frame_bytes, path.stat().st_size)
    try:
        times = _measure(images, scratch, args.rounds)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    _report(images, times, args.megabytes, args.rounds)
    return 0


def _measure(
    images: dict[UID, tuple[Path, int, int]], scratch: Path, rounds: int
) -> dict[tuple[UID, str], list[float]]:
    """Seconds of each step on each image, one list per (syntax, step), round by round."""
    times: dict[tuple[UID, str], list[float]] = {}
    with quiet_pydicom():
        for _ in range(rounds):
            for syntax, (path, _, _) in images.items():
                source = read_source(path)

                for name, action in (("copy", _copy), ("decode", _decode), ("redact", _redact)):
                    elapsed = _timed(partial(action, source, scratch))
                    times.setdefault((syntax, name), []).append(elapsed)
    return times


def _report(
    images: dict[UID, tuple[Path, int, int]],
    times: dict[tuple[UID, str], list[float]],
    megabytes_each: float,
    rounds: int,
) -> None:
    """Print the table of MB/s and ratios."""
    print(f"{megabytes_each:g} MB of decoded 16-bit frames per image, {rounds} rounds\n")
    print(HEADER)
    print("|---|---:|---:|---:|---:|---:|---:|")
    for syntax, (_, decoded, stored) in images.items():
        megabytes = decoded / 1e6
        rates = {
            name: megabytes / statistics.median(times[(syntax, name)])
            for name in ("copy", "decode", "redact")
        }
        ratios = {
            base: sorted(
                b / r for b, r in zip(times[(syntax, base)], times[(syntax, "redact")], strict=True)
            )
            for base in ("copy", "decode")
        }
        cells = [f"{statistics.median(r):.2f}x ({r[0]:.2f}-{r[-1]:.2f}x)" for r in ratios.values()]
        print(
            f"| {syntax.name} | {stored / 1e6:.1f} | {rates['copy']:.0f} | "
            f"{rates['decode']:.0f} | {rates['redact']:.1f} | {cells[0]} | {cells[1]} |"
        )


if __name__ == "__main__":
    raise SystemExit(main())
