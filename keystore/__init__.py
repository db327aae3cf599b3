"""Keys, the sealed linkage table and the audit log of ``pseudo``; knows nothing of DICOM.

The pseudonymization engine asks this package for a :class:`~keystore.keyring.Keyring` and
hands it plain dictionaries of identifiers to seal. Passphrases, key files and private keys
never leave it.

The names below are loaded on first use, so that a command that only reads the vault's key
files (:mod:`keystore.vault`) does not load the database layers.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> the module that defines it
_EXPORTS = {
    "AuditAction": "keystore.actions",
    "AuditOutcome": "keystore.actions",
    "AuditLog": "keystore.audit",
    "VerifyResult": "keystore.audit",
    "ErrorKind": "keystore.errors",
    "KeystoreError": "keystore.errors",
    "ThrottlePolicy": "keystore.guard",
    "Keyring": "keystore.keyring",
    "ProjectSettings": "keystore.keyring",
    "JournalEntry": "keystore.linkage",
    "LinkageEntry": "keystore.records",
    "LinkageStore": "keystore.linkage",
    "PatientRecordV1": "keystore.records",
    "StudyRecordV1": "keystore.records",
    "Identity": "keystore.reidentify",
    "Request": "keystore.reidentify",
    "reidentify": "keystore.reidentify",
    "VaultSession": "keystore.session",
    "Vault": "keystore.vault",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Load a public name's module when the name is first used."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'keystore' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # as ``from module import name`` here did (``reidentify`` too)
    return value
