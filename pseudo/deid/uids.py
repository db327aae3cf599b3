"""Keyed, deterministic remapping of instance UIDs under the ``2.25`` root."""

from __future__ import annotations

from keystore.keyring import Keyring

#: UIDs registered by DICOM (SOP classes, transfer syntaxes, coding schemes...) live here and
#: are never remapped: they name kinds of things, not instances.
STANDARD_ROOT = "1.2.840.10008."


def is_standard_uid(uid: str) -> bool:
    """Whether ``uid`` is registered under the DICOM root ``1.2.840.10008``."""
    return uid.startswith(STANDARD_ROOT)


def remap_uid(keyring: Keyring, uid: str) -> str:
    """Map an instance UID to ``2.25.<decimal>`` (at most 44 characters), the same everywhere.

    The 128-bit integer is the first half of an HMAC of the original UID, with the version and
    variant bits of an RFC 9562 version-8 UUID set, as the ``2.25`` root asks for a UUID.
    Standard UIDs and empty values are returned unchanged.
    """
    uid = uid.strip().rstrip("\x00")
    if not uid or is_standard_uid(uid):
        return uid
    raw = bytearray(keyring.mac("uid", uid)[:16])
    raw[6] = (raw[6] & 0x0F) | 0x80
    raw[8] = (raw[8] & 0x3F) | 0x80
    return f"2.25.{int.from_bytes(raw, 'big')}"
