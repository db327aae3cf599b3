"""Who and when, as the vault and the audit log record them, and the audit chain's first hash.

Kept apart from :mod:`keystore.audit` and :mod:`keystore.db` so that reading the vault's key
files does not load the database layers.
"""

from __future__ import annotations

import getpass
import os
from datetime import UTC, datetime

#: The hash that the first audit record chains to.
GENESIS = "0" * 64


def utcnow() -> datetime:
    """The current time in UTC, without microseconds noise in the audit log."""
    return datetime.now(UTC).replace(microsecond=0)


def os_user() -> str:
    """Who runs this process, for the audit log: the operating-system user and host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{os.uname().nodename}"
