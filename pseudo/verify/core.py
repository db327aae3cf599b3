"""Residual-PHI verification: look for every identifying input value in the outputs.

While a file is pseudonymized, a :class:`Recorder` takes, from every attribute the policy does
not keep, the value that must not survive: values that are removed, emptied, replaced,
tokenized or encrypted (names in their usual spellings, IDs, addresses, free text, and every
value inside a removed sequence), the original dates of the patient (in their usual
spellings), the original instance UIDs and the values of private attributes. :func:`check` then
searches the output for them: first its raw bytes (one pass, by words), and, only when something
is found there, every attribute at every depth, to name where. It also flags private attributes
the policy does not keep, a Burned In Annotation that is not ``NO``, and the file's name.
:class:`CrossFileCheck` looks across a run for original UIDs of other inputs and for references
that no longer resolve. Findings name the file, the attribute path and the kind of value, never
the value itself unless asked.
"""

from __future__ import annotations

import functools
import hashlib
import re
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import Any, NamedTuple

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.valuerep import PersonName
from pydicom.values import convert_value

from pseudo.deid.actions import DUMMY_VALUES
from pseudo.deid.clean import date_spellings, word_tokens
from pseudo.deid.uids import is_standard_uid
from pseudo.deid.walker import attribute_name, element_vr
from pseudo.dicom.private import SafePrivate
from pseudo.io.pydicom_internals import character_set, element_map
from pseudo.policy.compiled import CompiledPolicy, Decision
from pseudo.policy.model import Action
from pseudo.policy.selectors import Parents

MIN_LENGTH = 4
MIN_DIGITS = 6
#: Modalities whose images often carry burned-in text: a missing Burned In Annotation is flagged.
BURNED_IN_PRONE = frozenset(
    {"US", "XA", "RF", "SC", "OT", "DX", "CR", "ES", "XC", "IO", "PX", "MG"}
)
#: VRs whose values can carry identifying text (others are numbers, bulk data, or code
#: strings: CS values are defined terms such as TEXT or CONTAINER, never an identity).
SEARCHED_VRS = frozenset(
    {"AE", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "UR", "DA", "DT", "UI", "UN", "OB"}
)
#: VRs searched in an output, where a value found in the raw bytes must be given its place.
CHECKED_VRS = SEARCHED_VRS | {"AS", "CS", "DS", "IS", "TM"}
REFERENCE_TAGS = frozenset({0x00081155, 0x00041511})
#: Binary VRs: in a standard attribute they hold numbers, pixels, curves or profiles (ICC
#: profiles, LUTs, waveforms, overlays, icons), never text, and are not searched for words.
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW"})
#: Standard binary attributes that do carry text: Encapsulated Document (PDF, CDA).
_BINARY_WITH_TEXT = frozenset({0x00420011})
#: File meta elements that name the source of a file, and the kind of value they hold.
_META_NEEDLES = {
    0x00020003: "instance UID",  # Media Storage SOP Instance UID
    0x00020016: "AE title",  # Source Application Entity Title
    0x00020017: "AE title",  # Sending Application Entity Title
    0x00020018: "AE title",  # Receiving Application Entity Title
    0x00020100: "instance UID",  # Private Information Creator UID
    0x00020102: "private value",  # Private Information
}
_PRINTABLE = re.compile(rb"[\x20-\x7e]{6,}")
_NUMBER = re.compile(r"[+-]?\d*\.?\d+(?:[eE][+-]?\d+)?")
#: Raw bytes to their words: ASCII letters upper-cased, digits kept, every other byte a space.
_WORD_BYTES = bytes(
    byte - 32
    if 0x61 <= byte <= 0x7A
    else byte
    if chr(byte).isascii() and chr(byte).isalnum()
    else 0x20
    for byte in range(256)
)
_COMMON_WORDS = """NONE UNKNOWN ORIGINAL PRIMARY DERIVED SECONDARY AXIAL OTHER ANONYMOUS ANON HERE
NAME TEST DEMO SAMPLE PHANTOM DEFAULT STUDY SERIES IMAGE ROUTINE RESEARCH CLINICAL RADIOLOGY
HOSPITAL CLINIC MEDICAL CENTER CENTRE GENERAL DEPARTMENT THERAPY HEAD BRAIN CHEST BODY PELVIS
ABDOMEN SPINE KNEE THORAX NORMAL DOCTOR PATIENT PHYSICIAN REMOVED REDACTED NULL TRUE FALSE"""
#: Values too common to be evidence of a leak on their own (compared in upper case).
_COMMON = frozenset(_COMMON_WORDS.split()) | {
    str(v).upper() for v in DUMMY_VALUES.values() if isinstance(v, str)
}
#: Actions that keep a value as it is: it may legitimately appear in the output.
_KEEPING = frozenset({Action.KEEP})
#: Descriptive values (not identities): found in an attribute the policy keeps, they are the
#: policy's choice, not a leak (an Institution Name TOSHIBA inside a kept Manufacturer
#: TOSHIBA_MEC names the vendor). Names, IDs, dates, UIDs, addresses are reported wherever found.
_DESCRIPTIVE = frozenset({"private value", "text", "free text", "institution"})
#: Kept values of an input, by where they are: (sequences above, tag) -> the value as read.
KeptValues = dict[tuple[Parents, int], Any]
#: Actions after which nothing of a text value may remain (cleaning and substitution keep words).
_PARTIAL = frozenset({Action.CLEAN, Action.SUBSTITUTE})


class Needle(NamedTuple):
    """An identifying value to look for, and what kind of value it is (a tuple: needles are
    hashed in every search, and a tuple hashes in C)."""

    text: str
    kind: str
    fold: bool  # match regardless of case


@dataclass
class Finding:
    """Something found in an output file; ``value`` only when values were asked for."""

    output: str
    path: str
    check: str  # leak | kept-value | private-attribute | burned-in | file-name | reference
    kind: str
    severity: str = "leak"  # leak (fails the check) | warning
    value: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Plain data, without the value unless it was asked for."""
        data = asdict(self)
        if data["value"] is None:
            data.pop("value")
        return data


@dataclass
class Needles:
    """The identifying values of one input file (or of several, merged)."""

    items: dict[str, Needle] = field(default_factory=dict)
    skipped: Counter[str] = field(default_factory=Counter)
    dates: set[date] = field(default_factory=set)
    dates_checked: bool = False

    def add(self, text: str, kind: str, *, fold: bool = True) -> None:
        """Add a value unless it is too short or too common to be evidence of a leak."""
        text = text.strip().strip("\x00").strip()
        if len(text) < MIN_LENGTH:
            if text:
                self.skipped["shorter than 4 characters"] += 1
            return
        upper = text.upper()
        measurement = "." in text or "E" in upper or len(text.lstrip("+-0")) < MIN_DIGITS
        if kind != "date" and measurement and _NUMBER.fullmatch(text):
            self.skipped["measurements and numbers under 6 digits"] += 1
            return
        if upper in _COMMON or is_standard_uid(text):
            self.skipped["common values and standard UIDs"] += 1
            return
        key = f"date:{text}" if kind == "date" else upper if fold else text
        if key not in self.items:  # the first kind recorded for a value stays
            self.items[key] = Needle(text, kind, fold)

    def add_dates(self, offset_days: int | None) -> None:
        """Add the original dates once the patient's offset is known (None: not checked).

        A date that is also the shifted form of another date of the patient cannot be told
        apart from it and is skipped.
        """
        if offset_days is None:
            if self.dates:
                self.skipped["dates (input and output not paired)"] += len(self.dates)
            return
        self.dates_checked = True
        shifted = {d + timedelta(days=offset_days) for d in self.dates}
        items = self.items
        for day in sorted(self.dates):
            if day in shifted:
                self.skipped["dates equal to a shifted date of the same patient"] += 1
                continue
            for spelling in _spellings(day):
                # What add() would do: a spelling is long enough, not a number or a UID.
                if spelling in _COMMON:
                    self.skipped["common values and standard UIDs"] += 1
                elif (key := f"date:{spelling}") not in items:
                    items[key] = Needle(spelling, "date", False)

    def merge(self, other: Needles) -> None:
        """Add another file's (or value's) needles."""
        items = self.items
        for key, needle in other.items.items():
            if key not in items:
                items[key] = needle
        skipped = self.skipped
        for reason, count in other.skipped.items():
            skipped[reason] += count
        if other.dates:
            self.dates |= other.dates


@functools.lru_cache(maxsize=4096)
def _spellings(day: date) -> tuple[str, ...]:
    """The spellings of a date searched for (a patient's dates recur in each of their files)."""
    return tuple(date_spellings(day.strftime("%Y%m%d")))


@functools.lru_cache(maxsize=8192)
def _needle_words(text: str) -> frozenset[str]:
    """The words of a needle (values recur across the files of a study)."""
    return frozenset(word_tokens(text))


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):  # the common case first (UIDs are strings too)
        return [str(value)]
    if value is None or isinstance(value, bytes):
        return []
    if isinstance(value, MultiValue | list | tuple):
        return [s for item in value for s in _strings(item)]
    return [str(value)]


def name_spellings(name: str) -> list[str]:
    """``DOE^JOHN`` -> ``DOE^JOHN``, ``JOHN DOE``, ``DOE JOHN``, ``DOE, JOHN`` and the parts."""
    group = name.split("=")[0]
    parts = [p.strip() for p in group.split("^")]
    family, given = [*parts, "", ""][:2]
    spellings = [group.rstrip("^")]
    if family and given:
        spellings += [f"{given} {family}", f"{family} {given}", f"{family}, {given}"]
    spellings += [p for p in parts if p]
    return spellings


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


#: An element found by :func:`_elements`: the data set holding it, its tag, VR and parents.
Walked = tuple[Dataset, int, str, Parents]


#: Items of raw sequences met lately, by the identity of the raw element: the pseudonymizer
#: puts the same prebuilt De-identification Method Code Sequence into every output, and it
#: need be parsed only once. The element is kept, so its identity cannot be reused meanwhile.
_RECENT_SEQUENCES: dict[int, tuple[RawDataElement, list[Dataset]]] = {}
_RECENT_LIMIT = 8
_RECENT_LOCK = threading.Lock()


def _items(ds: Dataset, tag: int, element: Any) -> list[Dataset]:
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


def _elements(ds: Dataset, parents: Parents = ()) -> Iterator[Walked]:
    """Every element at every depth: (dataset holding it, tag, VR, sequences above it)."""
    for tag, element in list(element_map(ds).items()):
        vr = element_vr(element, tag)  # the VR only: a raw element is not converted here
        yield ds, tag, vr, parents
        if vr == "SQ":
            try:
                items = _items(ds, tag, element)
            except Exception:
                continue
            for index, item in enumerate(items):
                yield from _elements(item, (*parents, (tag, index)))


#: Binary numbers: measurements and counters, not searched for in outputs.
_NUMBER_VRS = frozenset({"AT", "FL", "FD", "SL", "SS", "SV", "UL", "US", "UV", "OD", "OF", "OL"})
#: VRs whose values are ASCII whatever the Specific Character Set (PS3.5 6.2).
_ASCII_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI"})
#: VRs pydicom gives as the raw bytes.
_BYTES_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
#: Text VRs in the Specific Character Set, one value (backslash is text) or several.
_SINGLE_TEXT_VRS = frozenset({"LT", "ST", "UT"})
_PLAIN_TEXT_VRS = _SINGLE_TEXT_VRS | {"LO", "SH", "UC"}


def peek_value(ds: Dataset, tag: int, vr: str, charset: Any = None) -> Any:
    """An attribute's value, decoded without converting the element in place (most recorded
    values belong to attributes about to be removed: converting them would be wasted work).
    ``charset``: the data set's encodings, when the caller knows them already."""
    element = ds.get_item(tag)
    if isinstance(element, RawDataElement) and vr != "SQ":
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
        return convert_value(vr, element, character_set(ds) if charset is None else charset)
    return ds[tag].value


def _peek(ds: Dataset, tag: int, vr: str) -> Any:
    try:
        return peek_value(ds, tag, vr)
    except Exception:
        return None


def path_of(parents: Parents, tag: int, prefix: str = "") -> str:
    """``ContentSequence[2].ContentSequence[0].PersonName``: the path of an attribute."""
    return prefix + "".join(f"{attribute_name(t)}[{i}]." for t, i in parents) + attribute_name(tag)


def _searched(vr: str, private: bool) -> bool:
    """Whether the values of a removed or changed attribute of this VR are looked for in the
    output: text, dates, UIDs, bytes; binary numbers are not, private ones neither."""
    return vr in SEARCHED_VRS or (private and vr not in _NUMBER_VRS)


def records_removed(tag: int, vr: str | None) -> bool:
    """Whether :class:`Recorder` reads anything of a top-level attribute that the policy
    removes (None: a VR not known yet, as in Implicit VR): a reader that leaves such attributes
    out of the data set need build only these for a verification."""
    if vr is None or vr == "SQ":
        return True
    return vr != "TM" and _searched(vr, bool((tag >> 16) & 1))


class Recorder:
    """Records, attribute by attribute, what must not survive pseudonymization.

    The walker calls it for every attribute with the policy's decision, before the action
    changes anything; :func:`collect` does the same without changing the dataset.
    """

    def __init__(self) -> None:
        self.needles = Needles()
        self._safe = SafePrivate.load()
        #: path -> original value of every Referenced SOP Instance UID in a walked sequence
        self.references: dict[str, str] = {}
        #: id -> encodings of the data sets seen (pydicom works them out again at every call)
        self._charsets: dict[int, Any] = {}
        #: the input's value of every attribute the policy keeps: a needle found there in the
        #: output is the policy's choice when the input had it at the same place
        self.kept: KeptValues = {}

    def __call__(
        self, ds: Dataset, tag: int, vr: str, decision: Decision, parents: Parents = ()
    ) -> None:
        action = decision.action
        private = bool((tag >> 16) & 1)
        if parents and tag in REFERENCE_TAGS:
            for uid in _strings(_peek(ds, tag, vr)):
                self.references[path_of(parents, tag)] = uid
        if action in _KEEPING:
            if vr != "SQ":
                self.kept[(parents, tag)] = _snapshot(ds, tag)
            return  # kept values are not evidence of themselves
        if vr == "TM" or (private and 0x10 <= tag & 0xFFFF <= 0xFF):
            return  # times of day and private creator names are not evidence
        if private and action is Action.CLEAN and self._safe.is_safe(ds, tag):
            return
        if vr == "SQ":
            if action in (Action.REMOVE, Action.EMPTY, Action.DUMMY):
                self._subtree(ds, tag)
            return  # kept, cleaned or remapped sequences: the walker visits their items
        if not _searched(vr, private):
            return
        charset = self._charsets.get(id(ds))
        if charset is None:
            charset = self._charsets[id(ds)] = character_set(ds)
        try:
            element = ds.get_item(tag)
            if private and isinstance(element, RawDataElement):
                raw = element.value
                if raw.__class__ is bytes and len(raw) <= _RECURRING_BYTES:
                    # the same value at another place in another file: the same needles
                    anywhere = element._replace(value_tell=0)
                    self.needles.merge(_private_needles(anywhere, vr, action, tuple(charset)))
                    return
            value = peek_value(ds, tag, vr, charset)
        except Exception:
            return
        _record_value(self.needles, tag, vr, value, action, private)

    def file_meta(self, ds: Dataset) -> None:
        """The input's file meta names its source: AE titles, private information, the
        instance UID. The output's file meta is rebuilt, so none of them may survive."""
        meta = getattr(ds, "file_meta", None)
        if meta is None:
            return
        for tag, kind in _META_NEEDLES.items():
            if tag not in (elements := element_map(meta)):
                continue
            try:
                value = peek_value(meta, tag, element_vr(elements[BaseTag(tag)], tag))
            except Exception:
                continue
            if isinstance(value, bytes):
                for run in set(_PRINTABLE.findall(value)):
                    self.needles.add(run.decode("ascii"), kind)
            elif kind == "instance UID":
                _record_value(self.needles, tag, "UI", value, Action.REMOVE, False)
            else:
                for text in _strings(value):
                    self.needles.add(text, kind)

    def _subtree(self, ds: Dataset, tag: int) -> None:
        """Everything inside a sequence that is removed whole is gone too."""
        try:
            items = ds[tag].value or []
        except Exception:
            return
        for item in items:
            for level, inner, vr, _ in _elements(item):
                if vr == "SQ" or vr == "TM" or (vr not in SEARCHED_VRS and not (inner >> 16) & 1):
                    continue
                try:
                    value = peek_value(level, inner, vr)
                except Exception:
                    continue
                private = bool((inner >> 16) & 1)
                _record_value(self.needles, inner, vr, value, Action.REMOVE, private)


def _snapshot(ds: Dataset, tag: int) -> Any:
    """The value of an element as it is now, in a form later changes cannot alter (the raw
    bytes of an element not converted yet; a tuple for several values)."""
    element = element_map(ds).get(BaseTag(tag))
    return None if element is None else _snapshot_of(element)


def _snapshot_of(element: Any) -> Any:
    """What :func:`_snapshot` would give for an element."""
    value = element.value
    return tuple(value) if isinstance(value, MultiValue | list) else value


def _snapshot_text(value: Any) -> str:
    """A kept value as text to search in (bytes as Latin-1: needles there are ASCII words)."""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, tuple):
        return "\\".join(str(v) for v in value)
    return "" if value is None else str(value)


#: Private values at most this long are recorded once per process, by their bytes.
_RECURRING_BYTES = 1024


@functools.lru_cache(maxsize=4096)
def _private_needles(
    element: RawDataElement, vr: str, action: Action, charset: tuple[str, ...]
) -> Needles:
    """What recording one raw private element adds, worked out once: a scanner's private
    attributes hold the same values file after file."""
    holder = Dataset()
    element_map(holder)[element.tag] = element
    value = peek_value(holder, element.tag, vr, list(charset))
    needles = Needles()
    _record_value(needles, element.tag, vr, value, action, True)
    return needles


def _record_value(
    needles: Needles, tag: int, vr: str, value: Any, action: Action, private: bool
) -> None:
    """Add to ``needles`` what one attribute's value must not leave in an output."""
    if vr in ("DA", "DT") or (private and action in (Action.SHIFT_DATE, Action.YEAR_ONLY)):
        texts = _strings(value) or (
            [bytes(value).decode("latin-1")] if isinstance(value, bytes) else []
        )
        needles.dates.update(d for d in map(_as_date, texts) if d)
        return
    if vr == "UI":
        for uid in _strings(value):
            if uid and not is_standard_uid(uid):
                needles.add(uid, "instance UID", fold=False)
        return
    if private:
        if isinstance(value, bytes):
            runs = sorted(set(_PRINTABLE.findall(value)), key=len, reverse=True)[:20]
            for run in runs:
                needles.add(run.decode("ascii"), "private value")
        for text in _strings(value):
            needles.add(text, "private value")
        return
    if action in _PARTIAL:
        return  # cleaned text keeps its other words; its identifying words are needles already
    kind = _kind(tag, vr)
    for text in _strings(value):
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
        for tag in list(level.keys()):
            vr = element_vr(level.get_item(tag), tag)
            decision = policy.decide(tag, vr, level, parents, active)
            recorder(level, tag, vr, decision, parents)
            if vr == "SQ" and decision.action in (Action.KEEP, Action.CLEAN, Action.REMAP_UID):
                try:
                    items = level[tag].value or []
                except Exception:
                    continue
                for index, item in enumerate(items):
                    visit(item, (*parents, (tag, index)))

    visit(ds, ())
    return recorder.needles


@functools.lru_cache(maxsize=4096)
def _needle_pattern(needle: Needle) -> re.Pattern[str]:
    """The boundary-aware search for one needle (compiled once: values recur across files)."""
    text = re.escape(needle.text)
    if needle.kind == "date":
        return re.compile(rf"(?<!\d){text}" + ("" if needle.text.isdigit() else r"(?!\d)"))
    if needle.fold:
        return re.compile(rf"(?<![^\W_]){text}(?![^\W_])", re.IGNORECASE)
    return re.compile(rf"(?<![\w.]){text}(?![\w.])")


class Matcher:
    """Needles indexed by their words, for fast search of many values in text and bytes.

    A needle is a candidate in a text only if every one of its words occurs in that text; only
    candidates are confirmed with an exact, boundary-aware search. A date needle also matches
    at the start of a longer run of digits (a DT value such as ``20230105101600``).
    """

    def __init__(self, needles: Needles) -> None:
        self.needles = needles
        self._by_word: dict[str, list[Needle]] = {}
        self._words: dict[Needle, frozenset[str]] = {}
        self._dates: dict[str, Needle] = {}
        self._special: list[Needle] = []  # not ASCII: searched as plain substrings
        for needle in needles.items.values():
            if needle.kind == "date" and needle.text.isdigit():
                self._dates[needle.text] = needle
            elif not needle.text.isascii():
                self._special.append(needle)
            elif words := _needle_words(needle.text):
                self._words[needle] = words
                self._by_word.setdefault(min(words), []).append(needle)

    def __bool__(self) -> bool:
        return bool(self._by_word or self._dates or self._special)

    def _candidates(self, words: set[str], dates: bool = True) -> list[Needle]:
        """Needles all of whose words are among ``words``, and (``dates``: unless the caller
        knows none can be) date needles that begin a word of at least 8 digits."""
        found = []
        for word in words & self._by_word.keys():
            for needle in self._by_word[word]:
                if self._words[needle] <= words:
                    found.append(needle)
        if dates and self._dates:
            for word in words:
                if len(word) >= 8 and word.isdigit() and word[:8] in self._dates:
                    found.append(self._dates[word[:8]])
        return found

    def search_text(self, text: str) -> list[Needle]:
        """The needles that occur in ``text``."""
        found = [
            n for n in self._candidates(set(word_tokens(text))) if _needle_pattern(n).search(text)
        ]
        upper = text.upper()
        found += [
            n for n in self._special if (n.text.upper() in upper if n.fold else n.text in text)
        ]
        return found

    def search_bytes(
        self, raw: bytes, encodings: tuple[str, ...] = ("utf-8",)
    ) -> list[tuple[Needle, int]]:
        """The needles that occur in raw bytes, with the offset of the first occurrence."""
        words_text = raw.translate(_WORD_BYTES).decode("ascii")
        words = set(words_text.split())
        found: list[tuple[Needle, int]] = []
        candidates = self._candidates(words, any(day in words_text for day in self._dates))
        if candidates:
            text = raw.decode("latin-1")
            upper = raw.upper().decode("latin-1")  # bytes.upper() changes ASCII letters only
            for needle in candidates:
                # The plain substring test first: most candidates fail it, and the pattern's
                # leading look-behind makes the regular expression try every position.
                if needle.text.upper() not in upper if needle.fold else needle.text not in text:
                    continue
                match = _needle_pattern(needle).search(text)
                if match:
                    found.append((needle, match.start()))
        for needle in self._special:
            for encoding in encodings:
                try:
                    offset = raw.find(needle.text.encode(encoding))
                except (LookupError, UnicodeError):
                    continue
                if offset >= 0:
                    found.append((needle, offset))
                    break
        found.sort(key=lambda hit: hit[1])  # in file order, whatever the order of the sets above
        return found


def encodings(ds: Dataset) -> tuple[str, ...]:
    """Python codecs of the dataset's Specific Character Set, for searching its raw bytes."""
    from pydicom.charset import convert_encodings

    try:
        names = convert_encodings(ds.get("SpecificCharacterSet") or "ISO_IR 6")
    except Exception:
        names = []
    return tuple(dict.fromkeys([*names, "utf-8"]))


def check(
    out: Dataset,
    relative_path: str,
    matcher: Matcher,
    policy: CompiledPolicy,
    header: bytes | None = None,
    *,
    active: frozenset[int] = frozenset(),
    show_values: bool = False,
    walked: list[Walked] | None = None,
    kept: KeptValues | None = None,
) -> list[Finding]:
    """Look for the matcher's needles in one output: its bytes (``header``: every byte but the
    top-level pixel data), its attributes at every depth when needed, and its file name. One
    finding per attribute path and kind of value.

    Text values are searched by whole words; standard binary values (ICC profiles, LUTs,
    waveforms, overlays, icons) are not searched, private and unknown ones are, in their
    printable runs. A needle in an attribute the policy keeps, that the input held at the
    same place (``kept``, from :class:`Recorder`; without it: any value the policy keeps), is
    the policy's choice: a warning for names, IDs, dates and UIDs, nothing for descriptive
    values. Anywhere else it is a leak.
    """
    findings: list[Finding] = []
    reported: set[tuple[str, str, str]] = set()

    def report(
        path: str, check_name: str, kind: str, value: str | None, severity: str = "leak"
    ) -> None:
        if (path, check_name, kind) in reported:
            return
        reported.add((path, check_name, kind))
        findings.append(
            Finding(relative_path, path, check_name, kind, severity, value if show_values else None)
        )

    meta = getattr(out, "file_meta", None) or Dataset()
    safe = SafePrivate.load()
    if walked is None:
        walked = list(_elements(out))
    for level, tag, vr, parents in walked:
        if (tag >> 16) & 1 and not 0x10 <= tag & 0xFFFF <= 0xFF:
            action = policy.decide(tag, vr, level, parents, active).action
            if action is Action.REMOVE or (action is Action.CLEAN and not safe.is_safe(level, tag)):
                report(
                    path_of(parents, tag),
                    "private-attribute",
                    "private attribute the policy does not keep",
                    None,
                )
    raw_hits = (
        matcher.search_bytes(header, encodings(out)) if header is not None and matcher else []
    )
    chosen: set[str] = set()  # values in which a needle is the policy's choice
    if matcher and (header is None or raw_hits):
        seen: set[Needle] = set()
        binary: list[bytes] = []  # standard binary values: not text, not searched
        elements = [("FileMeta.", e) for e in _elements(meta)] + [("", e) for e in walked]
        for prefix, (level, tag, vr, parents) in elements:
            private = bool((tag >> 16) & 1)
            if vr == "SQ" or (vr not in CHECKED_VRS and not private):
                if vr in _BINARY_VRS and tag not in _BINARY_WITH_TEXT and raw_hits:
                    try:
                        value = level[tag].value
                    except Exception:
                        continue
                    if isinstance(value, bytes):
                        binary.append(value)
                elif tag not in _BINARY_WITH_TEXT:
                    continue
            before = element_map(level).get(BaseTag(tag))  # as it was written: reading converts it
            try:
                value = level[tag].value
            except Exception:
                continue
            texts = _strings(value)
            if isinstance(value, bytes):
                texts = [run.decode("ascii") for run in _PRINTABLE.findall(value)]
            of_itself: dict[Needle, bool] = {}
            for text in texts:
                for needle in matcher.search_text(text):
                    seen.add(needle)
                    if needle not in of_itself:
                        where: tuple[Dataset, int, str, Parents, frozenset[int]] | None
                        where = (level, tag, vr, parents, active)
                        if prefix and tag == 0x00020003:  # repeats the SOP Instance UID
                            where, before = (out, 0x00080018, "UI", (), active), None
                        elif prefix:  # the rebuilt file meta keeps nothing of the input
                            where = None
                        of_itself[needle] = where is not None and _chosen(
                            needle, matcher, policy, kept, where, before
                        )
                    path = path_of(parents, tag, prefix)
                    if not of_itself[needle]:
                        report(path, "leak", needle.kind, needle.text)
                        continue
                    chosen.add(text.strip())
                    if needle.kind not in _DESCRIPTIVE:
                        report(path, "kept-value", needle.kind, needle.text, "warning")
        for needle, offset in raw_hits:
            if needle not in seen and not _inside(needle, header or b"", binary):
                report(f"(raw bytes at offset {offset})", "leak", needle.kind, needle.text)
    for part in relative_path.split("/"):
        for needle in matcher.search_text(part):
            stem = part.removesuffix(".dcm")
            if stem in chosen:  # e.g. a UID the policy keeps, which holds a date
                report("(file name)", "kept-value", needle.kind, needle.text, "warning")
            else:
                report("(file name)", "file-name", needle.kind, needle.text)
    burned = str(out.get("BurnedInAnnotation", "") or "").strip().upper()
    if burned == "YES":
        report(
            "BurnedInAnnotation",
            "burned-in",
            "Burned In Annotation is YES: text in the pixels",
            None,
        )
    elif burned != "NO" and (burned or str(out.get("Modality", "")).upper() in BURNED_IN_PRONE):
        report(
            "BurnedInAnnotation",
            "burned-in",
            "Burned In Annotation is not NO: check the pixels",
            None,
            "warning",
        )
    return findings


def _chosen(
    needle: Needle,
    matcher: Matcher,
    policy: CompiledPolicy,
    kept: KeptValues | None,
    where: tuple[Dataset, int, str, Parents, frozenset[int]],
    before: Any,
) -> bool:
    """Whether a needle found in an output attribute is there by the policy's choice: the
    policy keeps the attribute and (when the input's kept values are known) the input held
    the needle at the same place (``before``: the output's element as written, if known)."""
    level, tag, vr, parents, active = where
    if kept is None:
        return policy.decide(tag, vr, level, parents, active).action in _KEEPING
    key = (parents, tag)
    if key not in kept:
        return False
    value = kept[key]
    if before is not None and value == _snapshot_of(before):
        return True  # the attribute is as the input had it
    return needle in matcher.search_text(_snapshot_text(value))


def _inside(needle: Needle, header: bytes, binary: list[bytes]) -> bool:
    """Whether every occurrence of a needle in the raw bytes is inside a standard binary value
    (an ICC profile's ``tech`` tag is not the operator TECH)."""
    if not binary:
        return False
    pattern = _needle_pattern(needle)
    total = len(pattern.findall(header.decode("latin-1")))
    inside = sum(len(pattern.findall(value.decode("latin-1"))) for value in binary)
    return 0 < total <= inside


def uid_digest(uid: str) -> int:
    """A compact, stable stand-in for a UID, so a whole run's UIDs fit in memory."""
    return int.from_bytes(hashlib.blake2b(uid.encode(), digest_size=8).digest(), "big")


def _references(walked: list[Walked]) -> list[tuple[str, str]]:
    """(path, value) of every Referenced SOP Instance UID inside sequences, at any depth."""
    found: list[tuple[str, str]] = []
    for level, tag, _, parents in walked:
        if parents and tag in REFERENCE_TAGS:
            found.extend((path_of(parents, tag), uid) for uid in _strings(level[tag].value))
    return found


def output_uids(
    walked: list[Walked], policy: CompiledPolicy, active: frozenset[int]
) -> dict[int, str]:
    """Digest -> path of every UID among the elements of an output (see :func:`_elements`)
    that the policy does not keep as it is."""
    found: dict[int, str] = {}
    for level, tag, vr, parents in walked:
        if vr == "UI" and policy.decide(tag, vr, level, parents, active).action not in _KEEPING:
            for uid in _strings(level[tag].value):
                if uid and not is_standard_uid(uid):
                    found.setdefault(uid_digest(uid), path_of(parents, tag))
    return found


@dataclass
class PairEvidence:
    """What one pseudonymized file contributes to the cross-file checks."""

    input_instance: str
    output_instance: str
    references: list[tuple[str, str, str]]  # (path, original value, output value)
    original_uids: set[int] = field(default_factory=set)  # digests of the input's instance UIDs
    output_uids: dict[int, str] = field(default_factory=dict)  # digest -> path, in the output


@dataclass
class CrossFileCheck:
    """Checks across all outputs of a run: no original instance UID of any input appears in any
    output, and every reference that pointed at an input instance points at an output one."""

    input_instances: set[str] = field(default_factory=set)
    output_instances: set[str] = field(default_factory=set)
    pending: list[tuple[str, str, str, str]] = field(default_factory=list)
    original_uids: set[int] = field(default_factory=set)
    output_uids: dict[int, tuple[str, str]] = field(default_factory=dict)

    def add(self, evidence: PairEvidence, relative_path: str) -> None:
        """Record one input/output pair."""
        self.input_instances.add(evidence.input_instance)
        self.output_instances.add(evidence.output_instance)
        self.pending.extend((relative_path, *ref) for ref in evidence.references)
        self.original_uids |= evidence.original_uids
        for digest, path in evidence.output_uids.items():
            self.output_uids.setdefault(digest, (relative_path, path))

    def findings(self, *, show_values: bool = False) -> list[Finding]:
        """Original UIDs found in outputs, and references that no longer resolve."""
        leaked = [
            Finding(output, path, "leak", "instance UID", "leak")
            for digest, (output, path) in self.output_uids.items()
            if digest in self.original_uids
        ]
        broken = [
            Finding(
                output,
                path,
                "reference",
                "reference that does not resolve",
                "leak",
                value if show_values else None,
            )
            for output, path, original, value in self.pending
            if original in self.input_instances and value not in self.output_instances
        ]
        return leaked + broken


@dataclass
class Pending:
    """What is taken from an input before it is pseudonymized in place."""

    recorder: Recorder
    references: dict[str, str]
    instance: str
    active: frozenset[int]

    @property
    def needles(self) -> Needles:
        """The identifying values recorded so far."""
        return self.recorder.needles


def prepare(ds: Dataset, policy: CompiledPolicy) -> Pending:
    """Prepare to check one input; its values and references are recorded by the walker."""
    recorder = Recorder()
    recorder.file_meta(ds)
    return Pending(
        recorder=recorder,
        references=recorder.references,  # filled as the walker goes
        instance=str(ds.get("SOPInstanceUID", "")),
        active=policy.active_rules(ds) if policy.has_conditions else frozenset(),
    )


def finish(
    pending: Pending,
    out: Dataset,
    relative_path: str,
    offset_days: int,
    header: bytes | None,
    policy: CompiledPolicy,
    *,
    show_values: bool = False,
) -> tuple[list[Finding], PairEvidence]:
    """Check one output against its own input; return findings and cross-file evidence.

    ``header`` is the output's bytes before its pixel data (None for a deflated file).
    """
    pending.needles.add_dates(offset_days)
    walked = list(_elements(out))  # one walk of the output for every check below
    findings = check(
        out,
        relative_path,
        Matcher(pending.needles),
        policy,
        header,
        active=pending.active,
        show_values=show_values,
        walked=walked,
        kept=pending.recorder.kept,
    )
    evidence = PairEvidence(
        pending.instance,
        str(out.get("SOPInstanceUID", "")),
        [
            (path, pending.references[path], value)
            for path, value in _references(walked)
            if path in pending.references
        ],
        {uid_digest(n.text) for n in pending.needles.items.values() if n.kind == "instance UID"},
        output_uids(walked, policy, pending.active),
    )
    return findings, evidence


@dataclass
class TreeReport:
    """The result of verifying an output tree against its input tree."""

    findings: list[Finding] = field(default_factory=list)
    outputs: int = 0
    paired: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    @property
    def leaks(self) -> int:
        """Findings that fail the check."""
        return sum(1 for f in self.findings if f.severity == "leak")

    def to_json(self) -> dict[str, Any]:
        """Plain data for ``--json``; values only if they were asked for."""
        return {
            "outputs": self.outputs,
            "paired_with_input": self.paired,
            "leaks": self.leaks,
            "warnings": len(self.findings) - self.leaks,
            "findings": [f.to_json() for f in self.findings],
            "skipped_values": dict(self.skipped),
            "notes": self.notes,
        }
