"""``pseudo serve``: the DICOM node with real peers on loopback.

The node runs as a real process (``python -m pseudo serve``); senders are DCMTK's ``dcmsend``
and ``echoscu`` or a pynetdicom client; the destination is a pynetdicom storage SCP in the
test process that keeps every data set it is sent (so a duplicate shows). Tests wait for
events (a log line, the node's journal, the destination's receipts), never for a fixed time.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.filereader import read_file_meta_info
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, _config, evt
from pynetdicom.presentation import build_context

from pseudo.serve.folder import NodeFolder
from pseudo.serve.journal import Journal
from tests.conftest import CANARY_SECRET, OPERATOR, CanaryRun, make_vault
from tests.events import wait_for

#: The AE title the tests' senders call as (on the node's allow-list).
SENDER = "SENDER"

needs_dcmtk = pytest.mark.skipif(
    shutil.which("dcmsend") is None or shutil.which("echoscu") is None,
    reason="DCMTK (dcmsend, echoscu) not installed: apt-get install dcmtk",
)


def free_port() -> int:
    """A TCP port free on loopback now (for a peer that must keep its port across restarts)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Destination:
    """A storage SCP on loopback that keeps each data set it receives, by SOP Instance UID."""

    def __init__(self, port: int = 0) -> None:
        self.ae = AE("DEST")
        for context in AllStoragePresentationContexts:
            assert context.abstract_syntax is not None
            self.ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        self.received: dict[str, list[bytes]] = {}
        self.changed = threading.Condition()
        self.requested_port = port
        self.server: Any = None

    def start(self) -> int:
        """Listen; return the port."""
        self.server = self.ae.start_server(
            ("127.0.0.1", self.requested_port),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, self._store)],
        )
        return int(self.server.server_address[1])

    def stop(self) -> None:
        """Stop listening."""
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    def _store(self, event: evt.Event) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        data = event.encoded_dataset(include_meta=True)
        with self.changed:
            self.received.setdefault(uid, []).append(data)
            self.changed.notify_all()
        return 0x0000

    def instances(self) -> int:
        """How many distinct SOP Instances it holds."""
        with self.changed:
            return len(self.received)

    def wait_for(self, instances: int, process: subprocess.Popen[str] | None = None) -> None:
        """Wait until it holds ``instances`` distinct SOP Instances."""
        wait_for(lambda: self.instances() >= instances, f"{instances} instances", process)


class NodeProcess:
    """``pseudo serve`` as a process, its log in a file (kept across restarts)."""

    def __init__(self, vault: Path, project: str, log: Path, *options: str, port: int = 0):
        self.vault, self.project, self.log_path = vault, project, log
        self.options = options
        self.port = port
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> int:
        """Start the node and wait until it listens; return its port."""
        env = {**os.environ, "PSEUDO_PASSPHRASE": OPERATOR}
        env.pop("PSEUDO_VAULT", None)
        starts = self.log().count("listening on")
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "pseudo", "serve", "--project", self.project),
                    *("--vault", str(self.vault), "--port", str(self.port), "--allow", SENDER),
                    *self.options,
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
                text=True,
                env=env,
            )
        found = wait_for(
            lambda: (
                len(re.findall(r"listening on [\d.]+:(\d+)", self.log())) > starts
                and re.findall(r"listening on [\d.]+:(\d+)", self.log())[-1]
            ),
            "the node to listen",
            self.process,
        )
        self.port = int(found)
        return self.port

    def log(self) -> str:
        """Everything the node has logged so far."""
        return self.log_path.read_text() if self.log_path.exists() else ""

    def counts(self) -> dict[str, int]:
        """The node's journal counts (what ``pseudo serve status`` shows)."""
        folder = NodeFolder.of(self.vault, self.project)
        if not folder.journal.exists():
            return {}
        journal = Journal(folder.journal, read_only=True)
        try:
            return journal.counts()
        finally:
            journal.close()

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """Send ``signum`` and wait for the node to exit; return its exit status."""
        assert self.process is not None
        self.process.send_signal(signum)
        code = self.process.wait(timeout=300)
        self.process = None
        return code

    def kill(self) -> None:
        """``kill -9``."""
        self.stop(signal.SIGKILL)

    def __enter__(self) -> NodeProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()


@contextmanager
def destination(port: int = 0) -> Iterator[Destination]:
    """A running :class:`Destination`."""
    dest = Destination(port)
    dest.start()
    try:
        yield dest
    finally:
        dest.stop()


def send(port: int, files: list[Path], ae_title: str = SENDER) -> list[Path]:
    """Send ``files`` with pynetdicom, each in its own transfer syntax, byte for byte; return
    those the node acknowledged with success (stops at the first failure)."""
    contexts = sorted(
        {
            (str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))
            for meta in map(read_file_meta_info, files)
        }
    )
    ae = AE(ae_title)
    acknowledged: list[Path] = []
    chunked = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        for start in range(0, len(contexts), 100):
            part = contexts[start : start + 100]
            wanted = set(part)
            assoc = ae.associate(
                "127.0.0.1",
                port,
                contexts=[build_context(sop, [ts]) for sop, ts in part],
                ae_title="PSEUDO",
            )
            if not assoc.is_established:
                return acknowledged
            try:
                for path in files:
                    meta = read_file_meta_info(path)
                    key = (str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))
                    if key not in wanted:
                        continue
                    status = assoc.send_c_store(path)
                    if "Status" not in status or status.Status != 0x0000:
                        return acknowledged
                    acknowledged.append(path)
            finally:
                if assoc.is_established:
                    assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = chunked
    return acknowledged


def dcmsend(port: int, folder: Path, ae_title: str = SENDER) -> subprocess.CompletedProcess[str]:
    """DCMTK's ``dcmsend`` of a whole folder tree (compressed files sent as they are)."""
    return subprocess.run(
        [
            *("dcmsend", "-dn", "-aet", ae_title, "-aec", "PSEUDO", "+sd", "+r"),
            *("127.0.0.1", str(port), str(folder)),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture()
def canary_vault(tmp_path: Path) -> Path:
    """A vault whose project ``canary`` has the secret of the shared ``canary_run``: the same
    pseudonyms, UIDs and offsets as that run."""
    return make_vault(tmp_path / "vault", "canary", secret=CANARY_SECRET)


def identity(data: bytes) -> tuple[str, str, str, str]:
    """PatientID and the study, series and instance UIDs of a received instance."""
    ds = dcmread(BytesIO(data), stop_before_pixels=True)
    uids = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    return (str(ds.PatientID), *map(str, uids))


# -- the canary corpus through the node -----------------------------------------------------
@needs_dcmtk
def test_canary_corpus_through_the_node(
    tmp_path: Path,
    canary_dir: Path,
    canary_vault: Path,
    canary_run: CanaryRun,
    answer_key: dict[str, Any],
) -> None:
    """dcmsend -> node -> destination: every file arrives once, with the pseudonyms and UIDs
    of ``pseudo run``, no canary token or original UID in any byte or in the node's log."""
    with destination() as dest:
        port = int(dest.server.server_address[1])
        node = NodeProcess(
            canary_vault, "canary", tmp_path / "node.log", "--forward", f"127.0.0.1:{port}:DEST"
        )
        with node:
            sent = dcmsend(node.port, canary_dir)
            assert sent.returncode == 0, sent.stderr[-2000:]
            files = len(answer_key["files"])
            dest.wait_for(files, node.process)
            wait_for(lambda: node.counts().get("queued") == 0, "an empty queue", node.process)
            counts = node.counts()
            assert node.stop() == 0
    assert counts["received"] == files and counts["forwarded"] == files
    assert counts["quarantined"] == 0 and counts["duplicates"] == 0
    assert all(len(copies) == 1 for copies in dest.received.values())
    expected = set()
    for output in canary_run.pairs.values():
        expected.add(identity(output.read_bytes()))
    got = {identity(copies[0]) for copies in dest.received.values()}
    assert got == expected
    tokens = [t.encode() for t in answer_key["canaries"]]
    originals = {
        uid
        for entry in answer_key["files"].values()
        for uid in [*entry["uids"].values(), *entry["other_uids"]]
        if uid
    }
    for copies in dest.received.values():
        assert not any(token in copies[0] for token in tokens)
    log = node.log()
    assert not [t for t in answer_key["canaries"] if t in log]
    assert not [uid for uid in originals if uid in log]
    assert not list(NodeFolder.of(canary_vault, "canary").outbox.rglob("*.dcm"))
