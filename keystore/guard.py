"""Slow down passphrase guessing through ``pseudo`` and record every failed attempt.

scrypt makes each guess cost a fraction of a second wherever it is made; this guard adds, for
guesses made through the tool, a delay that doubles with every failure in a row once a few free
attempts are used up. Failures are counted twice, in the database (so across processes,
stations and every command that tries a passphrase):

* **per key slot**: each slot a passphrase is tried against has its own count, which only a
  success *on that slot* resets. Opening the operator's own slot never resets the count of a
  re-identification slot, so trying a guess at "any slot" (``audit verify --project``) between
  successes with one's own passphrase gains nothing;
* **per vault**: every failed attempt on any slot of any project counts (more free attempts,
  then the same doubling), so spreading guesses over slots and projects is slowed too. A
  success gives back only the attempts of its own call; the count is forgotten after an hour
  without attempts.

An attempt is counted as a failure *before* it is tried, and the time it may start is reserved
in the same transaction: a process killed mid-attempt cannot skip the count, and several
processes guessing at once queue up rather than share one delay.

This does not slow down someone who copied the vault files and runs scrypt themselves; only
the scrypt cost does (see ``docs/threat-model.md``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
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

#: The row of the vault-wide count (``project`` column; no project may be called so).
VAULT_ROW = ("*", "vault")
#: Free failed attempts on the whole vault before its own delay starts.
VAULT_FREE_ATTEMPTS = 10
#: Seconds without any attempt after which the vault-wide count is forgotten.
VAULT_IDLE_RESET = 3600.0


def slot_row(project: str, slot: str) -> tuple[str, str]:
    """The ``(project, role)`` key of a slot's count (``role`` is 16 characters at most, so
    the slot name is digested)."""
    return project, "s:" + hashlib.sha256(slot.encode("utf-8")).hexdigest()[:14]


@dataclass(frozen=True)
class ThrottlePolicy:
    """How long an attempt waits after ``failures`` failures in a row."""

    free_attempts: int = 3
    base_delay: float = 1.0
    max_delay: float = 60.0

    def delay(self, failures: int, free: int | None = None) -> float:
        """Seconds the attempt after ``failures`` failures in a row must wait (``free``
        overrides the number of free attempts)."""
        free = self.free_attempts if free is None else free
        if failures < free:
            return 0.0
        exponent = min(failures - free, 30)
        return float(min(self.max_delay, self.base_delay * 2**exponent))


@dataclass(frozen=True)
class Attempt:
    """One reserved passphrase attempt on one key slot."""

    project: str
    role: str  # the role of the slot (for the audit record)
    slot: str
    failures: int  # failures in a row on this slot if this attempt fails too
    waited: float  # seconds this attempt waited before it was tried
    next_delay: float  # seconds the next attempt on this slot will wait if this one fails


class Guard:
    """Throttle and audit passphrase attempts against one linkage store."""

    def __init__(
        self, engine: Engine, audit: AuditLog, policy: ThrottlePolicy | None = None
    ) -> None:
        self.engine = engine
        self.audit = audit
        self.policy = policy or ThrottlePolicy()

    @staticmethod
    def _reserve(session: Session, key: tuple[str, str]) -> AuthFailureRow:
        project, role = key
        upsert(
            session,
            AuthFailureRow,
            [{"project": project, "role": role, "failures": 0, "next_attempt": 0.0}],
        )
        return session.exec(
            select(AuthFailureRow)
            .where(AuthFailureRow.project == project, AuthFailureRow.role == role)
            .with_for_update()
        ).one()

    def begin(self, project: str, role: str, slot: str) -> Attempt:
        """Count an attempt on ``slot`` (and on the vault), wait until both allow it to start,
        and return it."""
        try:
            with Session(self.engine) as session:
                now = time.time()
                row = self._reserve(session, slot_row(project, slot))
                vault = self._reserve(session, VAULT_ROW)
                if vault.failures and now > vault.next_attempt + VAULT_IDLE_RESET:
                    vault.failures, vault.next_attempt = 0, 0.0
                start = max(now, row.next_attempt, vault.next_attempt)
                row.failures += 1
                vault.failures += 1
                next_delay = self.policy.delay(row.failures)
                row.next_attempt = start + next_delay
                vault.next_attempt = start + self.policy.delay(vault.failures, VAULT_FREE_ATTEMPTS)
                failures = row.failures
                session.add(row)
                session.add(vault)
                session.commit()
        except SQLAlchemyError as exc:
            raise DatabaseError(f"cannot record the passphrase attempt: {failure(exc)}") from exc
        wait = max(0.0, start - now)
        if wait:
            time.sleep(wait)
        return Attempt(project, role, slot, failures, round(wait, 3), next_delay)

    def succeeded(self, attempt: Attempt, others: Sequence[Attempt] = ()) -> None:
        """A passphrase opened ``attempt``'s slot: reset that slot's count only.

        ``others`` are the attempts of the same call on other slots that this passphrase
        did not open: a correct passphrase is not a guess, so their counts (and the vault's)
        are given back one each, never reset.
        """
        try:
            with Session(self.engine) as session:
                row = session.get(AuthFailureRow, slot_row(attempt.project, attempt.slot))
                if row is not None:
                    row.failures, row.next_attempt = 0, 0.0
                    session.add(row)
                for other in others:
                    self._give_back(session, slot_row(other.project, other.slot))
                for _ in range(1 + len(others)):
                    self._give_back(session, VAULT_ROW)
                session.commit()
        except SQLAlchemyError as exc:
            raise DatabaseError(f"cannot record the passphrase attempt: {failure(exc)}") from exc

    @staticmethod
    def _give_back(session: Session, key: tuple[str, str]) -> None:
        row = session.get(AuthFailureRow, key)
        if row is not None and row.failures > 0:
            row.failures -= 1
            session.add(row)

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

    def failures(self, project: str, slot: str) -> int:
        """Failed attempts in a row recorded for key slot ``slot`` of ``project``."""
        with Session(self.engine) as session:
            row = session.get(AuthFailureRow, slot_row(project, slot))
            return row.failures if row is not None else 0

    def vault_failures(self) -> int:
        """Failed attempts counted on the whole vault (every project and slot)."""
        with Session(self.engine) as session:
            row = session.get(AuthFailureRow, VAULT_ROW)
            return row.failures if row is not None else 0

    def closed_at(self, project: str) -> datetime | None:
        """When the linkage store recorded the project as closed, or None."""
        try:
            with Session(self.engine) as session:
                row = session.get(ProjectKeyRow, project)
        except SQLAlchemyError as exc:
            raise DatabaseError(f"cannot read the linkage store: {failure(exc)}") from exc
        return row.closed_at if row is not None else None
