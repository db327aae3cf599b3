"""Searching text and raw bytes for many needles at once, by whole words."""

from __future__ import annotations

import functools
import re
from collections.abc import Set as AbstractSet

from pseudo.deid.clean import word_tokens
from pseudo.verify.elements import PRINTABLE
from pseudo.verify.needles import Needle, Needles

#: Raw bytes to their words: ASCII letters upper-cased, digits kept, every other byte a space.
WORD_BYTES = bytes(
    byte - 32
    if 0x61 <= byte <= 0x7A
    else byte
    if chr(byte).isascii() and chr(byte).isalnum()
    else 0x20
    for byte in range(256)
)


#: Printable ASCII runs of binary values (see :data:`pseudo.verify.elements.PRINTABLE`): their
#: least length, and the values long enough for :meth:`Matcher.runs_in` to look only around
#: the needles' words.
_RUN_LENGTH = 6  # PRINTABLE's {6,}
_LONG_VALUE = 4096
#: Raw bytes to marks for :meth:`Matcher.runs_in`: printable ASCII as it is, any other byte 0.
_PRINTABLE_MARKS = bytes(0x70 if 0x20 <= byte <= 0x7E else 0 for byte in range(256))
_A_RUN = b"\x70" * _RUN_LENGTH

#: Raw bytes to marks: ``a`` for an ASCII letter or digit, ``0`` for a zero byte, else a space.
_STUCK_MARKS = bytes(
    0x61 if chr(byte).isascii() and chr(byte).isalnum() else 0x30 if byte == 0 else 0x20
    for byte in range(256)
)


def tag_stuck_words(raw: bytes, runs: bytes | None = None) -> set[str]:
    """The last words of values that may have run into the next element's tag (see
    :func:`needle_pattern`), without that tag's byte, upper-case like the other words: each
    run of two or more letters and digits followed by a zero byte, less its last character
    (``runs``: ``raw.translate(WORD_BYTES)``, when the caller has it already).

    Found by plain substring search in the bytes' marks (a regular expression here tried every
    position of the header, and cost as much as the rest of the byte search)."""
    marks = raw.translate(_STUCK_MARKS)
    words: set[str] = set()
    at = marks.find(b"aa0")
    if at < 0:
        return words
    if runs is None:
        runs = raw.translate(WORD_BYTES)  # a run's start: the space before it, never far back
    while at >= 0:
        start = runs.rfind(b" ", 0, at) + 1
        words.add(runs[start : at + 1].decode("ascii"))
        at = marks.find(b"aa0", at + 3)
    return words


@functools.lru_cache(maxsize=8192)
def _needle_words(text: str) -> frozenset[str]:
    """The words of a needle (values recur across the files of a study)."""
    return frozenset(word_tokens(text))


@functools.lru_cache(maxsize=4096)
def needle_pattern(needle: Needle) -> re.Pattern[str]:
    """The boundary-aware search for one needle (compiled once: values recur across files)."""
    text = re.escape(needle.text)
    if needle.kind == "date":
        return re.compile(rf"(?<!\d){text}" + ("" if needle.text.isdigit() else r"(?!\d)"))
    # In raw bytes, a value of even length runs into the next element's tag; when that tag's
    # first byte (its group's low byte: 0x32, 0x50, 0x54, or a Latin-1 letter such as 0xE1,
    # Elscint's private group) is a word character, the byte after it is 0 (the group's high
    # byte), which no text value holds (UIDs excepted: padding).
    tag = "" if needle.kind == "instance UID" else r"|(?=\w\x00)"
    if needle.fold:
        return re.compile(rf"(?<![^\W_]){text}(?:(?![^\W_]){tag})", re.IGNORECASE)
    return re.compile(rf"(?<![\w.]){text}(?:(?![\w.]){tag})")


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

        #: what :meth:`may_be_in` looks for, made at its first call (only outputs whose bytes
        #: hold a needle are searched attribute by attribute)
        self._key_words: frozenset[bytes] | None = None
        self._date_bytes: re.Pattern[bytes] | None = None
        #: whether a needle that is not ASCII may be found in ASCII text all the same (its
        #: upper case is ASCII: a long s is ``S``): then no value is ruled out by its bytes
        self._special_in_ascii = any(n.fold and n.text.upper().isascii() for n in self._special)

    def __bool__(self) -> bool:
        return bool(self._by_word or self._dates or self._special)

    def of(self, found: AbstractSet[Needle]) -> Matcher:
        """A matcher of the ``found`` needles only, and of every needle that is not ASCII
        (those are found in text regardless of case, in bytes only as spelled)."""
        items = {
            key: needle
            for key, needle in self.needles.items.items()
            if needle in found or not needle.text.isascii()
        }
        return Matcher(Needles(items=items))

    def may_be_in(self, raw: bytes) -> bool:
        """Whether :meth:`search_text` may find a needle in the texts of a raw value (False:
        certainly none). Decided from the bytes when they are plain ASCII without an ISO 2022
        escape: every character set reads them as the same ASCII text, whose words are theirs
        (or, for a printable run of them, some of theirs), and a needle is found only where
        all its words are (its longest, at least), a needle that is not ASCII never; bytes
        that hold a date needle's digits, and other bytes: True."""
        if not raw.isascii() or 0x1B in raw or self._special_in_ascii:
            return True
        key_words = self._keys()
        if self._date_bytes is not None and self._date_bytes.search(raw):
            return True  # a date needle may begin a longer run of digits
        return not key_words.isdisjoint(raw.translate(WORD_BYTES).split())

    def _keys(self) -> frozenset[bytes]:
        """What :meth:`may_be_in` looks for (made at its first call)."""
        if self._key_words is None:
            # the longest word of each needle, as bytes: the one least likely to be in a value
            # (``1`` is in every UID)
            self._key_words = frozenset(
                max(words, key=len).encode("ascii") for words in self._words.values()
            )
            if self._dates:
                days = b"|".join(re.escape(day.encode("ascii")) for day in self._dates)
                self._date_bytes = re.compile(days)
        return self._key_words

    def runs_in(self, value: bytes) -> list[str]:
        """The printable runs of a binary value (see :data:`PRINTABLE`) that may hold a needle
        (:meth:`may_be_in`), in order: ``[run for run in PRINTABLE.findall(value) if
        self.may_be_in(run)]``, decoded. A long value (a private blob or a waveform of
        hundreds of kilobytes) is not searched byte by byte by a regular expression: its runs
        are taken only around the occurrences of the key words it holds as words (a run's
        words are words of the value) and of the dates' digits, and none when it has no
        run at all."""
        if len(value) < _LONG_VALUE or self._special_in_ascii:
            return [run.decode("ascii") for run in PRINTABLE.findall(value) if self.may_be_in(run)]
        marks = value.translate(_PRINTABLE_MARKS)
        if _A_RUN not in marks:
            return []
        present = self._keys().intersection(value.translate(WORD_BYTES).split())
        starts = [m.start() for m in self._date_bytes.finditer(value)] if self._date_bytes else []
        if present:
            upper = value.upper()  # as the key words: bytes.upper() changes ASCII letters only
            for word in present:
                at = upper.find(word)
                while at >= 0:
                    starts.append(at)
                    at = upper.find(word, at + 1)
        spans = set()
        for at in starts:  # the whole printable run around each occurrence
            end = marks.find(0, at)
            spans.add((marks.rfind(0, 0, at) + 1, len(value) if end < 0 else end))
        runs = [value[start:end] for start, end in sorted(spans) if end - start >= _RUN_LENGTH]
        return [run.decode("ascii") for run in runs if self.may_be_in(run)]

    def _candidates(self, words: AbstractSet[str], dates: bool = True) -> list[Needle]:
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
            n for n in self._candidates(set(word_tokens(text))) if needle_pattern(n).search(text)
        ]
        upper = text.upper()
        found += [
            n for n in self._special if (n.text.upper() in upper if n.fold else n.text in text)
        ]
        return found

    def search_bytes(
        self,
        raw: bytes,
        encodings: tuple[str, ...] = ("utf-8",),
        split: tuple[str, AbstractSet[str]] | None = None,
    ) -> list[tuple[Needle, int]]:
        """The needles that occur in raw bytes, with the offset of the first occurrence
        (``split``: the bytes as words and a set holding at least their words, when the
        caller has them already)."""
        if split is None:
            words_text = raw.translate(WORD_BYTES).decode("ascii")
            split = words_text, set(words_text.split()) | tag_stuck_words(raw)
        words_text, words = split
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
                match = needle_pattern(needle).search(text)
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
