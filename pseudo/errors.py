"""The base of the errors of the user's making that :mod:`pseudo` raises: a bad path, policy,
pool or argument. The command line prints such an error as one line and exits with the status
of its ``kind`` (:class:`keystore.errors.ErrorKind`); it tells errors apart by that attribute,
without loading the modules that raise them.
"""

from __future__ import annotations

from keystore.errors import ErrorKind

__all__ = ["ErrorKind", "PseudoError"]


class PseudoError(Exception):
    """An error of the user's making, shown as one line (its ``kind`` says which exit status)."""

    kind = ErrorKind.USAGE
