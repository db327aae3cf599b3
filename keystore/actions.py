"""What the audit log records: the actions and the fixed outcomes, as enums.

The values are the strings stored in the log since its first release. Records already stored
are hashed over them, so a value must never change; a new action gets a new member.

Kept apart from :mod:`keystore.audit` so that naming an action does not load the database
layers.
"""

from __future__ import annotations

import enum


class AuditAction(enum.StrEnum):
    """Every kind of audit record, each written by the keystore operation that does it."""

    VAULT_INIT = "vault.init"
    VAULT_BACKUP = "vault.backup"
    VAULT_RESTORE = "vault.restore"
    PROJECT_CREATE = "project.create"
    PROJECT_CLOSE = "project.close"
    SLOT_ADD = "slot.add"
    SLOT_REMOVE = "slot.remove"
    SLOT_REWRAP = "slot.rewrap"
    UNLOCK = "unlock"
    REID_KEY_ROTATE = "reid-key.rotate"
    #: a project made before pins existed gets its re-identification key pinned (signed)
    REID_KEY_PIN = "reid-key.pin"
    #: a re-identifier's routine check of the pinned key and the newest sealed records
    REID_KEY_CHECK = "reid-key.check"
    REIDENTIFY = "reidentify"
    AUDIT_CHECKPOINT = "audit.checkpoint"
    RUN = "run"
    #: a project records its policy (first run) or changes it (``--change-policy``), or a run
    #: with another policy is refused
    PROJECT_POLICY = "project.policy"
    #: a project's trial settings (sponsor, protocol...) are set or changed
    PROJECT_TRIAL = "project.trial"
    PSEUDONYMIZE_API = "pseudonymize.api"
    #: a site is registered in a project (``pseudo project add-site``)
    SITE_ADD = "site.add"
    #: a trial's own subject IDs become the pseudonyms of their patients
    SUBJECTS_IMPORT = "subjects.import"
    #: a patient ID (or several) joins another pseudonym (``pseudo identity merge``)
    IDENTITY_MERGE = "identity.merge"
    #: a second person behind one patient ID gets a pseudonym of their own
    IDENTITY_SPLIT = "identity.split"


class AuditOutcome(enum.StrEnum):
    """The fixed outcomes of audit records.

    An outcome that names a cause is a member's value, a colon and the cause (e.g.
    ``refused: missing reason``, ``failed: DatabaseError; nothing changed``): see
    :func:`outcome_with`.
    """

    SUCCESS = "success"
    STARTED = "started"
    NOT_FOUND = "not found"
    REFUSED = "refused"
    DENIED = "denied"
    ERROR = "error"
    FAILED = "failed"
    WRONG_PASSPHRASE = "denied: wrong passphrase"
    UNKNOWN_PROJECT = "refused: unknown project"
    PROJECT_CLOSED = "refused: project closed"
    AMBIGUOUS_REQUEST = "refused: give exactly one of pseudonym or study UID"
    SEALED_RECORD_UNREADABLE = "error: a sealed record does not open"
    #: a key rotation that a crash interrupted, finished or undone when the vault is opened
    ROTATION_COMPLETED = "completed after an interruption"
    ROTATION_DISCARDED = "discarded after an interruption; nothing changed"
    #: how a run ended (``run`` records)
    RUN_COMPLETED = "completed"
    RUN_INTERRUPTED = "interrupted"
    RUN_FAILED = "failed"  # an alias of FAILED
    #: a run found dead by a later run into the same output (killed, or its machine lost)
    RUN_KILLED = "killed"


def outcome_with(verdict: AuditOutcome, cause: str) -> str:
    """An outcome naming its cause: ``"refused: missing reason"`` (never an identifying value)."""
    return f"{verdict.value}: {cause}"
