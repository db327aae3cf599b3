"""The files of a tree, in a stable order."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path


def discover(root: Path) -> list[Path]:
    """Every regular file under ``root`` (or ``root`` itself), sorted; folder links not followed."""
    return [Path(path) for path, _, _ in inventory(root)]


def inventory(root: Path) -> list[tuple[str, int, int]]:
    """The paths of :func:`discover` as strings, with their size and modification time (ns):
    one ``stat`` a file (a run of 500,000 files on a network filesystem feels each one), and
    neither a ``Path`` nor a whole ``stat_result`` kept for each."""
    if root.is_file():
        status = root.stat()
        return [(str(root), status.st_size, status.st_mtime_ns)]
    found: list[tuple[str, int, int]] = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            try:
                status = os.stat(path)  # follows a link to a file, as Path.is_file does
            except (FileNotFoundError, NotADirectoryError):
                continue  # a broken link, or a file gone since the folder was listed
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.EBADF):
                    continue  # what Path.is_file also takes for "not a file"
                raise
            if stat.S_ISREG(status.st_mode):
                found.append((path, status.st_size, status.st_mtime_ns))
    return found
