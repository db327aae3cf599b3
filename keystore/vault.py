"""The key vault: a folder holding wrapped project secrets, key slots and the linkage store.

Layout (every file owner-only, the folder 0700)::

    vault.json               format, creation time, optional database URL
    projects/<name>.json     per project: settings, re-identification public key, key slots
    pseudo.db                the default SQLite linkage store and audit log
    audit-checkpoint.json    the last audit record this vault saw (detects truncation)

A project's 256-bit secret exists in clear only in memory. It is wrapped with AES-256-GCM under
a key derived by scrypt from each operator's passphrase (one *operator slot* each). The project's
X25519 re-identification private key is wrapped the same way in *re-identification slots*. The
settings that shape pseudonyms (prefix, date-shift range, public key) are authenticated with a
key derived from the secret, so swapping the public key in the file is detected at unlock.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from keystore import crypto
from keystore.db import utcnow
from keystore.errors import (
    AuthenticationError,
    CorruptVaultError,
    InvalidNameError,
    InvalidTokenError,
    ProjectExistsError,
    ProjectNotFoundError,
    VaultExistsError,
    VaultNotFoundError,
    WeakPassphraseError,
)
from keystore.keyring import Keyring, ProjectSettings

VAULT_FORMAT = "pseudo-vault/1"
PROJECT_FORMAT = "pseudo-project/1"
MIN_PASSPHRASE_LENGTH = 8
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
    """Refuse an empty or short passphrase for a new key slot."""
    if len(passphrase) < MIN_PASSPHRASE_LENGTH:
        raise WeakPassphraseError(
            f"{what} passphrase: at least {MIN_PASSPHRASE_LENGTH} characters are required"
        )


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


@dataclass(frozen=True)
class KeySlot:
    """One wrapped copy of a secret, opened by one person's passphrase."""

    name: str
    role: Role
    salt: bytes
    params: crypto.ScryptParams
    nonce: bytes
    wrapped: bytes
    created: str

    def aad(self, project: str) -> bytes:
        """Associated data binding the wrapped secret to this project, role and slot name."""
        return crypto.encode_parts("pseudo-slot/1", project, self.role, self.name)

    def to_json(self) -> dict[str, Any]:
        """Serialize for the project file."""
        return {
            "name": self.name,
            "role": self.role,
            "kdf": {
                "name": "scrypt",
                "salt": _b64(self.salt),
                "n": self.params.n,
                "r": self.params.r,
                "p": self.params.p,
            },
            "nonce": _b64(self.nonce),
            "wrapped": _b64(self.wrapped),
            "created": self.created,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KeySlot:
        """Parse a slot from the project file."""
        kdf = data["kdf"]
        if kdf.get("name") != "scrypt":
            raise CorruptVaultError(f"key slot {data.get('name')!r}: unknown KDF")
        return cls(
            name=data["name"],
            role=data["role"],
            salt=_unb64(kdf["salt"]),
            params=crypto.ScryptParams(n=kdf["n"], r=kdf["r"], p=kdf["p"]),
            nonce=_unb64(data["nonce"]),
            wrapped=_unb64(data["wrapped"]),
            created=data["created"],
        )

    @classmethod
    def create(
        cls,
        project: str,
        name: str,
        role: Role,
        secret: bytes,
        passphrase: str,
        params: crypto.ScryptParams,
    ) -> KeySlot:
        """Wrap ``secret`` under a key derived from ``passphrase``."""
        params.validate()
        salt = crypto.random_bytes(16)
        kek = crypto.derive_kek(passphrase, salt, params)
        slot = cls(name, role, salt, params, b"", b"", utcnow().isoformat())
        nonce, wrapped = crypto.wrap(kek, secret, slot.aad(project))
        return cls(name, role, salt, params, nonce, wrapped, slot.created)

    def open(self, project: str, passphrase: str) -> bytes:
        """Return the wrapped secret, or raise :class:`InvalidTokenError`."""
        kek = crypto.derive_kek(passphrase, self.salt, self.params)
        return crypto.unwrap(kek, self.nonce, self.wrapped, self.aad(project))


@dataclass
class ProjectFile:
    """The public part of a project: settings, public key and key slots (all secrets wrapped)."""

    settings: ProjectSettings
    reid_public_key: bytes
    settings_mac: bytes
    slots: list[KeySlot]
    created: str
    closed: bool = False

    def to_json(self) -> dict[str, Any]:
        """Serialize for ``projects/<name>.json``."""
        return {
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
            "slots": [slot.to_json() for slot in self.slots],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], path: Path) -> ProjectFile:
        """Parse a project file, raising :class:`CorruptVaultError` if it is malformed."""
        if data.get("format") != PROJECT_FORMAT:
            raise CorruptVaultError(f"{path}: unknown project format {data.get('format')!r}")
        try:
            low, high = data["date_shift_days"]
            return cls(
                settings=ProjectSettings(data["name"], data["prefix"], int(low), int(high)),
                reid_public_key=_unb64(data["reid_public_key"]),
                settings_mac=_unb64(data["settings_mac"]),
                slots=[KeySlot.from_json(s) for s in data["slots"]],
                created=data["created"],
                closed=bool(data.get("closed", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptVaultError(f"{path}: malformed project file ({exc})") from exc

    def slots_for(self, role: Role) -> list[KeySlot]:
        """The key slots of one role."""
        return [slot for slot in self.slots if slot.role == role]


def _settings_mac(secret: bytes, settings: ProjectSettings, public_key: bytes) -> bytes:
    key = crypto.hkdf(secret, "pseudo/v1/settings")
    return crypto.mac(
        key,
        settings.name,
        settings.prefix,
        str(settings.date_shift_min_days),
        str(settings.date_shift_max_days),
        public_key,
    )


def default_prefix(project: str) -> str:
    """A pseudonym prefix derived from the project name: its letters and digits, upper case."""
    letters = re.sub(r"[^A-Z0-9]", "", project.upper())[:8]
    return letters or "P"


@dataclass(frozen=True)
class ReidentificationKey:
    """The opened re-identification private key of one project."""

    project: str
    private_key: bytes

    def open(self, sealed: bytes, aad: bytes) -> bytes:
        """Open one sealed record."""
        return crypto.open_sealed(self.private_key, sealed, aad)


class Vault:
    """A vault folder: projects, key slots and the location of the linkage store."""

    def __init__(self, path: Path, config: dict[str, Any]) -> None:
        self.path = path
        self._config = config

    # -- creation and opening -------------------------------------------------------------
    @classmethod
    def init(cls, path: Path, database_url: str | None = None) -> Vault:
        """Create a new, empty vault folder (0700) with its configuration file."""
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
        return cls(path, config)

    @classmethod
    def open(cls, path: Path) -> Vault:
        """Open an existing vault, or raise :class:`VaultNotFoundError`."""
        path = Path(path)
        config_path = path / "vault.json"
        if not config_path.is_file():
            raise VaultNotFoundError(
                f"{path}: no vault here (create one with `pseudo vault init --vault {path}`)"
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
    def checkpoint_path(self) -> Path:
        """The file in which this vault remembers the last audit record it saw."""
        return self.path / "audit-checkpoint.json"

    def prepare_sqlite_file(self) -> None:
        """Create the default SQLite file owner-only before the database engine opens it."""
        db = self.path / "pseudo.db"
        if not self._config.get("database_url") and not db.exists():
            os.close(os.open(db, os.O_WRONLY | os.O_CREAT, 0o600))

    # -- projects -------------------------------------------------------------------------
    def _project_path(self, name: str) -> Path:
        return self.path / "projects" / f"{_check_name('project', name)}.json"

    def project_names(self) -> list[str]:
        """Names of the projects in this vault, sorted."""
        return sorted(p.stem for p in (self.path / "projects").glob("*.json"))

    def project(self, name: str) -> ProjectFile:
        """Read a project's public file."""
        path = self._project_path(name)
        if not path.is_file():
            known = ", ".join(self.project_names()) or "none"
            raise ProjectNotFoundError(
                f"project {name!r} not found in {self.path} (known: {known})"
            )
        return ProjectFile.from_json(_read_json(path), path)

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
    ) -> ProjectFile:
        """Create a project with a fresh secret, one operator slot and one re-identification slot.

        ``secret`` imports an existing 256-bit project secret instead, so that a second site
        (or a restored backup) produces the same pseudonyms.
        """
        path = self._project_path(name)
        if path.exists():
            raise ProjectExistsError(f"project {name!r} already exists in {self.path}")
        _check_name("slot", operator_slot)
        _check_name("slot", reid_slot)
        check_new_passphrase(operator_passphrase, "operator")
        check_new_passphrase(reid_passphrase, "re-identification")
        if operator_passphrase == reid_passphrase:
            raise WeakPassphraseError(
                "the operator and re-identification passphrases must differ: the operator "
                "must not be able to re-identify"
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
        project = ProjectFile(
            settings=settings,
            reid_public_key=reid_public,
            settings_mac=_settings_mac(secret, settings, reid_public),
            slots=[
                KeySlot.create(
                    name, operator_slot, "operator", secret, operator_passphrase, params
                ),
                KeySlot.create(
                    name, reid_slot, "reidentifier", reid_private, reid_passphrase, params
                ),
            ],
            created=utcnow().isoformat(),
        )
        (self.path / "projects").mkdir(mode=0o700, exist_ok=True)
        _write_private_json(path, project.to_json())
        return project

    def save_project(self, project: ProjectFile) -> None:
        """Rewrite a project's file atomically (after adding or removing a slot)."""
        _write_private_json(self._project_path(project.settings.name), project.to_json())

    # -- unlocking ------------------------------------------------------------------------
    def _open_slot(
        self, project: ProjectFile, role: Role, passphrase: str, slot: str | None
    ) -> bytes:
        candidates = [s for s in project.slots_for(role) if slot is None or s.name == slot]
        for candidate in candidates:
            try:
                return candidate.open(project.settings.name, passphrase)
            except InvalidTokenError:
                continue
        what = "operator" if role == "operator" else "re-identification"
        raise AuthenticationError(
            f"wrong {what} passphrase for project {project.settings.name!r}"
            + (f" (slot {slot!r})" if slot else "")
        )

    def unlock_operator(self, name: str, passphrase: str, slot: str | None = None) -> Keyring:
        """Open an operator slot and return the project's keyring."""
        project = self.project(name)
        secret = self._open_slot(project, "operator", passphrase, slot)
        expected = _settings_mac(secret, project.settings, project.reid_public_key)
        if not hmac.compare_digest(expected, project.settings_mac):
            raise CorruptVaultError(
                f"project {name!r}: settings or public key were altered outside pseudo"
            )
        return Keyring.from_secret(secret, project.settings, project.reid_public_key)

    def unlock_reidentifier(
        self, name: str, passphrase: str, slot: str | None = None
    ) -> ReidentificationKey:
        """Open a re-identification slot and return the project's private key."""
        project = self.project(name)
        private = self._open_slot(project, "reidentifier", passphrase, slot)
        if crypto.public_from_private(private) != project.reid_public_key:
            raise CorruptVaultError(f"project {name!r}: re-identification key does not match")
        return ReidentificationKey(name, private)


@contextmanager
def umask(mask: int) -> Iterator[None]:
    """Temporarily set the process umask (files created by libraries inherit it)."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)
