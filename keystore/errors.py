"""Exceptions raised by the key store, and the kinds of error that callers tell apart.

Every error carries a one-line message meant for the person at the terminal; none of them ever
contains a secret or an identifying value. Each class says what *kind* of error it is
(:class:`ErrorKind`); the command line maps a kind to its exit status, here nothing knows of
processes or exit codes.
"""

from __future__ import annotations

import enum


class ErrorKind(enum.Enum):
    """What kind of problem an expected error is, for the caller to react to (and the command
    line to map to an exit status) without importing the module that raised it."""

    #: the job ran, but its result needs a look (e.g. an unknown pseudonym)
    ATTENTION = "attention"
    #: a usage or configuration problem: a bad argument, name, policy or setting
    USAGE = "usage"
    #: a passphrase opened no key slot
    AUTHENTICATION = "authentication"
    #: the output or the database cannot be written or reached (disk full, permissions,
    #: server down): the same command succeeds once that is fixed
    UNAVAILABLE = "unavailable"


class KeystoreError(Exception):
    """Base class of every error raised by :mod:`keystore`."""

    kind = ErrorKind.USAGE


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
    """A passphrase did not open any key slot.

    ``failures`` counts the failed attempts in a row on this project and role (this one
    included); ``next_delay`` is how long the next attempt will wait, in seconds.
    """

    kind = ErrorKind.AUTHENTICATION

    def __init__(self, message: str, failures: int = 0, next_delay: float = 0.0) -> None:
        super().__init__(message)
        self.failures = failures
        self.next_delay = next_delay


class CorruptVaultError(KeystoreError):
    """A vault file cannot be read or fails its integrity check."""


class PinnedKeyError(CorruptVaultError):
    """The re-identification public key is not the one the re-identifiers signed: nothing is
    sealed to it (a usage error: exit 2)."""

    kind = ErrorKind.USAGE


class InvalidTokenError(KeystoreError):
    """A sealed record or reversible token is malformed or was not made with this key."""


class NotFoundError(KeystoreError):
    """A pseudonym or study UID has no linkage record."""

    kind = ErrorKind.ATTENTION


class ReidentificationRefused(KeystoreError):
    """A re-identification request lacks a requester or a reason."""


class DatabaseError(KeystoreError):
    """The linkage store cannot be reached or used (the machine's problem, not the user's, as
    for a full disk; run the same command again once it is back)."""

    kind = ErrorKind.UNAVAILABLE


class ProjectClosedError(KeystoreError):
    """The project was closed: its re-identification key is destroyed, it takes no more data."""


class SlotError(KeystoreError):
    """A key slot cannot be added, found or removed as asked (e.g. the last one of its kind)."""


class StaleKeyError(KeystoreError):
    """The project's re-identification key changed since this keyring was opened."""


class BackupError(KeystoreError):
    """A backup cannot be made or restored as asked."""


class ConfigurationError(KeystoreError):
    """A setting (e.g. an environment variable) has a value that cannot be used."""


class SiteError(KeystoreError):
    """A site cannot be added or chosen as asked (unknown, already there, none given on a
    project of several sites)."""


class IdentityError(KeystoreError):
    """An identity decision cannot be made as asked (a merge, a split or an import of subject
    IDs that would make one pseudonym stand for two people, or two for one)."""
