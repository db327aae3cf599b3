"""One open vault with its linkage store and audit log."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

from keystore.audit import AuditLog
from keystore.db import connect
from keystore.linkage import LinkageStore
from keystore.vault import Vault


class VaultSession:
    """Open a vault and connect to its linkage store (``database_url`` overrides the vault's).

    Use as a context manager so the database connections are released::

        with VaultSession(Path("pseudo-vault")) as session:
            keyring = session.vault.unlock_operator("trial", passphrase)
    """

    def __init__(self, vault_path: Path, database_url: str | None = None) -> None:
        self.vault = Vault.open(vault_path)
        if database_url is None:
            self.vault.prepare_sqlite_file()
        self.engine = connect(database_url or self.vault.database_url)
        self.linkage = LinkageStore(self.engine)
        self.audit = AuditLog(self.engine, self.vault.checkpoint_path)

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()

    def __enter__(self) -> VaultSession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
