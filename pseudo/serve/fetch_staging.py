"""Where fetched files wait to be pseudonymized: a private folder of the vault's owner.

``<vault>/fetch/<project>/<output key>/`` (each level mode 0700): the fetched instances hold
identifying data. ``files/`` is what the run reads; an instance is written under ``part/`` and
renamed into ``files/`` once complete, so the run never sees half a file. The names are keyed
digests (of the output folder, of each SOP Instance UID), never identifying values, and stay
the same from one fetch to the next: a fetch that stopped half-way leaves its instances for
the next one into the same output, and the run's journal, keyed by input path, tells which
instances an earlier fetch already wrote. One fetch at a time uses a staging folder (a lock).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from keystore.errors import ErrorKind
from keystore.keyring import Keyring
from pseudo.serve.fetch_scu import FetchError

#: Owner-only: the staged files identify patients.
PRIVATE = 0o700


class Staging:
    """The staging folder of one project and one output folder, locked while in use."""

    def __init__(self, root: Path, keyring: Keyring, output: Path) -> None:
        self.keyring = keyring
        key = keyring.mac("journal", "fetch-staging", str(output.resolve())).hex()[:32]
        self.folder = root.resolve() / key
        #: the folder the run reads
        self.files = self.folder / "files"
        self._parts = self.folder / "part"
        self._lock: int | None = None
        #: why an instance could not be written, if one could not (the disk is full, ...)
        self.write_error: str | None = None

    def __enter__(self) -> Staging:
        try:
            for level in (*reversed(self.folder.parents[:2]), self.folder, self.files, self._parts):
                level.mkdir(mode=PRIVATE, exist_ok=True)
            lock = os.open(self.folder / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise FetchError(
                f"{self.folder}: cannot make the staging folder ({exc.strerror})"
            ) from exc
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock)
            raise FetchError(
                "another pseudo fetch into this output is running; wait for it to end",
                ErrorKind.USAGE,
            ) from None
        self._lock = lock
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for part in self._parts.iterdir():  # what an interrupted transfer left
            part.unlink(missing_ok=True)
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def path_of(self, sop_instance_uid: str) -> Path:
        """Where the instance with this SOP Instance UID is staged (the same on every fetch)."""
        name = self.keyring.mac("journal", "fetch-instance", sop_instance_uid).hex()[:40]
        return self.files / f"{name}.dcm"

    def put(self, sop_instance_uid: str, data: bytes) -> bool:
        """Stage one instance's file, complete or not at all; False (and :attr:`write_error`
        set) if it cannot be written."""
        final = self.path_of(sop_instance_uid)
        part = self._parts / final.name
        try:
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as stream:
                stream.write(data)
            os.replace(part, final)
        except OSError as exc:
            part.unlink(missing_ok=True)
            self.write_error = f"{self.folder}: cannot stage a fetched file ({exc.strerror})"
            return False
        return True

    def staged(self) -> set[Path]:
        """The files waiting in the staging folder."""
        return set(self.files.iterdir())

    def remove(self, path: Path) -> None:
        """Delete a staged file once its output is in place."""
        path.unlink(missing_ok=True)
