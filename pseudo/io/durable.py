"""Making written files durable: per file, or once for a whole batch.

``fsync`` after each file costs about 1.5 ms here, more than a plain pydicom read and write of a
small image. Files of one batch are therefore written without it, and the parent flushes the
filesystem that holds them once, with ``syncfs(2)``, before it commits their linkage records.
The order that makes a crash harmless (data on disk, then the commit, then the rename) is kept.
Where ``syncfs`` is missing (not Linux) every file is synced on its own. Workers of a Dask
cluster write on a shared filesystem the parent cannot flush, so they sync each file.
"""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path
from typing import Any


@functools.cache
def _libc_syncfs() -> Any | None:
    """The C library's ``syncfs``, if this system has one."""
    try:  # the symbols this process has loaded already (no ldconfig run to find the library)
        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return function


def can_sync_filesystem() -> bool:
    """Whether :func:`sync_filesystem` flushes one filesystem (else files must sync each)."""
    return _libc_syncfs() is not None


def sync_filesystem(folder: Path) -> None:
    """Write every dirty page of the filesystem holding ``folder`` to disk (``syncfs``)."""
    syncfs = _libc_syncfs()
    if syncfs is None:
        os.sync()
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if syncfs(fd) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"syncfs: {os.strerror(error)}", str(folder))
    finally:
        os.close(fd)
