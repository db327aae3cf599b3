"""Sealed linkage records and the run journal, written in one transaction.

The pseudonymizing station holds only the project's public key: it seals each record with
:func:`keystore.crypto.seal` and can never read one back. A keyed digest of each record's
content (not of any single identifier) lets a re-run recognize a record it already stored, so
running the same input twice adds no duplicate. What a sealed record holds is defined once, in
:mod:`keystore.records`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import Engine, and_, bindparam, func, or_, update
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from keystore import crypto
from keystore.db import (
    JournalRow,
    LinkageRow,
    PatientStateRow,
    ProjectKeyRow,
    RunRow,
    failure,
    upsert,
)
from keystore.errors import (
    CorruptVaultError,
    DatabaseError,
    InvalidTokenError,
    ProjectClosedError,
    StaleKeyError,
)
from keystore.keyring import Keyring
from keystore.records import Kind
from keystore.records import LinkageEntry as LinkageEntry  # re-exported for the writers
from keystore.stamps import utcnow

#: Rows re-sealed per statement during a key rotation.
RESEAL_CHUNK = 500


@dataclass(frozen=True)
class JournalEntry:
    """The outcome for one input file: ``written``, ``quarantined`` or ``skipped``.

    ``input_key`` names the file by :func:`journal_key` of its path."""

    input_key: str
    fingerprint: str
    status: str
    output: str | None = None
    reason: str | None = None


class JournalState(NamedTuple):
    """What the journal holds of one input file (see :meth:`LinkageStore.journal_lookup`)."""

    fingerprint: str
    status: str
    output: str | None


def journal_key(keyring: Keyring, input_path: str) -> str:
    """The journal's name for an input file: a keyed digest of its path (paths can name
    patients). Worked out once per file by the caller, which needs it more than once."""
    return keyring.mac("journal", input_path).hex()


#: How a journal row's sealed part begins (rows written before it hold the fingerprint and the
#: output path in clear, and are re-keyed by :meth:`LinkageStore.migrate_journal`).
SEALED_JOURNAL = "s1:"


def journal_fingerprint(keyring: Keyring, input_key: str, fingerprint: str) -> str:
    """What the journal stores of a file's fingerprint (size, mtime, policy): a keyed digest,
    so a copy of the database cannot be joined with a listing of the input files."""
    return keyring.mac("journal-fingerprint", input_key, fingerprint).hex()


def _journal_context(project: str, input_key: str) -> bytes:
    return crypto.encode_parts("pseudo-journal/1", project, input_key)


def seal_journal(keyring: Keyring, input_key: str, fingerprint: str, output: str | None) -> str:
    """The sealed part of a journal row: the fingerprint and output path, readable only with
    the project secret (the run needs them back to skip the files already done)."""
    plain = json.dumps({"f": fingerprint, "o": output}, separators=(",", ":")).encode()
    blob = keyring.seal_state(plain, _journal_context(keyring.project, input_key))
    return SEALED_JOURNAL + base64.b64encode(blob).decode("ascii")


def open_journal(keyring: Keyring, input_key: str, sealed: str) -> tuple[str, str | None]:
    """``(fingerprint, output)`` of a sealed journal row (:class:`InvalidTokenError` if it does
    not open in this row)."""
    blob = base64.b64decode(sealed[len(SEALED_JOURNAL) :])
    data = json.loads(keyring.open_state(blob, _journal_context(keyring.project, input_key)))
    return str(data["f"]), data["o"]


def sealed_aad(project: str, kind: str, key: str) -> bytes:
    """Associated data of a sealed record: it opens only in its own row."""
    return crypto.encode_parts("pseudo-linkage/1", project, kind, key)


class LinkageStore:
    """Read and write linkage records, the run journal and run bookkeeping."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- writing --------------------------------------------------------------------------
    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        """A session committed at the end, with database failures as one clear error."""
        try:
            with Session(self.engine) as session:
                yield session
                session.commit()
        except SQLAlchemyError as exc:
            raise DatabaseError(f"cannot write the linkage store: {failure(exc)}") from exc

    @contextmanager
    def _reading(self) -> Iterator[Session]:
        """A session for reading, with database failures as one clear error."""
        try:
            with Session(self.engine) as session:
                yield session
        except SQLAlchemyError as exc:
            raise DatabaseError(f"cannot read the linkage store: {failure(exc)}") from exc

    def commit_batch(
        self,
        keyring: Keyring,
        run_id: str,
        entries: Iterable[LinkageEntry],
        journal: Iterable[JournalEntry],
    ) -> int:
        """Seal and store ``entries`` and record ``journal`` in one transaction.

        Returns the number of linkage records that were new.
        """
        project = keyring.project
        # a batch repeats its patients and studies file after file: one digest for each
        first: dict[tuple[str, str, bytes], LinkageEntry] = {}
        for entry in entries:
            first.setdefault((entry.kind, entry.key, entry.canonical()), entry)
        unique: dict[tuple[str, str, str], tuple[LinkageEntry, bytes]] = {
            (kind, key, keyring.mac("linkage", kind, key, canonical).hex()): (entry, canonical)
            for (kind, key, canonical), entry in first.items()
        }
        with self._transaction() as session:
            self._check_key(session, project, keyring.reid_public_key)
            existing = self._existing_digests(session, project, {k[1] for k in unique})
            rows = [
                {
                    "project": project,
                    "kind": kind,
                    "key": key,
                    "pseudonym": entry.pseudonym,
                    "digest": digest,
                    "sealed": crypto.seal(
                        keyring.reid_public_key, canonical, sealed_aad(project, kind, key)
                    ),
                    "run_id": run_id,
                    "created_at": utcnow(),
                }
                for (kind, key, digest), (entry, canonical) in sorted(unique.items())
                if (kind, key, digest) not in existing
            ]
            upsert(session, LinkageRow, rows)
            self._record_journal(session, keyring, run_id, journal)
        return len(rows)

    @staticmethod
    def _key_row(
        session: Session, project: str, public_key: bytes, *, share: bool
    ) -> ProjectKeyRow:
        """The project's key row, locked (FOR SHARE / FOR UPDATE); created on first use.

        The first writer records the public key of the project file, which the operator's
        unlock has just authenticated (settings MAC).
        """
        stmt = select(ProjectKeyRow).where(ProjectKeyRow.project == project)
        row = session.exec(stmt.with_for_update(read=share)).first()
        if row is None:
            upsert(session, ProjectKeyRow, [{"project": project, "public_key": public_key.hex()}])
            row = session.exec(stmt.with_for_update(read=share)).one()
        return row

    def _check_key(self, session: Session, project: str, public_key: bytes) -> None:
        """Refuse to store records for a closed project or sealed to a superseded key."""
        row = self._key_row(session, project, public_key, share=True)
        if row.closed_at is not None:
            raise ProjectClosedError(
                f"project {project!r} was closed on {row.closed_at.date()}: it accepts no more data"
            )
        if row.public_key != public_key.hex():
            raise StaleKeyError(
                f"the re-identification key of project {project!r} was rotated after this "
                "command opened the project (or this vault's project file is out of date): "
                "run the command again"
            )

    def reseal_all(
        self,
        project: str,
        private_key: bytes,
        old_public: bytes,
        new_public: bytes,
        on_progress: Callable[[str, int], None] | None = None,
    ) -> int:
        """Re-seal every linkage record of ``project`` to ``new_public`` in ONE transaction.

        Each record is opened with ``private_key`` and sealed afresh with the same associated
        data; the project's key row moves to ``new_public`` in the same transaction, so a crash
        leaves every record (and the key row) as it was. Concurrent writers wait, and those
        that opened the project with the old key are refused afterwards. Returns the number of
        records re-sealed.
        """
        done = 0
        with self._transaction() as session:
            row = self._key_row(session, project, old_public, share=False)
            if row.closed_at is not None:
                raise ProjectClosedError(f"project {project!r} was closed: nothing to rotate")
            if row.public_key != old_public.hex():
                raise StaleKeyError(
                    f"the linkage store of project {project!r} is sealed to another key than "
                    "this vault's project file (was it rotated from another vault?)"
                )
            table = LinkageRow.__table__  # type: ignore[attr-defined]
            statement = (
                update(table)
                .where(table.c.id == bindparam("row_id"))
                .values(sealed=bindparam("new_sealed"))
            )
            last_id = 0
            while True:
                chunk = list(
                    session.exec(
                        select(LinkageRow.id, LinkageRow.kind, LinkageRow.key, LinkageRow.sealed)
                        .where(LinkageRow.project == project, col(LinkageRow.id) > last_id)
                        .order_by(col(LinkageRow.id))
                        .limit(RESEAL_CHUNK)
                    )
                )
                if not chunk:
                    break
                params: list[dict[str, Any]] = []
                for row_id, kind, key, sealed in chunk:
                    aad = sealed_aad(project, kind, key)
                    try:
                        plaintext = crypto.open_sealed(private_key, sealed, aad)
                    except InvalidTokenError as exc:
                        raise CorruptVaultError(
                            f"linkage record {row_id} of project {project!r} does not open with "
                            "the current key: nothing was re-sealed"
                        ) from exc
                    params.append(
                        {"row_id": row_id, "new_sealed": crypto.seal(new_public, plaintext, aad)}
                    )
                session.execute(statement, params)
                done += len(chunk)
                last_id = int(chunk[-1][0] or 0)
                if on_progress is not None:
                    on_progress("resealing", done)
            row.public_key = new_public.hex()
            row.rotated_at = utcnow()
            session.add(row)
        return done

    def mark_closed(self, project: str, public_key: bytes) -> None:
        """Record in the linkage store that the project is closed (no record may be added)."""
        with self._transaction() as session:
            row = self._key_row(session, project, public_key, share=False)
            if row.closed_at is None:
                row.closed_at = utcnow()
                session.add(row)

    def sealed_to(self, project: str) -> str | None:
        """Hex of the public key the project's records are sealed to, if recorded."""
        with Session(self.engine) as session:
            row = session.get(ProjectKeyRow, project)
            return row.public_key if row is not None else None

    def all_records(self, project: str) -> list[LinkageRow]:
        """Every sealed record of a project, oldest first."""
        with Session(self.engine) as session:
            stmt = (
                select(LinkageRow).where(LinkageRow.project == project).order_by(col(LinkageRow.id))
            )
            return list(session.exec(stmt))

    @staticmethod
    def _existing_digests(
        session: Session, project: str, keys: set[str]
    ) -> set[tuple[str, str, str]]:
        found: set[tuple[str, str, str]] = set()
        key_list = sorted(keys)
        for start in range(0, len(key_list), 500):
            chunk = key_list[start : start + 500]
            stmt = select(LinkageRow.kind, LinkageRow.key, LinkageRow.digest).where(
                LinkageRow.project == project, col(LinkageRow.key).in_(chunk)
            )
            found.update((k, key, d) for k, key, d in session.exec(stmt))
        return found

    @staticmethod
    def _record_journal(
        session: Session, keyring: Keyring, run_id: str, journal: Iterable[JournalEntry]
    ) -> None:
        now = utcnow()
        rows = [
            {
                "project": keyring.project,
                "input_key": item.input_key,
                "fingerprint": journal_fingerprint(keyring, item.input_key, item.fingerprint),
                "status": item.status,
                "output": seal_journal(keyring, item.input_key, item.fingerprint, item.output),
                "reason": item.reason,
                "run_id": run_id,
                "updated_at": now,
            }
            for item in journal
        ]
        columns = ("fingerprint", "status", "output", "reason", "run_id", "updated_at")
        upsert(session, JournalRow, rows, keys=("project", "input_key"), update=columns)

    # -- the journal ----------------------------------------------------------------------
    def journal_lookup(
        self, keyring: Keyring, input_keys: Iterable[str]
    ) -> dict[str, JournalState]:
        """What the journal holds of the given input files (by :func:`journal_key`), for
        resuming a run. Plain tuples, not ORM objects: a re-run of 500,000 files looks up every
        one of them, and an ORM row costs about 2 KB."""
        result: dict[str, JournalState] = {}
        keys = sorted(set(input_keys))
        with self._reading() as session:
            for start in range(0, len(keys), 500):
                stmt = select(
                    JournalRow.input_key,
                    JournalRow.fingerprint,
                    JournalRow.status,
                    JournalRow.output,
                ).where(
                    JournalRow.project == keyring.project,
                    col(JournalRow.input_key).in_(keys[start : start + 500]),
                )
                for key, fingerprint, status, output in session.exec(stmt):
                    if output is not None and output.startswith(SEALED_JOURNAL):
                        try:
                            fingerprint, output = open_journal(keyring, key, output)
                        except (InvalidTokenError, ValueError, KeyError):
                            continue  # a row that does not open here: process the file again
                    result[key] = JournalState(fingerprint, status, output)
        return result

    def migrate_journal(self, keyring: Keyring) -> int:
        """Re-key the project's journal rows written before fingerprints were keyed: each
        gets its keyed fingerprint and its sealed part, so a re-run still skips the files done
        and a copy of the database holds nothing to join with a listing of the inputs.
        Returns the number of rows re-keyed (0 once done, at the cost of one query)."""
        project = keyring.project
        table = JournalRow.__table__  # type: ignore[attr-defined]
        legacy = and_(
            col(JournalRow.project) == project,
            or_(
                col(JournalRow.output).is_(None),
                ~col(JournalRow.output).startswith(SEALED_JOURNAL, autoescape=True),
            ),
        )
        done = 0
        with self._transaction() as session:
            rows = list(
                session.exec(
                    select(
                        JournalRow.id,
                        JournalRow.input_key,
                        JournalRow.fingerprint,
                        JournalRow.output,
                    ).where(legacy)
                )
            )
            if not rows:
                return 0
            statement = (
                update(table)
                .where(table.c.id == bindparam("row_id"))
                .values(fingerprint=bindparam("new_fp"), output=bindparam("new_output"))
            )
            params = [
                {
                    "row_id": row_id,
                    "new_fp": journal_fingerprint(keyring, key, fingerprint),
                    "new_output": seal_journal(keyring, key, fingerprint, output),
                }
                for row_id, key, fingerprint, output in rows
            ]
            for start in range(0, len(params), RESEAL_CHUNK):
                session.execute(statement, params[start : start + RESEAL_CHUNK])
            done = len(params)
        return done

    # -- operator state -------------------------------------------------------------------
    @staticmethod
    def _state_context(project: str, key: str) -> bytes:
        return crypto.encode_parts("pseudo-state/1", project, key)

    def states(self, keyring: Keyring, keys: Iterable[str]) -> dict[str, dict[str, object]]:
        """The recorded operator state under each key that has one (keys are pseudonymous)."""
        wanted = sorted(set(keys))
        found: dict[str, dict[str, object]] = {}
        with Session(self.engine) as session:
            for start in range(0, len(wanted), 500):
                stmt = select(PatientStateRow).where(
                    PatientStateRow.project == keyring.project,
                    col(PatientStateRow.key).in_(wanted[start : start + 500]),
                )
                for row in session.exec(stmt):
                    context = self._state_context(row.project, row.key)
                    found[row.key] = json.loads(keyring.open_state(row.sealed, context))
        return found

    def claim_states(
        self, keyring: Keyring, proposals: Mapping[str, Mapping[str, object]]
    ) -> dict[str, dict[str, object]]:
        """Record ``proposals`` under keys that have no state yet; return what every key holds.

        A key that already has a state (from an earlier or a concurrent run) keeps it: the
        first run to record a patient's state wins, and every later run reuses it.
        """
        rows = [
            {
                "project": keyring.project,
                "key": key,
                "sealed": keyring.seal_state(
                    json.dumps(dict(state), sort_keys=True).encode(),
                    self._state_context(keyring.project, key),
                ),
                "created_at": utcnow(),
            }
            for key, state in sorted(proposals.items())
        ]
        with self._transaction() as session:
            upsert(session, PatientStateRow, rows)
        return self.states(keyring, proposals)

    # -- runs -----------------------------------------------------------------------------
    def start_run(self, run_id: str, project: str, policy: str) -> None:
        """Record that a run started (:class:`DatabaseError` if the store cannot be written)."""
        with self._transaction() as session:
            session.add(RunRow(run_id=run_id, project=project, policy=policy))

    def close_dead_run(self, run_id: str, project: str) -> int | None:
        """Mark run ``run_id`` of ``project``, found dead, as ``killed`` with the number of
        files it released (put in place, journal committed); None when the store does not know
        it as running (already closed, or another project's)."""
        with self._transaction() as session:
            row = session.get(RunRow, run_id)
            if row is None or row.project != project or row.status != "running":
                return None
            released = len(
                session.exec(
                    select(JournalRow.id).where(
                        JournalRow.project == project,
                        JournalRow.run_id == run_id,
                        JournalRow.status == "written",
                    )
                ).all()
            )
            row.finished_at = utcnow()
            row.status = "killed"
            row.counts = json.dumps({"written": released}, sort_keys=True)
            session.add(row)
            return released

    def finish_run(self, run_id: str, status: str, counts: Mapping[str, int]) -> None:
        """Record a run's end and its counts (:class:`DatabaseError` if it cannot be written)."""
        with self._transaction() as session:
            row = session.get(RunRow, run_id)
            if row is None:
                return
            row.finished_at = utcnow()
            row.status = status
            row.counts = json.dumps(dict(counts), sort_keys=True)
            session.add(row)

    # -- reading (for re-identification) --------------------------------------------------
    def records(self, project: str, kind: Kind, key: str) -> list[LinkageRow]:
        """Sealed records stored under a pseudonymous key, oldest first."""
        with Session(self.engine) as session:
            stmt = (
                select(LinkageRow)
                .where(
                    LinkageRow.project == project, LinkageRow.kind == kind, LinkageRow.key == key
                )
                .order_by(col(LinkageRow.id))
            )
            return list(session.exec(stmt))

    def studies_of(self, project: str, pseudonym: str) -> list[LinkageRow]:
        """Sealed study records of one patient pseudonym, oldest first."""
        with Session(self.engine) as session:
            stmt = (
                select(LinkageRow)
                .where(
                    LinkageRow.project == project,
                    LinkageRow.kind == "study",
                    LinkageRow.pseudonym == pseudonym,
                )
                .order_by(col(LinkageRow.id))
            )
            return list(session.exec(stmt))

    def newest_records(self, project: str, limit: int) -> list[LinkageRow]:
        """The ``limit`` most recently stored sealed records of a project, newest first."""
        with Session(self.engine) as session:
            stmt = (
                select(LinkageRow)
                .where(LinkageRow.project == project)
                .order_by(col(LinkageRow.id).desc())
                .limit(limit)
            )
            return list(session.exec(stmt))

    def count(self, project: str) -> int:
        """Number of linkage records of a project."""
        with Session(self.engine) as session:
            stmt = select(func.count()).select_from(LinkageRow).where(LinkageRow.project == project)
            return int(session.exec(stmt).one())
