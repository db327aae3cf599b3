"""``pseudo serve``: the DICOM node with real peers on loopback.

The node runs as a real process (``python -m pseudo serve``); senders are DCMTK's ``dcmsend``
and ``echoscu`` or a pynetdicom client; the destination is a pynetdicom storage SCP in the
test process that keeps every data set it is sent (so a duplicate shows). Tests wait for
events (a log line, the node's journal, the destination's receipts), never for a fixed time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.filereader import read_file_meta_info
from pydicom.uid import UID, ExplicitVRLittleEndian
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, _config, evt
from pynetdicom.presentation import build_context

from pseudo.serve.folder import NodeFolder
from pseudo.serve.journal import Journal
from tests.conftest import CANARY_SECRET, OPERATOR, CanaryRun, canary_tokens_in, make_vault
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
        uid = str(getattr(event.request, "AffectedSOPInstanceUID", ""))
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

    def __init__(
        self,
        vault: Path,
        project: str,
        log: Path,
        *options: str,
        port: int = 0,
        allow: tuple[str, ...] = (SENDER,),
        env: dict[str, str] | None = None,
    ) -> None:
        self.vault, self.project, self.log_path = vault, project, log
        self.env = env if env is not None else {"PSEUDO_PASSPHRASE": OPERATOR}
        self.options = [*options, *(f"--allow={entry}" for entry in allow)]
        self.port = port
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> int:
        """Start the node and wait until it listens; return its port."""
        env = {**os.environ, **self.env}
        env.pop("PSEUDO_VAULT", None)
        if "PSEUDO_PASSPHRASE" not in self.env:
            env.pop("PSEUDO_PASSPHRASE", None)
        starts = self.log().count("listening on")
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "pseudo", "serve", "--project", self.project),
                    *("--vault", str(self.vault), "--port", str(self.port)),
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
                    if not assoc.is_established:  # the node went away (killed)
                        return acknowledged
                    try:
                        status = assoc.send_c_store(path)
                    except (RuntimeError, OSError):  # it went away during the send
                        return acknowledged
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
    return (
        str(ds.PatientID),
        str(ds.StudyInstanceUID),
        str(ds.SeriesInstanceUID),
        str(ds.SOPInstanceUID),
    )


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
    of ``pseudo run``, no canary token or original UID in any byte or in the node's log.
    With ``--pixels off`` (the node's pixel path is compared with ``pseudo run``'s byte for
    byte in ``test_output_folder_is_byte_identical_to_pseudo_run``): the images that run
    blanks arrive with their pixels as sent, and the project records the setting, so that a
    node started with another one is refused."""
    with destination() as dest:
        port = int(dest.server.server_address[1])
        node = NodeProcess(
            *(canary_vault, "canary", tmp_path / "node.log"),
            *("--forward", f"127.0.0.1:{port}:DEST", "--pixels", "off"),
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
    _pixels_as_sent(canary_dir, canary_run, dest)
    refused = subprocess.run(
        [
            *(sys.executable, "-m", "pseudo", "serve", "--project", "canary", "--port", "0"),
            *("--vault", str(canary_vault), "--pixels", "on", f"--allow={SENDER}"),
            *("--output", str(tmp_path / "not-written")),
        ],
        env={**os.environ, "PSEUDO_PASSPHRASE": OPERATOR},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode != 0 and "Traceback" not in refused.stderr, refused.stderr
    assert "pixels" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    tokens = answer_key["canaries"]
    originals = {
        uid
        for entry in answer_key["files"].values()
        for uid in [*entry["uids"].values(), *entry["other_uids"]]
        if uid
    }
    for copies in dest.received.values():
        assert not canary_tokens_in(copies[0], tokens)
    log = node.log()
    assert not canary_tokens_in(log, tokens)
    assert not [uid for uid in originals if uid in log]
    assert not list(NodeFolder.of(canary_vault, "canary").outbox.rglob("*.dcm"))


def _pixels_as_sent(canary_dir: Path, canary_run: CanaryRun, dest: Destination) -> None:
    """The images whose burned-in text ``pseudo run`` (pixels on) blanked arrived from a node
    with ``--pixels off`` with the pixel data they were sent with."""
    received = {identity(copies[0]): copies[0] for copies in dest.received.values()}
    blanked = 0
    for name, output in canary_run.pairs.items():
        sent = dcmread(canary_dir / name)
        if "PixelData" not in sent or dcmread(output).PixelData == sent.PixelData:
            continue
        blanked += 1
        arrived = dcmread(BytesIO(received[identity(output.read_bytes())]))
        assert arrived.PixelData == sent.PixelData, name
    assert blanked, "pseudo run blanked burned-in text in some canary image"


def forward_to(dest: Destination | int) -> tuple[str, str]:
    """The ``--forward`` option for ``dest`` (or a port)."""
    port = dest if isinstance(dest, int) else int(dest.server.server_address[1])
    return ("--forward", f"127.0.0.1:{port}:DEST")


def canary_files(canary_dir: Path, patient: str = "") -> list[Path]:
    """The canary corpus's files (of one patient when given), in a stable order."""
    return sorted((canary_dir / patient if patient else canary_dir).rglob("*.dcm"))


# -- who may talk to it ---------------------------------------------------------------------
@needs_dcmtk
def test_echo_and_the_allow_list(tmp_path: Path, vault: Path) -> None:
    """C-ECHO from an allowed AE succeeds; another AE title, or the right one from another
    address, is rejected at association, logged and counted."""
    node = NodeProcess(
        vault,
        "trial",
        tmp_path / "node.log",
        "--output",
        str(tmp_path / "out"),
        allow=(SENDER, "REMOTE@192.0.2.7"),
    )
    with node:

        def echo(ae_title: str) -> int:
            return subprocess.run(
                ["echoscu", "-aet", ae_title, "-aec", "PSEUDO", "127.0.0.1", str(node.port)],
                capture_output=True,
                check=False,
            ).returncode

        assert echo(SENDER) == 0
        assert echo("INTRUDER") != 0
        assert echo("REMOTE") != 0  # allowed only from 192.0.2.7
        wait_for(
            lambda: node.counts().get("rejected_associations") == 2, "two rejections", node.process
        )
        assert node.stop() == 0
    log = node.log()
    assert "association from INTRUDER@127.0.0.1 refused: not on the allow-list" in log
    assert "association from REMOTE@127.0.0.1 refused" in log


def test_refuses_to_start_without_an_allow_list(tmp_path: Path, vault: Path, env: None) -> None:
    """No --allow: the node would admit no one; it says so in one line and exits 2."""
    from tests.conftest import cli

    result = cli(*("serve", "--project", "trial", "--vault", vault, "--output", tmp_path / "out"))
    assert result.code == 2
    assert "no --allow" in result.stderr and "Traceback" not in result.stderr
    both = cli(
        *("serve", "--project", "trial", "--vault", vault, "--allow", SENDER),
        *("--output", tmp_path / "out", "--forward", "127.0.0.1:104:X"),
    )
    assert both.code == 2 and "give one of --forward" in both.stderr


def _certificates(folder: Path) -> dict[str, Path]:
    """A throwaway CA, the node's certificate, a client certificate from that CA, and one
    from another CA (PEM files)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    def certificate(
        subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, signer: Any, ca: bool
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name(issuer))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
            )
        return builder.sign(signer, hashes.SHA256())

    files: dict[str, Path] = {}

    def write(label: str, cert: x509.Certificate, key: Any | None = None) -> None:
        files[f"{label}.crt"] = folder / f"{label}.crt"
        files[f"{label}.crt"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        if key is not None:
            files[f"{label}.key"] = folder / f"{label}.key"
            files[f"{label}.key"].write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )

    for ca_label in ("ca", "rogue-ca"):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        write(ca_label, certificate(ca_label, ca_key, ca_label, ca_key, True), ca_key)
        for label in ("node", "client") if ca_label == "ca" else ("rogue-client",):
            key = ec.generate_private_key(ec.SECP256R1())
            write(label, certificate(label, key, ca_label, ca_key, False), key)
    return files


def test_tls_client_without_a_valid_certificate_is_rejected(tmp_path: Path, vault: Path) -> None:
    """With TLS, a client with a certificate of the node's CA can echo; a client with no
    certificate, or one from another CA, never gets an association (and is counted)."""
    import ssl

    certs = _certificates(tmp_path)
    node = NodeProcess(
        vault,
        "trial",
        tmp_path / "node.log",
        *("--output", str(tmp_path / "out")),
        *("--tls-cert", str(certs["node.crt"]), "--tls-key", str(certs["node.key"])),
        *("--tls-ca", str(certs["ca.crt"])),
    )

    def echo(client: str | None) -> bool:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=certs["ca.crt"])
        context.check_hostname = False
        if client is not None:
            context.load_cert_chain(certs[f"{client}.crt"], certs[f"{client}.key"])
        ae = AE(SENDER)
        ae.add_requested_context("1.2.840.10008.1.1")
        assoc = ae.associate(
            "127.0.0.1", node.port, ae_title="PSEUDO", tls_args=(context, "localhost")
        )
        if not assoc.is_established:
            return False
        status = assoc.send_c_echo()
        assoc.release()
        return "Status" in status and status.Status == 0x0000

    with node:
        assert echo("client")
        assert not echo(None)
        assert not echo("rogue-client")
        wait_for(
            lambda: node.counts().get("rejected_associations", 0) >= 2,
            "two refused handshakes",
            node.process,
        )
        assert node.stop() == 0
    assert "TLS handshake from 127.0.0.1 refused" in node.log()


# -- nothing lost -----------------------------------------------------------------------------
def test_destination_down_then_up(tmp_path: Path, canary_dir: Path, vault: Path) -> None:
    """Instances wait (retried with backoff) while the destination is down; once it is up,
    each is forwarded once."""
    port = free_port()
    files = canary_files(canary_dir, "P01")
    node = NodeProcess(vault, "trial", tmp_path / "node.log", *forward_to(port))
    with node:
        assert send(node.port, files) == files
        wait_for(
            lambda: (
                node.counts().get("retried", 0) > 0
                and node.counts().get("waiting_for_destination") == len(files)
            ),
            "the node to retry a destination that is down",
            node.process,
        )
        with destination(port) as dest:
            dest.wait_for(len(files), node.process)
            wait_for(lambda: node.counts()["queued"] == 0, "an empty queue", node.process)
            assert node.stop() == 0
    assert node.counts()["forwarded"] == len(files)
    assert sorted(len(copies) for copies in dest.received.values()) == [1] * len(files)
    assert "DEST cannot be reached" in node.log()


def test_output_folder_is_byte_identical_to_pseudo_run(
    tmp_path: Path, canary_dir: Path, canary_vault: Path, canary_run: CanaryRun
) -> None:
    """--output DIR: instances sent in their own transfer syntax give the very files (path and
    bytes) of ``pseudo run`` with the same project secret, ultrasound images whose burned-in
    text is blanked included; SIGTERM exits 0 once done."""
    files = canary_files(canary_dir, "P02") + canary_files(canary_dir, "P08/ST2/SE1")
    out = tmp_path / "out"
    node = NodeProcess(canary_vault, "canary", tmp_path / "node.log", "--output", str(out))
    with node:
        assert send(node.port, files) == files
        assert node.stop() == 0  # draining: everything received is written before the exit
    written = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*.dcm")}
    expected = {
        str(canary_run.pairs[str(f.relative_to(canary_dir))].relative_to(canary_run.output)): (
            canary_run.pairs[str(f.relative_to(canary_dir))].read_bytes()
        )
        for f in files
    }
    assert written.keys() == expected.keys()
    assert written == expected


def test_identity_conflict_is_quarantined(tmp_path: Path, canary_dir: Path, vault: Path) -> None:
    """A second, different instance with the same SOP Instance UID is accepted, kept in the
    quarantine and counted, never forwarded; a byte-identical resend is not sent twice."""
    first = next(
        path
        for path in canary_files(canary_dir, "P01")
        if "PixelData" in (ds := dcmread(path)) and not ds.file_meta.TransferSyntaxUID.is_compressed
    )
    changed = dcmread(first)
    pixels = bytearray(changed.PixelData)
    pixels[0] ^= 0xFF  # other pixels (which a policy keeps), same SOP Instance UID
    changed.PixelData = bytes(pixels)
    other = tmp_path / "other.dcm"
    changed.save_as(other)
    with destination() as dest:
        node = NodeProcess(vault, "trial", tmp_path / "node.log", *forward_to(dest))
        with node:
            assert send(node.port, [first, first, other]) == [first, first, other]
            wait_for(
                lambda: node.counts().get("quarantined") == 1 and node.counts().get("queued") == 0,
                "the conflict quarantined",
                node.process,
            )
            assert node.stop() == 0
    counts = node.counts()
    assert (counts["forwarded"], counts["duplicates"], counts["quarantined"]) == (1, 1, 1)
    assert [len(copies) for copies in dest.received.values()] == [1]
    quarantine = NodeFolder.of(vault, "trial").quarantine
    assert len(list(quarantine.iterdir())) == 1
    assert "quarantined: another instance has the same SOP Instance UID" in node.log()


def test_status_command(tmp_path: Path, canary_dir: Path, vault: Path) -> None:
    """`pseudo serve status` reads the counts from the journal (no passphrase); with
    --status-port, the running node answers the same counts at http://127.0.0.1:PORT/status."""
    from tests.conftest import cli

    missing = cli("serve", "status", "--project", "trial", "--vault", vault)
    assert missing.code == 2 and "no node journal" in missing.stderr
    files = canary_files(canary_dir, "P03")[:3]
    node = NodeProcess(
        vault, "trial", tmp_path / "node.log", "--output", str(tmp_path / "out"),
        "--status-port", "0",
    )  # fmt: skip
    with node:
        assert send(node.port, files) == files
        found = re.search(r"counts at (http://127\.0\.0\.1:\d+)/status", node.log())
        assert found, node.log()
        wait_for(lambda: node.counts().get("queued") == 0, "an empty queue", node.process)
        with urllib.request.urlopen(found.group(1) + "/status", timeout=30) as answer:
            assert answer.headers["Content-Type"] == "application/json"
            assert json.loads(answer.read()) == node.counts()
        with pytest.raises(urllib.error.HTTPError) as missing_path:
            urllib.request.urlopen(found.group(1) + "/other", timeout=30)
        assert missing_path.value.code == 404
        assert node.stop() == 0
    result = cli("serve", "status", "--project", "trial", "--vault", vault, "--json")
    assert result.code == 0, result.stderr
    counts = result.json()
    assert counts["received"] == 3 and counts["forwarded"] == 3 and counts["queued"] == 0
    text = cli("serve", "status", "--project", "trial", "--vault", vault)
    assert "rejected associations" in text.stdout


# -- many senders, and kill -9 -------------------------------------------------------------
def _four_senders(tmp_path: Path, corpus: Path, vault: Path) -> None:
    """Four dcmsend at once, ``corpus`` five times over: every instance reaches the
    destination exactly once; the repeats, whatever their order, give byte-identical outputs
    (a difference would be quarantined as a conflict) and are not sent again."""
    files = len(canary_files(corpus))
    passes = 5
    failures: list[str] = []
    with destination() as dest:
        node = NodeProcess(vault, "canary", tmp_path / "node.log", *forward_to(dest))
        with node:

            def sender(index: int) -> None:
                for _ in range(index, passes, 4):
                    result = dcmsend(node.port, corpus)
                    if result.returncode != 0:
                        failures.append(result.stderr[-500:])

            threads = [threading.Thread(target=sender, args=(i,)) for i in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert not failures
            wait_for(
                lambda: (
                    node.counts().get("received") == passes * files
                    and node.counts().get("queued") == 0
                ),
                "every instance through",
                node.process,
            )
            assert node.stop() == 0
    counts = node.counts()
    assert counts["forwarded"] == files and counts["quarantined"] == 0
    assert counts["duplicates"] == (passes - 1) * files
    assert len(dest.received) == files
    assert all(len(copies) == 1 for copies in dest.received.values())


@needs_dcmtk
def test_four_senders_five_times_one_patient(
    tmp_path: Path, canary_dir: Path, canary_vault: Path
) -> None:
    """Four senders at once, one patient's studies five times over (the fast variant)."""
    _four_senders(tmp_path, canary_dir / "P01", canary_vault)


@needs_dcmtk
@pytest.mark.slow
def test_four_senders_five_times_the_corpus(
    tmp_path: Path, canary_dir: Path, canary_vault: Path
) -> None:
    """Four senders at once, the whole canary corpus five times over."""
    _four_senders(tmp_path, canary_dir, canary_vault)


def _kill_while_streaming(
    tmp_path: Path, canary_dir: Path, vault: Path, moments: int, patients: tuple[str, ...] = ()
) -> None:
    """Stream the canary corpus (or these ``patients`` of it) to the node with pynetdicom (five
    instances an association, resending what was not acknowledged), ``kill -9`` the node
    ``moments`` times at growing counts of received instances, restart it each time; then
    check the destination."""
    files = [f for p in patients for f in canary_files(canary_dir, p)] or canary_files(canary_dir)
    port = free_port()
    node_up = threading.Event()
    acknowledged: list[Path] = []

    failures: list[BaseException] = []

    def stream() -> None:
        remaining = list(files)
        try:
            while remaining:
                sent = send(port, remaining[:5])
                acknowledged.extend(sent)
                remaining = remaining[len(sent) :]
                if not sent:
                    node_up.wait(0.05)
        except BaseException as exc:  # shown by the test, not lost in a thread
            failures.append(exc)

    with destination() as dest:
        # without the pixel step: what is checked is the queue, not what a worker does
        node = NodeProcess(
            *(vault, "trial", tmp_path / "node.log", *forward_to(dest), "--pixels", "off"),
            port=port,
        )
        with node:
            node_up.set()
            streamer = threading.Thread(target=stream)
            streamer.start()
            step = len(files) // (moments + 1)
            for moment in range(1, moments + 1):
                target = moment * step

                def reached(at: int = target) -> bool:
                    return bool(failures) or node.counts().get("received", 0) >= at

                wait_for(reached, f"{target} instances received", node.process)
                assert not failures, failures
                node_up.clear()
                node.kill()
                node.start()
                node_up.set()
            streamer.join()
            assert not failures, failures
            assert acknowledged == files
            wait_for(
                lambda: dest.instances() == len(files) and node.counts().get("queued") == 0,
                "every instance at the destination",
                node.process,
            )
            assert node.stop() == 0
    counts = node.counts()
    assert counts["forwarded"] == len(files) and counts["quarantined"] == 0
    assert len(dest.received) == len(files)
    # a resend is possible only for an instance the destination stored just before a kill,
    # before the node could record it: at most one per kill, and the very same bytes
    extra = sum(len(copies) - 1 for copies in dest.received.values())
    assert extra <= moments
    assert all(len(set(copies)) == 1 for copies in dest.received.values())
    folder = NodeFolder.of(vault, "trial")
    assert not list(folder.spool.iterdir())
    assert not list(folder.outbox.rglob("*.dcm")) and not list(folder.root.rglob("*.part"))


def _descendants(pid: int) -> set[int]:
    """The processes below ``pid`` (its children, theirs, ...), from /proc."""
    parents: dict[int, int] = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat_file.parent.name)] = int(
                stat_file.read_text().rsplit(")", 1)[1].split()[1]
            )
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def test_kill_9_leaves_no_worker_behind(tmp_path: Path, canary_dir: Path, vault: Path) -> None:
    """The workers (which hold the project's keys) and the fork server that started them end
    soon after the node is killed: none lives on as an orphan."""
    node = NodeProcess(vault, "trial", tmp_path / "node.log", "--output", str(tmp_path / "out"),
                       "--workers", "2")  # fmt: skip
    with node:
        files = canary_files(canary_dir, "P02")[:2]
        assert send(node.port, files) == files
        assert node.process is not None
        below = _descendants(node.process.pid)
        assert len(below) >= 3, below  # the fork server and two workers (a resource tracker)
        node.kill()
    wait_for(lambda: not any(_running(pid) for pid in below), "the workers to end with the node")


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (ended, not yet reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_kill_9_while_a_sender_streams(tmp_path: Path, canary_dir: Path, vault: Path) -> None:
    """kill -9 twice while a sender streams three patients (39 instances): each acknowledged
    instance arrives, once. The whole corpus, killed six times: ``-m slow``."""
    _kill_while_streaming(tmp_path, canary_dir, vault, moments=2, patients=("P01", "P02", "P04"))


@pytest.mark.slow
def test_kill_9_many_times_while_a_sender_streams(
    tmp_path: Path, canary_dir: Path, vault: Path
) -> None:
    """The same, killed six times."""
    _kill_while_streaming(tmp_path, canary_dir, vault, moments=6)


def test_sigterm_with_the_destination_down_keeps_the_queue(
    tmp_path: Path, canary_dir: Path, vault: Path
) -> None:
    """SIGTERM while the destination is down: everything received is pseudonymized, the node
    exits 0 saying what is still queued; started again (its passphrase from a systemd
    credential this time), it forwards each queued instance once."""
    port = free_port()
    files = canary_files(canary_dir, "P04")[:6]
    log = tmp_path / "node.log"
    node = NodeProcess(vault, "trial", log, *forward_to(port))
    with node:
        assert send(node.port, files) == files
        assert node.stop() == 0  # the drain pseudonymizes all, tries the destination once
    counts = node.counts()
    assert counts["waiting_for_destination"] == len(files) and counts["forwarded"] == 0
    assert "still to forward" in log.read_text()
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "pseudo-passphrase").write_text(OPERATOR + "\n")
    again = NodeProcess(
        vault, "trial", log, *forward_to(port), env={"CREDENTIALS_DIRECTORY": str(credentials)}
    )
    with destination(port) as dest, again:
        dest.wait_for(len(files), again.process)
        wait_for(lambda: again.counts()["queued"] == 0, "an empty queue", again.process)
        assert again.stop() == 0
    assert again.counts()["forwarded"] == len(files)
    assert [len(copies) for copies in dest.received.values()] == [1] * len(files)


def test_help_has_examples() -> None:
    """Both commands explain themselves, with an example."""
    from tests.conftest import cli

    for args in (("serve", "--help"), ("serve", "status", "--help")):
        result = cli(*args)
        assert result.code == 0 and "Example" in result.stdout, result.stdout


# -- private SOP classes ----------------------------------------------------------------------
#: A vendor's private storage class (Siemens's CSA Non-Image Storage, raw data and the like).
PRIVATE_CLASS = "1.3.12.2.1107.5.9.1"


def _private_class_files(canary_dir: Path, folder: Path) -> dict[str, Path]:
    """Instances of :data:`PRIVATE_CLASS` made from a canary image: an image, a raw-data
    instance (no pixels, a private block), and one without a Study Instance UID (which
    ``pseudo run`` quarantines)."""
    source = next(
        path
        for path in canary_files(canary_dir, "P01")
        if "PixelData" in (ds := dcmread(path)) and not ds.file_meta.TransferSyntaxUID.is_compressed
    )
    folder.mkdir()
    made: dict[str, Path] = {}
    for name, suffix in (("image", ""), ("raw", ".1"), ("no-study", ".2")):
        ds = dcmread(source)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UID(PRIVATE_CLASS)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID + suffix
        if name == "raw":
            del ds.PixelData
            ds.private_block(0x0029, "SIEMENS CSA NON-IMAGE", create=True).add_new(
                0x10, "OB", b"\x01\x02" * 64
            )
        if name == "no-study":
            del ds.StudyInstanceUID
        made[name] = folder / f"{name}.dcm"
        ds.save_as(made[name])
    return made


def _run_outcomes(
    source: Path, vault: Path, output: Path, *options: str | Path
) -> dict[str, dict[str, Any]]:
    """``pseudo run`` of ``source``: each input file's name -> its report entry (the run
    exits 1 when it quarantines a file)."""
    from pseudo.batch.report import load_report
    from tests.conftest import cli_as_operator

    result = cli_as_operator(
        "run", source, output, "--project", "trial", "--vault", vault, "--json", *options
    )
    assert result.code in (0, 1), result.stderr
    report = load_report(Path(result.json()["report"]))
    return {Path(entry["input"]).name: entry for entry in report["files"]}


@needs_dcmtk
def test_private_sop_class_goes_the_way_of_pseudo_run(tmp_path: Path, canary_dir: Path) -> None:
    """A modality's private storage class is accepted (dcmsend proposes it as it is) and takes
    the per-file path of ``pseudo run``: the same files, byte for byte, and the same quarantine
    with the same reason; the allow-list still holds for it."""
    files = _private_class_files(canary_dir, tmp_path / "in")
    secret = os.urandom(32)
    expected = _run_outcomes(
        tmp_path / "in", make_vault(tmp_path / "run-vault", secret=secret), tmp_path / "run"
    )
    assert [expected[f"{n}.dcm"]["status"] for n in files] == ["written", "written", "quarantined"]
    vault = make_vault(tmp_path / "node-vault", secret=secret)
    out = tmp_path / "out"
    node = NodeProcess(vault, "trial", tmp_path / "node.log", "--output", str(out))
    with node:
        refused = dcmsend(node.port, tmp_path / "in", ae_title="STRANGER")
        assert refused.returncode != 0
        sent = dcmsend(node.port, tmp_path / "in")
        assert sent.returncode == 0, sent.stderr[-2000:]
        assert node.stop() == 0
    counts = node.counts()
    assert (counts["received"], counts["forwarded"], counts["quarantined"]) == (3, 2, 1)
    assert counts["rejected_associations"] == 1
    written = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*.dcm")}
    assert written == {
        entry["output"]: (tmp_path / "run" / entry["output"]).read_bytes()
        for entry in expected.values()
        if entry["output"]
    }
    reason = expected["no-study.dcm"]["reason"]
    assert reason and f"quarantined: {reason}" in node.log()
    assert len(list(NodeFolder.of(vault, "trial").quarantine.iterdir())) == 1


def _accepted_syntax(port: int, sop_class: str) -> str:
    """The transfer syntax the node accepts for ``sop_class`` proposed with a private syntax
    first and a standard one second."""
    ae = AE(SENDER)
    assoc = ae.associate(
        "127.0.0.1",
        port,
        contexts=[build_context(sop_class, ["1.3.12.2.1107.5.99.1", ExplicitVRLittleEndian])],
        ae_title="PSEUDO",
    )
    assert assoc.is_established
    try:
        return str(assoc.accepted_contexts[0].transfer_syntax[0])
    finally:
        assoc.release()


@pytest.mark.skipif(shutil.which("storescp") is None, reason="DCMTK (storescp) not installed")
def test_private_sop_class_is_forwarded_as_such(
    tmp_path: Path, canary_dir: Path, vault: Path
) -> None:
    """A pynetdicom client sends private-class instances; the node forwards them, proposing
    the private class, to DCMTK's storescp (which accepts unknown classes with --promiscuous);
    what fails the per-file path is never forwarded. A peer that proposes a private transfer
    syntax before a standard one gets the standard one."""
    files = _private_class_files(canary_dir, tmp_path / "in")
    received = tmp_path / "received"
    received.mkdir()
    port = free_port()
    storescp = subprocess.Popen(
        ["storescp", "--promiscuous", "-aet", "DEST", "-od", str(received), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    try:
        node = NodeProcess(vault, "trial", tmp_path / "node.log", *forward_to(port))
        with node:
            assert _accepted_syntax(node.port, PRIVATE_CLASS) == ExplicitVRLittleEndian
            assert send(node.port, list(files.values())) == list(files.values())
            wait_for(
                lambda: node.counts().get("forwarded") == 2 and node.counts().get("queued") == 0,
                "two instances forwarded",
                node.process,
            )
            assert node.stop() == 0
    finally:
        storescp.terminate()
        storescp.wait()
    arrived = [dcmread(path) for path in received.iterdir()]
    assert len(arrived) == 2
    assert {str(ds.SOPClassUID) for ds in arrived} == {PRIVATE_CLASS}
    originals = {str(dcmread(path).SOPInstanceUID) for path in files.values()}
    assert not originals & {str(ds.SOPInstanceUID) for ds in arrived}
    assert node.counts()["quarantined"] == 1


# -- anchored dates -------------------------------------------------------------------------
def test_anchored_policy_uses_the_offsets_pseudo_run_recorded(
    tmp_path: Path, canary_dir: Path, vault: Path
) -> None:
    """Under a policy that anchors dates, the node gives a patient that ``pseudo run`` has
    anchored the very files of that run; a patient not anchored yet is quarantined, never
    anchored by the node (that offset would depend on the order of arrival)."""
    policy = tmp_path / "anchored.yaml"
    policy.write_text("name: anchored\nextends: default\ndates:\n  anchor: 2000-01-01\n")
    anchored, other = canary_files(canary_dir, "P01"), canary_files(canary_dir, "P02")[:2]
    expected = _run_outcomes(canary_dir / "P01", vault, tmp_path / "run", "--policy", policy)
    assert {entry["status"] for entry in expected.values()} == {"written"}
    out = tmp_path / "out"
    node = NodeProcess(vault, "trial", tmp_path / "node.log", "--output", str(out))
    with node:  # the policy the project recorded: anchored
        assert send(node.port, [*other, *anchored]) == [*other, *anchored]
        assert node.stop() == 0
    counts = node.counts()
    assert (counts["forwarded"], counts["quarantined"]) == (len(anchored), len(other))
    written = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*.dcm")}
    assert written == {
        entry["output"]: (tmp_path / "run" / entry["output"]).read_bytes()
        for entry in expected.values()
    }
    assert node.log().count("has no anchored offset yet") == len(other)


# -- the project's sites, trial values and identity checks -----------------------------------
def test_site_trial_values_and_identity_checks_as_in_pseudo_run(
    tmp_path: Path, canary_dir: Path, vault: Path
) -> None:
    """A project with a site and clinical trial settings: the node writes the very files of
    ``pseudo run`` (the site's patient identities, the trial attributes); an instance whose
    birth date contradicts what the project holds for its patient is quarantined with the
    run's reason."""
    from tests.conftest import cli

    os.environ["PSEUDO_PASSPHRASE"] = OPERATOR
    try:
        for command in (
            ("project", "add-site", "lyon", "--site-id", "0042"),
            ("project", "set-trial", "--sponsor", "ACME Pharma", "--protocol-id", "LT-01"),
        ):
            result = cli(*command, "--project", "trial", "--vault", vault)
            assert result.code == 0, result.stderr
    finally:
        del os.environ["PSEUDO_PASSPHRASE"]
    files = canary_files(canary_dir, "P02")[:3]
    source = tmp_path / "in"
    source.mkdir()
    for path in files:
        shutil.copy(path, source / path.name)
    expected = _run_outcomes(source, vault, tmp_path / "run")
    assert {entry["status"] for entry in expected.values()} == {"written"}
    conflict = tmp_path / "conflict" / "other.dcm"
    conflict.parent.mkdir()
    ds = dcmread(files[0])
    ds.PatientBirthDate = "19010101"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = UID(ds.SOPInstanceUID + ".7")
    ds.save_as(conflict)
    reason = _run_outcomes(conflict.parent, vault, tmp_path / "run-conflict")["other.dcm"]
    assert reason["status"] == "quarantined" and "identity conflict" in reason["reason"]
    out = tmp_path / "out"
    node = NodeProcess(vault, "trial", tmp_path / "node.log", "--output", str(out))
    with node:
        assert send(node.port, [*files, conflict]) == [*files, conflict]
        assert node.stop() == 0
    counts = node.counts()
    assert (counts["forwarded"], counts["quarantined"]) == (len(files), 1)
    written = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*.dcm")}
    assert written == {
        entry["output"]: (tmp_path / "run" / entry["output"]).read_bytes()
        for entry in expected.values()
    }
    assert f"quarantined: {reason['reason']}" in node.log()
