"""Keyed, deterministic remapping of instance UIDs under the ``2.25`` root."""

from __future__ import annotations

from keystore.keyring import Keyring
from pseudo.io.pydicom_internals import registered_uids

#: The DICOM root: what PS3.6 registers lives under it, but so can any instance UID.
STANDARD_ROOT = "1.2.840.10008."
#: UIDs registered by PS3.6 (SOP classes, transfer syntaxes, coding schemes, well-known frames
#: of reference and SOP instances): they name kinds of things, not instances, and are kept.
REGISTERED = registered_uids()


def is_standard_uid(uid: str) -> bool:
    """Whether ``uid`` is one that PS3.6 registers (exactly: an instance, series, study or
    frame of reference UID under ``1.2.840.10008`` is not)."""
    return uid in REGISTERED


def remap_uid(keyring: Keyring, uid: str) -> str:
    """Map an instance UID to ``2.25.<decimal>`` (at most 44 characters), the same everywhere.

    The 128-bit integer is the first half of an HMAC of the original UID, with the version and
    variant bits of an RFC 9562 version-8 UUID set, as the ``2.25`` root asks for a UUID.
    UIDs registered by PS3.6 and empty values are returned unchanged.
    """
    uid = uid.strip().rstrip("\x00")
    if not uid or is_standard_uid(uid):
        return uid
    raw = bytearray(keyring.mac("uid", uid)[:16])
    raw[6] = (raw[6] & 0x0F) | 0x80
    raw[8] = (raw[8] & 0x3F) | 0x80
    return f"2.25.{int.from_bytes(raw, 'big')}"
