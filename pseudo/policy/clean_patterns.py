"""The patterns the ``clean`` action removes from every cleaned text unless a policy gives its
own (``clean.patterns``) or adds to them (``clean.extra_patterns``): dates, telephone numbers,
e-mail addresses, long ID-like numbers and DICOM-style names."""

from __future__ import annotations

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
    r"(?<![\w^])[^\W\d_][\w'-]*(?:\^+[^\W\d_][\w'-]*)+\^*",  # DOE^JOHN, Smith^Anna^^Dr
)
