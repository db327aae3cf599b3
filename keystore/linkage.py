"""Sealed linkage records and the run journal, written in one transaction.

The pseudonymizing station holds only the project's public key: it seals each record with
:func:`keystore.crypto.seal` and can never read one back. A keyed digest of each record's
content (not of any single identifier) lets a re-run recognize a record it already stored, so
running the same input twice adds no duplicate.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Engine, func
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from keystore import crypto
from keystore.db import JournalRow, LinkageRow, PatientStateRow, RunRow, upsert, utcnow
from keystore.errors import DatabaseError
from keystore.keyring import Keyring

Kind = Literal["patient", "study"]
FieldValue = str | int | None


@dataclass(frozen=True)
class LinkageEntry:
    """An identity to seal: ``fields`` are the original identifiers behind ``key``.

    ``key`` is the pseudonymous value the record is found by (the patient pseudonym, or the
    pseudonymous Study Instance UID), ``pseudonym`` the patient it belongs to.
    """

    kind: Kind
    key: str
    pseudonym: str
    fields: Mapping[str, FieldValue]

    def canonical(self) -> bytes:
        """The content as canonical JSON, the plaintext that gets sealed."""
        return json.dumps(
            dict(self.fields), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8")


@dataclass(frozen=True)
class JournalEntry:
    """The outcome for one input file: ``written``, ``quarantined`` or ``skipped``."""

    input_path: str
    fingerprint: str
    status: str
    output: str | None = None
    reason: str | None = None


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
            raise DatabaseError(
                f"cannot write the linkage store: {exc.__class__.__name__}"
            ) from exc

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
        unique: dict[tuple[str, str, str], LinkageEntry] = {}
        for entry in entries:
            digest = keyring.mac("linkage", entry.kind, entry.key, entry.canonical()).hex()
            unique.setdefault((entry.kind, entry.key, digest), entry)
        with self._transaction() as session:
            existing = self._existing_digests(session, project, {k[1] for k in unique})
            rows = [
                {
                    "project": project,
                    "kind": kind,
                    "key": key,
                    "pseudonym": entry.pseudonym,
                    "digest": digest,
                    "sealed": crypto.seal(
                        keyring.reid_public_key,
                        entry.canonical(),
                        sealed_aad(project, kind, key),
                    ),
                    "run_id": run_id,
                    "created_at": utcnow(),
                }
                for (kind, key, digest), entry in sorted(unique.items())
                if (kind, key, digest) not in existing
            ]
            upsert(session, LinkageRow, rows)
            self._record_journal(session, keyring, run_id, journal)
        return len(rows)

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
                "input_key": keyring.mac("journal", item.input_path).hex(),
                "fingerprint": item.fingerprint,
                "status": item.status,
                "output": item.output,
                "reason": item.reason,
                "run_id": run_id,
                "updated_at": now,
            }
            for item in journal
        ]
        columns = ("fingerprint", "status", "output", "reason", "run_id", "updated_at")
        upsert(session, JournalRow, rows, keys=("project", "input_key"), update=columns)

    # -- the journal ----------------------------------------------------------------------
    def journal_lookup(self, keyring: Keyring, input_paths: Iterable[str]) -> dict[str, JournalRow]:
        """Journal rows of the given input files, by path (for resuming a run)."""
        keyed = {keyring.mac("journal", path).hex(): path for path in input_paths}
        result: dict[str, JournalRow] = {}
        keys = sorted(keyed)
        with Session(self.engine) as session:
            for start in range(0, len(keys), 500):
                stmt = select(JournalRow).where(
                    JournalRow.project == keyring.project,
                    col(JournalRow.input_key).in_(keys[start : start + 500]),
                )
                for row in session.exec(stmt):
                    result[keyed[row.input_key]] = row
        return result

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
        """Record that a run started."""
        with Session(self.engine) as session:
            session.add(RunRow(run_id=run_id, project=project, policy=policy))
            session.commit()

    def finish_run(self, run_id: str, status: str, counts: Mapping[str, int]) -> None:
        """Record a run's end and its counts."""
        with Session(self.engine) as session:
            row = session.get(RunRow, run_id)
            if row is None:
                return
            row.finished_at = utcnow()
            row.status = status
            row.counts = json.dumps(dict(counts), sort_keys=True)
            session.add(row)
            session.commit()

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

    def count(self, project: str) -> int:
        """Number of linkage records of a project."""
        with Session(self.engine) as session:
            stmt = select(func.count()).select_from(LinkageRow).where(LinkageRow.project == project)
            return int(session.exec(stmt).one())
