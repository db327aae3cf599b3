"""The append-only, hash-chained audit log.

Every record holds the SHA-256 of its predecessor, so editing, deleting or reordering any
record breaks the chain. Truncating the end of the log is caught by two witnesses of the last
record: the ``audit_head`` row in the database and a checkpoint file in the vault folder, one
per database the vault has used (a missing or unreadable checkpoint is a failure, never
"nothing to compare"; a checkpoint the chain no longer holds is never advanced). A third witness is
kept wherever the user likes: ``pseudo audit head`` prints the last record's number and hash,
and ``verify(expect=[(seq, hash)])`` fails unless the chain still holds that record unchanged.

Records name pseudonyms, never identities. Appending needs no key, so a refused or failed
request (wrong passphrase, missing reason) is logged as surely as a successful one. When the
process holds a project's *audit key* (it opened one of the project's key slots), the record is
also authenticated: ``mac`` is an HMAC-SHA256 of its hash under that key, and the record names
the project and the slot (``mac_key``, ``mac_slot``, both inside the hash). Because each hash
covers its predecessor, one authenticated record vouches for every record before it: someone
who can write the database and the vault folder but holds no passphrase cannot rewrite any
record that precedes an authenticated one without the check by a key holder failing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from keystore import crypto
from keystore.actions import AuditAction, AuditOutcome
from keystore.db import AuditHead, AuditRow, AuditSignatureRow, failure
from keystore.errors import DatabaseError
from keystore.stamps import GENESIS, os_user, utcnow

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
    "mac_key",
    "mac_slot",
)
_MAC_LABEL = "pseudo-audit/1"
_SIG_LABEL = "pseudo-audit-signature/1"
#: The key of a record's details naming the re-identifiers' key that signed it (hashed).
SIGNED_BY = "signed_by"
_HEAD_RE = re.compile(r"^(\d+):([0-9a-f]{64})$")

CheckpointState = Literal["not configured", "missing", "unreadable", "ok"]


def record_hash(row: AuditRow) -> str:
    """SHA-256 over the canonical JSON of a record's fields (its own hash and MAC excluded)."""
    payload = {name: getattr(row, name) for name in _HASHED_FIELDS}
    data = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def record_mac(audit_key: bytes, digest: str) -> str:
    """HMAC-SHA256 (hex) of a record's hash under a project's audit key."""
    return crypto.mac(audit_key, _MAC_LABEL, digest).hex()


def signature_statement(seq: int, digest: str) -> tuple[str, str, str]:
    """What a re-identifier signs for record ``seq``: its number and hash (so the log up to it)."""
    return _SIG_LABEL, str(seq), digest


def parse_head(text: str) -> tuple[int, str]:
    """Parse ``SEQ:HASH`` as ``pseudo audit head`` prints it; ``ValueError`` if malformed."""
    match = _HEAD_RE.match(text.strip().lower())
    if not match:
        raise ValueError(f"{text!r}: expected SEQ:HASH, e.g. 42:{'ab' * 32}")
    return int(match.group(1)), match.group(2)


@dataclass
class VerifyResult:
    """Outcome of :meth:`AuditLog.verify`.

    ``authenticated`` counts records whose MAC was checked with a key this process holds, the
    last of them being ``authenticated_through``; ``unchecked`` counts records that carry a MAC
    of a project whose key was not given.
    """

    count: int
    problems: list[str] = field(default_factory=list)
    head: tuple[int, str] = (0, GENESIS)
    authenticated: int = 0
    authenticated_through: int = 0
    unchecked: int = 0
    keyed_projects: list[str] = field(default_factory=list)
    #: records whose re-identifier's signature verified under their project's pinned key
    signed: int = 0

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems


class AuditLog:
    """Append to and verify the audit log of one linkage store.

    ``checkpoint`` is the vault's file for this database; ``database`` names the database (no
    password) when it is not the vault's own, and is written into the file and the messages.
    """

    def __init__(
        self, engine: Engine, checkpoint: Path | None = None, *, database: str | None = None
    ) -> None:
        self.engine = engine
        self.checkpoint = checkpoint
        self.database = database
        self._keys: dict[str, tuple[str, bytes]] = {}
        self._signers: dict[str, tuple[str, bytes]] = {}
        #: the pinned verify keys of the vault's projects (set by the session)
        self.pins: Callable[[], Mapping[str, Sequence[bytes]]] | None = None

    # -- keys ------------------------------------------------------------------------------
    def add_key(self, project: str, slot: str, audit_key: bytes) -> None:
        """Authenticate this process's later records of ``project`` with its audit key."""
        self._keys[project] = (slot, audit_key)

    def add_signer(self, project: str, signing_key: bytes) -> None:
        """Sign this process's later records of ``project`` with the re-identifiers' key."""
        public = crypto.ed25519_public(signing_key)
        self._signers[project] = (crypto.fingerprint(public), signing_key)

    def has_key(self, project: str) -> bool:
        """True when records of ``project`` are authenticated (and checked) by this process."""
        return project in self._keys

    # -- appending -------------------------------------------------------------------------
    def append(
        self,
        action: AuditAction | str,
        actor: str,
        outcome: AuditOutcome | str,
        *,
        project: str | None = None,
        subject: str | None = None,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> AuditRow:
        """Append one record and return it; the write is durable when this returns.

        ``action`` is an :class:`AuditAction` (or its value; any other string is a
        ``ValueError``); ``outcome`` an :class:`AuditOutcome` or a string that names a cause
        (:func:`keystore.actions.outcome_with`).
        """
        action = AuditAction(action).value
        outcome = str(outcome.value if isinstance(outcome, AuditOutcome) else outcome)
        keyed = self._keys.get(project) if project is not None else None
        signer = self._signers.get(project) if project is not None else None
        if signer is not None:
            details = {**(details or {}), SIGNED_BY: signer[0]}
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
                    mac_key=project if keyed else None,
                    mac_slot=keyed[0] if keyed else None,
                )
                row.hash = record_hash(row)
                if keyed:
                    row.mac = record_mac(keyed[1], row.hash)
                head.seq, head.hash = row.seq, row.hash
                session.add(row)
                session.add(head)
                if signer is not None and project is not None:
                    signature = crypto.sign(signer[1], *signature_statement(row.seq, row.hash))
                    session.add(
                        AuditSignatureRow(seq=row.seq, project=project, signature=signature.hex())
                    )
                session.commit()
                session.refresh(row)
        except SQLAlchemyError as exc:
            raise DatabaseError(f"cannot write the audit log: {failure(exc)}") from exc
        self._write_checkpoint(row.seq, row.hash)
        return row

    def record_run(
        self,
        run_id: str,
        project: str,
        policy: str,
        outcome: AuditOutcome | str,
        counts: dict[str, int] | None = None,
        *,
        actor: str | None = None,
    ) -> AuditRow:
        """The record of a run of ``project`` under ``policy`` (its name or hash):
        :attr:`AuditOutcome.STARTED` when it starts, and how it ended (``RUN_COMPLETED``,
        ``RUN_INTERRUPTED``, ``RUN_FAILED``) with its counts of files by outcome."""
        return self.append(
            AuditAction.RUN,
            actor or os_user(),
            outcome,
            project=project,
            details={"run_id": run_id, "policy": policy, **(counts or {})},
        )

    def record_api_session(
        self, project: str, datasets: int, policy: str, *, actor: str | None = None
    ) -> AuditRow:
        """The record of a Python API session that pseudonymized ``datasets`` data sets of
        ``project`` under ``policy`` (its hash)."""
        return self.append(
            AuditAction.PSEUDONYMIZE_API,
            actor or os_user(),
            AuditOutcome.SUCCESS,
            project=project,
            details={"datasets": datasets, "policy": policy},
        )

    # -- the vault's checkpoint ------------------------------------------------------------
    def _write_checkpoint(self, seq: int, digest: str, *, force: bool = False) -> None:
        """Advance the checkpoint; a missing or unreadable one is left alone unless ``force``.

        Healing a checkpoint silently would let someone delete the last records and the file,
        trigger any append (a wrong passphrase will do), and pass verification. For the same
        reason a checkpoint naming a record the chain no longer holds (the log was cut back and
        appended to) is not advanced past it.
        """
        if self.checkpoint is None:
            return
        state, current_seq, current_hash = self._checkpoint_state()
        if not force:
            if state != "ok" or current_seq >= seq:
                return
            if not self._holds(current_seq, current_hash):
                return
        self._store_checkpoint(seq, digest, exclusive=False)

    def _holds(self, seq: int, digest: str) -> bool:
        """True when the chain still holds record ``seq`` with hash ``digest``."""
        if seq == 0:
            return digest == GENESIS
        try:
            with Session(self.engine) as session:
                row = session.get(AuditRow, seq)
        except SQLAlchemyError as exc:
            raise DatabaseError(f"cannot read the audit log: {failure(exc)}") from exc
        return row is not None and row.hash == digest

    def _store_checkpoint(self, seq: int, digest: str, *, exclusive: bool) -> bool:
        """Write the checkpoint file (owner-only, flushed); with ``exclusive``, only if it does
        not exist yet. Returns False if ``exclusive`` found one already there."""
        assert self.checkpoint is not None
        self.checkpoint.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        data: dict[str, Any] = {"seq": seq, "hash": digest}
        if self.database is not None:
            data["database"] = self.database
        tmp = self.checkpoint.with_name(f".{self.checkpoint.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle)
                handle.flush()
                os.fsync(handle.fileno())
            if not exclusive:
                os.replace(tmp, self.checkpoint)
                return True
            try:
                os.link(tmp, self.checkpoint)  # atomic, and never over an existing file
            except FileExistsError:
                return False
            return True
        finally:
            tmp.unlink(missing_ok=True)

    def start_checkpoint(self) -> bool:
        """Give a database this vault has no checkpoint for its first one; True if it did.

        An empty log starts at record 0 (a new database: every later record is witnessed); a
        log that others wrote starts at its last record, once its chain and head row check out
        (an unsound log gets no checkpoint, and verification reports both). An existing
        checkpoint, even an unreadable one, is never replaced.
        """
        if self.checkpoint is None or self.checkpoint.exists():
            return False
        result = self.verify(check_checkpoint=False)
        if not result.ok:
            return False
        try:
            return self._store_checkpoint(*result.head, exclusive=True)
        except OSError:  # a vault folder this process may not write: verification says so
            return False

    def reset_checkpoint(self) -> tuple[int, str]:
        """Write the current last record as the vault's checkpoint (after a verified repair)."""
        seq, digest = self.head()
        self._write_checkpoint(seq, digest, force=True)
        return seq, digest

    def repair_checkpoint(
        self, expect: Sequence[tuple[int, str]] = (), *, actor: str | None = None
    ) -> VerifyResult:
        """Re-create a lost checkpoint once the log checks out, and record the repair.

        The chain is verified without the checkpoint, with every ``expect`` record (kept
        outside the vault); only if that passes is the last record written as the new
        checkpoint (``head`` of the result) and an ``audit.checkpoint`` record appended.
        Otherwise nothing changes and the result lists the problems.
        """
        result = self.verify(expect=expect, check_checkpoint=False)
        if not result.ok:
            return result
        seq, digest = self.reset_checkpoint()
        result.head = (seq, digest)
        self.append(
            AuditAction.AUDIT_CHECKPOINT,
            actor or os_user(),
            AuditOutcome.SUCCESS,
            details={"head": f"{seq}:{digest}", "expected": [f"{s}:{h}" for s, h in expect]},
        )
        return result

    def _checkpoint_state(self) -> tuple[CheckpointState, int, str]:
        if self.checkpoint is None:
            return "not configured", 0, ""
        if not self.checkpoint.exists():
            return "missing", 0, ""
        try:
            data = json.loads(self.checkpoint.read_text(encoding="utf-8"))
            return "ok", int(data["seq"]), str(data["hash"])
        except (OSError, ValueError, KeyError, TypeError):
            return "unreadable", 0, ""

    # -- reading ---------------------------------------------------------------------------
    def records(self) -> list[AuditRow]:
        """Every record, in sequence order."""
        try:
            with Session(self.engine) as session:
                return list(session.exec(select(AuditRow).order_by(col(AuditRow.seq))))
        except SQLAlchemyError as exc:
            raise DatabaseError(f"cannot read the audit log: {failure(exc)}") from exc

    def last_record(self) -> AuditRow | None:
        """The record with the highest sequence number, if any."""
        try:
            with Session(self.engine) as session:
                return session.exec(
                    select(AuditRow).order_by(col(AuditRow.seq).desc()).limit(1)
                ).first()
        except SQLAlchemyError as exc:
            raise DatabaseError(f"cannot read the audit log: {failure(exc)}") from exc

    def head(self) -> tuple[int, str]:
        """Sequence number and hash of the last record (``(0, GENESIS)`` for an empty log)."""
        row = self.last_record()
        return (row.seq, row.hash) if row is not None else (0, GENESIS)

    # -- verifying -------------------------------------------------------------------------
    def verify(
        self, expect: Sequence[tuple[int, str]] = (), *, check_checkpoint: bool = True
    ) -> VerifyResult:
        """Check the whole chain, its witnesses, every MAC this process can check and ``expect``.

        ``expect`` lists records kept outside the vault (``(seq, hash)`` from ``audit head``):
        each must still be in the chain, unchanged.
        """
        rows = self.records()
        result = VerifyResult(count=len(rows), keyed_projects=sorted(self._keys))
        problems = result.problems
        if not rows and check_checkpoint and self.checkpoint is not None and self.database is None:
            problems.append(
                "the log is empty, but a vault's own log always holds at least the record of its "
                "creation (the log was wiped)"
            )
        signatures = _Signatures(self._signatures(), dict(self.pins() if self.pins else {}))
        previous = GENESIS
        for expected_seq, row in enumerate(rows, start=1):
            if row.seq != expected_seq:
                problems.append(
                    f"record {row.seq}: expected sequence number {expected_seq} "
                    "(a record was deleted or inserted)"
                )
            if row.prev_hash != previous:
                problems.append(
                    f"record {row.seq}: does not follow the record before it "
                    "(records were deleted, inserted or reordered)"
                )
            if record_hash(row) != row.hash:
                problems.append(f"record {row.seq}: content does not match its hash (edited)")
            self._check_mac(row, result)
            signatures.check(row, result)
            previous = row.hash
            if len(problems) >= 20:
                problems.append("... further problems not listed")
                return result
        last_seq, last_hash = (rows[-1].seq, rows[-1].hash) if rows else (0, GENESIS)
        result.head = (last_seq, last_hash)
        with Session(self.engine) as session:
            head = session.get(AuditHead, 1)
        if head is not None and (head.seq, head.hash) != (last_seq, last_hash):
            problems.append(
                f"the log ends at record {last_seq} but its head names record {head.seq} "
                "(records were removed from the end)"
            )
        for seq in sorted(signatures.left):
            problems.append(
                f"record {seq}, signed by a re-identifier, is no longer in the log (deleted or "
                "rewritten)"
            )
        by_seq = {row.seq: row.hash for row in rows}
        by_seq[0] = GENESIS
        if check_checkpoint:
            self._check_checkpoint(by_seq, last_seq, problems)
        for seq, digest in expect:
            if seq not in by_seq:
                problems.append(
                    f"record {seq} given with --expect is not in the log, which ends at record "
                    f"{last_seq} (records were removed from the end)"
                )
            elif by_seq[seq] != digest:
                problems.append(
                    f"record {seq}: differs from the one given with --expect (log was rewritten)"
                )
        return result

    def _signatures(self) -> dict[int, tuple[str, str]]:
        """The re-identifiers' signatures, by sequence number: ``(project, signature hex)``."""
        try:
            with Session(self.engine) as session:
                found = session.exec(select(AuditSignatureRow))
                return {row.seq: (row.project, row.signature) for row in found}
        except SQLAlchemyError as exc:
            raise DatabaseError(f"cannot read the audit log: {failure(exc)}") from exc

    def _check_mac(self, row: AuditRow, result: VerifyResult) -> None:
        if row.mac_key is None:
            if row.mac is not None:
                result.problems.append(f"record {row.seq}: carries a MAC it does not declare")
            return
        if row.mac is None:
            result.problems.append(
                f"record {row.seq}: declares a MAC of project {row.mac_key!r} but carries none "
                "(stripped)"
            )
            return
        keyed = self._keys.get(row.mac_key)
        if keyed is None:
            result.unchecked += 1
            return
        if row.mac is None or not hmac.compare_digest(row.mac, record_mac(keyed[1], row.hash)):
            result.problems.append(
                f"record {row.seq}: its MAC under the audit key of project {row.mac_key!r} does "
                "not verify (forged or edited)"
            )
            return
        result.authenticated += 1
        result.authenticated_through = row.seq

    def _check_checkpoint(self, by_seq: dict[int, str], last_seq: int, problems: list[str]) -> None:
        state, seq, digest = self._checkpoint_state()
        of = f" of database {self.database}" if self.database is not None else ""
        if state == "missing":
            problems.append(
                f"{self.checkpoint}: the vault's checkpoint{of} is missing (restore it from a "
                "backup, or re-anchor with `pseudo audit checkpoint --expect SEQ:HASH`)"
            )
        elif state == "unreadable":
            problems.append(f"{self.checkpoint}: the vault's checkpoint{of} is unreadable")
        elif state == "ok":
            if seq > last_seq:
                problems.append(
                    f"the log ends at record {last_seq} but this vault saw record {seq} "
                    "(records were removed from the end)"
                )
            elif by_seq.get(seq) != digest:
                problems.append(
                    f"record {seq}: differs from the one this vault saw (log was rewritten)"
                )


class _Signatures:
    """Checks the re-identifiers' signatures along the chain, record by record.

    A record that says it was signed (``signed_by`` in its hashed details) must have a
    signature that verifies under one of its project's pinned verify keys; a signature whose
    record is gone is a deletion; and once a project has a signed record, every later
    successful re-identification of it must be signed too (an operator cannot sign one).
    """

    def __init__(
        self, signatures: dict[int, tuple[str, str]], pins: dict[str, Sequence[bytes]]
    ) -> None:
        self.left = dict(signatures)
        self.pins = pins
        self.first_signed: dict[str, int] = {}

    def check(self, row: AuditRow, result: VerifyResult) -> None:
        """Check one record (in chain order)."""
        stored = self.left.pop(row.seq, None)
        claimed = _claims_signature(row)
        project = row.project or ""
        valid = False
        if stored is not None:
            valid = self._verifies(row, stored, result)
        elif claimed:
            result.problems.append(
                f"record {row.seq}: says a re-identifier signed it, but its signature is gone "
                "(deleted)"
            )
        if (
            not valid
            and row.action == AuditAction.REIDENTIFY.value
            and row.outcome == AuditOutcome.SUCCESS.value
            and project in self.first_signed
        ):
            result.problems.append(
                f"record {row.seq}: a re-identification of project {project!r} that no "
                "re-identifier signed (forged)"
            )
        if valid:
            self.first_signed.setdefault(project, row.seq)

    def _verifies(self, row: AuditRow, stored: tuple[str, str], result: VerifyResult) -> bool:
        project, signature = stored
        keys = self.pins.get(project)
        if keys is None:  # a project this vault does not hold: nothing to check it with
            return False
        try:
            raw = bytes.fromhex(signature)
        except ValueError:
            raw = b""
        statement = signature_statement(row.seq, row.hash)
        if project == row.project and any(
            crypto.verify_signature(key, raw, *statement) for key in keys
        ):
            result.signed += 1
            return True
        result.problems.append(
            f"record {row.seq}: its re-identifier's signature does not verify under the pinned "
            f"key of project {project!r} (forged, or the log was rewritten)"
        )
        return False


def _claims_signature(row: AuditRow) -> bool:
    """True when a record's (hashed) details name the re-identifiers' key that signed it."""
    try:
        details = json.loads(row.details or "{}")
    except ValueError:
        return False
    return isinstance(details, dict) and SIGNED_BY in details
