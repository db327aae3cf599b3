"""The key vault: a folder holding wrapped project secrets, key slots and the linkage store.

Layout (every file owner-only, the folder 0700)::

    vault.json               format, creation time, optional database URL
    projects/<name>.json     per project: settings, re-identification public key, key slots
    pseudo.db                the default SQLite linkage store and audit log
    audit-checkpoint.json    the last audit record this vault saw in its own database
    audit-checkpoints/*.json the same for each other database it used (``--db``), one each

A project's 256-bit secret exists in clear only in memory. It is wrapped with AES-256-GCM under
a key derived by scrypt from each operator's passphrase (one *operator slot* each). The project's
X25519 re-identification private key is held by *re-identification slots*: each slot has its
own X25519 key pair, whose private half is wrapped under the person's scrypt-derived key and to
whose public half the project's private key is sealed. So the project key can be rotated and
re-sealed to every re-identifier without knowing their passphrases, and a removed slot keeps
nothing that opens a later key. Every slot also carries the project's random *audit key*, which
authenticates the audit records written while a slot is open. The settings that shape
pseudonyms (prefix, date-shift range, public key) are authenticated with a key derived from the
secret, so swapping the public key in the file is detected at unlock.
"""

from __future__ import annotations

import base64
import fcntl
import hmac
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from keystore import crypto, strength
from keystore.actions import AuditAction, AuditOutcome, outcome_with
from keystore.errors import (
    AuthenticationError,
    CorruptVaultError,
    InvalidNameError,
    InvalidTokenError,
    KeystoreError,
    PinnedKeyError,
    ProjectClosedError,
    ProjectExistsError,
    ProjectNotFoundError,
    SiteError,
    SlotError,
    VaultExistsError,
    VaultNotFoundError,
    WeakPassphraseError,
)
from keystore.keyring import Keyring, ProjectSettings
from keystore.stamps import GENESIS, os_user, utcnow

if TYPE_CHECKING:
    from keystore.guard import Attempt, Guard

VAULT_FORMAT = "pseudo-vault/1"
#: The folder of the checkpoints of databases other than the vault's own.
CHECKPOINT_DIR = "audit-checkpoints"
PROJECT_FORMAT = "pseudo-project/2"
#: The format of a project file that records its policy (older versions refuse it by name
#: rather than take the recorded policy, which the settings MAC covers, for an alteration).
PROJECT_FORMAT_POLICY = "pseudo-project/3"
#: The format of a project file that registers sites (their namespaces shape pseudonyms, so an
#: older version, which would ignore them, refuses the file by name).
PROJECT_FORMAT_SITES = "pseudo-project/4"
#: The format of a project file that holds trial settings (older versions refuse it by name
#: rather than take the trial settings, which the settings MAC covers, for an alteration).
PROJECT_FORMAT_TRIAL = "pseudo-project/5"
_SLOT_AAD = "pseudo-slot/2"
_REID_SEAL_AAD = "pseudo-reid-slot/1"
_KEY_LEN = 32
MIN_PASSPHRASE_LENGTH = strength.MIN_LENGTH
DEFAULT_DATE_SHIFT = (-3652, -1)

Role = Literal["operator", "reidentifier"]
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_PREFIX_RE = re.compile(r"^[A-Z0-9]{1,12}$")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def _check_name(kind: str, name: str) -> str:
    if not _NAME_RE.match(name):
        raise InvalidNameError(
            f"{kind} name {name!r}: use 1-64 letters, digits, '.', '_', '@' or '-', "
            "starting with a letter or digit"
        )
    return name


def check_new_passphrase(passphrase: str, what: str) -> None:
    """Refuse a short, common or easily guessed passphrase for a new key slot
    (:mod:`keystore.strength`)."""
    reason = strength.weakness(passphrase)
    if reason is not None:
        raise WeakPassphraseError(f"{what} passphrase refused: {reason}")


def check_distinct(first: str, second: str, message: str) -> None:
    """Refuse two passphrases that are equal or near-identical (:func:`strength.near_identical`)."""
    if strength.near_identical(first, second):
        raise WeakPassphraseError(message)


def _write_private_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically with owner-only permissions."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CorruptVaultError(f"{path}: cannot read ({exc.__class__.__name__})") from exc
    if not isinstance(data, dict):
        raise CorruptVaultError(f"{path}: not a vault file")
    return data


@dataclass(frozen=True, repr=False)
class SlotContents:
    """What an opened slot yields: the role's key and the project's audit key."""

    slot: str
    role: Role
    key: bytes  # the project secret (operator) or re-identification private key
    audit_key: bytes

    def __repr__(self) -> str:
        return f"SlotContents(slot={self.slot!r}, role={self.role!r})"


@dataclass(frozen=True)
class KeySlot:
    """One person's way into a project, opened by their passphrase.

    An operator slot wraps ``secret | audit key`` under the scrypt-derived key. A
    re-identification slot wraps the private half of the slot's own X25519 key pair, and
    ``sealed`` holds ``project private key | audit key`` sealed to the slot's ``public_key``.
    """

    name: str
    role: Role
    salt: bytes
    params: crypto.ScryptParams
    nonce: bytes
    wrapped: bytes
    created: str
    public_key: bytes = b""
    sealed: bytes = b""

    def aad(self, project: str) -> bytes:
        """Associated data binding the wrapped key to this project, role and slot name."""
        return crypto.encode_parts(_SLOT_AAD, project, self.role, self.name)

    def seal_aad(self, project: str) -> bytes:
        """Associated data of a re-identification slot's sealed project key."""
        return crypto.encode_parts(_REID_SEAL_AAD, project, self.name, self.public_key)

    def to_json(self) -> dict[str, Any]:
        """Serialize for the project file."""
        data: dict[str, Any] = {
            "name": self.name,
            "role": self.role,
            "kdf": {"name": "scrypt", "salt": _b64(self.salt), **self.params.to_json()},
            "nonce": _b64(self.nonce),
            "wrapped": _b64(self.wrapped),
            "created": self.created,
        }
        if self.role == "reidentifier":
            data["public_key"] = _b64(self.public_key)
            data["sealed"] = _b64(self.sealed)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KeySlot:
        """Parse a slot from the project file."""
        kdf = data["kdf"]
        if kdf.get("name") != "scrypt":
            raise CorruptVaultError(f"key slot {data.get('name')!r}: unknown KDF")
        if data["role"] not in ("operator", "reidentifier"):
            raise CorruptVaultError(f"key slot {data.get('name')!r}: unknown role")
        params = crypto.ScryptParams(n=int(kdf["n"]), r=int(kdf["r"]), p=int(kdf["p"]))
        try:
            params.validate()
        except ValueError as exc:
            raise CorruptVaultError(f"key slot {data.get('name')!r}: {exc}") from exc
        reid = data["role"] == "reidentifier"
        return cls(
            name=data["name"],
            role=data["role"],
            salt=_unb64(kdf["salt"]),
            params=params,
            nonce=_unb64(data["nonce"]),
            wrapped=_unb64(data["wrapped"]),
            created=data["created"],
            public_key=_unb64(data["public_key"]) if reid else b"",
            sealed=_unb64(data["sealed"]) if reid else b"",
        )

    @classmethod
    def create(
        cls,
        project: str,
        name: str,
        role: Role,
        key: bytes,
        audit_key: bytes,
        passphrase: str,
        params: crypto.ScryptParams,
    ) -> KeySlot:
        """A new slot holding ``key`` and ``audit_key``, opened by ``passphrase``."""
        params.validate()
        salt = crypto.random_bytes(16)
        kek = crypto.derive_kek(passphrase, salt, params)
        if role == "operator":
            inner, public = key + audit_key, b""
        else:
            inner, public = crypto.generate_x25519()
        slot = cls(name, role, salt, params, b"", b"", utcnow().isoformat(), public)
        nonce, wrapped = crypto.wrap(kek, inner, slot.aad(project))
        slot = replace(slot, nonce=nonce, wrapped=wrapped)
        return slot.reseal(project, key, audit_key) if role == "reidentifier" else slot

    def reseal(self, project: str, private_key: bytes, audit_key: bytes) -> KeySlot:
        """Seal a (new) project private key to this re-identification slot; no passphrase needed."""
        if self.role != "reidentifier":
            raise SlotError(f"slot {self.name!r} is not a re-identification slot")
        sealed = crypto.seal(self.public_key, private_key + audit_key, self.seal_aad(project))
        return replace(self, sealed=sealed)

    def _inner(self, project: str, passphrase: str) -> bytes:
        kek = crypto.derive_kek(passphrase, self.salt, self.params)
        return crypto.unwrap(kek, self.nonce, self.wrapped, self.aad(project))

    def open(self, project: str, passphrase: str) -> tuple[bytes, bytes]:
        """Return ``(key, audit key)``, or raise :class:`InvalidTokenError`."""
        inner = self._inner(project, passphrase)
        if self.role == "operator":
            payload = inner
        else:
            payload = crypto.open_sealed(inner, self.sealed, self.seal_aad(project))
        if len(payload) != 2 * _KEY_LEN:
            raise InvalidTokenError(f"key slot {self.name!r} holds a malformed key")
        return payload[:_KEY_LEN], payload[_KEY_LEN:]

    def rewrap(
        self,
        project: str,
        passphrase: str,
        params: crypto.ScryptParams,
        new_passphrase: str | None = None,
    ) -> KeySlot:
        """The same slot under new scrypt parameters, a new salt and optionally a new passphrase."""
        params.validate()
        inner = self._inner(project, passphrase)
        salt = crypto.random_bytes(16)
        kek = crypto.derive_kek(new_passphrase or passphrase, salt, params)
        nonce, wrapped = crypto.wrap(kek, inner, self.aad(project))
        return replace(self, salt=salt, params=params, nonce=nonce, wrapped=wrapped)


_PIN_LABEL = "pseudo-reid-pin/1"


@dataclass(frozen=True)
class ReidPin:
    """The re-identification public key, pinned by the re-identifiers' own signature.

    ``verify_key`` is the Ed25519 public key of :func:`keystore.crypto.reid_signing_key`
    (derived from the X25519 private key, which only re-identification slots hold);
    ``signature`` signs the project, the X25519 public key, the verify key and the verify keys
    of earlier key pairs (``previous``, after rotations). An operator can recompute the
    settings MAC but cannot make this signature for a key of their own without replacing the
    verify key too, which the re-identifiers' routine check and their next unlock detect.
    """

    verify_key: bytes
    signature: bytes
    previous: tuple[bytes, ...] = ()

    @classmethod
    def make(cls, project: str, reid_private: bytes, previous: tuple[bytes, ...] = ()) -> ReidPin:
        """Pin the public key of ``reid_private`` for ``project`` (needs the private key)."""
        seed = crypto.reid_signing_key(reid_private)
        verify_key = crypto.ed25519_public(seed)
        public = crypto.public_from_private(reid_private)
        signature = crypto.sign(seed, *cls._statement(project, public, verify_key, previous))
        return cls(verify_key, signature, previous)

    @staticmethod
    def _statement(
        project: str, public: bytes, verify_key: bytes, previous: tuple[bytes, ...]
    ) -> tuple[str | bytes, ...]:
        return (_PIN_LABEL, project, public, verify_key, *previous)

    def verifies(self, project: str, public: bytes) -> bool:
        """True when the signature pins ``public`` as ``project``'s re-identification key."""
        statement = self._statement(project, public, self.verify_key, self.previous)
        return crypto.verify_signature(self.verify_key, self.signature, *statement)

    @property
    def fingerprint(self) -> str:
        """The short name of the verify key a DPO keeps outside the vault."""
        return crypto.fingerprint(self.verify_key)

    @property
    def verify_keys(self) -> list[bytes]:
        """Every verify key of the project, the current one first."""
        return [self.verify_key, *self.previous]

    def to_json(self) -> dict[str, Any]:
        """Serialize for the project file."""
        return {
            "verify_key": _b64(self.verify_key),
            "signature": _b64(self.signature),
            "previous": [_b64(key) for key in self.previous],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReidPin:
        """Parse the pin of a project file."""
        return cls(
            _unb64(data["verify_key"]),
            _unb64(data["signature"]),
            tuple(_unb64(key) for key in data.get("previous", [])),
        )


#: The namespace of the project's first site: that of the runs made before sites existed.
LEGACY_NAMESPACE = ""


@dataclass(frozen=True)
class SiteEntry:
    """A site of a project: its name (``--site``), its Clinical Trial Site ID, and the
    namespace of the patient IDs it issues without an Issuer of Patient ID.

    The first site added to a project takes :data:`LEGACY_NAMESPACE`, the namespace of every
    run made before (or without) sites, so those patients keep their pseudonyms; each later
    site gets a namespace of its own, and the same patient ID there is another patient.
    """

    name: str
    site_id: str
    namespace: str
    created: str = ""

    def to_json(self) -> dict[str, Any]:
        """Serialize for the project file."""
        return {
            "name": self.name,
            "site_id": self.site_id,
            "namespace": self.namespace,
            "created": self.created,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SiteEntry:
        """Parse a site of the project file."""
        return cls(
            str(data["name"]),
            str(data["site_id"]),
            str(data["namespace"]),
            str(data.get("created", "")),
        )


@dataclass
class ProjectFile:
    """The public part of a project: settings, public key and key slots (all secrets wrapped)."""

    settings: ProjectSettings
    reid_public_key: bytes
    settings_mac: bytes
    slots: list[KeySlot]
    created: str
    closed: bool = False
    closed_at: str | None = None
    #: None for a project made before pins existed, until a re-identifier unlocks it
    reid_pin: ReidPin | None = None
    #: the policy of the project's runs, as :mod:`pseudo` describes it (opaque here); None
    #: until the first run records it; covered by the settings MAC
    policy: dict[str, Any] | None = None
    #: the sites registered in the project, in the order they were added (covered by the
    #: settings MAC); empty for a project made before sites existed
    sites: list[SiteEntry] = field(default_factory=list)
    #: the trial settings written into the outputs, as :mod:`pseudo` describes them (opaque
    #: here); None for a project without; covered by the settings MAC
    trial: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """Serialize for ``projects/<name>.json``."""
        data: dict[str, Any] = {
            "format": PROJECT_FORMAT,
            "name": self.settings.name,
            "prefix": self.settings.prefix,
            "date_shift_days": [
                self.settings.date_shift_min_days,
                self.settings.date_shift_max_days,
            ],
            "reid_public_key": _b64(self.reid_public_key),
            "settings_mac": _b64(self.settings_mac),
            "created": self.created,
            "closed": self.closed,
            "closed_at": self.closed_at,
            "slots": [slot.to_json() for slot in self.slots],
        }
        if self.reid_pin is not None:
            data["reid_pin"] = self.reid_pin.to_json()
        if self.policy is not None:
            data["format"] = PROJECT_FORMAT_POLICY
            data["policy"] = self.policy
        if self.sites:
            data["format"] = PROJECT_FORMAT_SITES
            data["sites"] = [site.to_json() for site in self.sites]
        if self.trial is not None:
            data["format"] = PROJECT_FORMAT_TRIAL
            data["trial"] = self.trial
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], path: Path) -> ProjectFile:
        """Parse a project file, raising :class:`CorruptVaultError` if it is malformed."""
        known = (PROJECT_FORMAT, PROJECT_FORMAT_POLICY, PROJECT_FORMAT_SITES, PROJECT_FORMAT_TRIAL)
        if data.get("format") not in known:
            raise CorruptVaultError(
                f"{path}: unknown project format {data.get('format')!r} "
                f"(this version of pseudo reads {PROJECT_FORMAT_TRIAL!r})"
            )
        policy, trial = data.get("policy"), data.get("trial")
        with_sites = data["format"] == PROJECT_FORMAT_SITES
        with_trial = data["format"] == PROJECT_FORMAT_TRIAL
        if (
            not (with_sites or with_trial)
            and (policy is not None) != (data["format"] == PROJECT_FORMAT_POLICY)
        ) or not isinstance(policy, dict | None):
            raise CorruptVaultError(f"{path}: malformed project file (recorded policy)")
        if (with_sites and not data.get("sites")) or (
            data.get("sites") and not (with_sites or with_trial)
        ):
            raise CorruptVaultError(f"{path}: malformed project file (sites)")
        if with_trial != (trial is not None) or not isinstance(trial, dict | None):
            raise CorruptVaultError(f"{path}: malformed project file (trial settings)")
        try:
            low, high = data["date_shift_days"]
            return cls(
                settings=ProjectSettings(data["name"], data["prefix"], int(low), int(high)),
                reid_public_key=_unb64(data["reid_public_key"]),
                settings_mac=_unb64(data["settings_mac"]),
                slots=[KeySlot.from_json(s) for s in data["slots"]],
                created=data["created"],
                closed=bool(data.get("closed", False)),
                closed_at=data.get("closed_at"),
                reid_pin=ReidPin.from_json(data["reid_pin"]) if data.get("reid_pin") else None,
                policy=policy,
                sites=[SiteEntry.from_json(site) for site in data.get("sites", [])],
                trial=trial,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptVaultError(f"{path}: malformed project file ({exc})") from exc

    def slots_for(self, role: Role) -> list[KeySlot]:
        """The key slots of one role."""
        return [slot for slot in self.slots if slot.role == role]

    def slot(self, name: str) -> KeySlot:
        """The slot called ``name``, or raise :class:`SlotError`."""
        for slot in self.slots:
            if slot.name == name:
                return slot
        known = ", ".join(f"{s.name} ({s.role})" for s in self.slots) or "none"
        raise SlotError(f"project {self.settings.name!r} has no key slot {name!r} (slots: {known})")


def settings_mac(
    secret: bytes,
    settings: ProjectSettings,
    public_key: bytes,
    policy: dict[str, Any] | None = None,
    sites: list[SiteEntry] | None = None,
    trial: dict[str, Any] | None = None,
) -> bytes:
    """HMAC (settings key) over the settings that shape pseudonyms, the public key and, once
    recorded, the project's policy, its sites and its trial settings (a project without them
    has the MAC it always had)."""
    key = crypto.hkdf(secret, "pseudo/v1/settings")
    parts: list[str | bytes] = [
        settings.name,
        settings.prefix,
        str(settings.date_shift_min_days),
        str(settings.date_shift_max_days),
        public_key,
    ]
    if policy is not None:
        parts += ["policy", canonical_json(policy)]
    if sites:
        parts += ["sites", canonical_json({"sites": [site.to_json() for site in sites]})]
    if trial is not None:
        parts += ["trial", canonical_json(trial)]
    return crypto.mac(key, *parts)


def canonical_json(data: dict[str, Any]) -> str:
    """One text for equal data (sorted keys, no spaces): what a MAC covers."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class PolicyChangedError(KeystoreError):
    """A run with another policy than the one its project recorded (exit 2)."""


@dataclass(frozen=True)
class PolicyCheck:
    """What a run's unlock found of its project's recorded policy."""

    #: the policy recorded before this run; None when this run recorded the first one
    previous: dict[str, Any] | None
    #: the fields of the policy that this run changed (empty: the recorded policy)
    changed: list[str]

    def to_json(self) -> dict[str, Any]:
        """For a run report: what was recorded before, and what changed (no policy text)."""
        return {
            "recorded": self.previous is None,
            "previous": policy_summary(self.previous) if self.previous is not None else None,
            "changed": self.changed,
        }


def policy_summary(policy: dict[str, Any]) -> dict[str, Any]:
    """A recorded policy without the text of its file (the hash covers it): for the audit log
    and reports."""
    return {key: value for key, value in policy.items() if key != "text"}


def policy_differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """The fields in which two recorded policies differ (the text of a file is not compared:
    its hash is, so a comment or a space does not make another policy)."""
    keys = (set(before) | set(after)) - {"text"}
    return sorted(key for key in keys if before.get(key) != after.get(key))


def default_prefix(project: str) -> str:
    """A pseudonym prefix derived from the project name: its letters and digits, upper case."""
    letters = re.sub(r"[^A-Z0-9]", "", project.upper())[:8]
    return letters or "P"


@dataclass(frozen=True, repr=False)
class ReidentificationKey:
    """The opened re-identification private key of one project, and the slot that gave it."""

    project: str
    private_key: bytes
    slot: str = field(default="")

    def __repr__(self) -> str:
        return f"ReidentificationKey(project={self.project!r}, slot={self.slot!r})"

    def open(self, sealed: bytes, aad: bytes) -> bytes:
        """Open one sealed record."""
        return crypto.open_sealed(self.private_key, sealed, aad)


class Vault:
    """A vault folder: projects, key slots and the location of the linkage store.

    Opened through :class:`keystore.session.VaultSession`, the vault has a :class:`Guard`:
    passphrase attempts are then throttled and every failure is audited, opened audit keys
    authenticate the session's audit records, and creating a project and changing its slots
    are audited: they refuse to run without one. Each operation that changes the vault writes
    its own audit record (:meth:`init` too), so a script that uses these classes leaves the
    same records as the command line.
    """

    def __init__(self, path: Path, config: dict[str, Any]) -> None:
        self.path = path
        self._config = config
        self.guard: Guard | None = None

    # -- creation and opening -------------------------------------------------------------
    @classmethod
    def init(
        cls, path: Path, database_url: str | None = None, *, actor: str | None = None
    ) -> Vault:
        """Create a new, empty vault folder (0700) with its configuration and checkpoint, and
        its linkage store and audit log, whose first record says who (``actor``, default the
        operating-system user and host) created the vault."""
        from keystore.session import VaultSession  # the database layers load when needed

        path = Path(path)
        if (path / "vault.json").exists():
            raise VaultExistsError(f"{path}: a vault already exists here")
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path, 0o700)
        (path / "projects").mkdir(mode=0o700, exist_ok=True)
        config = {"format": VAULT_FORMAT, "created": utcnow().isoformat()}
        if database_url:
            config["database_url"] = database_url
        _write_private_json(path / "vault.json", config)
        # The checkpoint exists from the start, so that a missing one is always a failure.
        _write_private_json(path / "audit-checkpoint.json", {"seq": 0, "hash": GENESIS})
        with VaultSession(path) as session:
            session.audit.append(
                AuditAction.VAULT_INIT,
                actor or os_user(),
                AuditOutcome.SUCCESS,
                details={"path": str(path)},
            )
        return cls(path, config)

    @classmethod
    def open(cls, path: Path) -> Vault:
        """Open an existing vault, or raise :class:`VaultNotFoundError`."""
        path = Path(path)
        config_path = path / "vault.json"
        if not config_path.is_file():
            raise VaultNotFoundError(
                f"{path}: no vault here; check --vault or $PSEUDO_VAULT (`pseudo vault init` "
                "makes a new vault, whose pseudonyms link to nothing made before)"
            )
        config = _read_json(config_path)
        if config.get("format") != VAULT_FORMAT:
            raise CorruptVaultError(f"{config_path}: unknown vault format {config.get('format')!r}")
        return cls(path, config)

    @property
    def database_url(self) -> str:
        """The linkage store: the configured URL, else SQLite in the vault folder."""
        url = self._config.get("database_url")
        if isinstance(url, str) and url:
            return url
        return f"sqlite:///{(self.path / 'pseudo.db').resolve()}"

    @property
    def uses_own_sqlite(self) -> bool:
        """True when the linkage store is the SQLite file inside the vault folder."""
        return not self._config.get("database_url")

    @property
    def checkpoint_path(self) -> Path:
        """The file in which this vault remembers the last audit record of its own database."""
        return self.path / "audit-checkpoint.json"

    def is_own_database(self, database_url: str | None) -> bool:
        """True when ``database_url`` (None: no ``--db``) names the vault's own database."""
        from keystore.db import database_identity  # the database layers load when needed

        return database_url is None or database_identity(database_url) == database_identity(
            self.database_url
        )

    def checkpoint_path_for(self, database_url: str | None) -> Path:
        """The checkpoint of the database at ``database_url`` (None: the vault's own).

        Each database has its own, so that writing to one (``--db``) does not make the
        checkpoint of another run ahead of its log. Other databases' files are named by a
        digest of the URL without its driver and password (a SQLite path made absolute), so the
        same database given with or without them finds the same file.
        """
        if database_url is None or self.is_own_database(database_url):
            return self.checkpoint_path
        from keystore.db import database_digest

        return self.path / CHECKPOINT_DIR / f"{database_digest(database_url)}.json"

    def prepare_sqlite_file(self) -> None:
        """Create the default SQLite file owner-only before the database engine opens it."""
        db = self.path / "pseudo.db"
        if self.uses_own_sqlite and not db.exists():
            os.close(os.open(db, os.O_WRONLY | os.O_CREAT, 0o600))

    # -- projects -------------------------------------------------------------------------
    def project_path(self, name: str) -> Path:
        """The file of project ``name`` (the name is checked first)."""
        return self.path / "projects" / f"{_check_name('project', name)}.json"

    def staging_path(self, name: str) -> Path:
        """Where a key rotation writes the project's next file before it takes effect."""
        return self.project_path(name).with_suffix(".json.rotating")

    def project_names(self) -> list[str]:
        """Names of the projects in this vault, sorted."""
        return sorted(p.stem for p in (self.path / "projects").glob("*.json"))

    def project(self, name: str) -> ProjectFile:
        """Read a project's public file."""
        path = self.project_path(name)
        if not path.is_file():
            known = ", ".join(self.project_names()) or "none"
            raise ProjectNotFoundError(
                f"project {name!r} not found in {self.path} (known: {known})"
            )
        return ProjectFile.from_json(_read_json(path), path)

    def pinned_keys(self) -> dict[str, list[bytes]]:
        """The pinned verify keys of every project that has a pin (for the audit log's
        signatures); a project file that cannot be read is left out (its check says why)."""
        keys: dict[str, list[bytes]] = {}
        for name in self.project_names():
            try:
                pin = self.project(name).reid_pin
            except (CorruptVaultError, InvalidNameError):
                continue
            if pin is not None:
                keys[name] = pin.verify_keys
        return keys

    @contextmanager
    def lock(self, name: str, *, blocking: bool = True) -> Iterator[bool]:
        """Hold the project's lock (slot changes, rotation, closing, backup serialize on it).

        An advisory ``flock`` on ``projects/.<name>.lock``: the kernel releases it when the
        process dies, so a crash never leaves a stale lock. Yields False if ``blocking`` is
        False and another process holds it.
        """
        path = self.path / "projects" / f".{_check_name('project', name)}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
                acquired = True
            except BlockingIOError:
                acquired = False
            yield acquired
        finally:
            os.close(fd)

    def create_project(
        self,
        name: str,
        operator_passphrase: str,
        reid_passphrase: str,
        *,
        prefix: str | None = None,
        date_shift_days: tuple[int, int] = DEFAULT_DATE_SHIFT,
        operator_slot: str = "operator",
        reid_slot: str = "reidentifier",
        secret: bytes | None = None,
        kdf: crypto.ScryptParams | None = None,
        actor: str | None = None,
        trial: dict[str, Any] | None = None,
    ) -> ProjectFile:
        """Create a project with a fresh secret, one operator slot and one re-identification slot.

        ``secret`` imports an existing 256-bit project secret instead, so that a second site
        (or a restored backup) produces the same pseudonyms. ``trial`` holds the project's
        trial settings (opaque here, see :meth:`set_trial`). The creation is recorded in the
        audit log (by ``actor``, default the operating-system user and host), authenticated by
        the new project's audit key.
        """
        guard = self._require_guard()
        path = self.project_path(name)
        if path.exists():
            raise ProjectExistsError(f"project {name!r} already exists in {self.path}")
        _check_name("slot", operator_slot)
        _check_name("slot", reid_slot)
        if operator_slot == reid_slot:
            raise InvalidNameError("the operator and re-identification slots need different names")
        check_new_passphrase(operator_passphrase, "operator")
        check_new_passphrase(reid_passphrase, "re-identification")
        check_distinct(
            operator_passphrase,
            reid_passphrase,
            "the operator and re-identification passphrases must differ by more than case, "
            "spaces or a few characters: the operator must not be able to re-identify",
        )
        prefix = prefix if prefix is not None else default_prefix(name)
        if not _PREFIX_RE.match(prefix):
            raise InvalidNameError(f"prefix {prefix!r}: use 1-12 upper-case letters or digits")
        low, high = date_shift_days
        if low > high or (low == 0 and high == 0) or abs(low) > 36525 or abs(high) > 36525:
            raise InvalidNameError(
                f"date shift range {low}..{high}: need min <= max, within 100 years, not only 0"
            )
        if secret is None:
            secret = crypto.random_bytes(32)
        elif len(secret) != 32:
            raise InvalidNameError("an imported project secret must be exactly 32 bytes")
        params = kdf or crypto.ScryptParams()
        settings = ProjectSettings(name, prefix, low, high)
        reid_private, reid_public = crypto.generate_x25519()
        audit_key = crypto.random_bytes(_KEY_LEN)
        project = ProjectFile(
            settings=settings,
            reid_public_key=reid_public,
            settings_mac=settings_mac(secret, settings, reid_public, trial=trial),
            slots=[
                KeySlot.create(
                    name, operator_slot, "operator", secret, audit_key, operator_passphrase, params
                ),
                KeySlot.create(
                    name,
                    reid_slot,
                    "reidentifier",
                    reid_private,
                    audit_key,
                    reid_passphrase,
                    params,
                ),
            ],
            created=utcnow().isoformat(),
            reid_pin=ReidPin.make(name, reid_private),
            trial=trial,
        )
        (self.path / "projects").mkdir(mode=0o700, exist_ok=True)
        _write_private_json(path, project.to_json())
        guard.audit.add_key(name, operator_slot, audit_key)
        guard.audit.add_signer(name, crypto.reid_signing_key(reid_private))
        assert project.reid_pin is not None
        guard.audit.append(
            AuditAction.PROJECT_CREATE,
            actor or os_user(),
            AuditOutcome.SUCCESS,
            project=name,
            details={
                "prefix": prefix,
                "slots": [operator_slot, reid_slot],
                "reid_pin": project.reid_pin.fingerprint,
                **({"trial": trial} if trial is not None else {}),
            },
        )
        return project

    def set_trial(
        self, name: str, passphrase: str, trial: dict[str, Any] | None, *, actor: str | None = None
    ) -> list[str]:
        """Replace project ``name``'s trial settings (None: the project has none any more),
        opened with an operator ``passphrase`` (the settings MAC needs the project secret).
        Returns the fields that changed; a change is audited by ``actor`` with the settings
        before and after (they are project metadata, never a patient's)."""
        guard = self._require_guard()
        project = self.project(name)
        self.refuse_closed(project, "its settings can no longer change")
        opened = self.open_slot(project, "operator", passphrase)
        with self.lock(name):
            project = self.project(name)
            self.check_settings(project, opened.key)  # read again under the lock
            before = project.trial
            keys = set(before or {}) | set(trial or {})
            changed = sorted(k for k in keys if (before or {}).get(k) != (trial or {}).get(k))
            if not changed and (before is None) == (trial is None):
                return []
            project.trial = trial
            project.settings_mac = settings_mac(
                opened.key,
                project.settings,
                project.reid_public_key,
                project.policy,
                project.sites,
                trial=trial,
            )
            self.save_project(project)
        guard.audit.append(
            AuditAction.PROJECT_TRIAL,
            actor or os_user(),
            AuditOutcome.SUCCESS,
            project=name,
            details={"trial": trial, "previous": before, "changed": changed},
        )
        return changed

    def save_project(self, project: ProjectFile) -> None:
        """Rewrite a project's file atomically (after adding or removing a slot)."""
        _write_private_json(self.project_path(project.settings.name), project.to_json())

    def write_staging(self, project: ProjectFile) -> Path:
        """Write a project's next file beside the current one (for a key rotation)."""
        path = self.staging_path(project.settings.name)
        _write_private_json(path, project.to_json())
        return path

    # -- unlocking ------------------------------------------------------------------------
    def open_slot(
        self,
        project: ProjectFile,
        role: Role | None,
        passphrase: str,
        slot: str | None = None,
        *,
        audit_failure: bool = True,
    ) -> SlotContents:
        """Open a slot of ``role`` (any role if None, or the slot named ``slot``).

        With a guard, the attempt is throttled, a failure is recorded in the audit log (unless
        the caller records it itself) and a success registers the project's audit key.
        """
        name = project.settings.name
        candidates = [s for s in project.slots if role is None or s.role == role]
        if slot is not None:
            found = project.slot(slot)
            if role is not None and found.role != role:
                raise SlotError(f"slot {slot!r} of project {name!r} is {_article(found.role)} slot")
            candidates = [found]
        what = {"operator": "operator", "reidentifier": "re-identification", None: "any"}[role]
        if not candidates:
            kind = "key" if role is None else what
            raise AuthenticationError(f"project {name!r} has no {kind} slot")
        guard = self.guard
        tried: list[Attempt] = []
        for candidate in candidates:
            attempt = (
                guard.begin(name, candidate.role, candidate.name) if guard is not None else None
            )
            try:
                key, audit_key = candidate.open(name, passphrase)
            except InvalidTokenError:
                if attempt is not None:
                    tried.append(attempt)
                continue
            if (
                candidate.role == "reidentifier"
                and crypto.public_from_private(key) != project.reid_public_key
            ):
                raise PinnedKeyError(
                    f"project {name!r}: re-identification key does not match (the project "
                    "file's public key was replaced)"
                )
            if guard is not None and attempt is not None:
                guard.succeeded(attempt, tried)
                guard.audit.add_key(name, candidate.name, audit_key)
                if candidate.role == "reidentifier" and project.reid_pin is not None:
                    self._check_pin_holder(project, key)
                    guard.audit.add_signer(name, crypto.reid_signing_key(key))
            return SlotContents(candidate.name, candidate.role, key, audit_key)
        worst = max(tried, key=lambda a: a.failures, default=None)
        failures = worst.failures if worst is not None else 0
        next_delay = max((a.next_delay for a in tried), default=0.0)
        if guard is not None and worst is not None and audit_failure:
            guard.failed(replace(worst, role=role or "any"), slot)
        message = (
            f"wrong {what} passphrase for project {name!r}"
            if role is not None
            else f"the passphrase opens no key slot of project {name!r}"
        ) + (f" (slot {slot!r})" if slot else "")
        if next_delay:
            message += f"; {failures} failures in a row, the next attempt waits {next_delay:g} s"
        raise AuthenticationError(message, failures=failures, next_delay=next_delay)

    def refuse_closed(self, project: ProjectFile, purpose: str) -> None:
        """Raise :class:`ProjectClosedError` if the project file or the linkage store says so."""
        name = project.settings.name
        when = project.closed_at if project.closed else None
        if not project.closed and self.guard is not None:
            closed = self.guard.closed_at(name)
            when = closed.isoformat() if closed is not None else None
        if project.closed or when is not None:
            raise ProjectClosedError(
                f"project {name!r} was closed{f' on {when[:10]}' if when else ''}: its "
                f"re-identification key was destroyed, so {purpose}"
            )

    def unlock_operator_soon(self, name: str, passphrase: str) -> None:
        """Start deriving the key of project ``name``'s first operator slot from ``passphrase`` in
        the background (see :func:`keystore.crypto.derive_kek_soon`), for a command to load
        what it needs meanwhile; :meth:`unlock_operator` then finds it ready. Opens nothing,
        reveals nothing, and the passphrase guard still applies to the unlock itself."""
        # The slot an unlock tries first (most projects have one operator slot): deriving for
        # the others too would keep a core busy for nothing once the first opens.
        slots = self.project(name).slots_for("operator")[:1]
        crypto.derive_kek_soon(passphrase, [(slot.salt, slot.params) for slot in slots])

    def unlock_operator(self, name: str, passphrase: str, slot: str | None = None) -> Keyring:
        """Open an operator slot and return the project's keyring (refused once closed)."""
        return self._unlock_operator(name, passphrase, slot)[0]

    def unlock_for_run(
        self,
        name: str,
        passphrase: str,
        policy: dict[str, Any],
        *,
        change_policy: bool = False,
        slot: str | None = None,
        actor: str | None = None,
    ) -> tuple[Keyring, PolicyCheck]:
        """:meth:`unlock_operator` for a run with ``policy`` (what :mod:`pseudo` records of
        it): the project's first run records it (a project made before policies were
        recorded too); a later run with another policy raises :class:`PolicyChangedError`
        unless ``change_policy``, which records the new one. Each recording and each refusal
        is audited by ``actor``."""
        keyring, secret = self._unlock_operator(name, passphrase, slot)
        return keyring, self._settle_policy(name, secret, policy, change_policy, actor or os_user())

    def _unlock_operator(
        self, name: str, passphrase: str, slot: str | None
    ) -> tuple[Keyring, bytes]:
        project = self.project(name)
        self.refuse_closed(project, "it accepts no more data")
        opened = self.open_slot(project, "operator", passphrase, slot)
        self.check_settings(project, opened.key)
        self.check_pin(project)
        keyring = Keyring.from_secret(opened.key, project.settings, project.reid_public_key)
        if self.guard is not None:
            from keystore.linkage import LinkageStore  # the database layers load when needed

            LinkageStore(self.guard.engine).migrate_journal(keyring)
        return keyring, opened.key

    def _settle_policy(
        self, name: str, secret: bytes, policy: dict[str, Any], change: bool, actor: str
    ) -> PolicyCheck:
        """Compare ``policy`` with the recorded one; record it, or refuse (see
        :meth:`unlock_for_run`)."""
        guard = self._require_guard()
        with self.lock(name):
            project = self.project(name)
            self.check_settings(project, secret)  # read again under the lock
            before = project.policy
            changed = policy_differences(before, policy) if before is not None else []
            if before is not None and not changed:
                return PolicyCheck(before, [])
            details = {
                "policy": policy_summary(policy),
                "previous": policy_summary(before) if before is not None else None,
                "changed": changed,
            }
            if before is not None and not change:
                guard.audit.append(
                    AuditAction.PROJECT_POLICY,
                    actor,
                    outcome_with(AuditOutcome.REFUSED, "another policy than the project's"),
                    project=name,
                    details=details,
                )
                raise PolicyChangedError(
                    f"project {name!r} records policy {before.get('name')!r} "
                    f"({str(before.get('sha256'))[:16]}); this run's differs in "
                    f"{', '.join(changed)}: run without --policy to use the project's, or "
                    "give --change-policy to change it (audited)"
                )
            project.policy = policy
            project.settings_mac = settings_mac(
                secret,
                project.settings,
                project.reid_public_key,
                policy,
                project.sites,
                trial=project.trial,
            )
            self.save_project(project)
        guard.audit.append(
            AuditAction.PROJECT_POLICY, actor, AuditOutcome.SUCCESS, project=name, details=details
        )
        return PolicyCheck(before, changed)

    # -- sites --------------------------------------------------------------------------
    def add_site(
        self,
        name: str,
        site: str,
        passphrase: str,
        *,
        site_id: str | None = None,
        actor: str | None = None,
    ) -> SiteEntry:
        """Register ``site`` in project ``name`` (operator passphrase: the settings MAC covers
        the sites). The first site takes the namespace of the runs made before sites existed
        (:data:`LEGACY_NAMESPACE`), each later one its own. Audited."""
        guard = self._require_guard()
        _check_name("site", site)
        site_id = (site_id or site).strip()
        if not site_id or len(site_id) > 64 or "\\" in site_id or not site_id.isprintable():
            raise SiteError(f"site ID {site_id!r}: 1-64 printable characters, no backslash")
        with self.lock(name):
            project = self.project(name)
            self.refuse_closed(project, "it accepts no more sites")
            opened = self.open_slot(project, "operator", passphrase)
            self.check_settings(project, opened.key)
            if any(known.name == site for known in project.sites):
                raise SiteError(f"project {name!r} already has a site {site!r}")
            if any(known.site_id == site_id for known in project.sites):
                raise SiteError(f"project {name!r} already has a site with ID {site_id!r}")
            namespace = LEGACY_NAMESPACE if not project.sites else f"site:{site}"
            entry = SiteEntry(site, site_id, namespace, utcnow().isoformat())
            project.sites = [*project.sites, entry]
            project.settings_mac = settings_mac(
                opened.key,
                project.settings,
                project.reid_public_key,
                project.policy,
                project.sites,
                trial=project.trial,
            )
            self.save_project(project)
        guard.audit.append(
            AuditAction.SITE_ADD,
            actor or os_user(),
            AuditOutcome.SUCCESS,
            project=name,
            subject=f"site:{site}",
            details={
                "site": site,
                "site_id": site_id,
                "legacy_namespace": namespace == LEGACY_NAMESPACE,
                "by_slot": opened.slot,
            },
        )
        return entry

    def run_site(self, name: str, site: str | None) -> SiteEntry | None:
        """The site of a run of project ``name``: the one named (it must be registered), the
        only one when the project has one, None when it has none; a project of several sites
        refuses a run that names none (:class:`SiteError`)."""
        sites = self.project(name).sites
        known = ", ".join(s.name for s in sites) or "none"
        if site is None:
            if len(sites) > 1:
                raise SiteError(
                    f"project {name!r} has several sites ({known}): say which one these files "
                    "come from with --site NAME (the same patient ID at two sites is two patients)"
                )
            return sites[0] if sites else None
        for entry in sites:
            if entry.name == site:
                return entry
        raise SiteError(
            f"project {name!r} has no site {site!r} (sites: {known}); register it with "
            f"`pseudo project add-site --project {name} {site}`"
        )

    @staticmethod
    def check_pin(project: ProjectFile) -> None:
        """Raise :class:`PinnedKeyError` unless the re-identifiers' signature pins the project's
        public key (a project made before pins existed has none until a re-identifier unlocks
        it: then only the settings MAC protects the key, as before)."""
        pin = project.reid_pin
        if pin is not None and not pin.verifies(project.settings.name, project.reid_public_key):
            raise PinnedKeyError(
                f"project {project.settings.name!r}: its re-identification public key is not the "
                "one its re-identifiers signed (the project file was altered): nothing was "
                "sealed; ask the re-identifier (DPO) to run `pseudo audit check-key`"
            )

    @staticmethod
    def _check_pin_holder(project: ProjectFile, reid_private: bytes) -> None:
        """Raise :class:`PinnedKeyError` unless the pin is the one the private key makes."""
        pin = project.reid_pin
        name = project.settings.name
        expected = crypto.ed25519_public(crypto.reid_signing_key(reid_private))
        if (
            pin is None
            or pin.verify_key != expected
            or not pin.verifies(name, project.reid_public_key)
        ):
            raise PinnedKeyError(
                f"project {name!r}: the pinned re-identification key is not the re-identifiers' "
                "own (the project file was altered, e.g. a key of someone else's making)"
            )

    def pin_project(self, name: str, reid_private: bytes, slot: str) -> ProjectFile:
        """Migration of a project made before pins existed: sign its re-identification public
        key with the re-identifiers' key (needs the opened private key, so only a
        re-identifier can) and record it in the audit log, signed. A pinned project is left
        as it is."""
        guard = self._require_guard()
        with self.lock(name):
            project = self.project(name)
            if project.reid_pin is not None:
                return project
            if crypto.public_from_private(reid_private) != project.reid_public_key:
                raise CorruptVaultError(f"project {name!r}: re-identification key does not match")
            project.reid_pin = ReidPin.make(name, reid_private)
            self.save_project(project)
        guard.audit.add_signer(name, crypto.reid_signing_key(reid_private))
        guard.audit.append(
            AuditAction.REID_KEY_PIN,
            os_user(),
            AuditOutcome.SUCCESS,
            project=name,
            details={"slot": slot, "reid_pin": project.reid_pin.fingerprint},
        )
        return project

    @staticmethod
    def check_settings(project: ProjectFile, secret: bytes) -> None:
        """Raise :class:`CorruptVaultError` unless the settings MAC matches the secret."""
        expected = settings_mac(
            secret,
            project.settings,
            project.reid_public_key,
            project.policy,
            project.sites,
            trial=project.trial,
        )
        if not hmac.compare_digest(expected, project.settings_mac):
            raise CorruptVaultError(
                f"project {project.settings.name!r}: settings or public key were altered "
                "outside pseudo"
            )

    def unlock_reidentifier(
        self,
        name: str,
        passphrase: str,
        slot: str | None = None,
        *,
        audit_failure: bool = True,
    ) -> ReidentificationKey:
        """Open a re-identification slot and return the project's private key."""
        project = self.project(name)
        self.refuse_closed(project, "no pseudonym of it can be re-identified any more")
        opened = self.open_slot(
            project, "reidentifier", passphrase, slot, audit_failure=audit_failure
        )
        if project.reid_pin is None and self.guard is not None:
            self.pin_project(name, opened.key, opened.slot)
        return ReidentificationKey(name, opened.key, opened.slot)

    def open_audit_key(self, name: str, passphrase: str) -> str:
        """Open any slot of the project (either role) to check its audit records.

        Works on a project closed with its operator slots kept (they still hold the audit key);
        a project closed for good has no slot left, and :class:`ProjectClosedError` says so.
        Returns the name of the slot opened.
        """
        return self.open_slot(self.audit_key_holder(name), None, passphrase).slot

    def audit_key_holder(self, name: str) -> ProjectFile:
        """The project, if a slot of it still holds its audit key; else :class:`ProjectClosedError`
        (a project closed for good has no slot left)."""
        project = self.project(name)
        if not project.slots:
            when = f" on {project.closed_at[:10]}" if project.closed_at else ""
            raise ProjectClosedError(
                f"project {name!r} was closed{when} with all of its key slots, so nobody holds "
                "its audit key any more: its records' MACs cannot be checked "
                "(`pseudo audit verify` without --project still checks the chain)"
            )
        return project

    # -- slots ----------------------------------------------------------------------------
    def _require_guard(self) -> Guard:
        if self.guard is None:
            raise SlotError(
                "projects and key slots are changed through a VaultSession (to audit the change)"
            )
        return self.guard

    def add_slot(
        self,
        name: str,
        role: Role,
        new_slot: str,
        new_passphrase: str,
        *,
        passphrase: str,
        slot: str | None = None,
        kdf: crypto.ScryptParams | None = None,
        actor: str | None = None,
    ) -> KeySlot:
        """Add a slot of ``role`` opened by ``new_passphrase``; ``passphrase`` opens an existing
        slot of the same role (only a holder can let someone else in). No image is touched.
        The change is recorded in the audit log (by ``actor``, default the operating-system
        user and host).
        """
        guard = self._require_guard()
        with self.lock(name):
            project = self.project(name)
            self.refuse_closed(project, "its key slots can no longer change")
            _check_name("slot", new_slot)
            if any(s.name == new_slot for s in project.slots):
                raise SlotError(f"project {name!r} already has a key slot {new_slot!r}")
            what = "operator" if role == "operator" else "re-identification"
            check_new_passphrase(new_passphrase, f"new {what}")
            check_distinct(
                new_passphrase,
                passphrase,
                f"the new {what} slot needs its own passphrase, not one near-identical to the "
                "passphrase that lets it in",
            )
            opened = self.open_slot(project, role, passphrase, slot)
            if role == "operator":
                self.check_settings(project, opened.key)
            params = kdf or crypto.ScryptParams()
            created = KeySlot.create(
                name, new_slot, role, opened.key, opened.audit_key, new_passphrase, params
            )
            project.slots.append(created)
            self.save_project(project)
        guard.audit.append(
            AuditAction.SLOT_ADD,
            actor or os_user(),
            AuditOutcome.SUCCESS,
            project=name,
            details={"role": role, "slot": new_slot, "by_slot": opened.slot, **params.to_json()},
        )
        return created

    def remove_slot(
        self,
        name: str,
        target: str,
        *,
        passphrase: str,
        slot: str | None = None,
        actor: str | None = None,
    ) -> KeySlot:
        """Remove slot ``target``; ``passphrase`` must open a slot of the same role (possibly the
        one removed). The last slot of a role is never removed. The change is recorded in the
        audit log (by ``actor``, default the operating-system user and host).
        """
        guard = self._require_guard()
        with self.lock(name):
            project = self.project(name)
            removed = project.slot(target)
            role = removed.role
            if len(project.slots_for(role)) <= 1:
                what = "operator" if role == "operator" else "re-identification"
                raise SlotError(
                    f"slot {target!r} is the last {what} slot of project {name!r}: "
                    "add another one first"
                )
            opened = self.open_slot(project, role, passphrase, slot)
            project.slots = [s for s in project.slots if s.name != target]
            self.save_project(project)
        guard.audit.append(
            AuditAction.SLOT_REMOVE,
            actor or os_user(),
            AuditOutcome.SUCCESS,
            project=name,
            details={"role": role, "slot": target, "by_slot": opened.slot},
        )
        return removed

    def rewrap_slot(
        self,
        name: str,
        target: str,
        passphrase: str,
        *,
        kdf: crypto.ScryptParams,
        new_passphrase: str | None = None,
        actor: str | None = None,
    ) -> KeySlot:
        """Re-wrap slot ``target`` under new scrypt parameters (and optionally a new passphrase).

        ``passphrase`` is the slot's own. The keys inside do not change, so nothing else does.
        The change is recorded in the audit log (by ``actor``, default the operating-system
        user and host).
        """
        guard = self._require_guard()
        kdf.validate()
        with self.lock(name):
            project = self.project(name)
            old = project.slot(target)
            what = "operator" if old.role == "operator" else "re-identification"
            if new_passphrase is not None:
                check_new_passphrase(new_passphrase, f"new {what}")
                check_distinct(
                    new_passphrase,
                    passphrase,
                    "the new passphrase is near-identical to the old one: choose another",
                )
            self.open_slot(project, old.role, passphrase, target)
            new = old.rewrap(name, passphrase, kdf, new_passphrase)
            project.slots = [new if s.name == target else s for s in project.slots]
            self.save_project(project)
        guard.audit.append(
            AuditAction.SLOT_REWRAP,
            actor or os_user(),
            AuditOutcome.SUCCESS,
            project=name,
            details={
                "role": old.role,
                "slot": target,
                "from": old.params.to_json(),
                "to": kdf.to_json(),
                "new_passphrase": new_passphrase is not None,
            },
        )
        return new


@contextmanager
def umask(mask: int) -> Iterator[None]:
    """Temporarily set the process umask (files created by libraries inherit it)."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _article(word: str) -> str:
    """``word`` with its indefinite article: "an operator", "a re-identification"."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"
