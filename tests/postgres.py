"""A throwaway PostgreSQL server for the tests, started from the installed binaries.

``PSEUDO_TEST_POSTGRES_URL`` points the tests at an existing server instead. Otherwise the
Debian package ``postgresql`` provides ``initdb`` and ``pg_ctl``; as root, the server runs as the
``postgres`` user, as PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def _binaries() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return candidates[-1].parent if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unavailable() -> str | None:
    """Why no server can be had, or None."""
    if os.environ.get("PSEUDO_TEST_POSTGRES_URL"):
        return None
    if _binaries() is None:
        return "PostgreSQL server binaries not installed (Debian package postgresql)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser to start PostgreSQL as another user"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'pseudo[postgres]')"
    return None


class Server:
    """A throwaway server that a test may stop and start again (to see a run survive it)."""

    def __init__(self) -> None:
        binaries = _binaries()
        assert binaries is not None
        self._binaries = binaries
        self._prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        # Not under pytest's folder: as root, that is not reachable by the postgres user.
        self.base = Path(tempfile.mkdtemp(prefix="pseudo-test-postgres-"))
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres")
        self.data, self.port = self.base / "data", _free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self._run(
            str(binaries / "initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        )

    def _run(self, *args: str) -> None:
        subprocess.run([*self._prefix, *args], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            str(self._binaries / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.base / "log"),
            "-w",
            "start",
        )
        import psycopg

        deadline = time.time() + 30
        while True:
            try:
                dsn = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"
                with psycopg.connect(dsn):
                    return
            except psycopg.OperationalError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        """Stop the server at once (as a crash or a network cut would)."""
        stop = [*self._prefix, str(self._binaries / "pg_ctl"), "-D", str(self.data)]
        subprocess.run([*stop, "-m", "immediate", "stop"], capture_output=True, timeout=60)

    def remove(self) -> None:
        """Stop the server and delete its files."""
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def needs_server() -> pytest.MarkDecorator:
    """Skip unless a server can be started (never skipped in CI: there, a missing server fails)."""
    reason = unavailable()
    return pytest.mark.skipif(
        reason is not None and not os.environ.get("PSEUDO_CI"), reason=str(reason)
    )


def new_database(server_url: str, tmp_path: Path, prefix: str = "pseudo_vault") -> str:
    """The URL of a fresh, empty database on the server at ``server_url``, named after the
    test's folder (so that tests running at once never share one)."""
    import psycopg

    name = f"{prefix}_{os.getpid()}_{tmp_path.name[-12:].replace('-', '_')}".lower()
    host = server_url.split("@")[1].split("/")[0]
    admin = f"host={host.split(':')[0]} port={host.split(':')[1]} user=postgres dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server_url.rsplit("/", 1)[0] + f"/{name}"


@contextmanager
def controlled_server() -> Iterator[Server]:
    """A running :class:`Server`, removed afterwards."""
    handle = Server()
    try:
        handle.start()
        yield handle
    finally:
        handle.remove()


@contextmanager
def server() -> Iterator[str]:
    """Yield the URL of a fresh database on a server that stops afterwards."""
    given = os.environ.get("PSEUDO_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    with controlled_server() as handle:
        yield handle.url
