"""Why a run cannot start or cannot go on."""

from __future__ import annotations

from pseudo.errors import ErrorKind, PseudoError


class RunError(PseudoError):
    """The run cannot start (bad paths); nothing was written."""


class OutputError(RunError):
    """The output or the linkage store cannot be written (disk full, permissions, the output
    folder removed, the database down): the run stops; what was committed stays, nothing
    partial is left, and running the same command again finishes the job."""

    kind = ErrorKind.UNAVAILABLE
