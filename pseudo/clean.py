"""Cleaning of free text: identifying values of the same dataset and common patterns go.

A cleaner is built from the *original* dataset before anything is changed: the patient's name
parts, IDs and birth date (in the spellings people type), and the names of institutions and
physicians. :meth:`TextCleaner.clean` deletes them from a text wherever they stand as whole
words, and deletes anything that looks like a date, a telephone number, an e-mail address or a
long identification number, keeping the clinical words around them (``smith-final`` becomes
``-final``; ``XR CHEST for Douglas Davidson`` becomes ``XR CHEST for``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from datetime import date

from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

#: Attributes whose values identify a person or place, looked for inside free text.
IDENTIFYING_KEYWORDS = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "PatientBirthDate",
    "AccessionNumber",
    "StudyID",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "ReferringPhysicianName",
    "ReferringPhysicianAddress",
    "PerformingPhysicianName",
    "PhysiciansOfRecord",
    "NameOfPhysiciansReadingStudy",
    "RequestingPhysician",
    "OperatorsName",
    "PersonName",
    "PersonAddress",
    "PersonTelephoneNumbers",
    "VerifyingObserverName",
    "ContentCreatorName",
    "ScheduledPerformingPhysicianName",
    "NamesOfIntendedRecipientsOfResults",
    "StationName",
    "MilitaryRank",
    "MedicalRecordLocator",
    "RegionOfResidence",
    "CountryOfResidence",
)
_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)
#: Patterns removed from every cleaned text.
DEFAULT_PATTERNS = (
    r"\b\d{4}[-/.]\d{1,2}[-/.]\d{1,2}\b",  # 2023-01-05
    r"\b\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}\b",  # 05.01.2023, 1/5/23
    r"\b(?:19|20)\d{6}\b",  # 20230105
    r"\b\d{1,2}\.?\s?" + _MONTH + r"\.?,?\s?\d{2,4}\b",  # 5 Jan 2023, 05-Jan-2023
    r"\b" + _MONTH + r"\.?\s?\d{1,2},?\s?\d{4}\b",  # January 5, 2023
    r"\b" + _MONTH + r"\.?[\s-]?\d{4}\b",  # Sep1999, Jan 2023
    r"(?<![\w.])(?:\+|00)\d{1,3}[ .-]?(?:\(?\d{1,5}\)?[ .-]?){1,4}\d{2,}(?![\w.])",  # +49 30 123
    r"(?<![\w.])\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}(?![\w.])",  # (555) 123-4567
    r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b",  # e-mail addresses
    r"\b\d{6,}\b",  # long ID-like numbers
)
MIN_TERM_LENGTH = 2
#: Terms match as whole words: not preceded or followed by a letter or digit of any script
#: (an underscore or a hyphen separates words, so ``smith`` matches in ``smith-final``).
_WHOLE_WORDS = r"(?<![^\W_])(?:{})(?![^\W_])"


def name_terms(value: object) -> list[str]:
    """The strings of a value and their parts (name components, words), to look for in text."""
    if value is None:
        return []
    if isinstance(value, MultiValue | list | tuple):
        return [text for item in value for text in name_terms(item)]
    text = str(value).strip()
    if not text:
        return []
    parts = [text]
    if isinstance(value, PersonName) or "^" in text or " " in text or "," in text:
        parts.extend(p for p in re.split(r"[\^=\s,;]+", text) if p)
    return parts


def date_spellings(value: str) -> list[str]:
    """Common ways to write a DA value: ``20230105``, ``2023-01-05``, ``05.01.2023``, ..."""
    try:
        day = date(int(value[:4]), int(value[4:6]), int(value[6:8]))
    except ValueError:
        return [value]
    d, m, y = f"{day.day:02d}", f"{day.month:02d}", f"{day.year:04d}"
    return [
        value,
        f"{y}-{m}-{d}",
        f"{y}/{m}/{d}",
        f"{y}.{m}.{d}",
        f"{d}.{m}.{y}",
        f"{d}/{m}/{y}",
        f"{m}/{d}/{y}",
        f"{d}-{m}-{y}",
        f"{day.day}.{day.month}.{y}",
        f"{day.month}/{day.day}/{y}",
    ]


_TOKEN = re.compile(r"[^\W_]+")


def word_tokens(text: str) -> list[str]:
    """The words of a text in upper case (letters and digits of any script)."""
    return _TOKEN.findall(text.upper())


@functools.cache
def _pattern_regex(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    return re.compile("|".join(patterns), re.IGNORECASE) if patterns else None


class TextCleaner:
    """Remove known identifying terms and identifying patterns from text.

    Terms are indexed by their words: a text is only searched for the terms whose every word it
    contains, so cleaning stays fast however many identifying values a file has.
    """

    def __init__(self, terms: Iterable[str], patterns: Iterable[str] = DEFAULT_PATTERNS) -> None:
        self._index: dict[str, list[str]] = {}
        self._words: dict[str, frozenset[str]] = {}
        for term in {t.strip() for t in terms if len(t.strip()) >= MIN_TERM_LENGTH}:
            words = frozenset(word_tokens(term))
            if words:
                self._words[term] = words
                self._index.setdefault(min(words), []).append(term)
        self._patterns = _pattern_regex(tuple(patterns))

    def _terms_in(self, text: str) -> list[str]:
        words = set(word_tokens(text))
        return [
            term
            for word in words
            for term in self._index.get(word, ())
            if self._words[term] <= words
        ]

    def clean(self, text: str) -> str:
        """``text`` without identifying terms or patterns, whitespace tidied."""
        if not text:
            return text
        terms = sorted(self._terms_in(text), key=len, reverse=True)
        cleaned = text
        if terms:
            whole = _WHOLE_WORDS.format("|".join(map(re.escape, terms)))
            cleaned = re.sub(whole, "", cleaned, flags=re.IGNORECASE)
        if self._patterns is not None:
            cleaned = self._patterns.sub("", cleaned)
        if cleaned == text:
            return text
        cleaned = re.sub(r"[ \t]{2,}", " ", cleaned)
        return re.sub(r"[ \t]+$", "", re.sub(r"^[ \t]+", "", cleaned, flags=re.M), flags=re.M)
