"""A throwaway Orthanc (Debian package ``orthanc``) as a real PACS for the tests, on loopback.

:func:`server` starts ``Orthanc`` with a configuration file written here: its storage and
index in a folder of the caller's, its DICOM and HTTP ports free loopback ports, and the peers
it knows (``modalities``) all at 127.0.0.1. Orthanc 1.10 has no option to bind one address, so
the configuration closes everything but loopback instead: the HTTP server refuses remote
clients (``RemoteAccessAllowed``: false), and the DICOM server talks only to the modalities
it lists, each checked by its AE title *and* its host (127.0.0.1). The server is ready when it
logs that it has started (read from its output as it comes, never by sleeping); it is stopped,
and its files removed with the caller's folder, at the end.

Orthanc missing: the tests that need it skip, saying why, except under ``PSEUDO_CI=1`` where
they fail (see :func:`needs_orthanc`).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

#: How long Orthanc may take to start on a loaded machine.
START_DEADLINE = 120.0
#: What Orthanc logs once both its servers listen.
STARTED = "Orthanc has started"
#: The AE title of the test Orthanc.
ORTHANC_AET = "ORTHANC"


def binary() -> str | None:
    """The Orthanc executable (Debian installs it as /usr/sbin/Orthanc), or None."""
    return shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin:/usr/bin")


def needs_orthanc() -> pytest.MarkDecorator:
    """Skip unless Orthanc is installed; under ``PSEUDO_CI`` a missing Orthanc fails instead."""
    missing = binary() is None and not os.environ.get("PSEUDO_CI")
    return pytest.mark.skipif(
        missing, reason="Orthanc is not installed (Debian package orthanc), needed as a PACS"
    )


def free_port() -> int:
    """A TCP port free on 127.0.0.1 at the time of asking."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Orthanc:
    """A running test Orthanc: where it listens, and its REST API."""

    dicom_port: int
    http_port: int
    folder: Path
    ae_title: str = ORTHANC_AET
    log: list[str] = field(default_factory=list)
    #: the Orthanc process's id (0 when not started by :func:`server`)
    pid: int = 0

    @property
    def peer(self) -> str:
        """Orthanc as ``pseudo fetch --from`` names it."""
        return f"127.0.0.1:{self.dicom_port}:{self.ae_title}"

    @property
    def url(self) -> str:
        """The base URL of its REST API."""
        return f"http://127.0.0.1:{self.http_port}"

    def raw(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str = "application/dicom",
    ) -> bytes:
        """Call the REST API; the answer's bytes."""
        req = urllib.request.Request(self.url + path, data=body, method=method)
        if body is not None:
            req.add_header("Content-Type", content_type)
        with urllib.request.urlopen(req, timeout=600) as answer:
            data: bytes = answer.read()
        return data

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str = "application/dicom",
    ) -> Any:
        """Call the REST API; the decoded JSON answer."""
        data = self.raw(method, path, body, content_type)
        return json.loads(data) if data else None

    def upload(self, files: list[Path]) -> list[str]:
        """Store DICOM files as they are (``POST /instances``); their Orthanc ids."""
        return [self.request("POST", "/instances", path.read_bytes())["ID"] for path in files]

    def cpu_seconds(self) -> float:
        """The processor time Orthanc has used so far (user and system, all its threads)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def instances(self) -> list[str]:
        """The ids of every instance Orthanc holds."""
        found: list[str] = self.request("GET", "/instances")
        return found


def _config(folder: Path, dicom_port: int, http_port: int, modalities: dict[str, int]) -> Path:
    config = {
        "Name": "pseudo-test",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": ORTHANC_AET,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "HttpsVerifyPeers": False,
        "DicomCheckCalledAet": True,
        "DicomCheckModalityHost": True,
        "DicomAlwaysAllowEcho": False,
        "DicomAlwaysAllowStore": False,
        "DicomAlwaysAllowFind": False,
        "DicomAlwaysAllowGet": False,
        "DicomAlwaysAllowMove": False,
        "DicomModalities": {
            aet.lower(): [aet, "127.0.0.1", port] for aet, port in modalities.items()
        },
        "StorageCompression": False,
        "OverwriteInstances": False,
        "Plugins": [],
        "ConcurrentJobs": 2,
        "HttpThreadsCount": 4,
        "SaveJobs": False,
        "StableAge": 1,
    }
    path = folder / "orthanc.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def _drain(stream: Any, log: list[str], started: threading.Event) -> None:
    """Keep Orthanc's output in ``log`` (so its pipe never fills) and say when it has started."""
    for line in stream:
        log.append(line.rstrip("\n"))
        if STARTED in line:
            started.set()
    started.set()  # the process ended: whoever waits looks at why


@contextmanager
def server(folder: Path, modalities: dict[str, int] | None = None) -> Iterator[Orthanc]:
    """A running Orthanc with its files under ``folder``; ``modalities`` (AE title -> port,
    all at 127.0.0.1) are the peers it talks to. Stopped at the end."""
    executable = binary()
    if executable is None:
        pytest.fail("Orthanc is required (Debian package orthanc) and is not installed")
    folder.mkdir(parents=True, exist_ok=True)
    dicom_port, http_port = free_port(), free_port()
    config = _config(folder, dicom_port, http_port, modalities or {})
    process = subprocess.Popen(
        [executable, "--no-jobs", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=folder,
    )
    handle = Orthanc(dicom_port, http_port, folder, pid=process.pid)
    started = threading.Event()
    reader = threading.Thread(target=_drain, args=(process.stdout, handle.log, started))
    reader.start()
    try:
        if not started.wait(START_DEADLINE) or process.poll() is not None:
            pytest.fail("Orthanc did not start: " + " | ".join(handle.log[-5:]))
        yield handle
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join()
