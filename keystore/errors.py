"""Exceptions raised by the key store.

Every error carries a one-line message meant for the person at the terminal; none of them ever
contains a secret or an identifying value.
"""


class KeystoreError(Exception):
    """Base class of every error raised by :mod:`keystore`."""

    exit_code = 2


class VaultNotFoundError(KeystoreError):
    """The vault folder does not exist or is not a vault."""


class VaultExistsError(KeystoreError):
    """``vault init`` was asked to create a vault where one already exists."""


class ProjectNotFoundError(KeystoreError):
    """The named project does not exist in this vault."""


class ProjectExistsError(KeystoreError):
    """A project of that name already exists."""


class InvalidNameError(KeystoreError):
    """A project or slot name is not acceptable."""


class WeakPassphraseError(KeystoreError):
    """A new passphrase does not meet the minimum requirements."""


class AuthenticationError(KeystoreError):
    """A passphrase did not open any key slot."""

    exit_code = 3


class CorruptVaultError(KeystoreError):
    """A vault file cannot be read or fails its integrity check."""


class InvalidTokenError(KeystoreError):
    """A sealed record or reversible token is malformed or was not made with this key."""


class NotFoundError(KeystoreError):
    """A pseudonym or study UID has no linkage record."""

    exit_code = 1


class ReidentificationRefused(KeystoreError):
    """A re-identification request lacks a requester or a reason."""


class DatabaseError(KeystoreError):
    """The linkage store cannot be reached or used."""
