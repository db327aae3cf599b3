"""Things worth telling the operator about one file; never an identifying value."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Finding:
    """An event while processing one attribute, e.g. an invalid date that was removed."""

    path: str
    code: str
    message: str


class RejectedFile(Exception):
    """A file that cannot be pseudonymized safely; it is quarantined with this reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotAnInstance(RejectedFile):
    """A DICOM file that is not an instance to pseudonymize (a DICOMDIR): skipped, listed,
    never copied."""
