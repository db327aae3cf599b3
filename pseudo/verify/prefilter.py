"""Which recorded values an output could hold at all: a cheap test, by words, run before any
needle is built from a value.

A needle is found in an output's bytes (or in its file name) only at word boundaries, so the
first run of ASCII letters and digits of a found needle is a whole word of the output, and,
since every needle of a value is made of the value's words (its parts, its name components,
the printable runs of its bytes), a whole word of the value too. A value none of whose words
is a word of the output therefore leaves no needle there. A value whose needle is the value
itself (an ID, an address, free text: not a name, whose parts are needles too, nor a private
value, whose printable runs are) is found only where every one of its words is, so it needs
them all. Any other value, and any value that is not plain ASCII (its needles are searched as
substrings), has its needles built.

The bytes decide: an output whose bytes hold no needle has no finding, and one whose bytes
hold some is searched attribute by attribute for the needles of the values it may hold, to say
where each is (every attribute is in the bytes, as written).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pseudo.verify.elements import strings
from pseudo.verify.matching import WORD_BYTES, tag_stuck_words

#: The words of a text: upper-case runs of ASCII letters and digits.
Words = set[str] | frozenset[str]


#: An ISO 2022 escape sequence: ESC, intermediate bytes, a final byte (``ESC ( B``, ``ESC $ B``).
_ESCAPE = re.compile(rb"\x1b[\x20-\x2f]+[\x30-\x7e]")


def output_words(
    header: bytes, names: Iterable[str] = (), *, iso_2022: bool = False
) -> tuple[str, Words]:
    """An output's bytes as words (see :meth:`~pseudo.verify.matching.Matcher.search_bytes`),
    and the words of those bytes and of the parts of its file name.

    ``iso_2022``: the bytes are text in ISO 2022, where an escape sequence's last byte is a
    letter that runs into the next word (``ESC ( B`` then ``SMITH`` reads ``BSMITH``); the
    words of the bytes with every escape sequence read as a space are added, so that the words
    of the text each attribute decodes to (its ASCII parts are its bytes, bounded by escapes
    or by bytes that are not letters or digits) are all among them."""
    runs = header.translate(WORD_BYTES)
    text = runs.decode("ascii")
    words = set(text.split()) | tag_stuck_words(header, runs)
    if iso_2022:
        plain = _ESCAPE.sub(b" ", header)
        words.update(plain.translate(WORD_BYTES).decode("ascii").split())
        words |= tag_stuck_words(plain)
    for name in names:
        words.update(_words_of(name.encode("utf-8", "replace")))
    return text, words


def _words_of(raw: bytes) -> list[str]:
    return raw.translate(WORD_BYTES).decode("ascii").split()


def may_hold(value: Any, vr_bytes: bool, words: Words, *, whole: bool = False) -> bool:
    """Whether an output with these ``words`` may hold a needle of ``value`` (raw bytes, or a
    value as pydicom gives it); ``vr_bytes``: the bytes are binary (OB, UN...), whose needles
    are their printable runs, bounded by bytes that are not letters or digits; ``whole``: the
    needles are the values themselves (not their parts, as a name's), found only where every
    one of their words is."""
    if isinstance(value, bytes):
        if not vr_bytes and (not value.isascii() or 0x1B in value):
            return True  # decoded in a character set: its needles are not plain ASCII words
        if whole:
            return any(_all_in(_words_of(part), words) for part in value.split(b"\\"))
        return not words.isdisjoint(_words_of(value))
    texts = strings(value)
    if not "\x00".join(texts).isascii():
        return True
    if whole:
        return any(_all_in(_words_of(text.encode("ascii")), words) for text in texts)
    return not words.isdisjoint(_words_of("\x00".join(texts).encode("ascii")))


def _all_in(found: list[str], words: Words) -> bool:
    return bool(found) and words.issuperset(found)


def may_hold_whole(text: str, words: Words) -> bool:
    """Whether an output with these ``words`` may hold the needle ``text`` itself: a needle is
    searched for only where every one of its words is (a UID's words are its numbers)."""
    return not text.isascii() or words.issuperset(_words_of(text.encode("ascii")))
