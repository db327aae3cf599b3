"""The residual-PHI check of the pixels: OCR reads the written image back, and any identifying
value of the input that is still readable there is a leak.

Values are compared as OCR sees them: upper case, letters and digits only, with the characters
OCR confuses (0/O/D/Q, 1/I/L, 5/S, 8/B, 2/Z, 6/G) folded together, and one misread character
forgiven in values of eight characters or more. Short values are not searched: a sex (``M``), an
age (``045Y``) or a two-letter name part would match some word of almost any annotation, and a
flood of false leaks would quarantine clean images; they identify nobody on their own.
Findings name the kind of value, never the value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import date

import numpy as np
import numpy.typing as npt
from pydicom import Dataset

from pseudo.pixels.boxes import Box
from pseudo.pixels.detect import Detection, read_text, read_text_after

#: Shortest value searched, once normalized (letters and digits): an age (``045Y``) or a
#: four-digit number is on too many annotations to be evidence.
MIN_LENGTH = 5
#: Shortest name part searched: names are matched as whole words, so three letters is enough.
MIN_NAME_PART = 3
#: Name parts shorter than this must be a whole word read by the OCR.
WORD_BELOW = 5
#: Values at least this long match with one misread character.
FUZZY_FROM = 8

_FOLD = str.maketrans("ODQILSBZG", "000115826")
_MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
#: The input's attributes whose values are searched in its pixels, and the kind each is.
ATTRIBUTES: dict[str, str] = {
    "PatientName": "patient name",
    "PatientID": "patient ID",
    "OtherPatientIDs": "patient ID",
    "IssuerOfPatientID": "patient ID",
    "PatientBirthDate": "birth date",
    "StudyDate": "study date",
    "SeriesDate": "study date",
    "AcquisitionDate": "study date",
    "ContentDate": "study date",
    "InstitutionName": "institution",
    "AccessionNumber": "accession number",
    "StudyID": "study ID",
}


def identifying_values(dataset: Dataset) -> dict[str, list[str]]:
    """The values of ``dataset`` (an input) to search its output's pixels for, by kind.

    Dates stay as their DA value (``YYYYMMDD``); ``readable_values`` spells them out.
    """
    values: dict[str, list[str]] = {}
    for keyword, kind in ATTRIBUTES.items():
        element = dataset.get(keyword)
        if element is None or element == "":
            continue
        items = (
            element if isinstance(element, Sequence) and not isinstance(element, str) else [element]
        )
        values.setdefault(kind, []).extend(str(item) for item in items if str(item).strip())
    return values


def readable_values(
    frames: Iterable[npt.NDArray[np.uint8]],
    values: Mapping[str, Sequence[str]],
    detections: Sequence[Detection] | None = None,
    blanked: Sequence[Box] = (),
) -> list[str]:
    """The kinds of identifying value still readable in ``frames``, as findings.

    ``frames``: the output's frames as displayed, 2-D uint8. ``values``: kind -> the input's
    values of that kind (``identifying_values`` builds it from the input data set); a kind
    ending in ``date`` holds DA values (``YYYYMMDD``), searched in the spellings YYYYMMDD,
    YYYY-MM-DD, MM/DD/YYYY, DD.MM.YYYY, MM-DD-YYYY and ``YYYY Mon DD``; ``patient name`` holds
    PN values, searched part by part. Returns sorted messages such as ``"patient name readable
    in pixels"``, one per kind found, naming no value: the pipeline quarantines on any.
    ``detections``: what the detector saw of each frame of the input, when it read them all;
    each frame is then read with :func:`~pseudo.pixels.detect.read_text_after` (the same
    coverage, for less), told the regions ``blanked`` in it (a box whose ``frame`` is None
    was blanked in every frame); else with :func:`~pseudo.pixels.detect.read_text`.
    """
    needles = _needles(values)
    if not needles:
        return []
    found: set[str] = set()
    for index, frame in enumerate(frames):
        seen = detections[index] if detections and index < len(detections) else None
        if seen is None:
            read = read_text(frame)
        else:
            here = [box for box in blanked if box.frame is None or box.frame == index]
            read = read_text_after(frame, seen, here)
        lines = [box.text for box in read]
        if not lines:
            continue
        words = {_fold(word) for line in lines for word in re.split(r"[^0-9A-Za-z]+", line)}
        joined = [_fold(line) for line in lines]
        for kind, needle, whole_word in needles:
            if kind in found:
                continue
            if (needle in words) if whole_word else any(_contains(text, needle) for text in joined):
                found.add(kind)
    return sorted(f"{kind} readable in pixels" for kind in found)


def _needles(values: Mapping[str, Sequence[str]]) -> list[tuple[str, str, bool]]:
    """(kind, folded needle, match as a whole word) for every value worth searching."""
    needles: set[tuple[str, str, bool]] = set()
    for kind, items in values.items():
        for item in items:
            if kind == "patient name":
                for part in re.split(r"[\^= ,.\-]+", item):
                    folded = _fold(part)
                    if len(folded) >= MIN_NAME_PART:
                        # OCR often runs words together: long parts are searched inside lines
                        needles.add((kind, folded, len(folded) < WORD_BELOW))
            elif kind.endswith("date"):
                day = _as_date(item)
                spellings = _date_spellings(day) if day else [item]
                needles.update((kind, _fold(text), False) for text in spellings)
            else:
                folded = _fold(item)
                if len(folded) >= MIN_LENGTH:
                    needles.add((kind, folded, False))
    return sorted(needles)


def _fold(text: str) -> str:
    """Upper case letters and digits, with OCR's usual confusions folded to one character."""
    return re.sub(r"[^0-9A-Z]", "", text.upper()).translate(_FOLD)


def _as_date(text: str) -> date | None:
    digits = text.strip()[:8]
    if not re.fullmatch(r"\d{8}", digits):
        return None
    try:
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        return None


def _date_spellings(day: date) -> list[str]:
    """A date as burned-in annotations write it (separators are dropped by the folding)."""
    y, m, d = f"{day.year:04d}", f"{day.month:02d}", f"{day.day:02d}"
    month = _MONTHS[day.month - 1]
    return [y + m + d, m + d + y, d + m + y, f"{y} {month} {d}", f"{d} {month} {y}"]


def _contains(text: str, needle: str) -> bool:
    """``needle`` in ``text``, with one differing character forgiven in long needles."""
    if needle in text:
        return True
    size = len(needle)
    if size < FUZZY_FROM or len(text) < size:
        return False
    target = np.frombuffer(needle.encode(), dtype=np.uint8)
    source = np.frombuffer(text.encode(), dtype=np.uint8)
    windows = np.lib.stride_tricks.sliding_window_view(source, size)
    return bool(((windows != target).sum(axis=1) <= 1).any())
