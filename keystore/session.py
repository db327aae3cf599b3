"""One open vault with its linkage store, audit log and passphrase guard."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

from keystore.audit import AuditLog
from keystore.db import connect, database_identity
from keystore.guard import Guard, ThrottlePolicy
from keystore.linkage import LinkageStore
from keystore.maintenance import recover
from keystore.vault import Vault


class VaultSession:
    """Open a vault and connect to its linkage store (``database_url`` overrides the vault's).

    Use as a context manager so the database connections are released::

        with VaultSession(Path("pseudo-vault")) as session:
            keyring = session.vault.unlock_operator("trial", passphrase)

    The session's vault throttles and audits passphrase attempts (``throttle`` sets the
    delays), and a key rotation that a crash interrupted is completed or discarded on opening
    (``recovered`` says what was done). The audit log is witnessed by the vault's checkpoint of
    that database: each database the vault uses has its own, started when it is first used.
    """

    def __init__(
        self,
        vault_path: Path,
        database_url: str | None = None,
        *,
        throttle: ThrottlePolicy | None = None,
    ) -> None:
        self.vault = Vault.open(vault_path)
        if database_url is None:
            self.vault.prepare_sqlite_file()
        url = database_url or self.vault.database_url
        self.engine = connect(url)
        self.linkage = LinkageStore(self.engine)
        own = self.vault.is_own_database(database_url)
        self.audit = AuditLog(
            self.engine,
            self.vault.checkpoint_path_for(database_url),
            database=None if own else database_identity(url),
        )
        self.audit.pins = self.vault.pinned_keys
        self.vault.guard = Guard(self.engine, self.audit, throttle)
        try:
            if not own:
                # The first time this vault uses another database, it starts that database's
                # own checkpoint (the vault's own one was written by `vault init`).
                self.audit.start_checkpoint()
            self.recovered = recover(self)
        except BaseException:
            self.engine.dispose()
            raise

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
