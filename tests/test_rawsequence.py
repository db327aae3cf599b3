"""The raw sequence reader gives the elements pydicom's reader puts in a sequence's items, or
declines.

Every sequence of every file at hand (pydicom's bundled files, the public, canary and burned-in
corpora), at the top level and nested, is read both ways: where
:func:`pseudo.io.rawsequence.sequence_leaves` reads one, it gives exactly the elements that
walking pydicom's items gives (tag, VR, length, raw value, position, encoding), in the same
order, each with the same VR to decide by, and the items' character set is that of the data
set holding the sequence.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom.data
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from pseudo.dicom.tags import element_vr
from pseudo.findings import RejectedFile
from pseudo.io import dicomio
from pseudo.io.pydicom_internals import character_set, element_map, quiet_pydicom
from pseudo.io.rawsequence import sequence_leaves
from tests.conftest import CANARY, PUBLIC, SHARED


def _pydicom_leaves(ds: Dataset, tag: int) -> tuple[list[tuple[Any, ...]], set[Any]]:
    """The elements of the sequence ``tag`` of ``ds`` as pydicom's items hold them, and the
    character sets of the items holding them."""
    leaves: list[tuple[Any, ...]] = []
    charsets: set[Any] = set()

    def walk(item: Dataset) -> None:
        for inner, element in list(element_map(item).items()):
            vr = element_vr(element, inner)
            if vr == "SQ":
                for sub in item[inner].value or []:
                    walk(sub)
                continue
            leaves.append((*element, vr))
            charsets.add(_encodings(character_set(item)))

    for item in ds[tag].value or []:
        walk(item)
    return leaves, charsets


def _encodings(charset: str | list[str]) -> tuple[str, ...]:
    return (charset,) if isinstance(charset, str) else tuple(charset)


def _sequences(ds: Dataset) -> Iterator[tuple[Dataset, int, RawDataElement]]:
    """Every raw sequence element of ``ds`` and of the items of its sequences (read before
    pydicom converts it)."""
    for tag, element in list(element_map(ds).items()):
        if element_vr(element, tag) != "SQ":
            continue
        if isinstance(element, RawDataElement):
            yield ds, tag, element
        try:
            items = ds[tag].value or []
        except Exception:
            continue
        for item in items:
            yield from _sequences(item)


def _files() -> list[Path]:
    roots = [CANARY / "dicom", PUBLIC, SHARED / "corpus" / "burned-in"]
    bundled = Path(pydicom.data.__file__).parent / "test_files"
    found = sorted(p for p in bundled.rglob("*.dcm") if p.is_file())
    for root in roots:
        if root.is_dir():
            found += sorted(p for p in root.rglob("*") if p.is_file() and p.suffix != ".json")
    return found


def test_sequences_read_as_pydicom_reads_them() -> None:
    files = _files()
    if len(files) < 150:
        pytest.skip(f"the corpora of ../shared were not found at {SHARED}")
    read = declined = 0
    for path in files:
        try:
            with quiet_pydicom():
                ds = dicomio.read_source(path).dataset
        except (RejectedFile, dicomio.NotDicom):
            continue
        for holder, tag, element in list(_sequences(ds)):
            leaves = sequence_leaves(element)
            if leaves is None:
                declined += 1  # unusual bytes are left to pydicom
                continue
            read += 1
            with quiet_pydicom():
                expected, charsets = _pydicom_leaves(holder, tag)
            assert [(*raw, vr) for raw, vr in leaves] == expected, f"{path.name} {tag:08X}"
            assert charsets <= {_encodings(character_set(holder))}, f"{path.name} {tag:08X}"
    assert read > 1000
    assert declined < read / 20, (read, declined)


def test_unusual_bytes_are_left_to_pydicom() -> None:
    def sequence(value: bytes) -> RawDataElement:
        tag = pydicom.tag.BaseTag(0x00081140)
        return RawDataElement(tag, "SQ", len(value), value, 0, False, True)

    item = b"\x08\x00\x50\x11UI\x04\x001.2\x00"
    good = b"\xfe\xff\x00\xe0" + len(item).to_bytes(4, "little") + item
    assert sequence_leaves(sequence(good)) is not None
    cut = good[:-2]
    implicit_item = b"\xfe\xff\x00\xe0\x0c\x00\x00\x00\x08\x00\x50\x11\x04\x00\x00\x001.2\x00"
    charset = b"\xfe\xff\x00\xe0\x12\x00\x00\x00\x08\x00\x05\x00CS\x0a\x00ISO_IR 100"
    twice = b"\xfe\xff\x00\xe0" + (2 * len(item)).to_bytes(4, "little") + item + item
    for value in (cut, implicit_item, charset, twice, b"\x08\x00\x50\x11UI\x00\x00"):
        assert sequence_leaves(sequence(value)) is None
    big = sequence(good)._replace(is_little_endian=False)
    assert sequence_leaves(big) is None
