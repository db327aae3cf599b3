"""Cleaning of free text: identifying values of the same dataset and common patterns go.

A cleaner is built from the *original* dataset before anything is changed. People's names give
their parts: family, given and middle names, each deleted wherever it stands as a whole word
(initials and words such as ``DR`` or ``OF`` excepted). Institutions, departments, stations,
addresses and other values are deleted only as whole phrases (case and spacing do not matter),
so that ``Lung and Heart Center`` goes but ``LUNG`` and ``HEART`` elsewhere stay. IDs are deleted
whole and by their parts, the birth date in the spellings people type. Anything that looks like
a date, a telephone number, an e-mail address, a long identification number or a DICOM-style
name (``DOE^JOHN``) goes too. The clinical words around them are kept (``smith-final`` becomes
``-final``; ``XR CHEST for Douglas Davidson`` becomes ``XR CHEST for``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from datetime import date

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from pseudo.policy.clean_patterns import DEFAULT_PATTERNS

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
#: Attributes of a coded entry (a code's identity and its standard meaning).
CODED_ENTRY_KEYWORDS = (
    "CodeValue",
    "CodingSchemeDesignator",
    "CodingSchemeVersion",
    "CodeMeaning",
    "LongCodeValue",
    "URNCodeValue",
    "MappingResource",
    "MappingResourceName",
    "ContextIdentifier",
    "ContextGroupExtensionFlag",
)
#: Attributes that give a structured report's content items their structure.
SR_STRUCTURE_KEYWORDS = (
    "ValueType",
    "RelationshipType",
    "ContinuityOfContent",
    "TemplateIdentifier",
    "TemporalRangeType",
    "GraphicType",
)
_SCHEMES = """DCM SCT SRT SNM3 LN UCUM RADLEX FMA NCIt NCIT MSH UMLS RXNORM I9C I10 I10P ICD10 ICDO3
    MDC BARI IBSI ITIS_TSN NEU NDC PUBCHEM_CID ACR ASTM-sigpurpose C4 C5 CD2 DCMUID HPC
    ISO639_1 ISO639_2 ISO3166_1 ISO_OID MGI NCBI NICHD NYUMCCG RFC3066 RFC5646 UPC UNS
    W3C_XML_SCHEMA"""
#: Coding schemes registered in PS3.16 (Table 8-1) whose meanings are the standard's words.
STANDARD_SCHEMES = frozenset(_SCHEMES.split())
_CONTENT_TREE = frozenset({0x0040A730, 0x0040A504})  # Content Sequence, Content Template Seq.
_CODE_MEANING = 0x00080104
_SCHEME = 0x00080102
MIN_TERM_LENGTH = 2
_STOP = """A AN AND AT BY FOR FROM IN OF ON OR THE TO WITH DR DRS MR MRS MS MISS MX PROF SIR JR SR
    MD PHD RN DA DE DEL DEN DER DI DOS DU LA LE TER TEN VAN VON Y CR CT DX MG NM OT PT RF SC US
    XA XR"""
#: Words never deleted on their own: titles, name particles, modalities and small words.
#: A term made only of them (a station called ``CT``, a name part ``VAN``) is not looked for.
STOP_WORDS = frozenset(_STOP.split())
#: Attributes holding identifiers: deleted whole and by their parts.
_ID_KEYWORDS = frozenset(
    {"PatientID", "OtherPatientIDs", "AccessionNumber", "StudyID", "MedicalRecordLocator"}
)
_PN_SPLIT = re.compile(r"[\s\-]+")
#: Terms match as whole words: not preceded or followed by a letter or digit of any script
#: (an underscore or a hyphen separates words, so ``smith`` matches in ``smith-final``).
_WHOLE_WORDS = r"(?<![^\W_])(?:{})(?![^\W_])"


def _values(value: object) -> list[object]:
    if value is None:
        return []
    if isinstance(value, MultiValue | list | tuple):
        return [item for item in value if item is not None]
    return [value]


def _significant(text: str) -> bool:
    """Whether a name part is worth deleting: two letters or more, not only stop words."""
    words = word_tokens(text)
    return (
        bool(words)
        and len("".join(words)) >= MIN_TERM_LENGTH
        and not all(w in STOP_WORDS for w in words)
    )


def person_name_terms(value: object) -> list[str]:
    """The parts of a person's name to look for: the family, given and middle names of every
    component group (alphabetic, ideographic, phonetic), and the words of each part."""
    terms: list[str] = []
    for item in _values(value):
        text = str(item).strip()
        if not text:
            continue
        terms.append(text)
        for group in text.split("="):
            for part in group.split("^")[:3]:  # family, given, middle (not prefix, suffix)
                part = part.strip()
                if _significant(part):
                    terms.append(part)
                words = [w for w in _PN_SPLIT.split(part) if w]
                if len(words) > 1:
                    terms.extend(w for w in words if _significant(w))
    return terms


def name_terms(value: object, tag: int | None = None) -> list[str]:
    """The strings of an identifying value to look for in text.

    With the ``tag`` of the attribute holding it: a person name gives its parts
    (:func:`person_name_terms`); an ID (and any value without a tag) gives itself and its parts
    (words, components); every other value (an institution, an address, a station) gives
    itself only, as one phrase.
    """
    if value is None:
        return []
    if isinstance(value, MultiValue | list | tuple):
        return [text for item in value for text in name_terms(item, tag)]
    text = str(value).strip()
    if not text:
        return []
    if tag is not None:
        keyword = keyword_for_tag(tag)
        if isinstance(value, PersonName) or _dictionary_vr(tag) == "PN":
            return person_name_terms(value)
        if keyword not in _ID_KEYWORDS and keyword != "PatientBirthDate":
            return [text]
    parts = [text]
    if isinstance(value, PersonName) or "^" in text or " " in text or "," in text:
        parts.extend(p for p in re.split(r"[\^=\s,;]+", text) if p)
    return parts


@functools.cache
def _dictionary_vr(tag: int) -> str | None:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return None


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
def _pattern_regexes(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    # One regex each: a pattern may carry its own global flags, such as ``(?i)``.
    return tuple(re.compile(pattern, re.IGNORECASE) for pattern in patterns)


def _phrase(term: str) -> str:
    """A term as a regular expression that tolerates any run of whitespace between words."""
    return r"\s+".join(re.escape(part) for part in term.split())


@functools.cache
def _structure_tags() -> frozenset[int]:
    tags = map(tag_for_keyword, CODED_ENTRY_KEYWORDS + SR_STRUCTURE_KEYWORDS)
    return frozenset(tag for tag in tags if tag is not None)


def is_structure(ds: Dataset, tag: int, parents: tuple[tuple[int, int], ...]) -> bool:
    """Whether a text attribute inside a cleaned sequence is structure, not free text.

    Coded entries (Code Value, Coding Scheme Designator...) and the structure of SR content
    items (Value Type, Relationship Type...) are never cleaned: cleaning would change codes
    (``121106`` looks like an ID-like number) and break the report. The one exception is the
    Code Meaning of a local code (a scheme PS3.16 does not register, such as ``99LOCAL``)
    outside an SR content tree, such as a diagnosis code: its meaning is free text someone typed.
    """
    if tag not in _structure_tags():
        return False
    if tag != _CODE_MEANING or any(seq in _CONTENT_TREE for seq, _ in parents):
        return True
    try:
        scheme = str(ds[_SCHEME].value or "").strip() if _SCHEME in ds else ""
    except Exception:
        return False
    return scheme in STANDARD_SCHEMES


class TextCleaner:
    """Remove known identifying terms and identifying patterns from text.

    Terms are indexed by their words: a text is only searched for the terms whose every word it
    contains, so cleaning stays fast however many identifying values a file has. Terms and
    patterns are both searched in the original text and everything they match is deleted, so
    that one cannot hide the other (a known ``DOE`` does not leave ``^CNRY06DNPP`` of
    ``DOE^CNRY06DNPP`` behind).
    """

    def __init__(self, terms: Iterable[str], patterns: Iterable[str] = DEFAULT_PATTERNS) -> None:
        self._index: dict[str, list[str]] = {}
        self._words: dict[str, frozenset[str]] = {}
        for term in {t.strip() for t in terms if len(t.strip()) >= MIN_TERM_LENGTH}:
            words = frozenset(word_tokens(term))
            if words and not words <= STOP_WORDS:
                self._words[term] = words
                self._index.setdefault(min(words), []).append(term)
        self._patterns = _pattern_regexes(tuple(patterns))

    #: See :func:`is_structure` (here for the walker, which holds a cleaner).
    is_structure = staticmethod(is_structure)

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
        spans: list[tuple[int, int]] = []
        terms = sorted(self._terms_in(text), key=len, reverse=True)
        if terms:
            whole = _WHOLE_WORDS.format("|".join(map(_phrase, terms)))
            spans.extend(m.span() for m in re.finditer(whole, text, flags=re.IGNORECASE))
        for pattern in self._patterns:
            spans.extend(m.span() for m in pattern.finditer(text))
        spans = [(start, end) for start, end in spans if end > start]
        if not spans:
            return text
        pieces, position = [], 0
        for start, end in sorted(spans):
            if start > position:
                pieces.append(text[position:start])
            position = max(position, end)
        pieces.append(text[position:])
        cleaned = re.sub(r"[ \t]{2,}", " ", "".join(pieces))
        return re.sub(r"[ \t]+$", "", re.sub(r"^[ \t]+", "", cleaned, flags=re.M), flags=re.M)
