"""Group commit of received instances: many in flight, one flush of the spool folder and one
journal transaction for all of them.

Each association thread writes its instance into the spool and flushes the file's data itself
(several associations do so at once), then hands the name over and waits. One thread takes
every name handed over meanwhile, flushes the spool folder once (the names), records them all
in one journal transaction (``synchronous=FULL``), and wakes each waiter: only then does its
association answer success. An instance is thus acknowledged only once its data, its name and
its journal row are on disk, and a burst from several senders costs one flush of the folder and
one of the journal, not one per instance.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from pseudo.serve.folder import NodeFolder
from pseudo.serve.journal import Journal


class IntakeClosed(OSError):
    """The node is stopping: no instance is taken any more."""


@dataclass
class _Handed:
    """One instance handed over, waiting for the commit that covers it."""

    spool: str
    done: threading.Event = field(default_factory=threading.Event)
    row_id: int = 0
    error: BaseException | None = None


class Intake:
    """Makes received instances durable together (see the module's docstring)."""

    def __init__(self, folder: NodeFolder, journal: Journal) -> None:
        self.folder = folder
        self.journal = journal
        self._waiting: list[_Handed] = []
        self._changed = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="pseudo-intake", daemon=True)

    def start(self) -> None:
        """Start the committing thread."""
        self._thread.start()

    def close(self) -> None:
        """Commit what was handed over, then stop (later :meth:`keep` calls fail)."""
        with self._changed:
            self._closed = True
            self._changed.notify()
        if self._thread.is_alive():
            self._thread.join()

    def keep(self, data: bytes) -> int:
        """Write a received instance to the spool and return its journal id once it is
        durably in the spool and the journal. Raises what kept it from being kept
        (:class:`OSError`, :class:`sqlite3.Error`): it must not be acknowledged."""
        handed = _Handed(self.folder.write_spool(data))
        with self._changed:
            if self._closed:
                (self.folder.spool / handed.spool).unlink(missing_ok=True)
                raise IntakeClosed("the node is stopping")
            self._waiting.append(handed)
            self._changed.notify()
        handed.done.wait()
        if handed.error is not None:
            raise handed.error
        return handed.row_id

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._waiting and not self._closed:
                    self._changed.wait()
                group, self._waiting = self._waiting, []
            if not group:
                return  # closed, and nothing left
            self._commit(group)

    def _commit(self, group: list[_Handed]) -> None:
        try:
            self.folder.sync_spool()
            ids = self.journal.add_received([handed.spool for handed in group])
        except Exception as exc:  # each waiter raises it: not acknowledged
            for handed in group:
                (self.folder.spool / handed.spool).unlink(missing_ok=True)
                handed.error = exc
                handed.done.set()
            return
        for handed, row_id in zip(group, ids, strict=True):
            handed.row_id = row_id
            handed.done.set()
