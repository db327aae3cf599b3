"""Keyed tokens for DICOM values: HMAC tokens, patient pseudonyms and reversible tokens.

Tokens are upper-case base32 (``A-Z2-7``), valid in every string VR including CS and PN, and
sized to the VR. HMAC tokens are irreversible; reversible tokens are AES-SIV ciphertexts that
only the project's key can open. Every input is domain-separated by purpose and attribute, so
the same text in two attributes gives unrelated tokens.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping

from keystore.errors import InvalidTokenError
from keystore.identities import IdentityBook
from keystore.keyring import Keyring
from pseudo.deid.dates import offset_in_range

#: Characters of an HMAC token: 16 base32 characters carry 80 bits.
TOKEN_LENGTH = 16
#: Reversible tokens are bound to the attribute; this is the format version of the context.
_REVERSIBLE_CONTEXT = "pseudo-reversible/1:"


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=")


def hmac_token(keyring: Keyring, attribute: str, value: str, length: int = TOKEN_LENGTH) -> str:
    """Irreversible keyed token of ``value`` for ``attribute``.

    >>> from keystore.keyring import Keyring, ProjectSettings
    >>> ring = Keyring.from_secret(bytes(32), ProjectSettings("demo", "D", -10, -1), bytes(32))
    >>> hmac_token(ring, "AccessionNumber", "A123")
    'KXF35ZTD7SDAVPUN'
    """
    return _b32(keyring.mac("token", attribute, value.strip()))[:length]


def pseudonym(keyring: Keyring, identity: tuple[str, ...]) -> str:
    """The patient pseudonym: the project prefix, a dash and 16 base32 characters."""
    digest = keyring.mac("token", "patient", *identity)
    return f"{keyring.settings.prefix}-{_b32(digest)[:TOKEN_LENGTH]}"


def patient_pseudonym(
    keyring: Keyring,
    identity: tuple[str, ...],
    traits: Mapping[str, str],
    book: IdentityBook | None = None,
) -> str:
    """The pseudonym of a patient: the one an identity rule of ``book`` gives (an imported
    subject ID, a merge, a split), else :func:`pseudonym`."""
    rule = book.find(keyring, identity, traits) if book is not None else None
    return rule.pseudonym if rule is not None else pseudonym(keyring, identity)


def date_offset_digest(keyring: Keyring, identity: tuple[str, ...]) -> bytes:
    """The keyed digest from which a patient's date offset is derived."""
    return keyring.mac("date", "patient", *identity)


def keyed_patient(keyring: Keyring, identity: tuple[str, ...]) -> tuple[str, int]:
    """The keyed pseudonym and date offset of an identity (no identity rule applied)."""
    settings = keyring.settings
    offset = offset_in_range(
        date_offset_digest(keyring, identity),
        settings.date_shift_min_days,
        settings.date_shift_max_days,
    )
    return pseudonym(keyring, identity), offset


def encrypt_token(keyring: Keyring, attribute: str, value: str) -> str:
    """Reversible token of ``value`` (deterministic: the same value gives the same token)."""
    plaintext = value.strip().encode("utf-8")
    return _b32(keyring.encrypt_deterministic(plaintext, _REVERSIBLE_CONTEXT + attribute))


def decrypt_token(keyring: Keyring, attribute: str, token: str) -> str:
    """Open a reversible token made by :func:`encrypt_token` for the same attribute."""
    padded = token.strip() + "=" * (-len(token.strip()) % 8)
    try:
        raw = base64.b32decode(padded)
    except ValueError as exc:
        raise InvalidTokenError("not a reversible token") from exc
    return keyring.decrypt_deterministic(raw, _REVERSIBLE_CONTEXT + attribute).decode("utf-8")
