"""Recording, while a file is pseudonymized, every value of its input that must not survive.

A :class:`Recorder` takes, from every attribute the policy does not keep, the value that must
not survive: values that are removed, emptied, replaced, tokenized or encrypted (names in their
usual spellings, IDs, addresses, free text, and every value inside a removed sequence), the
original dates of the patient, the original instance UIDs and the values of private
attributes; and the input's value of every attribute the policy keeps.

The walker tells it of every data set it enters (held as it is: :class:`KeptValues` and the
references are worked out from it only when asked) and calls it for every attribute the policy
does not keep; the elements the reader left out are handed over once, before the walk, and
recorded in their place in the file's order. Values are kept as they are, flat, and their
needles are built only for those an output's words allow (:meth:`Recorder.build`).
"""

from __future__ import annotations

import functools
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from itertools import compress, repeat
from operator import is_not, not_
from typing import Any, NamedTuple, cast

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.valuerep import PersonName

from pseudo.deid.uids import is_standard_uid
from pseudo.dicom.private import SafePrivate
from pseudo.dicom.tags import attribute_name, element_vr
from pseudo.io.pydicom_internals import character_set, element_at, element_map
from pseudo.io.rawsequence import Leaf, sequence_leaves
from pseudo.policy.compiled import CompiledPolicy, Decision
from pseudo.policy.model import Action
from pseudo.policy.selectors import Parents
from pseudo.verify.elements import (
    PRINTABLE,
    elements,
    path_of,
    peek_value,
    raw_value,
    snapshot_of,
    strings,
)
from pseudo.verify.matching import WORD_BYTES
from pseudo.verify.needles import Needles, name_spellings, uid_numbers
from pseudo.verify.prefilter import Words, may_hold, may_hold_whole

#: VRs whose values can carry identifying text (others are numbers, bulk data, or code
#: strings: CS values are defined terms such as TEXT or CONTAINER, never an identity).
SEARCHED_VRS = frozenset(
    {"AE", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "UR", "DA", "DT", "UI", "UN", "OB"}
)
#: Referenced SOP Instance UID and Referenced File ID: references checked across files.
REFERENCE_TAGS = frozenset({0x00081155, 0x00041511})
#: File meta elements that name the source of a file, and the kind of value they hold.
_META_NEEDLES = {
    0x00020003: "instance UID",  # Media Storage SOP Instance UID
    0x00020016: "AE title",  # Source Application Entity Title
    0x00020017: "AE title",  # Sending Application Entity Title
    0x00020018: "AE title",  # Receiving Application Entity Title
    0x00020100: "instance UID",  # Private Information Creator UID
    0x00020102: "private value",  # Private Information
}
#: Actions that keep a value as it is: it may legitimately appear in the output.
KEEPING = frozenset({Action.KEEP})
#: Actions after which nothing of a text value may remain (cleaning and substitution keep words).
_PARTIAL = frozenset({Action.CLEAN, Action.SUBSTITUTE})
#: Binary numbers: measurements and counters, not searched for in outputs.
_NUMBER_VRS = frozenset({"AT", "FL", "FD", "SL", "SS", "SV", "UL", "US", "UV", "OD", "OF", "OL"})
#: Private values at most this long are recorded once per process, by their bytes.
_RECURRING_BYTES = 1024
#: VRs whose values are bytes: their needles are their printable runs.
_BINARY = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})


@functools.lru_cache(maxsize=8192)
def _kind(tag: int, vr: str) -> str:
    """The kind of value an attribute holds, by its name (worked out once per attribute)."""
    lowered = attribute_name(tag).lower()
    if vr == "PN":
        return "person name"
    if "address" in lowered:
        return "address"
    if "telephone" in lowered or "phone" in lowered:
        return "telephone number"
    if "institution" in lowered or "department" in lowered:
        return "institution"
    if lowered.endswith(("id", "ids", "number", "numbers")) or "identifier" in lowered:
        return "identifier"
    if vr in ("LT", "ST", "UT", "UC") or "comment" in lowered or "description" in lowered:
        return "free text"
    return "text"


def _as_date(text: str) -> date | None:
    text = text.strip()
    if len(text) >= 8 and text[:8].isdigit():
        try:
            return date(int(text[:4]), int(text[4:6]), int(text[6:8]))
        except ValueError:
            return None
    return None


def _searched(vr: str, private: bool) -> bool:
    """Whether the values of a removed or changed attribute of this VR are looked for in the
    output: text, dates, UIDs, bytes; binary numbers are not, private ones neither."""
    return vr in SEARCHED_VRS or (private and vr not in _NUMBER_VRS)


@functools.lru_cache(maxsize=16384)
def records_removed(tag: int, vr: str | None) -> bool:
    """Whether :class:`Recorder` reads anything of a top-level attribute that the policy
    removes (None: a VR not known yet, as in Implicit VR): a reader that leaves such attributes
    out of the data set need build only these for a verification."""
    if vr is None or vr == "SQ":
        return True
    return vr != "TM" and _searched(vr, bool((tag >> 16) & 1))


#: What :meth:`Recorder.enter` compares each element's class with (mapped in C).
_RAW_CLASS = repeat(RawDataElement)

#: A value recorded as it is, its needles built only when needed (see :meth:`Recorder.build`):
#: (tag, VR, action, private, the raw element or the value, the encodings of its data set),
#: kept flat in :attr:`Recorder.values`, six entries a value (see :func:`recorded`).
Recorded = tuple[int, str, Action, bool, Any, Any]


class Recorder:
    """Records, attribute by attribute, what must not survive pseudonymization.

    The walker tells it of every data set it enters (:meth:`enter`) and calls it for every
    attribute the policy does not keep, with the policy's decision, before the action changes
    anything; :func:`collect` does the same without changing the dataset. Values are kept as
    they are (raw elements are not decoded): :meth:`build` makes their needles, for an
    output's words only those of values the output may hold.
    """

    def __init__(self) -> None:
        #: needles of the input's file meta (recorded first, as they are)
        self.needles = Needles()
        self._safe = SafePrivate.load()
        #: id -> encodings of the data sets seen (pydicom works them out again at every call)
        self._charsets: dict[int, Any] = {}
        #: every data set the walk entered, as the input had it (see :meth:`enter`), and the
        #: attributes in them the policy does not keep: the others are kept, and a needle
        #: found there in the output is the policy's choice when the input had it there
        self._entered: dict[Parents, tuple[Any, dict[int, Any]]] = {}
        self._changed: set[tuple[Parents, int]] = set()
        self.kept = KeptValues(self._entered, self._changed)
        #: the values recorded, in the order of the walk, flat (see :data:`Recorded`): a
        #: tuple kept per value would be one more object for the collector to go over,
        #: hundreds a file, and bring its passes sooner
        self.values: list[Any] = []
        #: top-level elements the reader left out (see :meth:`removed`), in tag order, and
        #: how many of them are recorded already
        self._removed: list[tuple[int, BaseTag, Any]] = []
        self._removed_done = 0
        self._holder: Dataset | None = None
        self._removed_charset: Any = None  # the encodings of the holder's values

    def __call__(
        self, ds: Dataset, tag: int, vr: str, decision: Decision, parents: Parents = ()
    ) -> None:
        removed, done = self._removed, self._removed_done
        if not parents and done < len(removed) and removed[done][0] < int(tag):
            self._record_removed(int(tag))  # those before this one first: the file's order
        action = decision.action
        if action in KEEPING:
            return  # kept values are not evidence of themselves (see :meth:`enter`)
        self._changed.add((parents, tag))
        private = bool((tag >> 16) & 1)
        if vr == "TM" or (private and 0x10 <= tag & 0xFFFF <= 0xFF):
            return  # times of day and private creator names are not evidence
        if private and action is Action.CLEAN and self._safe.is_safe(ds, tag):
            return
        if vr == "SQ":
            if action in (Action.REMOVE, Action.EMPTY, Action.DUMMY):
                self._subtree(ds, tag)
            return  # kept, cleaned or remapped sequences: the walker visits their items
        if not (vr in SEARCHED_VRS or (private and vr not in _NUMBER_VRS)):  # _searched()
            return
        if action in _PARTIAL and not private and vr not in ("DA", "DT", "UI"):
            return  # cleaned text keeps its other words; its identifying words are needles
        charset = self._charsets.get(id(ds))
        element = element_at(ds, tag)
        if (
            charset is not None
            and element.__class__ is RawDataElement
            and element.value is not None
        ):
            self.values += (tag, vr, action, private, element, charset)
            return  # the common case, as _record() does it, without its calls
        self._record(ds, tag, vr, action, private)

    def enter(self, ds: Dataset, parents: Parents = ()) -> None:
        """The walk enters a data set (at ``parents``): its elements are kept as they are now,
        before any action, for what a check may ask later (:class:`KeptValues`, the
        references of :meth:`references`) without a call for every attribute. Raw elements
        cannot change; the values of elements converted already are copied."""
        removed, done = self._removed, self._removed_done
        if parents and done < len(removed) and removed[done][0] < int(parents[0][0]):
            # the items of a kept sequence (the recorder is not called for it): the elements
            # left out before it come first, as in the file
            self._record_removed(int(parents[0][0]))
        held = cast("dict[int, Any]", dict(element_map(ds)))
        converted = [*compress(held.items(), map(is_not, map(type, held.values()), _RAW_CLASS))]
        for tag, element in converted:  # a few a data set: found in C among hundreds
            held[tag] = Snapshot(snapshot_of(element), element.VR)
        self._entered[parents] = (self._charset(ds), held)

    def references(self) -> dict[str, str]:
        """Path -> original value of every Referenced SOP Instance UID (and File ID) in the
        sequences the walk entered."""
        found: dict[str, str] = {}
        for parents, (charset, held) in self._entered.items():
            if not parents:
                continue
            for tag in REFERENCE_TAGS.intersection(held):
                for uid in strings(_value_of(held[tag], tag, charset)):
                    found[path_of(parents, tag)] = uid
        return found

    def removed(self, holder: Dataset, dropped: Mapping[BaseTag, Any]) -> None:
        """The top-level elements the reader left out (see
        :meth:`~pseudo.deid.engine.Pseudonymizer.droppable`: removed whatever their value,
        so no decision need be taken for each), held by ``holder``. They are recorded as the
        walk reaches their place (:meth:`_record_removed`), so values keep the file's order."""
        self._holder = holder
        self._removed_charset = self._charset(holder)
        # plain ints to compare: a pydicom BaseTag compares in Python
        self._removed = [(int(tag), tag, element) for tag, element in dropped.items()]
        self._removed.sort()  # in file order already when the reader made it
        self._removed_done = 0

    def _record_removed(self, before: int | None = None) -> None:
        """Record the elements left out by the reader whose tag is below ``before`` (None:
        all), as :meth:`__call__` records a removed attribute."""
        removed, holder, charset = self._removed, self._holder, self._removed_charset
        assert holder is not None
        index, end = self._removed_done, len(self._removed)
        values = self.values
        while index < end and (before is None or removed[index][0] < before):
            number, tag, element = removed[index]
            index += 1
            vr = element.VR
            if vr is None or vr == "UN":
                vr = element_vr(element, tag)  # Implicit VR: the dictionary's
            private = bool((number >> 16) & 1)
            if vr == "TM" or (private and 0x10 <= number & 0xFFFF <= 0xFF):
                continue
            if vr == "SQ":
                self._subtree(holder, tag)
            elif not (vr in SEARCHED_VRS or (private and vr not in _NUMBER_VRS)):  # _searched()
                continue
            elif element.__class__ is RawDataElement and element.value is not None:
                values += (tag, vr, Action.REMOVE, private, element, charset)
            else:
                self._record(holder, tag, vr, Action.REMOVE, private)
        self._removed_done = index

    def _record(self, ds: Dataset, tag: int, vr: str, action: Action, private: bool) -> None:
        """Keep one value as it is now (the action changes the element after this call)."""
        if action in _PARTIAL and not private and vr not in ("DA", "DT", "UI"):
            return  # cleaned text keeps its other words; its identifying words are needles
        charset = self._charset(ds)
        element = element_at(ds, tag)
        if element.__class__ is RawDataElement and element.value is not None:
            self.values += (tag, vr, action, private, element, charset)
            return  # the common case: a value as read, held as it is
        if element.__class__ is DataElement:  # converted before the walk (the patient's name)
            self.values += (tag, vr, action, private, snapshot_of(element), charset)
            return
        try:
            element = ds.get_item(tag)  # a deferred value is read here
        except Exception:
            return
        held = element if isinstance(element, RawDataElement) else snapshot_of(element)
        self.values += (tag, vr, action, private, held, charset)

    def file_meta(self, ds: Dataset) -> None:
        """The input's file meta names its source: AE titles, private information, the
        instance UID. The output's file meta is rebuilt, so none of them may survive."""
        meta = getattr(ds, "file_meta", None)
        if meta is None:
            return
        for tag, kind in _META_NEEDLES.items():
            if tag not in (found := element_map(meta)):
                continue
            try:
                value = peek_value(meta, tag, element_vr(found[BaseTag(tag)], tag))
            except Exception:
                continue
            if isinstance(value, bytes):
                for run in set(PRINTABLE.findall(value)):
                    self.needles.add(run.decode("ascii"), kind)
            elif kind == "instance UID":
                _record_value(self.needles, tag, "UI", value, Action.REMOVE, False)
            else:
                for text in strings(value):
                    self.needles.add(text, kind)

    def _charset(self, ds: Dataset) -> Any:
        """The character set of ``ds``'s values (looked up once per data set)."""
        charset = self._charsets.get(id(ds))
        if charset is None:
            charset = self._charsets[id(ds)] = character_set(ds)
        return charset

    def _subtree(self, ds: Dataset, tag: int) -> None:
        """Everything inside a sequence that is removed whole is gone too (read from its raw
        bytes when they are plain: the items are not built only to be thrown away)."""
        element = element_at(ds, tag)
        if self._leaves(sequence_leaves(element), ds):
            return
        try:
            items = ds[tag].value or []
        except Exception:
            return
        for item in items:
            for level, inner, vr, _ in elements(item):
                if vr == "SQ" or vr == "TM" or (vr not in SEARCHED_VRS and not (inner >> 16) & 1):
                    continue
                self._record(level, inner, vr, Action.REMOVE, bool((inner >> 16) & 1))

    def _leaves(self, leaves: list[Leaf] | None, ds: Dataset) -> bool:
        """Record the values among the elements of a removed sequence read from its bytes
        (held by ``ds``, whose encodings its items have); False when there are none to read."""
        if leaves is None:
            return False
        charset = self._charset(ds)
        values = self.values
        for element, vr in leaves:
            inner = element.tag
            private = bool((inner >> 16) & 1)
            if vr != "TM" and (vr in SEARCHED_VRS or private):
                values += (inner, vr, Action.REMOVE, private, element, charset)
        return True

    def build(self, words: Words | None = None) -> Needles:
        """The needles of every value recorded (``words``: only of those an output with these
        words may hold, see :mod:`~pseudo.verify.prefilter`: a value the words rule out is
        checked by that fact, neither searched for nor counted as skipped)."""
        if self._removed_done < len(self._removed):
            self._record_removed()
        needles = Needles()
        needles.merge(self.needles)
        entries = recorded(self.values)
        if words is not None:
            # the values the words rule out in bulk are passed over without a look each
            entries = compress(entries, _not_ruled_out(self.values, words))
        for tag, vr, action, private, element, charset in entries:
            dated = vr in ("DA", "DT") or (
                private and action in (Action.SHIFT_DATE, Action.YEAR_ONLY)
            )
            raw = element.__class__ is RawDataElement
            if words is not None and vr == "UI":
                held = element.value if raw else None
                try:
                    if held.__class__ is bytes and held.isascii():
                        value = held.decode("ascii").strip(" \x00").split("\\")  # as raw_value()
                    else:
                        value = raw_value(element, vr, charset) if raw else element
                except Exception:
                    continue
                for uid in value if value.__class__ is list else strings(value):
                    numbers = uid_numbers(uid)  # a plain UID (~50 a file): its words at hand
                    if numbers is not None:
                        needles.add_plain_uid(uid, search=words.issuperset(numbers))
                    elif uid and not is_standard_uid(uid):
                        needles.add_uid(uid, search=may_hold_whole(uid, words))
                continue
            if words is not None and not dated:
                held = element.value if raw else element
                if held is None:
                    continue
                binary = vr in _BINARY
                # a needle made of the whole value (not of its parts, as names and private
                # values give) is found only where every one of its words is
                whole = not private and not binary and vr != "PN"
                if held.__class__ is bytes and (binary or (held.isascii() and 0x1B not in held)):
                    # may_hold() inlined for the common case (a few hundred values a file)
                    if whole:
                        if b"\\" not in held:  # one value: _whole_in() inlined
                            found = held.translate(WORD_BYTES).decode("ascii").split()
                            if not found or not words.issuperset(found):
                                continue  # absent from the output: checked by that fact
                        elif not _whole_in(held, words):
                            continue
                    elif words.isdisjoint(held.translate(WORD_BYTES).decode("ascii").split()):
                        continue  # absent from the output: checked by that fact, not skipped
                elif not may_hold(held, binary, words, whole=whole):
                    continue
            if private and raw and len(element.value or b"") <= _RECURRING_BYTES:
                # the same value at another place in another file: the same needles
                encodings = charset if isinstance(charset, str) else tuple(charset)
                little = element.is_little_endian
                needles.merge(_private_needles(element.value, vr, little, action, encodings))
                continue
            try:
                value = raw_value(element, vr, charset) if raw else element
            except Exception:
                continue
            _record_value(needles, tag, vr, value, action, private)
        return needles


class Snapshot(NamedTuple):
    """The value of an element converted before the walk, as it was then (pydicom's elements
    change in place)."""

    value: Any
    VR: str


def _value_of(element: Any, tag: int, charset: Any) -> Any:
    """The value of an element kept by :meth:`Recorder.enter` (a raw one decoded, as
    pydicom would, in the encodings of its data set); None when it cannot be read."""
    if element.__class__ is not RawDataElement:
        return element.value
    try:
        return raw_value(element, element_vr(element, tag), charset)
    except Exception:
        return None


class KeptValues:
    """The input's value of every attribute the policy keeps, by where it is: (sequences
    above, tag) -> the value as read (a tuple for several). Worked out only when asked, for a
    needle found in an output attribute (rare), from the data sets the walk entered less the
    attributes it was told the policy changes."""

    def __init__(
        self,
        entered: dict[Parents, tuple[Any, dict[int, Any]]],
        changed: set[tuple[Parents, int]],
    ) -> None:
        self._entered = entered
        self._changed = changed

    def _element(self, key: tuple[Parents, int]) -> tuple[Any, Any] | None:
        parents, tag = key
        held = self._entered.get(parents)
        if held is None or key in self._changed:
            return None
        element = held[1].get(tag)
        if element is None or ((tag >> 16) & 1 and 0x10 <= tag & 0xFFFF <= 0xFF):
            return None  # private creators: not decided by the walk
        if element_vr(element, tag) == "SQ":
            return None
        return held[0], element

    def __contains__(self, key: tuple[Parents, int]) -> bool:
        return self._element(key) is not None

    def __getitem__(self, key: tuple[Parents, int]) -> Any:
        found = self._element(key)
        if found is None:
            raise KeyError(key)
        charset, element = found
        value = _value_of(element, key[1], charset)
        if value is None and element.__class__ is RawDataElement:
            value = element.value  # as read: its bytes
        return tuple(value) if isinstance(value, MultiValue | list) else value


def recorded(values: list[Any]) -> Iterator[Recorded]:
    """The values of :attr:`Recorder.values`, one tuple each (made as they are read)."""
    entries = iter(values)
    return zip(entries, entries, entries, entries, entries, entries, strict=True)


#: VRs whose values are never ruled out by an output's words: UIDs (each one is kept for the
#: cross-file check) and dates (their spellings are searched for whatever the words).
_ALWAYS_BUILT = frozenset({"UI", "DA", "DT"})
#: Actions after which a private value is a date (built as one).
_DATING = frozenset({Action.SHIFT_DATE, Action.YEAR_ONLY})


def _not_ruled_out(values: list[Any], words: Words) -> list[bool]:
    """For each value of :attr:`Recorder.values`, False where :meth:`Recorder.build` would
    find, value by value, that an output with these ``words`` holds no needle of it: a value
    of plain bytes (a raw value, binary or ASCII without an ISO 2022 escape, or an ASCII text
    or name converted before the walk), neither a UID nor a date, whose words are not all
    among ``words`` (one value whose needle is the value itself) or none of whose words is
    (any other). True for the others, which are tested one by one.

    The words of those values are found and tested in bulk (C functions mapped over them):
    most recorded values are ruled out (three in four on the canary corpus), and the steps of
    a Python loop for each were most of the cost of :meth:`Recorder.build`; only the values
    left take a step each."""
    raw = RawDataElement
    # values whose needle is the value (all its words must be there), and the others (names,
    # private and binary values, several values: one of their words), with their bytes
    whole: list[int] = []
    whole_texts: list[bytes] = []
    parts: list[int] = []
    parts_texts: list[bytes] = []
    for index, (vr, action, private, element) in enumerate(
        zip(values[1::6], values[2::6], values[3::6], values[4::6], strict=True)
    ):
        if vr in _ALWAYS_BUILT or (private and action in _DATING):
            continue  # UIDs and dates, private ones included: always built
        kind = element.__class__
        if kind is raw:
            held = element.value
            if held.__class__ is not bytes:
                continue
            if vr in _BINARY or (private and held.isascii() and 0x1B not in held):
                parts.append(index)
                parts_texts.append(held)
            elif private or not held.isascii() or 0x1B in held:
                continue
            elif vr == "PN" or 0x5C in held:  # a name, or several values: one word is enough
                parts.append(index)
                parts_texts.append(held)
            else:
                whole.append(index)
                whole_texts.append(held)
        elif kind is str or kind is PersonName:  # converted before the walk: may_hold()'s way
            text = str(element)
            if not text.isascii():
                continue
            if private or vr == "PN" or vr in _BINARY or kind is PersonName:
                parts.append(index)
                parts_texts.append(text.encode("ascii"))
            else:
                whole.append(index)
                whole_texts.append(text.encode("ascii"))
    kept = [True] * (len(values) // 6)
    deque(map(kept.__setitem__, whole + parts, repeat(False)), maxlen=0)  # ruled out, unless:
    for index in compress(whole, map(words.issuperset, _split(whole_texts))):
        kept[index] = True  # (a value without words is ruled out by build())
    for index in compress(parts, map(not_, map(words.isdisjoint, _split(parts_texts)))):
        kept[index] = True
    return kept


def _split(texts: list[bytes]) -> Iterator[list[str]]:
    """The words of each of ``texts`` (plain bytes), in C."""
    return map(str.split, map(bytes.decode, map(bytes.translate, texts, repeat(WORD_BYTES))))


def _whole_in(held: bytes, words: Words) -> bool:
    """Whether one of the values of ``held`` (plain ASCII, values split at backslashes) has
    words and all of them among ``words``: a needle made of it could be in the output."""
    for part in held.split(b"\\"):
        found = part.translate(WORD_BYTES).decode("ascii").split()
        if found and words.issuperset(found):  # in C: a generator here cost twice as much
            return True
    return False


@functools.lru_cache(maxsize=4096)
def _private_needles(raw: bytes, vr: str, little: bool, action: Action, encodings: Any) -> Needles:
    """What recording one raw private value adds, worked out once: a scanner's private
    attributes hold the same values file after file."""
    needles = Needles()
    element = RawDataElement(BaseTag(0x00090010), vr, len(raw), raw, 0, little, True)
    try:
        value = raw_value(element, vr, encodings if isinstance(encodings, str) else [*encodings])
    except Exception:
        return needles
    _record_value(needles, 0x00090010, vr, value, action, True)
    return needles


def _record_value(
    needles: Needles, tag: int, vr: str, value: Any, action: Action, private: bool
) -> None:
    """Add to ``needles`` what one attribute's value must not leave in an output."""
    if vr in ("DA", "DT") or (private and action in (Action.SHIFT_DATE, Action.YEAR_ONLY)):
        texts = strings(value) or (
            [bytes(value).decode("latin-1")] if isinstance(value, bytes) else []
        )
        needles.dates.update(d for d in map(_as_date, texts) if d)
        return
    if vr == "UI":
        for uid in strings(value):
            if uid and not is_standard_uid(uid):
                needles.add_uid(uid)
        return
    if private:
        if isinstance(value, bytes):
            runs = sorted(set(PRINTABLE.findall(value)), key=len, reverse=True)[:20]
            for run in runs:
                needles.add(run.decode("ascii"), "private value")
        for text in strings(value):
            needles.add(text, "private value")
        return
    if action in _PARTIAL:
        return  # cleaned text keeps its other words; its identifying words are needles already
    kind = _kind(tag, vr)
    for text in strings(value):
        if vr == "PN" or isinstance(value, PersonName):
            for spelling in name_spellings(text):
                needles.add(spelling, "person name")
        else:
            needles.add(text, kind)


def collect(ds: Dataset, policy: CompiledPolicy, recorder: Recorder | None = None) -> Needles:
    """The identifying values of one input dataset, without changing it (as the walker would);
    ``recorder`` (e.g. that of :func:`prepare`) also gets the references."""
    if recorder is None:
        recorder = Recorder()
        recorder.file_meta(ds)  # prepare() has done it for a recorder it made
    active = policy.active_rules(ds) if policy.has_conditions else frozenset()

    def visit(level: Dataset, parents: Parents) -> None:
        recorder.enter(level, parents)
        for tag in list(level.keys()):
            vr = element_vr(level.get_item(tag), tag)
            decision = policy.decide(tag, vr, level, parents, active)
            decision = policy.private_decision(level, tag, decision)  # as the walker does
            recorder(level, tag, vr, decision, parents)
            if vr == "SQ" and decision.action in (Action.KEEP, Action.CLEAN, Action.REMAP_UID):
                try:
                    items = level[tag].value or []
                except Exception:
                    continue
                for index, item in enumerate(items):
                    visit(item, (*parents, (tag, index)))

    visit(ds, ())
    return recorder.build()


@dataclass
class Pending:
    """What is taken from an input before it is pseudonymized in place."""

    recorder: Recorder
    instance: str
    active: frozenset[int]
    #: the needles of every value recorded, once built
    built: Needles | None = None
    #: the needles the output was checked for (see :func:`~pseudo.verify.check.finish`)
    checked: Needles | None = None

    @property
    def references(self) -> dict[str, str]:
        """Path -> original value of every reference in the input's walked sequences."""
        return self.recorder.references()

    @property
    def needles(self) -> Needles:
        """The needles of every value recorded (built at the first call)."""
        if self.built is None:
            self.built = self.recorder.build()
        return self.built

    @property
    def skipped(self) -> Counter[str]:
        """How many values the output could hold were not searched for, by reason (too short,
        a number, too common); values the output's words rule out are not counted."""
        return (self.checked or self.needles).skipped


def prepare(ds: Dataset, policy: CompiledPolicy) -> Pending:
    """Prepare to check one input; its values and references are recorded by the walker."""
    recorder = Recorder()
    recorder.file_meta(ds)
    return Pending(
        recorder=recorder,
        instance=str(ds.get("SOPInstanceUID", "")),
        active=policy.active_rules(ds) if policy.has_conditions else frozenset(),
    )
