"""Why pixel data could not be read or redacted: each is a :class:`RejectedFile`, so the file
is quarantined with the reason and never written half-redacted."""

from __future__ import annotations

from pseudo.findings import RejectedFile


class UndecodablePixels(RejectedFile):
    """The pixel data cannot be decoded (corrupt, cut short, or no decoder for it)."""


class UnsupportedPixels(RejectedFile):
    """The pixel data is valid DICOM but of a kind redaction does not handle."""


class ReencodeFailed(RejectedFile):
    """The redacted frames could not be encoded again, or did not decode back as written."""
