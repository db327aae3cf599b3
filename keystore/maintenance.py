"""Key rotation, closing a project (crypto-shredding), backup and restore.

Each works on an open :class:`~keystore.session.VaultSession`, holds the project's lock while
it changes the project file, and leaves a record in the audit log.

Rotation writes the project's next file beside the current one, re-seals every linkage record
in one database transaction (which also moves the project's key row to the new public key),
and only then puts the next file in place. A crash before the commit leaves the old state; a
crash after it is completed the next time the vault is opened (:func:`recover`), because the
key row in the database says which file is current.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keystore import crypto
from keystore.actions import AuditAction, AuditOutcome, outcome_with
from keystore.db import busy_timeout
from keystore.errors import BackupError, CorruptVaultError, SlotError
from keystore.stamps import os_user, utcnow
from keystore.vault import CHECKPOINT_DIR, ProjectFile, ReidPin, Vault, settings_mac

if TYPE_CHECKING:
    from keystore.audit import VerifyResult
    from keystore.session import VaultSession

BACKUP_FORMAT = "pseudo-backup/1"
MANIFEST = "backup.json"


# -- rotation ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rotation:
    """What a key rotation did."""

    project: str
    records: int
    slots: list[str]
    old_key: str  # fingerprints, not the keys
    new_key: str


def rotate_reid_key(
    session: VaultSession,
    name: str,
    operator_passphrase: str,
    reid_passphrase: str,
    *,
    on_progress: Callable[[str, int], None] | None = None,
    actor: str | None = None,
) -> Rotation:
    """Give the project a new X25519 re-identification key pair.

    Needs an operator passphrase (the settings MAC over the new public key is keyed by the
    project secret) and a re-identification passphrase (to open the records). Every linkage
    record is re-sealed in one transaction; every re-identification slot gets the new private
    key sealed to its own public key, so nobody's passphrase changes. ``on_progress`` is called
    with ``("resealing", n)`` after each chunk and ``("committed", n)`` after the commit. The
    rotation is recorded in the audit log (by ``actor``, default the operating-system user and
    host) when it starts and when it ends.
    """
    vault = session.vault
    who = actor or os_user()
    with vault.lock(name):
        project = vault.project(name)
        vault.refuse_closed(project, "its key can no longer be rotated")
        operator = vault.open_slot(project, "operator", operator_passphrase)
        vault.check_settings(project, operator.key)
        reid = vault.open_slot(project, "reidentifier", reid_passphrase)
        new_private, new_public = crypto.generate_x25519()
        slots = [
            s.reseal(name, new_private, reid.audit_key) if s.role == "reidentifier" else s
            for s in project.slots
        ]
        following = ProjectFile(
            settings=project.settings,
            reid_public_key=new_public,
            settings_mac=settings_mac(
                operator.key,
                project.settings,
                new_public,
                project.policy,
                project.sites,
                trial=project.trial,
            ),
            slots=slots,
            created=project.created,
            reid_pin=ReidPin.make(name, new_private, _earlier_verify_keys(project, reid.key)),
            policy=project.policy,
            trial=project.trial,
            sites=project.sites,
        )
        old_fp, new_fp = crypto.fingerprint(project.reid_public_key), crypto.fingerprint(new_public)
        details: dict[str, Any] = {"old_key": old_fp, "new_key": new_fp}
        staging = vault.write_staging(following)
        session.audit.append(
            AuditAction.REID_KEY_ROTATE, who, AuditOutcome.STARTED, project=name, details=details
        )
        try:
            count = session.linkage.reseal_all(
                name, reid.key, project.reid_public_key, new_public, on_progress
            )
        except BaseException as exc:
            staging.unlink(missing_ok=True)
            session.audit.append(
                AuditAction.REID_KEY_ROTATE,
                who,
                outcome_with(AuditOutcome.FAILED, f"{exc.__class__.__name__}; nothing changed"),
                project=name,
                details=details,
            )
            raise
        if on_progress is not None:
            on_progress("committed", count)
        os.replace(staging, vault.project_path(name))
    session.audit.add_signer(name, crypto.reid_signing_key(new_private))
    reid_slots = [s.name for s in slots if s.role == "reidentifier"]
    session.audit.append(
        AuditAction.REID_KEY_ROTATE,
        who,
        AuditOutcome.SUCCESS,
        project=name,
        details={
            **details,
            "records": count,
            "slots": reid_slots,
            "by_slots": [operator.slot, reid.slot],
        },
    )
    return Rotation(name, count, reid_slots, old_fp, new_fp)


def _earlier_verify_keys(project: ProjectFile, old_private: bytes) -> tuple[bytes, ...]:
    """The verify keys a rotated project's pin keeps, so records signed before still verify."""
    old = crypto.ed25519_public(crypto.reid_signing_key(old_private))
    kept = project.reid_pin.verify_keys if project.reid_pin is not None else [old]
    return tuple(dict.fromkeys([old, *kept]))


def recover(session: VaultSession) -> list[str]:
    """Finish or discard key rotations that a crash interrupted; return what was done.

    A staging file whose public key is the one the linkage store is sealed to is put in place
    (the records were re-sealed and committed); any other staging file is removed (the
    transaction never committed). A project locked by a running rotation is left alone.
    """
    vault = session.vault
    done: list[str] = []
    for staging in sorted((vault.path / "projects").glob("*.json.rotating")):
        name = staging.name.removesuffix(".json.rotating")
        with vault.lock(name, blocking=False) as locked:
            if not locked or not staging.exists():
                continue
            try:
                following = ProjectFile.from_json(json.loads(staging.read_text()), staging)
            except (OSError, ValueError, CorruptVaultError):
                staging.unlink(missing_ok=True)
                continue
            if session.linkage.sealed_to(name) == following.reid_public_key.hex():
                os.replace(staging, vault.project_path(name))
                outcome = AuditOutcome.ROTATION_COMPLETED
            else:
                staging.unlink()
                outcome = AuditOutcome.ROTATION_DISCARDED
            done.append(f"key rotation of project {name!r} {outcome.value}")
        session.audit.append(AuditAction.REID_KEY_ROTATE, os_user(), outcome, project=name)
    return done


# -- closing -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Closure:
    """What closing a project destroyed."""

    project: str
    destroyed_slots: list[str]
    records: int
    secret_destroyed: bool


def close_project(
    session: VaultSession,
    name: str,
    reid_passphrase: str | None,
    *,
    operator_passphrase: str | None = None,
    keep_operator_keys: bool = False,
    actor: str | None = None,
) -> Closure:
    """Anonymize a project for good: destroy its key material (crypto-shredding).

    A re-identification passphrase and an operator passphrase authorize it. Every key slot is
    removed from the project file: the re-identification slots (the only place the private
    key exists), so nobody can open a sealed record, and the operator slots (the only place the
    project secret exists), so nobody can compute a pseudonym of the project again, not even of
    a patient they know. The linkage store records the project as closed, so no run adds to it.
    The audit key goes with the slots: the project's audit MACs can no longer be checked.

    ``keep_operator_keys`` keeps the operator slots (no operator passphrase is needed then):
    operators can still check the audit MACs, and can still compute pseudonyms. Closing such a
    project again (without ``keep_operator_keys``) destroys those slots too; it needs only an
    operator passphrase, as no re-identification slot is left.

    Recorded in the audit log (by ``actor``, default the operating-system user and host) when
    it starts and when it ends.
    """
    vault = session.vault
    who = actor or os_user()
    destroy_secret = not keep_operator_keys
    with vault.lock(name):
        project = vault.project(name)
        finishing = project.closed and bool(project.slots) and destroy_secret
        if not finishing:
            vault.refuse_closed(project, "there is nothing left to close")
        if destroy_secret and operator_passphrase is None:
            raise SlotError(
                f"closing project {name!r} also destroys its project secret and needs an "
                "operator passphrase (to keep the operator slots: --keep-operator-keys)"
            )
        by_slots: list[str] = []
        if not finishing:
            if reid_passphrase is None:
                raise SlotError(f"closing project {name!r} needs a re-identification passphrase")
            by_slots.append(vault.open_slot(project, "reidentifier", reid_passphrase).slot)
        if operator_passphrase is not None and destroy_secret:
            by_slots.append(vault.open_slot(project, "operator", operator_passphrase).slot)
        destroyed = [s.name for s in project.slots if s.role == "reidentifier" or destroy_secret]
        session.audit.append(
            AuditAction.PROJECT_CLOSE,
            who,
            AuditOutcome.STARTED,
            project=name,
            details={
                "slots": destroyed,
                "by_slot": by_slots[0],
                "secret_destroyed": destroy_secret,
            },
        )
        if not finishing:
            session.linkage.mark_closed(name, project.reid_public_key)
        closed = ProjectFile(
            settings=project.settings,
            reid_public_key=project.reid_public_key,
            settings_mac=project.settings_mac,
            slots=[] if destroy_secret else project.slots_for("operator"),
            created=project.created,
            closed=True,
            closed_at=project.closed_at if finishing else utcnow().isoformat(),
            policy=project.policy,
            trial=project.trial,
            sites=project.sites,
        )
        vault.save_project(closed)
        vault.staging_path(name).unlink(missing_ok=True)
    records = session.linkage.count(name)
    session.audit.append(
        AuditAction.PROJECT_CLOSE,
        who,
        AuditOutcome.SUCCESS,
        project=name,
        details={
            "destroyed_slots": destroyed,
            "by_slots": by_slots,
            "linkage_records": records,
            "secret_destroyed": destroy_secret,
        },
    )
    return Closure(name, destroyed, records, destroy_secret)


# -- backup and restore --------------------------------------------------------------------
@dataclass
class BackupManifest:
    """``backup.json``: what a backup holds and the audit head it was taken at."""

    created: str
    source: str
    audit_head: str  # SEQ:HASH of the last audit record in the backup (or at backup time)
    database: str  # "sqlite" (pseudo.db included) or "external" (back it up yourself)
    files: dict[str, str] = field(default_factory=dict)  # relative path -> SHA-256

    def to_json(self) -> dict[str, Any]:
        """The manifest as written to ``backup.json``."""
        return {
            "format": BACKUP_FORMAT,
            "created": self.created,
            "source": self.source,
            "audit_head": self.audit_head,
            "database": self.database,
            "files": self.files,
        }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _copy_private(source: Path, target: Path) -> None:
    """Copy one file, owner-only, flushed to disk."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with source.open("rb") as src, os.fdopen(fd, "wb") as dst:
        shutil.copyfileobj(src, dst)
        dst.flush()
        os.fsync(dst.fileno())


def _new_private_dir(path: Path) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise BackupError(f"{path}: exists and is not an empty folder")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    (path / "projects").mkdir(mode=0o700, exist_ok=True)


def backup(session: VaultSession, dest: Path, *, actor: str | None = None) -> BackupManifest:
    """Copy the vault consistently to ``dest`` (a new, owner-only folder).

    Holds every project's lock (no slot change, rotation or close meanwhile), copies the vault
    and project files and the checkpoints (the vault's own and those of other databases it
    used), then the SQLite database with its online backup API
    (a consistent snapshot even while runs write to it). The checkpoint is copied before the
    database, so the copy's log always reaches it. A PostgreSQL store is not copied: back it
    up with ``pg_dump`` (``database`` says ``external``). The backup is recorded in the audit
    log (by ``actor``, default the operating-system user and host).
    """
    vault = session.vault
    dest = Path(dest)
    if dest.resolve().is_relative_to(vault.path.resolve()):
        raise BackupError(f"{dest}: a backup must not be inside the vault it copies")
    _new_private_dir(dest)
    with ExitStack() as stack:
        for name in vault.project_names():
            stack.enter_context(vault.lock(name))
        files = [
            Path("vault.json"),
            Path("audit-checkpoint.json"),
            *(
                Path(CHECKPOINT_DIR) / p.name
                for p in sorted(vault.path.glob(f"{CHECKPOINT_DIR}/*.json"))
            ),
            *(Path("projects") / p.name for p in sorted((vault.path / "projects").glob("*.json"))),
        ]
        for rel in files:
            if (vault.path / rel).exists():
                (dest / rel).parent.mkdir(mode=0o700, exist_ok=True)
                _copy_private(vault.path / rel, dest / rel)
        database = "external"
        if vault.uses_own_sqlite:
            database = "sqlite"
            target = dest / "pseudo.db"
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            source = sqlite3.connect(vault.path / "pseudo.db", timeout=busy_timeout())
            copy = sqlite3.connect(target)
            try:
                source.backup(copy)
                copy.execute("PRAGMA journal_mode=DELETE")
                check = copy.execute("PRAGMA integrity_check").fetchone()
                head = copy.execute(
                    "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1"
                ).fetchone()
            finally:
                copy.close()
                source.close()
            if not check or check[0] != "ok":
                raise BackupError(f"{target}: the copied database fails its integrity check")
            files.append(Path("pseudo.db"))
            seq, digest = (int(head[0]), str(head[1])) if head else session.audit.head()
        else:
            seq, digest = session.audit.head()
    manifest = BackupManifest(
        created=utcnow().isoformat(),
        source=str(vault.path.resolve()),
        audit_head=f"{seq}:{digest}",
        database=database,
        files={str(rel): _sha256(dest / rel) for rel in files if (dest / rel).exists()},
    )
    fd = os.open(dest / MANIFEST, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(manifest.to_json(), handle, indent=2, sort_keys=True)
        handle.write("\n")
    session.audit.append(
        AuditAction.VAULT_BACKUP,
        actor or os_user(),
        AuditOutcome.SUCCESS,
        details={"destination": str(dest.resolve()), "audit_head": manifest.audit_head},
    )
    return manifest


def read_manifest(backup_dir: Path) -> BackupManifest:
    """Read and check ``backup.json`` and the hash of every file it lists."""
    path = Path(backup_dir) / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BackupError(f"{path}: not a pseudo backup ({exc.__class__.__name__})") from exc
    if not isinstance(data, dict) or data.get("format") != BACKUP_FORMAT:
        raise BackupError(f"{path}: unknown backup format")
    manifest = BackupManifest(
        created=str(data["created"]),
        source=str(data["source"]),
        audit_head=str(data["audit_head"]),
        database=str(data["database"]),
        files={str(k): str(v) for k, v in data["files"].items()},
    )
    for rel, digest in manifest.files.items():
        file = Path(backup_dir) / rel
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise BackupError(f"{path}: lists a file outside the backup ({rel})")
        if not file.is_file() or _sha256(file) != digest:
            raise BackupError(f"{file}: missing or changed since the backup was made")
    return manifest


@dataclass(frozen=True)
class Restoration:
    """What a restore did: the backup's manifest, and the check of the restored audit log."""

    manifest: BackupManifest
    verified: VerifyResult


def restore(backup_dir: Path, dest: Path, *, actor: str | None = None) -> Restoration:
    """Restore a backup into ``dest`` (a new or empty folder), checking every file's hash.

    The restored vault is then opened and its audit log verified, the record the backup was
    taken at included (it must still be there, unchanged). If it checks out, the restore is
    recorded in the restored log (by ``actor``, default the operating-system user and host);
    if not, ``verified`` lists the problems and nothing is recorded.
    """
    from keystore.audit import parse_head
    from keystore.session import VaultSession

    manifest = read_manifest(backup_dir)
    dest = Path(dest)
    _new_private_dir(dest)
    for rel in manifest.files:
        (dest / rel).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _copy_private(Path(backup_dir) / rel, dest / rel)
    Vault.open(dest)  # fails clearly if the copy is not a vault
    with VaultSession(dest) as session:
        result = session.audit.verify(expect=[parse_head(manifest.audit_head)])
        if result.ok:
            session.audit.append(
                AuditAction.VAULT_RESTORE,
                actor or os_user(),
                AuditOutcome.SUCCESS,
                details={
                    "from": str(Path(backup_dir).resolve()),
                    "audit_head": manifest.audit_head,
                },
            )
    return Restoration(manifest, result)
