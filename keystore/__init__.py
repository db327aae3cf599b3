"""Keys, the sealed linkage table and the audit log of ``pseudo``; knows nothing of DICOM.

The pseudonymization engine asks this package for a :class:`~keystore.keyring.Keyring` and
hands it plain dictionaries of identifiers to seal. Passphrases, key files and private keys
never leave it.
"""

from keystore.audit import AuditLog, VerifyResult
from keystore.errors import KeystoreError
from keystore.guard import ThrottlePolicy
from keystore.keyring import Keyring, ProjectSettings
from keystore.linkage import JournalEntry, LinkageEntry, LinkageStore
from keystore.reidentify import Identity, Request, reidentify
from keystore.session import VaultSession
from keystore.vault import Vault

__all__ = [
    "AuditLog",
    "Identity",
    "JournalEntry",
    "Keyring",
    "KeystoreError",
    "LinkageEntry",
    "LinkageStore",
    "ProjectSettings",
    "Request",
    "ThrottlePolicy",
    "Vault",
    "VaultSession",
    "VerifyResult",
    "reidentify",
]
