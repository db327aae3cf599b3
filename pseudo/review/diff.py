"""What changed between two datasets, attribute by attribute, at every depth.

Each change is classified as ``removed``, ``emptied``, ``replaced``, ``shifted`` (a date moved by
whole days), ``remapped`` (a UID replaced), ``cleaned`` (text that lost words but gained none),
``kept`` or ``added``. Values are only carried when asked for: reports built from a diff must
not repeat identifying values by default.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import date
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from pseudo.dicom.private import creator_of
from pseudo.dicom.tags import attribute_name, element_vr
from pseudo.dicom.vr import TEXT_VRS
from pseudo.review.diff_raw import SameRaw, elements_by_tag, is_deferred, tag_label

KINDS = ("removed", "emptied", "replaced", "shifted", "remapped", "cleaned", "kept", "added")
_INDEX = re.compile(r"\[\d+\]")


@dataclass(frozen=True)
class Change:
    """One attribute's fate."""

    path: str
    tag: str
    vr: str
    kind: str
    detail: str = ""
    before: str | None = None
    after: str | None = None
    #: The private creator of a private attribute (from the dataset that holds it), else None.
    creator: str | None = None

    @property
    def generic_path(self) -> str:
        """The path with item numbers replaced by ``[*]`` (for counting across items and files)."""
        return _INDEX.sub("[*]", self.path)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v) for v in value)
    return str(value)


def _empty(value: Any) -> bool:
    return (
        value is None
        or value == ""
        or value == b""
        or (isinstance(value, list | MultiValue) and not value)
    )


def _as_date(text: str) -> date | None:
    text = text.strip()[:8]
    if len(text) == 8 and text.isdigit():
        try:
            return date(int(text[:4]), int(text[4:6]), int(text[6:]))
        except ValueError:
            return None
    return None


def _classify(vr: str, before: Any, after: Any) -> tuple[str, str]:
    if before == after:
        return "kept", ""
    if _empty(after):
        return ("emptied", "") if not _empty(before) else ("kept", "")
    if vr == "UI":
        return "remapped", ""
    old, new = _text(before), _text(after)
    if vr in ("DA", "DT"):
        start, end = _as_date(old), _as_date(new)
        if start and end:
            return "shifted", f"{(end - start).days:+d} days"
    if vr in TEXT_VRS and not _empty(before):
        words_before = set(re.findall(r"\w+", old.lower()))
        words_after = set(re.findall(r"\w+", new.lower()))
        if words_after and words_after <= words_before:
            return "cleaned", ""
    return "replaced", ""


def _value(ds: Dataset, tag: int) -> Any:
    try:
        return ds[tag].value
    except Exception:
        return None


def compare(
    before: Dataset, after: Dataset, *, with_values: bool = False, include_meta: bool = True
) -> list[Change]:
    """Every attribute of ``before`` and ``after`` with what happened to it."""
    changes: list[Change] = []
    if include_meta:
        meta_before = getattr(before, "file_meta", None) or Dataset()
        meta_after = getattr(after, "file_meta", None) or Dataset()
        _compare(meta_before, meta_after, "FileMeta.", changes, with_values)
    _compare(before, after, "", changes, with_values)
    return changes


@dataclass(frozen=True)
class _ChangeFactory:
    """Makes the :class:`Change` of one attribute, with values only when asked for."""

    path: str
    tag: str
    vr: str
    old: Any
    new: Any
    with_values: bool
    creator: str | None = None

    def __call__(self, kind: str, detail: str = "") -> Change:
        keep = self.with_values
        return Change(
            self.path,
            self.tag,
            self.vr,
            kind,
            detail,
            _text(self.old) if keep and kind != "added" else None,
            _text(self.new) if keep and kind != "removed" else None,
            self.creator,
        )


def _creator(ds: Dataset, tag: int) -> str | None:
    """The private creator of a private attribute of ``ds`` (None for standard ones)."""
    if not (tag >> 16) & 1:
        return None
    try:
        return creator_of(ds, tag)
    except Exception:
        return None


def _compare(
    before: Dataset, after: Dataset, prefix: str, out: list[Change], with_values: bool
) -> None:
    elements_before, elements_after = elements_by_tag(before), elements_by_tag(after)
    same = SameRaw(before, after)
    for tag in sorted(elements_before.keys() | elements_after.keys()):
        raw_before, raw_after = elements_before.get(tag), elements_after.get(tag)
        in_before, in_after = raw_before is not None, raw_after is not None
        source = raw_before if in_before else raw_after
        if is_deferred(source):
            source = before.get_item(tag) if in_before else after.get_item(tag)
        vr = element_vr(source, tag)
        path = prefix + attribute_name(tag)
        text_tag = tag_label(tag)
        creator = _creator(before if in_before else after, tag)
        if not (in_before and in_after):
            # a removed (added) attribute's value is only carried with values
            kind = "added" if in_after else "removed"
            old = _value(before, tag) if in_before and with_values else None
            new = _value(after, tag) if in_after and with_values else None
            out.append(_ChangeFactory(path, text_tag, vr, old, new, with_values, creator)(kind))
            continue
        if not with_values and vr != "SQ" and same(raw_before, raw_after):
            # the same bytes, read the same way: the values are equal, nothing to convert
            out.append(Change(path, text_tag, vr, "kept", "", None, None, creator))
            continue
        old, new = _value(before, tag), _value(after, tag)
        change = _ChangeFactory(path, text_tag, vr, old, new, with_values, creator)
        if vr == "SQ":
            old_items, new_items = list(old or []), list(new or [])
            if old_items and not new_items:
                out.append(change("emptied", f"{len(old_items)} items"))
                continue
            for index in range(max(len(old_items), len(new_items))):
                item_path = f"{path}[{index}]."
                item = Change(item_path.rstrip("."), text_tag, vr, "", "item", creator=creator)
                if index >= len(new_items):
                    out.append(replace(item, kind="removed"))
                elif index >= len(old_items):
                    out.append(replace(item, kind="added"))
                else:
                    _compare(old_items[index], new_items[index], item_path, out, with_values)
        else:
            out.append(change(*_classify(vr, old, new)))


def summarize(changes: list[Change]) -> dict[tuple[str, str], int]:
    """Counts by (generic path, kind)."""
    counts: dict[tuple[str, str], int] = {}
    for change in changes:
        key = (change.generic_path, change.kind)
        counts[key] = counts.get(key, 0) + 1
    return counts
