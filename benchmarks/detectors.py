#!/usr/bin/env python3
"""Burned-in text detectors compared: recall, boxes on text-free images, time per image.

Measured in the same run, on one core (the process is pinned to one CPU and every engine runs
one thread), on images read in place:

* the burned-in corpus ``../shared/corpus/burned-in/dicom`` (value boxes in a JSON beside each
  file): the share of value boxes that the detected boxes cover (90 % of its area or more);
* images without text: the PHI canary corpus and the public corpus, less its burned-in folder
  and the ultrasound and secondary captures that carry text by design: boxes per image and
  the share of images with any box (each box would be blanked, or the image quarantined).

Detectors:

* ``tesseract``: Tesseract 5 from Debian (``tesseract-ocr``), sparse-text mode, TSV output,
  words read with confidence >= 30 (small images enlarged to 600 pixels first);
* ``rapidocr``: RapidOCR (PP-OCRv4 ONNX models shipped in its wheel), default settings;
* ``opencv scan``: pseudo's classical text-block finder alone (no OCR);
* ``pseudo``: ``pseudo.pixels.detect.find_text`` (the scan, then RapidOCR with thresholds
  lowered for recall, on images with a candidate).

Time per image is CPU time (this process and the Tesseract processes it starts: on a shared
machine wall time measures the neighbours), in milliseconds and as a ratio to the baseline
measured in the same run: reading the file and decoding its pixels (``dcmread`` +
``pixel_array``).

Usage: python benchmarks/detectors.py [--shared ../shared] [--limit N] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402
import pydicom  # noqa: E402

from pseudo.pixels import detect  # noqa: E402
from pseudo.pixels.boxes import Box  # noqa: E402
from tests.burned_in import Sample, burned_in_samples, found_values, text_free_samples  # noqa: E402

Image = npt.NDArray[np.uint8]
Detector = Callable[[Image], list[Box]]


@dataclass
class Score:
    """One detector's figures."""

    name: str
    values: int = 0
    found: int = 0
    text_seconds: float = 0.0
    text_images: int = 0
    free_images: int = 0
    free_boxes: int = 0
    free_with_box: int = 0
    free_seconds: float = 0.0


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (Tesseract), in seconds."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def tesseract(image: Image) -> list[Box]:
    """Tesseract 5 (Debian) on the whole image: words read with confidence >= 30."""
    factor = max(1, int(np.ceil(600 / max(image.shape))))
    scaled = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)
    ok, png = cv2.imencode(".png", scaled)
    assert ok
    result = subprocess.run(
        ["tesseract", "stdin", "stdout", "--psm", "11", "tsv"],
        input=png.tobytes(),
        capture_output=True,
        check=True,
        env={**os.environ, "OMP_THREAD_LIMIT": "1"},
    )
    boxes = []
    for row in result.stdout.decode("utf-8", "replace").splitlines()[1:]:
        cells = row.split("\t")
        if len(cells) < 12 or not any(ch.isalnum() for ch in cells[11]):
            continue
        if float(cells[10]) < 30:
            continue
        left, top, width, height = (int(cell) // factor for cell in cells[6:10])
        boxes.append(Box(left - 2, top - 2, left + width + 2, top + height + 2))
    return boxes


def rapidocr_default() -> Detector:
    """RapidOCR with its default settings, one thread, on the whole image."""
    from rapidocr_onnxruntime import RapidOCR

    engine = RapidOCR(intra_op_num_threads=1, inter_op_num_threads=1, print_verbose=False)

    def run(image: Image) -> list[Box]:
        result, _ = engine(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), use_cls=False)
        boxes = []
        for quad, _text, _score in result or []:
            corners = np.asarray(quad, dtype=np.float64)
            x1, y1 = corners.min(axis=0)
            x2, y2 = corners.max(axis=0)
            boxes.append(Box(int(x1) - 2, int(y1) - 2, int(x2) + 2, int(y2) + 2))
        return boxes

    return run


def baseline(path_of: dict[str, Path]) -> Callable[[Sample], float]:
    """Seconds to read a sample's file and decode its pixels (the baseline of the ratios)."""

    def seconds(sample: Sample) -> float:
        start = cpu_seconds()
        pydicom.dcmread(path_of[sample.name]).pixel_array  # noqa: B018
        return cpu_seconds() - start

    return seconds


def measure(
    name: str, run: Detector, with_text: Sequence[Sample], without: Sequence[Sample]
) -> Score:
    """Run one detector over both sets."""
    score = Score(name)
    run(with_text[0].image)  # load models before the clock starts
    for sample in with_text:
        start = cpu_seconds()
        boxes = run(sample.image)
        score.text_seconds += cpu_seconds() - start
        score.text_images += 1
        score.values += len(sample.values)
        score.found += found_values(sample, boxes)
    for sample in without:
        start = cpu_seconds()
        boxes = run(sample.image)
        score.free_seconds += cpu_seconds() - start
        score.free_images += 1
        score.free_boxes += len(boxes)
        score.free_with_box += bool(boxes)
    return score


def main(argv: Sequence[str] | None = None) -> int:
    """Print the comparison table (markdown) on stdout."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared", type=Path, default=HERE.parent.parent / "shared")
    parser.add_argument("--limit", type=int, default=0, help="at most N images of each set")
    parser.add_argument("--only", nargs="*", default=None, help="detectors to run, by name")
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    cv2.setNumThreads(1)
    corpus = args.shared / "corpus"
    burned = corpus / "burned-in" / "dicom"
    if not burned.is_dir():
        print(f"burned-in corpus not found at {burned}", file=sys.stderr)
        return 2
    with_text = list(burned_in_samples(burned))
    without = list(text_free_samples([corpus / "phi-canary" / "dicom", corpus / "public"]))
    if args.limit:
        with_text, without = with_text[: args.limit], without[: args.limit]
    detectors: dict[str, Callable[[], Detector]] = {
        "opencv scan": lambda: detect.text_candidates,
        "pseudo": lambda: detect.find_text,
        "rapidocr": rapidocr_default,
    }
    if shutil.which("tesseract"):
        detectors["tesseract"] = lambda: tesseract
    else:
        print("tesseract not installed (apt-get install tesseract-ocr): left out", file=sys.stderr)
    paths = {path.name: path for path in burned.glob("*.dcm")}
    read = baseline(paths)
    base = sum(read(sample) for sample in with_text) / len(with_text)
    print(f"{len(with_text)} images with {sum(len(s.values) for s in with_text)} value boxes; ")
    print(f"{len(without)} images without text; one core; baseline (read + decode) ")
    print(f"{base * 1000:.1f} ms per burned-in image\n")
    print(
        "| detector | value boxes found | boxes per text-free image | text-free images with a box"
        " | ms per image (text) | x baseline | ms per image (no text) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, make in detectors.items():
        if args.only and name not in args.only:
            continue
        score = measure(name, make(), with_text, without)
        text_ms = score.text_seconds / score.text_images * 1000
        free_ms = score.free_seconds / max(1, score.free_images) * 1000
        print(
            f"| {name} | {score.found}/{score.values} ({score.found / score.values:.1%}) "
            f"| {score.free_boxes / max(1, score.free_images):.2f} "
            f"| {score.free_with_box}/{score.free_images} "
            f"| {text_ms:.0f} | {text_ms / (base * 1000):.0f} | {free_ms:.0f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
