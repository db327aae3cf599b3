"""The re-identifier's (DPO's) routine check of the re-identification key.

An operator holds the project secret, so they can recompute the settings MAC over a public key
of their own; what they cannot make is the re-identifiers' signature (the pin) over it, nor
open a record sealed to the real key. :func:`check_reid_key` opens a re-identification slot and
checks, with what only re-identifiers hold:

* the pin in the project file is the one the opened private key makes, and it signs the
  project's public key (a swapped key, or a swapped key *and* pin, fails here);
* the newest sealed linkage records open with the private key (the probe: records that the
  runs actually sealed, so a run that sealed to another key shows at once).

The check is recorded in the audit log, signed by the re-identifiers' key: its head is the one
to keep outside the vault.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from keystore import crypto
from keystore.actions import AuditAction, AuditOutcome, outcome_with
from keystore.errors import CorruptVaultError, InvalidTokenError, KeystoreError, PinnedKeyError
from keystore.linkage import sealed_aad
from keystore.stamps import os_user

if TYPE_CHECKING:
    from keystore.session import VaultSession

#: How many of the newest linkage records the check opens.
PROBES = 5


@dataclass(frozen=True)
class KeyCheck:
    """What the routine check found (fingerprints only, never a key)."""

    project: str
    pin: str  # fingerprint of the re-identifiers' verify key: compare with the one kept
    public_key: str  # fingerprint of the X25519 public key runs seal to
    probed: int  # newest sealed records opened
    head: tuple[int, str]  # the audit record of the check


def check_reid_key(
    session: VaultSession, name: str, passphrase: str, *, probes: int = PROBES
) -> KeyCheck:
    """Open a re-identification slot of ``name`` and check its pin and newest records.

    Raises :class:`PinnedKeyError` if the pin or the public key is not the re-identifiers'
    own, :class:`CorruptVaultError` if a newest record does not open; either is recorded.
    """
    vault = session.vault
    key = vault.unlock_reidentifier(name, passphrase)
    project = vault.project(name)
    try:
        pin = project.reid_pin
        if pin is None or not pin.verifies(name, project.reid_public_key):
            raise PinnedKeyError(
                f"project {name!r}: its re-identification public key is not pinned by the "
                "re-identifiers' signature (the project file was altered)"
            )
        rows = session.linkage.newest_records(name, probes)
        for row in rows:
            try:
                key.open(row.sealed, sealed_aad(row.project, row.kind, row.key))
            except InvalidTokenError as exc:
                raise CorruptVaultError(
                    f"project {name!r}: a newest sealed record (run {row.run_id}) does not open "
                    "with the re-identifiers' key: a run sealed records to another key"
                ) from exc
    except KeystoreError as exc:
        session.audit.append(
            AuditAction.REID_KEY_CHECK,
            os_user(),
            outcome_with(AuditOutcome.FAILED, exc.__class__.__name__),
            project=name,
            details={"slot": key.slot},
        )
        raise
    record = session.audit.append(
        AuditAction.REID_KEY_CHECK,
        os_user(),
        AuditOutcome.SUCCESS,
        project=name,
        details={"slot": key.slot, "reid_pin": pin.fingerprint, "probed": len(rows)},
    )
    return KeyCheck(
        name,
        pin.fingerprint,
        crypto.fingerprint(project.reid_public_key),
        len(rows),
        (record.seq, record.hash),
    )
