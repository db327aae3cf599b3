"""No input can stop a batch: a deflate bomb under a memory limit, a worker that dies, the
parent killed under its workers, symlinks and special files in INPUT, and a temporary folder
that is a symlink (issue 16, docs/hardening.md)."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import zlib
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from pseudo.batch.report import load_report
from tests.conftest import OPERATOR, REPO, make_vault, run_command, tree_digest
from tests.events import wait_for

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
GOOD = ["MR_small.dcm", "rtplan.dcm", "waveform_ecg.dcm", "CT_small.dcm"]
GIB = 1024**3
SECRET = bytes(range(32))


def _good(folder: Path, names: list[str] = GOOD, copies: int = 1) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        source = get_testdata_file(name)
        assert isinstance(source, str)
        ds = pydicom.dcmread(source)
        for copy in range(copies):
            if copies > 1:  # distinct instances
                ds.SOPInstanceUID = f"1.2.826.0.1.3680043.10.511.{copy}.{len(name)}"
            ds.save_as(folder / f"{copy:03d}-{name}")


def deflate_bomb(path: Path, inflated: int = GIB) -> None:
    """A deflated file of about 1 MB whose data set inflates to ``inflated`` bytes: a private
    OB element of zeros (zlib compresses zeros about 1000:1), built without holding it. The
    zeros are compressed with run-length matches only (Z_RLE): the same ratio as the default
    strategy's search, three times faster."""
    source = get_testdata_file("MR_small.dcm")
    assert isinstance(source, str)
    ds = pydicom.dcmread(source)
    del ds.PixelData
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    head = pydicom.filebase.DicomBytesIO()
    pydicom.dcmwrite(head, ds, enforce_file_format=True)
    data = head.getvalue()
    # the meta's end: preamble, DICM, then group 2 (its length is the first element's value)
    meta_end = 132 + 12 + int.from_bytes(data[140:144], "little")
    body = zlib.decompress(data[meta_end:], -zlib.MAX_WBITS)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS, 9, zlib.Z_RLE)
    parts = [compressor.compress(body)]
    header = (0x0009).to_bytes(2, "little") + (0x1010).to_bytes(2, "little") + b"OB\0\0"
    parts.append(compressor.compress(header + inflated.to_bytes(4, "little")))
    zeros = bytes(16 * 1024 * 1024)
    for _ in range(inflated // len(zeros)):
        parts.append(compressor.compress(zeros))
    parts.append(compressor.flush())
    path.write_bytes(data[:meta_end] + b"".join(parts))


def _limit_memory(limit: int) -> Any:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


def _run(
    source: Path, target: Path, vault: Path, *extra: str, limit: int | None = None
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    process = subprocess.run(
        run_command(source, target, vault, "--json", "--quiet", *extra),
        env=dict(os.environ, PSEUDO_PASSPHRASE=OPERATOR),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        preexec_fn=_limit_memory(limit) if limit else None,
    )
    assert "Traceback" not in process.stderr, process.stderr[-3000:]
    report = load_report(Path(json.loads(process.stdout)["report"]))
    return process, report


def _by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {Path(f["input"]).name: f for f in report["files"]}


@pytest.fixture(scope="module")
def bomb_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One deflate bomb for the tests of this module (they copy it)."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.dcm"
    deflate_bomb(path)
    return path


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_deflate_bomb_under_a_memory_limit_is_quarantined(
    tmp_path: Path, workers: str, bomb_file: Path
) -> None:
    source = tmp_path / "in"
    _good(source)
    shutil.copyfile(bomb_file, source / "bomb.dcm")
    assert (source / "bomb.dcm").stat().st_size < 4 * 1024 * 1024
    vault = make_vault(tmp_path / "vault")
    limit = 3 * GIB // 2
    for attempt in ("first", "rerun"):
        process, report = _run(source, tmp_path / "out", vault, "--workers", workers, limit=limit)
        assert process.returncode == 1, (attempt, process.stderr[-2000:])
        files = _by_name(report)
        bomb = files["bomb.dcm"]
        assert bomb["status"] == "quarantined"
        assert "inflates beyond" in bomb["reason"]
        for name in GOOD:
            assert files[f"000-{name}"]["status"] in ("written", "unchanged"), files[f"000-{name}"]
    assert len(list((tmp_path / "out").glob("*/*/*/*.dcm"))) == len(GOOD)


#: ``pseudo`` with a fault planted: a worker process that picks up a file named ``*killer*``
#: dies at once (SIGKILL), as one killed for memory does.
KILLER = """
import os, signal, sys
from pseudo.pipeline import process
parent, original = os.getpid(), process.FileProcessor.process
def process_or_die(self, path, *args, **kwargs):
    if "killer" in path.name and os.getpid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, path, *args, **kwargs)
process.FileProcessor.process = process_or_die
from pseudo.cli.app import main
main(sys.argv[1:])
"""


def test_a_worker_that_dies_is_replaced_and_its_file_quarantined(tmp_path: Path) -> None:
    source = tmp_path / "in"
    _good(source, copies=5)  # 20 files, in chunks of 8
    killer = source / "001-killer.dcm"
    ds = pydicom.dcmread(source / "000-MR_small.dcm")
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.10.511.99"
    ds.save_as(killer)
    vault = make_vault(tmp_path / "vault", secret=SECRET)
    command = run_command(source, tmp_path / "out", vault, "--json", "--quiet", "--workers", "2")
    command[1:3] = ["-c", KILLER]
    process = subprocess.run(
        command,
        env=dict(os.environ, PSEUDO_PASSPHRASE=OPERATOR),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert "Traceback" not in process.stderr, process.stderr[-3000:]
    assert process.returncode == 1, process.stderr[-2000:]
    report = load_report(Path(json.loads(process.stdout)["report"]))
    files = _by_name(report)
    assert files[killer.name]["status"] == "quarantined"
    assert "worker processing it died" in files[killer.name]["reason"]
    others = {name: f["status"] for name, f in files.items() if name != killer.name}
    assert len(others) == 20 and set(others.values()) == {"written"}, others
    # the same outputs as a run without the fault, in one process
    killer.unlink()
    _run(source, tmp_path / "out1", make_vault(tmp_path / "v1", secret=SECRET), "--workers", "1")
    assert tree_digest(tmp_path / "out") == tree_digest(tmp_path / "out1")


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_killing_the_parent_leaves_no_worker_behind(tmp_path: Path) -> None:
    source = tmp_path / "in"
    _good(source, copies=60)
    vault = make_vault(tmp_path / "vault")
    target = tmp_path / "out"
    process = subprocess.Popen(
        run_command(source, target, vault, "--quiet", "--workers", "2"),
        env=dict(os.environ, PSEUDO_PASSPHRASE=OPERATOR),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
        text=True,
    )
    try:
        wait_for(lambda: next(target.rglob("*.part"), None), "a temporary file", process)
        workers = _children(process.pid)
        assert workers, "the run has worker processes"
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        wait_for(
            lambda: not any(_alive(pid) for pid in workers),
            "the workers to exit after their parent was killed (orphaned workers remain)",
            timeout=5,
        )
    finally:
        if process.poll() is None:
            process.kill()


def test_links_and_special_files_in_input_are_followed_or_listed(tmp_path: Path) -> None:
    """A linked folder is read (each real folder once: a loop is listed, not walked); FIFOs,
    sockets, dangling links and link loops are listed as skipped with their reason."""
    import socket

    source = tmp_path / "in"
    elsewhere = tmp_path / "elsewhere"
    _good(elsewhere, ["MR_small.dcm"])
    _good(source / "plain", ["CT_small.dcm"])
    (source / "linked").symlink_to(elsewhere, target_is_directory=True)
    (source / "plain" / "loop").symlink_to(source, target_is_directory=True)
    (source / "dangling.dcm").symlink_to(tmp_path / "missing.dcm")
    (source / "self-loop").symlink_to(source / "self-loop")
    os.mkfifo(source / "fifo.dcm")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(source / "socket.dcm"))
    try:
        process, report = _run(source, tmp_path / "out", make_vault(tmp_path / "vault"))
    finally:
        server.close()
    assert process.returncode == 0, process.stderr[-2000:]
    files = _by_name(report)
    assert files["000-MR_small.dcm"]["status"] == "written"  # through the linked folder
    assert files["000-CT_small.dcm"]["status"] == "written"
    reasons = {name: (f["status"], f["reason"]) for name, f in files.items() if "MR" not in name}
    assert reasons["loop"] == ("skipped", "a link to a folder already listed: not read twice")
    assert reasons["dangling.dcm"] == ("skipped", "a link whose target does not exist: not read")
    assert reasons["self-loop"] == ("skipped", "a link that loops: not read")
    assert reasons["fifo.dcm"] == ("skipped", "a FIFO (named pipe): not read")
    assert reasons["socket.dcm"] == ("skipped", "a socket: not read")
    assert len(list((tmp_path / "out").glob("*/*/*/*.dcm"))) == 2


def test_a_link_into_the_output_is_not_read(tmp_path: Path) -> None:
    source = tmp_path / "in"
    _good(source, ["CT_small.dcm"])
    (tmp_path / "out").mkdir()
    (source / "out-link").symlink_to(tmp_path / "out", target_is_directory=True)
    vault = make_vault(tmp_path / "vault")
    _run(source, tmp_path / "out", vault)
    _, report = _run(source, tmp_path / "out", vault)
    files = _by_name(report)
    assert files["out-link"]["status"] == "skipped", files
    assert [f["status"] for f in report["files"]].count("unchanged") == 1


@pytest.mark.parametrize("which", ["root", "run"])
def test_a_temporary_folder_that_is_a_link_is_refused(tmp_path: Path, which: str) -> None:
    source = tmp_path / "in"
    _good(source, ["CT_small.dcm", "MR_small.dcm"])
    target, outside = tmp_path / "out", tmp_path / "outside"
    target.mkdir()
    outside.mkdir()
    if which == "root":
        (target / ".pseudo-tmp").symlink_to(outside, target_is_directory=True)
    else:  # a dead run's folder left as a link, with its lock: cleaned up, never followed
        (target / ".pseudo-tmp").mkdir()
        (target / ".pseudo-tmp" / "dead.lock").symlink_to(outside / "victim.lock")
        (outside / "victim.lock").write_text("keep")
        (target / ".pseudo-tmp" / "dead").symlink_to(outside, target_is_directory=True)
    process = subprocess.run(
        run_command(source, target, make_vault(tmp_path / "vault"), "--quiet"),
        env=dict(os.environ, PSEUDO_PASSPHRASE=OPERATOR),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert "Traceback" not in process.stderr
    if which == "root":
        assert process.returncode == 2, process.stderr
        assert "link" in process.stderr and len(process.stderr.strip().splitlines()) == 1
        assert not list(target.glob("*/*/*/*.dcm"))
    else:
        assert process.returncode == 0, process.stderr
        assert (outside / "victim.lock").read_text() == "keep"
    assert [p.name for p in outside.iterdir()] == (["victim.lock"] if which == "run" else [])


def test_instance_uids_under_the_dicom_root_are_remapped(tmp_path: Path) -> None:
    """Only UIDs that PS3.6 registers are kept; study, series, instance and frame of
    reference UIDs under 1.2.840.10008 are remapped like any other."""
    from pseudo.deid.uids import is_standard_uid

    source = tmp_path / "in"
    source.mkdir()
    original = get_testdata_file("CT_small.dcm")
    assert isinstance(original, str)
    ds = pydicom.dcmread(original)
    planted = {
        "StudyInstanceUID": "1.2.840.10008.999.1",
        "SeriesInstanceUID": "1.2.840.10008.1.2.3.4",
        "SOPInstanceUID": "1.2.840.10008.5.1.4.1.1.2.7",
        "FrameOfReferenceUID": "1.2.840.10008.1.4.1.1.77",
    }
    for keyword, uid in planted.items():
        setattr(ds, keyword, uid)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(planted["SOPInstanceUID"])
    kept = {"SOPClassUID": ds.SOPClassUID}
    ds.save_as(source / "root-uids.dcm")
    _, report = _run(source, tmp_path / "out", make_vault(tmp_path / "vault"))
    assert _by_name(report)["root-uids.dcm"]["status"] == "written"
    (written,) = (tmp_path / "out").glob("*/*/*/*.dcm")
    out = pydicom.dcmread(written)
    for keyword, uid in planted.items():
        assert not is_standard_uid(uid)
        assert str(out.get(keyword, "")).startswith("2.25."), keyword
    assert b"1.2.840.10008.999" not in written.read_bytes()
    assert str(out.SOPClassUID) == kept["SOPClassUID"]
    assert str(out.file_meta.TransferSyntaxUID) == str(ds.file_meta.TransferSyntaxUID)
    for registered in ("1.2.840.10008.1.2.1", "1.2.840.10008.1.4.1.1", "1.2.840.10008.2.16.4"):
        assert is_standard_uid(registered)


def test_an_output_folder_that_leads_outside_is_refused(tmp_path: Path) -> None:
    """A link planted where a patient's folder goes (OUTPUT/<pseudonym>): the run stops with
    one line before committing, and nothing is written outside OUTPUT."""
    source = tmp_path / "in"
    _good(source, ["CT_small.dcm"])
    target, outside = tmp_path / "out", tmp_path / "outside"
    vault = make_vault(tmp_path / "vault")
    first, _ = _run(source, target, vault)
    assert first.returncode == 0, first.stderr
    (written,) = target.glob("*/*/*/*.dcm")
    patient = written.parent.parent.parent
    shutil.rmtree(patient)
    outside.mkdir()
    patient.symlink_to(outside, target_is_directory=True)
    again = subprocess.run(
        run_command(source, target, vault, "--quiet"),
        env=dict(os.environ, PSEUDO_PASSPHRASE=OPERATOR),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert again.returncode == 5, again.stderr
    assert "leads outside the output folder" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1 and "Traceback" not in again.stderr
    assert not any(outside.rglob("*")), "nothing is written through the link"
