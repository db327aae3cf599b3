"""The node's journal: one SQLite row per acknowledged instance, and a few counters.

An instance goes ``received`` (on disk in the spool, acknowledged) -> ``outbox``
(pseudonymized, committed, waiting for the destination) -> ``delivered`` (forwarded, or
written into ``--output``); or to ``duplicate`` (the same output as an earlier instance: not
sent twice) or ``quarantined`` (never forwarded). The journal holds no identifying value:
spool names are random, outputs are pseudonymous paths, SOP classes and transfer syntaxes are
standard UIDs.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instance (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    spool TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    received_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    output TEXT,
    digest TEXT,
    sop_class TEXT,
    transfer_syntax TEXT,
    reason TEXT,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS instance_state ON instance (state, id);
CREATE INDEX IF NOT EXISTS instance_output ON instance (output);
CREATE TABLE IF NOT EXISTS counter (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class State(StrEnum):
    """Where an acknowledged instance is (the values are those stored)."""

    RECEIVED = "received"
    OUTBOX = "outbox"
    DELIVERED = "delivered"
    DUPLICATE = "duplicate"
    QUARANTINED = "quarantined"


class Counter(StrEnum):
    """Events the node counts that are not instances."""

    REJECTED_ASSOCIATIONS = "rejected_associations"
    FORWARD_RETRIES = "retried"


@dataclass(frozen=True)
class Row:
    """One instance of the journal."""

    id: int
    spool: str
    state: State
    output: str | None
    digest: str | None
    sop_class: str | None
    transfer_syntax: str | None


@dataclass(frozen=True)
class Move:
    """An instance moving to ``state``; the fields given (not None) are recorded with it."""

    row_id: int
    state: State
    output: str | None = None
    digest: str | None = None
    sop_class: str | None = None
    transfer_syntax: str | None = None
    reason: str | None = None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Journal:
    """The node's journal in ``path`` (created on first use), safe to share between threads.

    Every write is committed with ``synchronous=FULL`` before the call returns (a row the
    journal holds is on disk), except :meth:`delivered`: a forwarded mark is written to the
    journal's log without waiting for the disk (it survives the node's death, and the next
    durable commit flushes it; see the method).
    """

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        if read_only:
            self._db = sqlite3.connect(
                f"file:{path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None
            )
        else:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        self._db.execute("PRAGMA busy_timeout=30000")
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self, *, wait_for_disk: bool = True) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if not wait_for_disk:
                self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            finally:
                if not wait_for_disk:
                    self._db.execute("PRAGMA synchronous=FULL")

    def add_received(self, spools: list[str]) -> list[int]:
        """Record instances durably in the spool under the names ``spools``, in one
        transaction; return their ids, in the same order."""
        now = _now()
        ids = []
        with self._transaction() as db:
            for spool in spools:
                cursor = db.execute(
                    "INSERT INTO instance (spool, state, received_at, updated_at) "
                    "VALUES (?, ?, ?, ?)",
                    (spool, State.RECEIVED, now, now),
                )
                ids.append(int(cursor.lastrowid or 0))
        return ids

    def rows(self, state: State, limit: int, *, after: int = 0) -> list[Row]:
        """The oldest ``limit`` instances in ``state`` whose id is above ``after``."""
        with self._lock:
            found = self._db.execute(
                "SELECT id, spool, state, output, digest, sop_class, transfer_syntax "
                "FROM instance WHERE state = ? AND id > ? ORDER BY id LIMIT ?",
                (state, after, limit),
            ).fetchall()
        return [Row(r[0], r[1], State(r[2]), r[3], r[4], r[5], r[6]) for r in found]

    def spools(self) -> set[str]:
        """The spool names of the instances still waiting for the pipeline."""
        with self._lock:
            found = self._db.execute(
                "SELECT spool FROM instance WHERE state = ?", (State.RECEIVED,)
            ).fetchall()
        return {r[0] for r in found}

    def earlier_output(self, output: str, row_id: int) -> str | None:
        """The digest of another instance already committed to ``output`` (None if none)."""
        with self._lock:
            found = self._db.execute(
                "SELECT digest FROM instance WHERE output = ? AND id != ? AND state IN (?, ?) "
                "ORDER BY id LIMIT 1",
                (output, row_id, State.OUTBOX, State.DELIVERED),
            ).fetchone()
        return None if found is None else str(found[0])

    def move(self, moves: list[Move]) -> None:
        """Move instances on, in one transaction (keeping the fields a move does not give)."""
        if not moves:
            return
        now = _now()
        with self._transaction() as db:
            db.executemany(
                "UPDATE instance SET state = ?, updated_at = ?, output = COALESCE(?, output), "
                "digest = COALESCE(?, digest), sop_class = COALESCE(?, sop_class), "
                "transfer_syntax = COALESCE(?, transfer_syntax), reason = COALESCE(?, reason) "
                "WHERE id = ?",
                [
                    (
                        m.state,
                        now,
                        m.output,
                        m.digest,
                        m.sop_class,
                        m.transfer_syntax,
                        m.reason,
                        m.row_id,
                    )
                    for m in moves
                ],
            )

    def delivered(self, row_ids: list[int]) -> None:
        """Mark instances forwarded (their destination answered success).

        The mark is not waited for on disk: it survives the node's death (``kill -9``) at
        once, a power cut only once a durable commit (:meth:`settle`, or any other) has
        flushed the journal's log after it. The outbox copy must stay until then: an instance
        whose mark a power cut lost is sent again, the same bytes.
        """
        now = _now()
        with self._transaction(wait_for_disk=False) as db:
            db.executemany(
                "UPDATE instance SET state = ?, updated_at = ?, attempts = attempts + 1 "
                "WHERE id = ?",
                [(State.DELIVERED, now, row_id) for row_id in row_ids],
            )

    def settle(self, row_ids: list[int]) -> None:
        """Make the forwarded marks of ``row_ids`` (and every change before them) durable."""
        now = _now()
        with self._transaction() as db:
            db.executemany(
                "UPDATE instance SET updated_at = ? WHERE id = ?",
                [(now, row_id) for row_id in row_ids],
            )

    def outputs(self, state: State) -> set[str]:
        """The output paths of the instances in ``state``."""
        with self._lock:
            found = self._db.execute(
                "SELECT output FROM instance WHERE state = ? AND output IS NOT NULL", (state,)
            ).fetchall()
        return {r[0] for r in found}

    def count(self, counter: Counter, by: int = 1) -> None:
        """Add ``by`` to ``counter``."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO counter (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
                (counter, by),
            )

    def counts(self) -> dict[str, int]:
        """Instances by state and the counters: what ``pseudo serve status`` shows."""
        with self._lock:
            states = dict(
                self._db.execute("SELECT state, COUNT(*) FROM instance GROUP BY state").fetchall()
            )
            counters = dict(self._db.execute("SELECT name, value FROM counter").fetchall())
        by_state = {state.value: int(states.get(state.value, 0)) for state in State}
        return {
            "received": sum(by_state.values()),
            "pseudonymized": by_state[State.OUTBOX] + by_state[State.DELIVERED],
            "forwarded": by_state[State.DELIVERED],
            "queued": by_state[State.RECEIVED] + by_state[State.OUTBOX],
            "waiting_for_pipeline": by_state[State.RECEIVED],
            "waiting_for_destination": by_state[State.OUTBOX],
            "duplicates": by_state[State.DUPLICATE],
            "quarantined": by_state[State.QUARANTINED],
            "retried": int(counters.get(Counter.FORWARD_RETRIES, 0)),
            "rejected_associations": int(counters.get(Counter.REJECTED_ASSOCIATIONS, 0)),
        }
