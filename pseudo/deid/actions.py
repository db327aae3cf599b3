"""One function per action, applied to one attribute of one dataset.

Each action receives an :class:`ElementRef` (the dataset, the tag, its VR, the decision, the
attribute's path and the sequences above it) and the walker, through which sequence items are
processed recursively. An action that cannot do its job safely removes the attribute and
records a finding: nothing passes through unchanged by accident.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.values import convert_value

from pseudo.deid.clean import TextCleaner
from pseudo.deid.dates import InvalidDateError, shift_value
from pseudo.deid.tokens import encrypt_token, hmac_token
from pseudo.dicom.capacity import MAX_LENGTH, TOKEN_VRS
from pseudo.dicom.vr import DATE_VRS, STRING_VRS, TEXT_VRS
from pseudo.findings import RejectedFile
from pseudo.io.pydicom_internals import element_map
from pseudo.policy.compiled import Decision
from pseudo.policy.model import Action
from pseudo.policy.selectors import Parents

if TYPE_CHECKING:
    from pseudo.deid.walker import Walker

#: Dummy values (action D): fixed, meaningless and valid for the VR.
DUMMY_VALUES: dict[str, Any] = {
    "AE": "ANONYMOUS",
    "AS": "000D",
    "CS": "ANONYMIZED",
    "DA": "19000101",
    "DS": "0",
    "DT": "19000101000000",
    "IS": "0",
    "LO": "ANONYMIZED",
    "LT": "ANONYMIZED",
    "PN": "ANONYMIZED",
    "SH": "ANONYMIZED",
    "ST": "ANONYMIZED",
    "TM": "000000",
    "UC": "ANONYMIZED",
    "UR": "ANONYMIZED",
    "UT": "ANONYMIZED",
    "FL": 0.0,
    "FD": 0.0,
    "SL": 0,
    "SS": 0,
    "SV": 0,
    "UL": 0,
    "US": 0,
    "UV": 0,
    "OB": b"\x00\x00",
    "OD": b"\x00" * 8,
    "OF": b"\x00" * 4,
    "OL": b"\x00" * 4,
    "OV": b"\x00" * 8,
    "OW": b"\x00\x00",
    "UN": b"\x00\x00",
}


@dataclass(frozen=True, slots=True)
class ElementRef:
    """One attribute being processed."""

    ds: Dataset
    tag: int
    vr: str
    decision: Decision
    path: str
    parents: Parents = ()

    @property
    def keyword(self) -> str:
        """The attribute's keyword, or its tag for private and unknown attributes."""
        return self.path.rsplit(".", 1)[-1]


Handler = Callable[[ElementRef, "Walker"], None]


def _element(ref: ElementRef, walker: Walker) -> DataElement | None:
    """The converted element, or None (and the attribute removed) if its value is unreadable."""
    try:
        return ref.ds[ref.tag]
    except Exception:  # pydicom raises many types for a broken value
        del ref.ds[ref.tag]
        walker.ctx.note(ref.path, "unreadable-value", "value could not be decoded; removed")
        return None


def _strings(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, MultiValue | list | tuple):
        return [str(item) for item in value]
    return [str(value)]


def _set_strings(element: DataElement, values: list[str]) -> None:
    element.value = values[0] if len(values) == 1 else values


def _unexpected(ref: ElementRef, walker: Walker) -> None:
    walker.ctx.note(ref.path, "unexpected-vr", f"{ref.decision.action} on VR {ref.vr}; removed")
    del ref.ds[ref.tag]


def remove(ref: ElementRef, walker: Walker) -> None:
    """X: delete the attribute."""
    del ref.ds[ref.tag]


def empty(ref: ElementRef, walker: Walker) -> None:
    """Z: keep the attribute with a zero-length value (a sequence with no items)."""
    value: Any = [] if ref.vr == "SQ" else "" if ref.vr in TEXT_VRS | STRING_VRS else None
    ref.ds[ref.tag] = DataElement(ref.tag, ref.vr, value)


def dummy(ref: ElementRef, walker: Walker) -> None:
    """D: replace with a fixed value valid for the VR; UIDs are remapped, sequences emptied."""
    if ref.vr == "UI":
        remap_uid(ref, walker)
    elif ref.vr == "SQ" or ref.vr not in DUMMY_VALUES:
        empty(ref, walker)
    else:
        ref.ds[ref.tag] = DataElement(ref.tag, ref.vr, DUMMY_VALUES[ref.vr])


def keep(ref: ElementRef, walker: Walker) -> None:
    """K: keep the value; a kept sequence has each of its items processed."""
    if ref.vr == "SQ":
        walker.walk_sequence(ref)


def clean(ref: ElementRef, walker: Walker) -> None:
    """C: shift dates, keep times, clean free text and sequences, remove anything else.

    Binary values (overlay bitmaps, curve data, timestamps) cannot be cleaned without reading
    them, so cleaning them removes them.
    """
    if ref.vr == "SQ":
        walker.walk_sequence(ref, cleaning=True)
    elif ref.vr in DATE_VRS:
        shift_date(ref, walker)
    elif ref.vr == "TM":
        return
    elif ref.vr in TEXT_VRS:
        walker.defer_clean(ref)
    else:
        remove(ref, walker)


def clean_text(ref: ElementRef, element: DataElement, cleaner: TextCleaner) -> None:
    """Delete identifying values and patterns from free text (run after the walk)."""
    _set_strings(element, [cleaner.clean(text) for text in _strings(element.value)])


def remap_uid(ref: ElementRef, walker: Walker) -> None:
    """U: replace instance UIDs with keyed ``2.25`` UIDs; in a sequence, process the items."""
    if ref.vr == "SQ":
        walker.walk_sequence(ref)
        return
    if ref.vr != "UI":
        _unexpected(ref, walker)
        return
    read = _read_ascii(ref, walker)
    if read is not None:
        value, holder = read
        _replace_ascii(ref, holder, [walker.ctx.remap(uid) for uid in _strings(value)], b"\x00")


def _read_ascii(ref: ElementRef, walker: Walker) -> tuple[Any, DataElement | RawDataElement] | None:
    """The value of an attribute of an ASCII-only VR (UI, DA, DT) and what holds it: the raw
    element when it can be read without building a pydicom element, else the converted one;
    None (the attribute removed) if the value is unreadable."""
    raw = _raw_ascii(ref)
    if raw is not None:
        try:
            return convert_value(ref.vr, raw), raw
        except Exception:
            pass  # converted below, where an unreadable value is dealt with
    element = _element(ref, walker)
    return None if element is None else (element.value, element)


def _replace_ascii(
    ref: ElementRef, holder: DataElement | RawDataElement, values: list[str], pad: bytes
) -> None:
    """Give the attribute ``values``, in the kind of element :func:`_read_ascii` found."""
    if isinstance(holder, RawDataElement):
        _store_raw(ref, holder, values, pad)
    else:
        _set_strings(holder, values)


def _raw_ascii(ref: ElementRef) -> RawDataElement | None:
    """The element if it is still raw, little endian, of the VR decided by and holds bytes: a
    value of an ASCII-only VR (UI, DA, DT) can then be read and replaced without building a
    pydicom element (the bytes written are those pydicom writes for the new value)."""
    element = element_map(ref.ds).get(BaseTag(ref.tag))
    if (
        isinstance(element, RawDataElement)
        and element.is_little_endian
        and element.VR in (None, ref.vr)
        and isinstance(element.value, bytes)
    ):
        return element
    return None


def _store_raw(ref: ElementRef, raw: RawDataElement, values: list[str], pad: bytes) -> None:
    """Replace a raw element's value by ``values`` (ASCII), encoded as pydicom writes them."""
    data = "\\".join(values).encode("ascii")
    if len(data) % 2:
        data += pad
    element_map(ref.ds)[raw.tag] = raw._replace(length=len(data), value=data)


def _date_text(value: Any) -> str:
    return "\\".join(_strings(value)) if isinstance(value, MultiValue | list) else str(value or "")


def shift_date(ref: ElementRef, walker: Walker) -> None:
    """Move DA and DT values by the patient's offset; keep times; remove invalid dates."""
    if ref.vr == "TM":
        return
    if ref.vr == "UN":
        _shift_unknown(ref, walker)
        return
    if ref.vr not in DATE_VRS:
        _unexpected(ref, walker)
        return
    read = _read_ascii(ref, walker)
    if read is None:
        return
    value, holder = read
    try:
        shifted = shift_value(_date_text(value), ref.vr, walker.ctx.date_offset_days)
    except InvalidDateError as exc:
        del ref.ds[ref.tag]
        walker.ctx.note(
            ref.path,
            "invalid-date",
            f"{ref.vr} value is not a valid date ({exc.__class__.__name__}); removed",
        )
        return
    _replace_ascii(ref, holder, shifted.split("\\"), b" ")


def _shift_unknown(ref: ElementRef, walker: Walker) -> None:
    """A rule asked to shift a date whose VR the file does not say (a private attribute in an
    implicit VR file): shift it if its bytes read as a DA or DT value, else remove it."""
    element = _element(ref, walker)
    raw = element.value if element is not None else None
    try:
        text = bytes(raw).decode("ascii").strip(" \x00") if isinstance(raw, bytes) else ""
        vr = "DA" if len(text) == 8 and text.isdigit() else "DT"
        shifted = shift_value(text, vr, walker.ctx.date_offset_days) if text else ""
    except (UnicodeDecodeError, InvalidDateError):
        shifted = ""
    if not shifted:
        if element is not None:
            del ref.ds[ref.tag]
        walker.ctx.note(ref.path, "invalid-date", "value of unknown VR is not a date; removed")
        return
    assert element is not None
    data = shifted.encode("ascii")
    element.value = data + b" " * (len(data) % 2)


def year_only(ref: ElementRef, walker: Walker) -> None:
    """Reduce a date to its year (after the patient's offset when dates are modified)."""
    if ref.vr not in DATE_VRS:
        _unexpected(ref, walker)
        return
    element = _element(ref, walker)
    if element is None:
        return
    text = _date_text(element.value)
    days = walker.ctx.date_offset_days if walker.ctx.policy.temporal == "MODIFIED" else 0
    try:
        shifted = shift_value(text, ref.vr, days)
    except InvalidDateError:
        del ref.ds[ref.tag]
        walker.ctx.note(ref.path, "invalid-date", f"{ref.vr} value is not a valid date; removed")
        return
    years = [value[:4] for value in shifted.split("\\") if value]
    _set_strings(element, [y + "0101" if ref.vr == "DA" else y for y in years] or [""])


def _token_element(ref: ElementRef, walker: Walker) -> DataElement | None:
    if ref.vr not in TOKEN_VRS:
        _unexpected(ref, walker)
        return None
    return _element(ref, walker)


def token(ref: ElementRef, walker: Walker) -> None:
    """Replace each value by its keyed HMAC token (empty values stay empty)."""
    element = _token_element(ref, walker)
    if element is None:
        return
    length = min(16, MAX_LENGTH.get(ref.vr) or 16)
    keyring = walker.ctx.keyring
    values = [
        hmac_token(keyring, ref.keyword, v, length) if v.strip() else ""
        for v in _strings(element.value)
    ]
    _set_strings(element, values)


def pseudonym(ref: ElementRef, walker: Walker) -> None:
    """Replace the value by the patient's pseudonym."""
    element = _token_element(ref, walker)
    if element is not None:
        element.value = walker.ctx.pseudonym


def encrypt(ref: ElementRef, walker: Walker) -> None:
    """Replace each value by its reversible token; a value too long for the VR rejects the file."""
    element = _token_element(ref, walker)
    if element is None:
        return
    limit = MAX_LENGTH.get(ref.vr)
    longest = ref.decision.max_input_length
    values = []
    for text in _strings(element.value):
        if not text.strip():
            values.append("")
            continue
        size = len(text.strip().encode("utf-8"))
        if longest is not None and size > longest:
            raise RejectedFile(
                f"{ref.path}: value of {size} bytes exceeds max_input_length {longest} of the "
                "policy's reversible token"
            )
        encrypted = encrypt_token(walker.ctx.keyring, ref.keyword, text)
        if limit is not None and len(encrypted) > limit:
            raise RejectedFile(
                f"{ref.path}: reversible token would exceed the {ref.vr} length limit"
            )
        values.append(encrypted)
    _set_strings(element, values)


def replace(ref: ElementRef, walker: Walker) -> None:
    """Replace the value by the constant of the rule."""
    value = ref.decision.value or ""
    ref.ds[ref.tag] = DataElement(ref.tag, ref.vr, value if ref.vr != "SQ" else [])


def substitute(ref: ElementRef, walker: Walker) -> None:
    """Apply the rule's regular-expression substitution to each value."""
    if ref.vr not in TEXT_VRS:
        _unexpected(ref, walker)
        return
    element = _element(ref, walker)
    if element is None:
        return
    pattern = re.compile(ref.decision.pattern or "")
    replacement = ref.decision.replacement or ""
    _set_strings(element, [pattern.sub(replacement, text) for text in _strings(element.value)])


HANDLERS: dict[Action, Handler] = {
    Action.REMOVE: remove,
    Action.EMPTY: empty,
    Action.DUMMY: dummy,
    Action.KEEP: keep,
    Action.CLEAN: clean,
    Action.REMAP_UID: remap_uid,
    Action.SHIFT_DATE: shift_date,
    Action.TOKEN: token,
    Action.PSEUDONYM: pseudonym,
    Action.ENCRYPT: encrypt,
    Action.REPLACE: replace,
    Action.SUBSTITUTE: substitute,
    Action.YEAR_ONLY: year_only,
}
