"""The node's own folder, ``<vault>/serve/<project>/`` (mode 0700: the spool and the
quarantine hold identifying data): the spool of received instances, the outbox of
pseudonymized ones waiting for the destination, the quarantine, and the journal."""

from __future__ import annotations

import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from pseudo.errors import PseudoError


class FolderError(PseudoError):
    """The node's folder cannot be used as it is."""


@dataclass(frozen=True)
class NodeFolder:
    """Where one project's node keeps its state."""

    root: Path

    @classmethod
    def of(cls, vault: Path, project: str) -> NodeFolder:
        """The folder of ``project``'s node in ``vault``."""
        return cls(vault.resolve() / "serve" / project)

    @property
    def spool(self) -> Path:
        """Received instances (as sent: identifying), one file each, named at random."""
        return self.root / "spool"

    @property
    def outbox(self) -> Path:
        """Pseudonymized instances waiting for the destination (the layout of ``pseudo run``)."""
        return self.root / "outbox"

    @property
    def quarantine(self) -> Path:
        """Instances that must not be forwarded, as received (identifying)."""
        return self.root / "quarantine"

    @property
    def journal(self) -> Path:
        """The node's SQLite journal."""
        return self.root / "journal.sqlite"

    def create(self) -> None:
        """Make the folders (mode 0700) and refuse a root that is a link or open to others."""
        try:
            self.root.parent.mkdir(mode=0o700, exist_ok=True)
            self.root.mkdir(mode=0o700, exist_ok=True)
            info = os.lstat(self.root)
            if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
                raise FolderError(f"{self.root}: the node's folder must be a folder, not a link")
            if info.st_mode & 0o077:
                raise FolderError(
                    f"{self.root}: the node's folder is open to other users (it holds "
                    "identifying data): chmod 700 it"
                )
            for folder in (self.spool, self.outbox, self.quarantine):
                folder.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise FolderError(
                f"{self.root}: cannot use the node's folder ({exc.strerror})"
            ) from exc

    def write_spool(self, data: bytes) -> str:
        """Write a received instance into the spool, its data flushed to disk (``fdatasync``),
        and return its spool name. Its name is durable only once the spool folder is flushed
        (:meth:`sync_spool`); a file that no journal row names is removed at the next start
        (:meth:`clean_spool`), so it needs no temporary name."""
        name = secrets.token_hex(16) + ".dcm"
        path = self.spool / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fdatasync(handle.fileno())
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return name

    def sync_spool(self) -> None:
        """Make the names of the spool files written so far durable."""
        sync_folder(self.spool)

    def clean_spool(self, waiting: set[str]) -> int:
        """Remove spool files no journal row waits for: those of instances never acknowledged
        (the node died before their journal row, maybe while writing them), and those whose row
        has moved on (the node died before removing them). Returns how many were removed."""
        removed = 0
        for path in self.spool.iterdir():
            if path.name not in waiting:
                path.unlink(missing_ok=True)
                removed += 1
        return removed


def sync_folder(folder: Path) -> None:
    """fsync a folder, so that the names created or renamed in it are durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
