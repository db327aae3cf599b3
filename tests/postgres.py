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


@contextmanager
def server() -> Iterator[str]:
    """Yield the URL of a fresh database on a server that stops afterwards."""
    given = os.environ.get("PSEUDO_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    binaries = _binaries()
    assert binaries is not None
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    # Not under pytest's folder: as root, that is not reachable by the postgres user.
    base = Path(tempfile.mkdtemp(prefix="pseudo-test-postgres-"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
    data, port = base / "data", _free_port()

    def run(*args: str) -> None:
        subprocess.run([*prefix, *args], check=True, capture_output=True, timeout=120)

    run(str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
    run(
        str(binaries / "pg_ctl"),
        "-D",
        str(data),
        "-o",
        options,
        "-l",
        str(base / "log"),
        "-w",
        "start",
    )
    try:
        url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        deadline = time.time() + 30
        import psycopg

        while True:
            try:
                with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres"):
                    break
            except psycopg.OperationalError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        yield url
    finally:
        stop = [*prefix, str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]
        subprocess.run(stop, capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)
