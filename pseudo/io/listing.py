"""The files of a tree, in a stable order, and what in it is not a file to read.

Links to files are read as the files they point to. Links to folders are followed, each real
folder walked once (a link loop, or a second link to a folder already walked, is listed, not
walked again), and folders inside ``exclude`` (the run's OUTPUT) are never walked. Anything
that is not a regular file or a folder is listed with the reason it was not read: FIFOs (reading
one would block the run), sockets, devices, dangling links, link loops, and folders that cannot
be listed. See docs/hardening.md.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

#: What an entry of a tree is, when it is not a regular file or a folder.
_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


@dataclass
class Listing:
    """The regular files of a tree (path, size, modification time in ns), and the entries
    left out with the reason (path, reason)."""

    files: list[tuple[str, int, int]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def discover(root: Path) -> list[Path]:
    """Every regular file under ``root`` (or ``root`` itself), sorted; see :func:`scan_tree`."""
    return [Path(path) for path, _, _ in inventory(root)]


def inventory(root: Path) -> list[tuple[str, int, int]]:
    """The paths of :func:`discover` as strings, with their size and modification time (ns):
    one ``stat`` a file (a run of 500,000 files on a network filesystem feels each one), and
    neither a ``Path`` nor a whole ``stat_result`` kept for each."""
    return scan_tree(root).files


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def scan_tree(root: Path, exclude: Path | None = None) -> Listing:
    """The regular files under ``root`` (or ``root`` itself) sorted folder by folder, links
    followed with loop protection, and every entry left out with its reason."""
    listing = Listing()
    try:
        status = os.stat(root)
    except OSError as exc:
        listing.skipped.append((str(root), _stat_failure(exc, root)))
        return listing
    if stat.S_ISREG(status.st_mode):
        listing.files.append((str(root), status.st_size, status.st_mtime_ns))
        return listing
    if not stat.S_ISDIR(status.st_mode):
        listing.skipped.append((str(root), f"{_kind(status.st_mode)}: not read"))
        return listing
    excluded = os.path.realpath(exclude) if exclude is not None else None
    seen = {(status.st_dev, status.st_ino)}
    _walk(str(root), listing, seen, excluded)
    return listing


def _stat_failure(exc: OSError, path: Path | str) -> str:
    if exc.errno == errno.ELOOP:
        return "a link that loops: not read"
    if exc.errno in (errno.ENOENT, errno.ENOTDIR) and os.path.islink(path):
        return "a link whose target does not exist: not read"
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return "gone since its folder was listed"
    return f"cannot read ({exc.strerror})"


def _walk(folder: str, listing: Listing, seen: set[tuple[int, int]], excluded: str | None) -> None:
    """List ``folder`` into ``listing``: its files sorted, then each sub-folder in name order."""
    try:
        names = sorted(os.listdir(folder))
    except OSError as exc:
        listing.skipped.append((folder, f"cannot list the folder ({exc.strerror})"))
        return
    folders: list[str] = []
    for name in names:
        path = os.path.join(folder, name)
        try:
            status = os.stat(path)  # follows links, as Path.is_file does
        except OSError as exc:
            listing.skipped.append((path, _stat_failure(exc, path)))
            continue
        if stat.S_ISREG(status.st_mode):
            listing.files.append((path, status.st_size, status.st_mtime_ns))
        elif stat.S_ISDIR(status.st_mode):
            identity = (status.st_dev, status.st_ino)
            if identity in seen:
                listing.skipped.append((path, "a link to a folder already listed: not read twice"))
            elif excluded is not None and _inside(os.path.realpath(path), excluded):
                listing.skipped.append((path, "a link into the output folder: not read"))
            else:
                seen.add(identity)
                folders.append(path)
        else:
            listing.skipped.append((path, f"{_kind(status.st_mode)}: not read"))
    for path in folders:
        _walk(path, listing, seen, excluded)


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)
