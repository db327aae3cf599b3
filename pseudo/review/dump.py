"""``pseudo dump``: every attribute at every depth, with tag, VR, keyword and value."""

from __future__ import annotations

from collections.abc import Iterator

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from pseudo.dicom.private import creator_of
from pseudo.dicom.tags import attribute_name, element_vr

MAX_TEXT = 120


def _value(value: object, full: bool) -> str:
    if value is None:
        return "(empty)"
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, MultiValue | list | tuple):
        text = "\\".join(str(v) for v in value)
    else:
        text = str(value)
    if not full and len(text) > MAX_TEXT:
        text = text[:MAX_TEXT] + f"... ({len(text)} characters)"
    return f"[{text}]"


def dump_lines(ds: Dataset, *, full: bool = False, depth: int = 0) -> Iterator[str]:
    """Lines like dcmdump's: ``(0010,0010) PN PatientName [DOE^JOHN]``; items indented."""
    indent = "  " * depth
    for tag in list(ds.keys()):
        element = ds.get_item(tag)
        vr = element_vr(element, tag)
        name = attribute_name(tag)
        if tag >> 16 & 1 and tag & 0xFFFF >= 0x1000:
            name = f"Private [{creator_of(ds, tag) or 'no creator'}]"
        head = f"{indent}({tag >> 16:04X},{tag & 0xFFFF:04X}) {vr} {name}"
        try:
            value = ds[tag].value
        except Exception as exc:
            yield f"{head} <unreadable: {exc.__class__.__name__}>"
            continue
        if vr == "SQ":
            items = value or []
            yield f"{head} ({len(items)} items)"
            for index, item in enumerate(items, start=1):
                yield f"{indent}  Item {index}"
                yield from dump_lines(item, full=full, depth=depth + 2)
        else:
            yield f"{head} {_value(value, full)}"


def dump_file(ds: Dataset, *, full: bool = False) -> Iterator[str]:
    """The file meta, then the dataset."""
    meta = getattr(ds, "file_meta", None)
    if meta:
        yield "# File Meta Information"
        yield from dump_lines(meta, full=full)
    yield "# Dataset"
    yield from dump_lines(ds, full=full)
