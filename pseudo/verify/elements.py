"""The elements of a data set at every depth, their values and their paths, read without
converting them in place (most values the verification reads belong to attributes about to be
removed: converting them would be wasted work)."""

from __future__ import annotations

import functools
import re
import threading
from typing import Any

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.values import convert_value

from pseudo.dicom.tags import attribute_name, element_vr
from pseudo.io.pydicom_internals import character_set, element_at, element_map
from pseudo.policy.selectors import Parents

#: Runs of printable ASCII in binary values: the text a private or unknown value may hold.
PRINTABLE = re.compile(rb"[\x20-\x7e]{6,}")
#: VRs whose values are ASCII whatever the Specific Character Set (PS3.5 6.2).
_ASCII_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI"})
#: VRs pydicom gives as the raw bytes.
_BYTES_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
#: Text VRs in the Specific Character Set, one value (backslash is text) or several.
_SINGLE_TEXT_VRS = frozenset({"LT", "ST", "UT"})
_PLAIN_TEXT_VRS = _SINGLE_TEXT_VRS | {"LO", "SH", "UC"}

#: An element found by :func:`elements`: the data set holding it, its tag, VR and parents.
Walked = tuple[Dataset, int, str, Parents]

#: Items of raw sequences met lately, by the identity of the raw element: the pseudonymizer
#: puts the same prebuilt De-identification Method Code Sequence into every output, and it
#: need be parsed only once. The element is kept, so its identity cannot be reused meanwhile.
_RECENT_SEQUENCES: dict[int, tuple[RawDataElement, list[Dataset]]] = {}
_RECENT_LIMIT = 32  # one per transfer syntax met (12 in the canary corpus), and a few more
_RECENT_LOCK = threading.Lock()


def item_list(ds: Dataset, tag: int, element: Any) -> list[Dataset]:
    """The items of a sequence element (raw or not) of ``ds``."""
    if not isinstance(element, RawDataElement):
        return list(element.value or [])
    with _RECENT_LOCK:  # a Dask worker may run several threads
        recent = _RECENT_SEQUENCES.get(id(element))
    if recent is not None and recent[0] is element:
        return recent[1]
    items = list(ds[tag].value or [])
    with _RECENT_LOCK:
        while len(_RECENT_SEQUENCES) >= _RECENT_LIMIT:
            del _RECENT_SEQUENCES[next(iter(_RECENT_SEQUENCES))]
        _RECENT_SEQUENCES[id(element)] = (element, items)
    return items


def elements(ds: Dataset, parents: Parents = (), found: list[Walked] | None = None) -> list[Walked]:
    """Every element at every depth, in order: (dataset holding it, tag, VR, sequences above
    it); appended to ``found`` when given. A list, not a generator: the verification walks
    every output, and a generator's step for each of its hundreds of elements cost more."""
    if found is None:
        found = []
    append = found.append
    for tag, element in list(element_map(ds).items()):
        vr = getattr(element, "VR", None)
        if vr is None or vr == "UN" or " or " in vr:
            vr = element_vr(element, tag)  # the VR only: a raw element is not converted here
        append((ds, tag, vr, parents))
        if vr == "SQ":
            try:
                items = item_list(ds, tag, element)
            except Exception:
                continue
            for index, item in enumerate(items):
                elements(item, (*parents, (tag, index)), found)
    return found


def strings(value: Any) -> list[str]:
    """The text values of an attribute's value (none for bytes)."""
    if isinstance(value, str):  # the common case first (UIDs are strings too)
        return [str(value)]
    if value is None or isinstance(value, bytes):
        return []
    if isinstance(value, MultiValue | list | tuple):
        return [s for item in value for s in strings(item)]
    return [str(value)]


def peek_value(ds: Dataset, tag: int, vr: str, charset: Any = None) -> Any:
    """An attribute's value, decoded without converting the element in place (most recorded
    values belong to attributes about to be removed: converting them would be wasted work).
    ``charset``: the data set's encodings, when the caller knows them already."""
    element = element_at(ds, tag)  # no Tag() per call
    if element is None or (element.__class__ is RawDataElement and element.value is None):
        element = ds.get_item(tag)  # absent, empty or deferred: as pydicom reads it
    if vr != "SQ":
        if isinstance(element, RawDataElement):
            return raw_value(element, vr, character_set(ds) if charset is None else charset)
        if isinstance(element, DataElement):
            return element.value  # what ds[tag].value gives, without its bookkeeping
    return ds[tag].value


def raw_value(element: RawDataElement, vr: str, charset: Any) -> Any:
    """The value of a raw (not yet converted) element, as pydicom would convert it, in the
    encodings ``charset``; the element is left as it is."""
    raw = element.value
    if raw is None:
        return None
    if isinstance(raw, bytes):
        if vr in _BYTES_VRS:
            return raw  # what pydicom's conversion gives too
        if vr in _ASCII_VRS and raw.isascii():
            # These VRs hold only ASCII by definition: no character set to apply (a value
            # that breaks the rule is decoded by pydicom below, as it would be anyway).
            return raw.decode("ascii").strip(" \x00").split("\\")
        if vr in _PLAIN_TEXT_VRS and raw.isascii() and 0x1B not in raw:
            # ASCII without an ISO 2022 escape reads the same in every character set
            # DICOM defines: pydicom's decoding would give these strings.
            text = raw.decode("ascii")
            if vr in _SINGLE_TEXT_VRS:
                return text.rstrip("\x00 ")
            return [value.rstrip("\x00 ") for value in text.split("\\")]
        if vr == "PN" and raw.isascii() and 0x1B not in raw:
            return ascii_strings(raw, vr)  # the names' texts, not PersonName objects
    return convert_value(vr, element, charset)


def ascii_strings(raw: bytes, vr: str) -> list[str] | None:
    """What ``strings(raw_value(...))`` gives for the raw bytes of a text value that are ASCII
    without an ISO 2022 escape (any character set reads them alike); None for another VR."""
    if vr == "PN":  # pydicom's PersonName of each value is its text
        return raw.rstrip(b"\x00 ").decode("ascii").split("\\")
    if vr in _ASCII_VRS:
        return raw.decode("ascii").strip(" \x00").split("\\")
    if vr in _SINGLE_TEXT_VRS:
        return [raw.decode("ascii").rstrip("\x00 ")]
    if vr in _PLAIN_TEXT_VRS:
        return [value.rstrip("\x00 ") for value in raw.decode("ascii").split("\\")]
    return None


def peek(ds: Dataset, tag: int, vr: str) -> Any:
    """:func:`peek_value`, or None when the value cannot be read."""
    try:
        return peek_value(ds, tag, vr)
    except Exception:
        return None


def path_of(parents: Parents, tag: int, prefix: str = "") -> str:
    """``ContentSequence[2].ContentSequence[0].PersonName``: the path of an attribute."""
    return prefix + _path(parents, tag) if prefix else _path(parents, tag)


@functools.lru_cache(maxsize=4096)
def _path(parents: Parents, tag: int) -> str:
    """:func:`path_of` without a prefix, made once per process for the places a study's files
    share (the verification asks for the path of every UID of every output)."""
    return "".join(f"{attribute_name(t)}[{i}]." for t, i in parents) + attribute_name(tag)


def snapshot(ds: Dataset, tag: int) -> Any:
    """The value of an element as it is now, in a form later changes cannot alter (the raw
    bytes of an element not converted yet; a tuple for several values)."""
    element = element_map(ds).get(BaseTag(tag))
    return None if element is None else snapshot_of(element)


def snapshot_of(element: Any) -> Any:
    """What :func:`snapshot` would give for an element."""
    value = element.value
    return tuple(value) if isinstance(value, MultiValue | list) else value


def snapshot_text(value: Any) -> str:
    """A kept value as text to search in (bytes as Latin-1: needles there are ASCII words)."""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, tuple):
        return "\\".join(str(v) for v in value)
    return "" if value is None else str(value)


def encodings(ds: Dataset) -> tuple[str, ...]:
    """Python codecs of the dataset's Specific Character Set, for searching its raw bytes."""
    from pydicom.charset import convert_encodings

    try:
        names = convert_encodings(ds.get("SpecificCharacterSet") or "ISO_IR 6")
    except Exception:
        names = []
    return tuple(dict.fromkeys([*names, "utf-8"]))
