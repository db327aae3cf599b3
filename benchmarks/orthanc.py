#!/usr/bin/env python3
"""Files per second of ``pseudo run`` against Orthanc's own anonymization, on the same files.

The files (the synthetic cohort of ``benchmarks/run.py``, cached in ``benchmarks/_work/``, or
any folder given with ``--source``) are uploaded once to a throwaway Orthanc on loopback
(``tests/orthanc.py``: Debian's ``orthanc``, its storage in a temporary folder). Then, in each
round, on the same files, in an order rotated from round to round:

* Orthanc: ``POST /instances/{id}/anonymize`` of every instance, the anonymized file it
  returns written to disk, by one client and by two at once (Orthanc's default profile:
  PS3.15 basic, new UIDs, nothing stored in Orthanc);
* Orthanc: ``POST /studies/{id}/anonymize`` (synchronous) of every study: Orthanc writes the
  anonymized copy of each study into its own storage, as a user of its Explorer does;
* ``pseudo run`` with one worker and with two, run as a user runs it (interpreter start,
  imports, unlocking the vault and verification included).

Seconds are medians over the rounds; a ratio is the median (lowest-highest) of the ratios of
each round, measured minutes apart on the same machine. On a shared machine the wall clock
says as much about the neighbours as about the code, so the processor time is measured too:
of the ``pseudo run`` command and its workers, and of the Orthanc process plus its client
here. The issue's goal is 3x Orthanc.

When ``pseudo serve`` exists (``pseudo.serve.node``), the node is measured too, with one
worker and with two: DCMTK's ``dcmsend`` sends the files to a running node, which pseudonymizes
and forwards each to a pynetdicom storage SCP in this process (``dcmsend`` and the SCP send
each PDU at once, ``TCP_NODELAY``, as the node does: see ``benchmarks/serve.py``); the time
runs from the first send to the last instance held by the destination (the node is started,
with a fresh copy of the vault, before the clock starts: a service is already running when
images arrive). Its
processor time is that of the node, its workers, ``dcmsend`` and the destination.

Usage: python benchmarks/orthanc.py [--instances 2000] [--source DIR] [--rounds 3]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import re
import resource
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from run import (  # noqa: E402  (benchmarks/run.py: the cohort and the run command)
    OPERATOR,
    REID,
    build_cohort,
    compile_bytecode,
    pseudo_run,
)

from tests import orthanc  # noqa: E402

PSEUDO_1 = "pseudo run, 1 worker"
PSEUDO_2 = "pseudo run, 2 workers"
ORTHANC_1 = "Orthanc /instances/{id}/anonymize, 1 client"
ORTHANC_2 = "Orthanc /instances/{id}/anonymize, 2 clients"
ORTHANC_STUDIES = "Orthanc /studies/{id}/anonymize (synchronous), 1 client"
NODE_1 = "pseudo serve node, 1 worker: dcmsend -> node -> destination"
NODE_2 = "pseudo serve node, 2 workers: dcmsend -> node -> destination"
#: The AE title dcmsend calls the node with.
SENDER = "BENCHSEND"


#: Wall-clock and processor seconds of one measurement.
Timing = tuple[float, float]


def timed(server: orthanc.Orthanc, work: Callable[[], None]) -> Timing:
    """Wall-clock seconds of ``work`` and the processor seconds that Orthanc and this client
    spent on it."""
    cpu, mine, start = server.cpu_seconds(), time.process_time(), time.perf_counter()
    work()
    wall = time.perf_counter() - start
    return wall, server.cpu_seconds() - cpu + time.process_time() - mine


def run_timed(source: Path, target: Path, vault: Path, workers: int) -> Timing:
    """Wall-clock seconds of one ``pseudo run`` and the processor seconds of the command and
    its workers."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = pseudo_run(source, target, vault, "--workers", str(workers))[0]
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def anonymize_instances(
    server: orthanc.Orthanc, ids: list[str], target: Path, clients: int
) -> Timing:
    """Orthanc anonymizing every instance, each answer written to ``target``."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)

    def one(job: tuple[int, str]) -> None:
        index, instance = job
        data = server.raw("POST", f"/instances/{instance}/anonymize", b"{}")
        (target / f"{index}.dcm").write_bytes(data)

    def work() -> None:
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(one, enumerate(ids)))

    return timed(server, work)


def anonymize_studies(server: orthanc.Orthanc, studies: list[str]) -> Timing:
    """Orthanc anonymizing every study into its storage; the copies are deleted afterwards
    (not timed), so that each round starts from the same Orthanc."""
    made: list[str] = []

    def work() -> None:
        for study in studies:
            body = b'{"Synchronous": true}'
            answer = server.request("POST", f"/studies/{study}/anonymize", body, "application/json")
            made.append(answer["ID"])

    timing = timed(server, work)
    for study in made:
        server.request("DELETE", f"/studies/{study}")
    return timing


def process_tree_cpu(pid: int) -> float:
    """Processor seconds used so far by a process and its living children (its workers)."""
    total = 0.0
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat_file.parent.name) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


class Destination:
    """A storage SCP that counts the distinct instances it receives, and says when it has all."""

    def __init__(self) -> None:
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

        from pseudo.serve.tcp import no_delay

        self.ae = AE("BENCHDEST")
        for context in AllStoragePresentationContexts:
            self.ae.add_supported_context(str(context.abstract_syntax), ALL_TRANSFER_SYNTAXES)
        self.received: set[str] = set()
        self.changed = threading.Condition()
        handlers = [(evt.EVT_CONN_OPEN, no_delay), (evt.EVT_C_STORE, self._store)]
        self.server = self.ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
        assert self.server is not None
        self.port = int(self.server.server_address[1])

    def _store(self, event: Any) -> int:
        with self.changed:
            self.received.add(str(event.request.AffectedSOPInstanceUID))
            self.changed.notify_all()
        return 0x0000

    def wait_for(self, count: int, timeout: float = 3600) -> None:
        """Block until ``count`` distinct instances arrived (fail after ``timeout`` seconds)."""
        with self.changed:
            if not self.changed.wait_for(lambda: len(self.received) >= count, timeout):
                raise SystemExit(f"the node forwarded {len(self.received)} of {count} instances")

    def stop(self) -> None:
        """Stop listening."""
        assert self.server is not None
        self.server.shutdown()


def through_node(source: Path, vault: Path, work: Path, workers: int, files: int) -> Timing:
    """dcmsend -> node -> destination for every file; the node started beforehand with a fresh
    copy of the vault (a node remembers what it forwarded)."""
    copy = work / "node-vault"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(vault, copy)
    destination = Destination()
    log = work / "node.log"
    log.unlink(missing_ok=True)
    command = [
        *(sys.executable, "-m", "pseudo", "serve", "--project", "bench", "--vault", str(copy)),
        *("--port", "0", "--allow", SENDER, "--workers", str(workers)),
        *("--forward", f"127.0.0.1:{destination.port}:BENCHDEST"),
    ]
    env = dict(os.environ, PSEUDO_PASSPHRASE=OPERATOR)
    with log.open("w") as stream:
        node = subprocess.Popen(command, stderr=stream, env=env, cwd=HERE.parent)
    try:
        port = _node_port(log, node)
        cpu, sender = process_tree_cpu(node.pid), resource.getrusage(resource.RUSAGE_CHILDREN)
        mine, start = time.process_time(), time.perf_counter()
        subprocess.run(
            [
                *("dcmsend", "-aet", SENDER, "-aec", "PSEUDO", "--scan-directories"),
                *("--recurse", "--no-halt", "127.0.0.1", str(port), str(source)),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=dict(os.environ, TCP_NODELAY="1"),  # see benchmarks/serve.py's DCMTK_ENV
        )
        destination.wait_for(files)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        used = process_tree_cpu(node.pid) - cpu + time.process_time() - mine
        used += after.ru_utime + after.ru_stime - sender.ru_utime - sender.ru_stime
    finally:
        node.send_signal(signal.SIGTERM)
        node.wait(timeout=600)
        destination.stop()
    return wall, used


def _node_port(log: Path, node: subprocess.Popen[bytes]) -> int:
    """The port the node listens on, from its log (read as it grows until the line is there)."""
    with log.open() as stream:
        while True:
            line = stream.readline()
            found = re.search(r"listening on [\d.]+:(\d+)", line)
            if found:
                return int(found.group(1))
            if not line:
                if node.poll() is not None:
                    raise SystemExit(f"pseudo serve ended: {log.read_text()[-500:]}")
                select.select([], [], [], 0.05)  # the log grows by lines: look again


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--source", type=Path, help="a folder of DICOM files instead")
    parser.add_argument("--workdir", type=Path, default=HERE / "_work")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if orthanc.binary() is None:
        raise SystemExit("Orthanc is not installed (Debian package orthanc)")
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    source = args.source.resolve() if args.source else work / "cohort"
    files = (
        sorted(p for p in source.rglob("*") if p.is_file())
        if args.source
        else build_cohort(source, args.instances)
    )
    compile_bytecode()
    from keystore.session import VaultSession
    from keystore.vault import Vault

    vault = work / "vault"
    if not (vault / "vault.json").exists():
        Vault.init(vault)
        with VaultSession(vault) as session:
            session.vault.create_project(
                "bench", OPERATOR, REID, secret=hashlib.sha256(b"benchmark").digest()
            )
    scratch = Path(tempfile.mkdtemp(prefix="pseudo-orthanc-bench-"))
    seconds: dict[str, list[Timing]] = {}
    try:
        with orthanc.server(scratch / "orthanc") as server:
            ids = server.upload(files)
            studies = sorted(server.request("GET", "/studies"))
            measures: dict[str, Callable[[], Timing]] = {
                PSEUDO_1: lambda: run_timed(source, scratch / "out", vault, 1),
                PSEUDO_2: lambda: run_timed(source, scratch / "out", vault, 2),
                ORTHANC_1: lambda: anonymize_instances(server, ids, scratch / "orthanc-out", 1),
                ORTHANC_2: lambda: anonymize_instances(server, ids, scratch / "orthanc-out", 2),
                ORTHANC_STUDIES: lambda: anonymize_studies(server, studies),
            }
            if importlib.util.find_spec("pseudo.serve.node") and shutil.which("dcmsend"):
                for label, count in ((NODE_1, 1), (NODE_2, 2)):
                    measures[label] = partial(
                        through_node, source, vault, scratch, count, len(files)
                    )
            names = list(measures)
            for round_ in range(args.rounds):
                for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                    seconds.setdefault(name, []).append(measures[name]())
                    wall, cpu = seconds[name][-1]
                    print(f"round {round_ + 1}: {name}: {wall:.1f} s, {cpu:.1f} s CPU", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(report(seconds, len(files), len(studies), args.rounds))
    return 0


def ratio(seconds: dict[str, list[Timing]], ours: str, theirs: str, which: int) -> str:
    """Median (lowest-highest) over the rounds of the files per second of ``ours`` over
    ``theirs``: of the wall clock (``which`` 0) or of the processor time (1)."""
    ratios = [t[which] / o[which] for o, t in zip(seconds[ours], seconds[theirs], strict=True)]
    return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}x)"


def report(seconds: dict[str, list[Timing]], files: int, studies: int, rounds: int) -> str:
    """The results as a Markdown table and the ratios against Orthanc."""
    lines = [
        f"{files} files, {studies} studies, {rounds} rounds (medians):",
        "",
        "| configuration | seconds | files/s | CPU seconds | files per CPU second |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, values in seconds.items():
        wall = statistics.median(v[0] for v in values)
        cpu = statistics.median(v[1] for v in values)
        lines.append(
            f"| {name} | {wall:.1f} | {files / wall:.1f} | {cpu:.1f} | {files / cpu:.1f} |"
        )
    lines.append("")
    for ours, theirs in [
        (PSEUDO_1, ORTHANC_1),
        (PSEUDO_2, ORTHANC_2),
        (PSEUDO_1, ORTHANC_STUDIES),
        (PSEUDO_2, ORTHANC_STUDIES),
        (NODE_1, PSEUDO_1),
        (NODE_2, PSEUDO_2),
        (NODE_1, ORTHANC_STUDIES),
        (NODE_2, ORTHANC_STUDIES),
    ]:
        if ours not in seconds:
            continue
        lines.append(
            f"* {ours} vs {theirs}: {ratio(seconds, ours, theirs, 0)} in files/s, "
            f"{ratio(seconds, ours, theirs, 1)} in files per CPU second"
        )
    lines.append("* goal (issue 18): 3x Orthanc")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
