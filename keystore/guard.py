"""Slow down passphrase guessing through ``pseudo`` and record every failed attempt.

scrypt makes each guess cost a fraction of a second wherever it is made; this guard adds, for
guesses made through the tool, a delay that doubles with every failure in a row on the same
project and role (operator, re-identifier) once a few free attempts are used up. The count is
kept in the database, so it holds across processes and stations, and is reset by a success.

An attempt is counted as a failure *before* it is tried, and the time it may start is reserved
in the same transaction: a process killed mid-attempt cannot skip the count, and several
processes guessing at once queue up rather than share one delay.

This does not slow down someone who copied the vault files and runs scrypt themselves; only
the scrypt cost does (see ``docs/threat-model.md``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, select

from keystore.actions import AuditAction, AuditOutcome
from keystore.audit import AuditLog
from keystore.db import AuthFailureRow, ProjectKeyRow, failure, upsert
from keystore.errors import DatabaseError
from keystore.stamps import os_user


@dataclass(frozen=True)
class ThrottlePolicy:
    """How long an attempt waits after ``failures`` failures in a row."""

    free_attempts: int = 3
    base_delay: float = 1.0
    max_delay: float = 60.0

    def delay(self, failures: int) -> float:
        """Seconds the attempt after ``failures`` failures in a row must wait."""
        if failures < self.free_attempts:
            return 0.0
        exponent = min(failures - self.free_attempts, 30)
        return float(min(self.max_delay, self.base_delay * 2**exponent))


@dataclass(frozen=True)
class Attempt:
    """One reserved passphrase attempt."""

    project: str
    role: str
    failures: int  # failures in a row if this attempt fails too
    waited: float  # seconds this attempt waited before it was tried
    next_delay: float  # seconds the next attempt will wait if this one fails


class Guard:
    """Throttle and audit passphrase attempts against one linkage store."""

    def __init__(
        self, engine: Engine, audit: AuditLog, policy: ThrottlePolicy | None = None
    ) -> None:
        self.engine = engine
        self.audit = audit
        self.policy = policy or ThrottlePolicy()

    def begin(self, project: str, role: str) -> Attempt:
        """Count an attempt, wait until it may start, and return it."""
        try:
            with Session(self.engine) as session:
                upsert(
                    session,
                    AuthFailureRow,
                    [{"project": project, "role": role, "failures": 0, "next_attempt": 0.0}],
                )
                row = session.exec(
                    select(AuthFailureRow)
                    .where(AuthFailureRow.project == project, AuthFailureRow.role == role)
                    .with_for_update()
                ).one()
                now = time.time()
                start = max(now, row.next_attempt)
                row.failures += 1
                next_delay = self.policy.delay(row.failures)
                row.next_attempt = start + next_delay
                failures = row.failures
                session.add(row)
                session.commit()
        except SQLAlchemyError as exc:
            raise DatabaseError(f"cannot record the passphrase attempt: {failure(exc)}") from exc
        wait = max(0.0, start - now)
        if wait:
            time.sleep(wait)
        return Attempt(project, role, failures, round(wait, 3), next_delay)

    def succeeded(self, attempt: Attempt) -> None:
        """Reset the count after a passphrase opened a slot."""
        try:
            with Session(self.engine) as session:
                row = session.get(AuthFailureRow, (attempt.project, attempt.role))
                if row is not None:
                    row.failures, row.next_attempt = 0, 0.0
                    session.add(row)
                    session.commit()
        except SQLAlchemyError as exc:
            raise DatabaseError(f"cannot record the passphrase attempt: {failure(exc)}") from exc

    def failed(self, attempt: Attempt, slot: str | None) -> None:
        """Record a failed attempt in the audit log (the count was already kept)."""
        self.audit.append(
            AuditAction.UNLOCK,
            os_user(),
            AuditOutcome.WRONG_PASSPHRASE,
            project=attempt.project,
            details={
                "role": attempt.role,
                "slot": slot,
                "failures_in_a_row": attempt.failures,
                "waited_seconds": attempt.waited,
            },
        )

    def failures(self, project: str, role: str) -> int:
        """Failed attempts in a row recorded for ``project`` and ``role``."""
        with Session(self.engine) as session:
            row = session.get(AuthFailureRow, (project, role))
            return row.failures if row is not None else 0

    def closed_at(self, project: str) -> datetime | None:
        """When the linkage store recorded the project as closed, or None."""
        try:
            with Session(self.engine) as session:
                row = session.get(ProjectKeyRow, project)
        except SQLAlchemyError as exc:
            raise DatabaseError(f"cannot read the linkage store: {failure(exc)}") from exc
        return row.closed_at if row is not None else None
