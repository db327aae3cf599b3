"""The base of the errors of the user's making that :mod:`pseudo` raises: a bad path, policy,
pool or argument. The command line prints such an error as one line and exits with its
``exit_code``; it catches them by this class without loading the modules that raise them.
"""

from __future__ import annotations


class PseudoError(Exception):
    """An error of the user's making, shown as one line (exit status ``exit_code``)."""

    exit_code = 2
