"""The append-only, hash-chained audit log.

Every record holds the SHA-256 of its predecessor, so editing, deleting or reordering any
record breaks the chain. Truncating the end of the log is caught by two witnesses of the last
record: the ``audit_head`` row in the database and a checkpoint file in the vault folder.
Records name pseudonyms, never identities. Appending needs no key, so a refused or failed
request (wrong passphrase, missing reason) is logged as surely as a successful one.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from keystore.db import AuditHead, AuditRow, utcnow
from keystore.errors import DatabaseError

GENESIS = "0" * 64
_HASHED_FIELDS = (
    "seq",
    "timestamp",
    "actor",
    "action",
    "project",
    "subject",
    "reason",
    "outcome",
    "details",
    "prev_hash",
)


def record_hash(row: AuditRow) -> str:
    """SHA-256 over the canonical JSON of a record's fields (its own hash excluded)."""
    payload = {name: getattr(row, name) for name in _HASHED_FIELDS}
    data = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


@dataclass
class VerifyResult:
    """Outcome of :meth:`AuditLog.verify`."""

    count: int
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems


class AuditLog:
    """Append to and verify the audit log of one linkage store."""

    def __init__(self, engine: Engine, checkpoint: Path | None = None) -> None:
        self.engine = engine
        self.checkpoint = checkpoint

    def append(
        self,
        action: str,
        actor: str,
        outcome: str,
        *,
        project: str | None = None,
        subject: str | None = None,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> AuditRow:
        """Append one record and return it; the write is durable when this returns."""
        try:
            with Session(self.engine) as session:
                head = session.exec(
                    select(AuditHead).where(AuditHead.id == 1).with_for_update()
                ).one()
                row = AuditRow(
                    seq=head.seq + 1,
                    timestamp=utcnow().isoformat(),
                    actor=actor,
                    action=action,
                    project=project,
                    subject=subject,
                    reason=reason,
                    outcome=outcome,
                    details=json.dumps(details or {}, sort_keys=True, separators=(",", ":")),
                    prev_hash=head.hash,
                    hash="",
                )
                row.hash = record_hash(row)
                head.seq, head.hash = row.seq, row.hash
                session.add(row)
                session.add(head)
                session.commit()
                session.refresh(row)
        except SQLAlchemyError as exc:
            raise DatabaseError(f"cannot write the audit log: {exc.__class__.__name__}") from exc
        self._write_checkpoint(row.seq, row.hash)
        return row

    def _write_checkpoint(self, seq: int, digest: str) -> None:
        if self.checkpoint is None:
            return
        current = self._read_checkpoint()
        if current is not None and current[0] >= seq:
            return
        tmp = self.checkpoint.with_name(f".{self.checkpoint.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"seq": seq, "hash": digest}, handle)
        os.replace(tmp, self.checkpoint)

    def _read_checkpoint(self) -> tuple[int, str] | None:
        if self.checkpoint is None or not self.checkpoint.exists():
            return None
        try:
            data = json.loads(self.checkpoint.read_text(encoding="utf-8"))
            return int(data["seq"]), str(data["hash"])
        except (OSError, ValueError, KeyError, TypeError):
            return (-1, "")

    def records(self) -> list[AuditRow]:
        """Every record, in sequence order."""
        try:
            with Session(self.engine) as session:
                return list(session.exec(select(AuditRow).order_by(col(AuditRow.seq))))
        except SQLAlchemyError as exc:
            raise DatabaseError(f"cannot read the audit log: {exc.__class__.__name__}") from exc

    def verify(self) -> VerifyResult:
        """Check the whole chain and both witnesses of its end."""
        rows = self.records()
        result = VerifyResult(count=len(rows))
        previous = GENESIS
        for expected_seq, row in enumerate(rows, start=1):
            if row.seq != expected_seq:
                result.problems.append(
                    f"record {row.seq}: expected sequence number {expected_seq} "
                    "(a record was deleted or inserted)"
                )
            if row.prev_hash != previous:
                result.problems.append(
                    f"record {row.seq}: does not follow the record before it "
                    "(records were deleted, inserted or reordered)"
                )
            if record_hash(row) != row.hash:
                result.problems.append(
                    f"record {row.seq}: content does not match its hash (edited)"
                )
            previous = row.hash
            if len(result.problems) >= 20:
                result.problems.append("... further problems not listed")
                return result
        last_seq, last_hash = (rows[-1].seq, rows[-1].hash) if rows else (0, GENESIS)
        with Session(self.engine) as session:
            head = session.get(AuditHead, 1)
        if head is not None and (head.seq, head.hash) != (last_seq, last_hash):
            result.problems.append(
                f"the log ends at record {last_seq} but its head names record {head.seq} "
                "(records were removed from the end)"
            )
        checkpoint = self._read_checkpoint()
        if checkpoint is not None:
            seq, digest = checkpoint
            by_seq = {row.seq: row.hash for row in rows}
            if seq < 0:
                result.problems.append(f"{self.checkpoint}: checkpoint file is unreadable")
            elif seq > last_seq:
                result.problems.append(
                    f"the log ends at record {last_seq} but this vault saw record {seq} "
                    "(records were removed from the end)"
                )
            elif by_seq.get(seq) != digest:
                result.problems.append(
                    f"record {seq}: differs from the one this vault saw (log was rewritten)"
                )
        return result
