"""The keyring handed to the pseudonymization engine.

A :class:`Keyring` holds the sub-keys derived from one project's secret and the project's
re-identification *public* key. It can compute keyed digests and deterministic encryptions but
cannot open a sealed linkage record: the engine that holds it can write linkage, never read it.
It knows nothing of DICOM; callers choose the purposes and the bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from keystore import crypto

Purpose = Literal[
    "token",
    "uid",
    "date",
    "reversible",
    "journal",
    "linkage",
    "state",
    "journal-fingerprint",
    "identity",
]

#: HKDF labels of the sub-keys. Changing a label changes every pseudonym, UID and offset of
#: every project, so the labels carry a version and must never be edited in place.
KEY_LABELS: dict[Purpose, str] = {
    "token": "pseudo/v1/token",
    "uid": "pseudo/v1/uid",
    "date": "pseudo/v1/date-offset",
    "reversible": "pseudo/v1/reversible-token",
    "journal": "pseudo/v1/journal",
    "linkage": "pseudo/v1/linkage-digest",
    "state": "pseudo/v1/operator-state",
}

#: Sub-keys added after the first release, each under a label of its own (the labels above
#: never change): the HMAC key of the journal's file fingerprints, and that of the identity
#: book (the keyed fingerprints of a patient's birth date, sex and name, and the keys under
#: which merges, splits and imported subject IDs are found).
ADDED_LABELS: dict[Purpose, str] = {
    "journal-fingerprint": "pseudo/v1/journal-fingerprint",
    "identity": "pseudo/v1/identity-fingerprint",
}


@dataclass(frozen=True)
class ProjectSettings:
    """Public, fixed settings of a project that shape its pseudonyms.

    They are chosen when the project is created and never change, so that a patient seen in
    later batches gets the same pseudonym and the same date offset.
    """

    name: str
    prefix: str
    date_shift_min_days: int
    date_shift_max_days: int


@dataclass(frozen=True, repr=False)
class Keyring:
    """Derived keys of one project plus its re-identification public key."""

    settings: ProjectSettings
    reid_public_key: bytes
    _keys: dict[str, bytes] = field(compare=False)

    @classmethod
    def from_secret(
        cls, secret: bytes, settings: ProjectSettings, reid_public_key: bytes
    ) -> Keyring:
        """Derive every sub-key of a project from its 256-bit secret."""
        labels = {**KEY_LABELS, **ADDED_LABELS}
        keys: dict[str, bytes] = {p: crypto.hkdf(secret, label) for p, label in labels.items()}
        keys["reversible"] = crypto.hkdf(secret, KEY_LABELS["reversible"], length=64)
        return cls(settings=settings, reid_public_key=reid_public_key, _keys=keys)

    @property
    def project(self) -> str:
        """The project's name."""
        return self.settings.name

    def mac(self, purpose: Purpose, *parts: str | bytes) -> bytes:
        """Keyed HMAC-SHA256 digest of ``parts`` with the sub-key for ``purpose``."""
        return crypto.mac(self._keys[purpose], *parts)

    def encrypt_deterministic(self, plaintext: bytes, context: str) -> bytes:
        """Reversible, deterministic encryption (AES-SIV) bound to ``context``."""
        return crypto.siv_encrypt(self._keys["reversible"], plaintext, context.encode())

    def decrypt_deterministic(self, ciphertext: bytes, context: str) -> bytes:
        """Reverse :meth:`encrypt_deterministic`."""
        return crypto.siv_decrypt(self._keys["reversible"], ciphertext, context.encode())

    def seal_state(self, plaintext: bytes, context: bytes) -> bytes:
        """Encrypt operator-readable state (AES-256-GCM): ``nonce | ciphertext``."""
        nonce, ciphertext = crypto.wrap(self._keys["state"], plaintext, context)
        return nonce + ciphertext

    def open_state(self, blob: bytes, context: bytes) -> bytes:
        """Decrypt what :meth:`seal_state` produced for the same context."""
        return crypto.unwrap(self._keys["state"], blob[:12], blob[12:], context)

    def __repr__(self) -> str:
        return f"Keyring(project={self.settings.name!r})"
