"""What to look for in an output: the identifying values of its input (needles), in the
spellings in which they may appear, less those too short or too common to be evidence."""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import NamedTuple

from pseudo.deid.actions import DUMMY_VALUES
from pseudo.deid.clean import date_spellings, word_tokens
from pseudo.deid.uids import is_standard_uid

MIN_LENGTH = 4
MIN_DIGITS = 6
_NUMBER = re.compile(r"[+-]?\d*\.?\d+(?:[eE][+-]?\d+)?")
_COMMON_WORDS = """NONE UNKNOWN ORIGINAL PRIMARY DERIVED SECONDARY AXIAL OTHER ANONYMOUS ANON HERE
NAME TEST DEMO SAMPLE PHANTOM DEFAULT STUDY SERIES IMAGE ROUTINE RESEARCH CLINICAL RADIOLOGY
HOSPITAL CLINIC MEDICAL CENTER CENTRE GENERAL DEPARTMENT THERAPY HEAD BRAIN CHEST BODY PELVIS
ABDOMEN SPINE KNEE THORAX NORMAL DOCTOR PATIENT PHYSICIAN REMOVED REDACTED NULL TRUE FALSE"""
#: Values too common to be evidence of a leak on their own (compared in upper case).
_COMMON = frozenset(_COMMON_WORDS.split()) | {
    str(v).upper() for v in DUMMY_VALUES.values() if isinstance(v, str)
}


class Needle(NamedTuple):
    """An identifying value to look for, and what kind of value it is (a tuple: needles are
    hashed in every search, and a tuple hashes in C)."""

    text: str
    kind: str
    fold: bool  # match regardless of case


@dataclass
class Needles:
    """The identifying values of one input file (or of several, merged)."""

    items: dict[str, Needle] = field(default_factory=dict)
    skipped: Counter[str] = field(default_factory=Counter)
    dates: set[date] = field(default_factory=set)
    dates_checked: bool = False
    #: every instance UID of the input not skipped, searched for or not (cross-file evidence)
    uids: set[str] = field(default_factory=set)

    def add(self, text: str, kind: str, *, fold: bool = True) -> None:
        """Add a value unless it is too short or too common to be evidence of a leak."""
        text = text.strip().strip("\x00").strip()
        reason = skip_reason(text, kind)
        if reason is not None:
            if reason:
                self.skipped[reason] += 1
            return
        key = f"date:{text}" if kind == "date" else text.upper() if fold else text
        if key not in self.items:  # the first kind recorded for a value stays
            self.items[key] = Needle(text, kind, fold)

    def add_uid(self, uid: str, *, search: bool = True) -> None:
        """Add an instance UID (``search``: also as a needle) unless it is skipped."""
        text = uid.strip().strip("\x00").strip()
        reason = skip_reason(text, "instance UID")
        if reason is not None:
            if reason:
                self.skipped[reason] += 1
            return
        self.uids.add(text)
        if search and text not in self.items:  # the first kind recorded for a value stays
            self.items[text] = Needle(text, "instance UID", False)

    def add_plain_uid(self, uid: str, *, search: bool = True) -> None:
        """Add an instance UID that :func:`uid_numbers` found plain (which ``skip_reason``
        never skips), as :meth:`add_uid` would, without testing it again."""
        self.uids.add(uid)
        if search and uid not in self.items:  # the first kind recorded for a value stays
            self.items[uid] = Needle(uid, "instance UID", False)

    def add_dates(self, offset_days: int | None, words: AbstractSet[str] | None = None) -> None:
        """Add the original dates once the patient's offset is known (None: not checked).

        A date that is also the shifted form of another date of the patient cannot be told
        apart from it and is skipped. With ``words`` (an output's words, see
        :mod:`~pseudo.verify.prefilter`), a spelling with separators is added only when all its
        numbers are among them: a search needs them all (spellings of digits only are always
        added: they may begin a longer run of digits).
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
            for spelling, numbers in _spellings(day):
                # What add() would do: a spelling is long enough, not a number or a UID.
                if spelling in _COMMON:
                    self.skipped["common values and standard UIDs"] += 1
                elif words is not None and numbers and not numbers <= words:
                    continue  # absent from the output: checked by that fact
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
        if other.uids:
            self.uids |= other.uids


def skip_reason(text: str, kind: str) -> str | None:
    """Why a value (stripped) is not searched for: too short, a number or a measurement,
    too common, a standard UID; ``""`` for an empty value; None: it is searched for."""
    if len(text) < MIN_LENGTH:
        return "shorter than 4 characters" if text else ""
    upper = text.upper()
    measurement = "." in text or "E" in upper or len(text.lstrip("+-0")) < MIN_DIGITS
    if kind != "date" and measurement and _NUMBER.fullmatch(text):
        return "measurements and numbers under 6 digits"
    if upper in _COMMON or is_standard_uid(text):
        return "common values and standard UIDs"
    return None


@functools.lru_cache(maxsize=8192)
def uid_numbers(uid: str) -> list[str] | None:
    """The numbers of a plain UID (ASCII digits, three numbers or more, none empty) that
    :func:`skip_reason` does not skip: :meth:`Needles.add_uid` adds such a UID as it is, and its
    words are these numbers. None for any other UID (the general path is taken then). Worked
    out once per process for the UIDs a study's files share: the list is shared, not to be
    changed."""
    numbers = uid.split(".")
    if len(numbers) < 3 or "" in numbers or uid in _COMMON or is_standard_uid(uid):
        return None
    joined = "".join(numbers)
    return numbers if joined.isdigit() and joined.isascii() else None


@functools.lru_cache(maxsize=4096)
def _spellings(day: date) -> tuple[tuple[str, frozenset[str]], ...]:
    """The spellings of a date searched for, each with its numbers when it has separators (a
    patient's dates recur in each of their files)."""
    return tuple(
        (spelling, frozenset() if spelling.isdigit() else frozenset(word_tokens(spelling)))
        for spelling in date_spellings(day.strftime("%Y%m%d"))
    )


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
