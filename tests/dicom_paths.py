"""Reading values at attribute paths such as ``ReferencedSeriesSequence[0].SeriesInstanceUID``."""

from __future__ import annotations

import re
from typing import Any

from pydicom.dataset import Dataset

_SEGMENT = re.compile(r"^(?P<name>[^\[]+)(?:\[(?P<index>\d+)\])?$")
_TAG = re.compile(r"^\(([0-9A-Fa-f]{4}),([0-9A-Fa-f]{4})\)$")


def value_at(ds: Dataset, path: str) -> Any:
    """The value at ``path``, or raise KeyError if any part of it is absent."""
    current: Any = ds
    for segment in path.split("."):
        match = _SEGMENT.match(segment)
        if match is None:
            raise KeyError(segment)
        name, index = match["name"], match["index"]
        tag = _TAG.match(name)
        key: Any = int(tag[1] + tag[2], 16) if tag else name
        if key not in current:
            raise KeyError(path)
        element = current[key]
        current = element.value
        if index is not None:
            if int(index) >= len(current):
                raise KeyError(path)
            current = current[int(index)]
    return current
