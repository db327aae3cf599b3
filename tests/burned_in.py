"""The detector's measuring tape, shared by its tests and ``benchmarks/detectors.py``.

Images of the corpora as 2-D uint8 grayscale, the value boxes of the burned-in corpus, and
the two figures the detector is judged by: recall of the value boxes, and boxes found on
images without text.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.pixels.processing import convert_color_space

from pseudo.pixels.boxes import Box

#: The pixel policy's default margin: a detected box is blanked grown by this many pixels.
MARGIN = 2
#: Folders of the public corpus whose images carry burned-in text on purpose.
PUBLIC_WITH_TEXT = ("pseudo-phi-tcia-via-johnsnowlabs",)
#: Kinds of image that carry text by design (annotations, captured screens): not text-free.
TEXT_BY_DESIGN = ("Ultrasound", "Secondary Capture", "Video", "Visible Light", "Photograph")


@dataclass(frozen=True)
class Sample:
    """One image: where it came from, its first frame as gray8, its burned-in value boxes."""

    name: str
    image: npt.NDArray[np.uint8]
    values: tuple[Box, ...]


def gray8(dataset: pydicom.Dataset) -> npt.NDArray[np.uint8] | None:
    """The first frame of ``dataset`` as a 2-D uint8 image as displayed (None: no image).

    The stored range is stretched to 0..255 and MONOCHROME1 inverted, so bright text on a
    dark background looks as it does on a screen; colour is reduced to its luminance.
    """
    if "PixelData" not in dataset:
        return None
    try:
        pixels = np.asarray(dataset.pixel_array)
    except Exception:
        return None
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    samples = int(dataset.get("SamplesPerPixel", 1) or 1)
    if frames > 1:
        pixels = pixels[0]
    if samples == 3 and pixels.ndim == 3:
        if str(dataset.get("PhotometricInterpretation", "")).startswith("YBR"):
            pixels = convert_color_space(pixels, "YBR_FULL", "RGB")
        pixels = pixels.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    if pixels.ndim != 2:
        return None
    values = pixels.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) * (255.0 / max(high - low, 1e-9))
    image = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    if dataset.get("PhotometricInterpretation") == "MONOCHROME1":
        image = 255 - image
    return image


def burned_in_samples(folder: Path, names: Sequence[str] | None = None) -> Iterator[Sample]:
    """The burned-in corpus's images with their value boxes (empty value boxes left out)."""
    for path in sorted(folder.glob("*.dcm")):
        if names is not None and path.name not in names:
            continue
        image = gray8(pydicom.dcmread(path))
        assert image is not None, path
        notes = json.loads(path.with_suffix(".json").read_text())
        values = tuple(
            Box(*_corners(entry["value"]["bbox"]), source="corpus")
            for entry in notes["annotation"]
            if entry["value"]["text"].strip() and entry["value"]["bbox"] != [0, 0, 0, 0]
        )
        yield Sample(path.name, image, values)


def _corners(bbox: list[int]) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = bbox
    return x1, y1, x2, y2


def text_free_samples(folders: Sequence[Path]) -> Iterator[Sample]:
    """Every image in ``folders`` (recursively) but those known to carry burned-in text: the
    public corpus's burned-in folder, and ultrasound and secondary captures (``TEXT_BY_DESIGN``),
    whose text is real and is found (see docs/pixels.md)."""
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if not path.is_file() or any(part in PUBLIC_WITH_TEXT for part in path.parts):
                continue
            if path.suffix.lower() in {".json", ".csv", ".md", ".txt"}:
                continue
            try:
                dataset = pydicom.dcmread(path)
                kind = str(getattr(dataset.get("SOPClassUID"), "name", ""))
                if any(word in kind for word in TEXT_BY_DESIGN):
                    continue
                image = gray8(dataset)
            except Exception:
                continue
            if image is not None and min(image.shape) >= 32:
                yield Sample(str(path.relative_to(folder)), image, ())


def covered(box: Box, found: Sequence[Box], shape: tuple[int, ...]) -> float:
    """The share of ``box``'s area that the ``found`` boxes cover."""
    mask = np.zeros(shape[:2], dtype=bool)
    for other in found:
        mask[max(0, other.y1) : other.y2 + 1, max(0, other.x1) : other.x2 + 1] = True
    part = mask[box.y1 : box.y2 + 1, box.x1 : box.x2 + 1]
    return float(part.mean()) if part.size else 1.0


def found_values(sample: Sample, found: Sequence[Box]) -> int:
    """How many of ``sample``'s value boxes blanking the ``found`` boxes (grown by ``MARGIN``,
    as the pixel step does) removes, by issue 15's measure (the scorer's): the box is
    near-constant afterwards, or no longer correlated with what it was. A value box with no
    ink (constant in the input) counts as removed."""
    rows, columns = sample.image.shape[:2]
    after = sample.image.astype(np.float64)
    for box in found:
        grown = box.grown(MARGIN, columns, rows)
        after[grown.y1 : grown.y2 + 1, grown.x1 : grown.x2 + 1] = 0
    return sum(_removed(sample.image, after, box) for box in sample.values)


def _removed(before: npt.NDArray[np.uint8], after: npt.NDArray[np.float64], box: Box) -> bool:
    was = before[box.y1 : box.y2 + 1, box.x1 : box.x2 + 1].astype(np.float64)
    now = after[box.y1 : box.y2 + 1, box.x1 : box.x2 + 1]
    if was.size == 0 or was.std() == 0 or now.std() < 2:
        return True
    return bool(np.corrcoef(was.ravel(), now.ravel())[0, 1] < 0.3)
