#!/usr/bin/env python3
"""Instances per second through ``pseudo serve`` against ``pseudo run`` on the same files.

The cohort is the canary corpus copied ``--copies`` times as new patients and instances
(:func:`benchmarks.run.build_canary_cohort`, in ``benchmarks/_work/``, which git ignores). Each
round measures, with the same number of workers:

* ``pseudo run`` of the cohort, as a user runs it (interpreter start and unlock included; the
  same command on an empty folder is timed too, and the ratio is also given without it);
* the node: DCMTK's ``dcmsend`` sends the cohort to a running ``pseudo serve --forward``, which
  forwards to DCMTK's ``storescp``; the time runs from the start of the send until the node's
  journal records the last instance as forwarded (the destination has answered success for
  every instance). The node's state is removed between rounds, so every instance is new.

Ratios are of files/s (node / run), the median (lowest-highest) of the ratios of each round.

Usage: python benchmarks/serve.py [--copies 3] [--repeats 3] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.run import (  # noqa: E402
    CANARY,
    OPERATOR,
    REID,
    build_canary_cohort,
    fresh_run_command,
    machine,
)


def _env() -> dict[str, str]:
    return dict(os.environ, PSEUDO_PASSPHRASE=OPERATOR)


#: DCMTK's tools send each PDU at once only when told so (``TCP_NODELAY=1``): without it, a
#: C-STORE waits about 40 ms for the peer's delayed acknowledgement, which, not the work, sets
#: the rate (60 files from dcmsend to storescp: 5.3 s without, 0.35 s with). A PACS on the
#: network is tuned the same way; the node sets it on its own connections.
DCMTK_ENV = dict(os.environ, TCP_NODELAY="1")


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def timed(command: list[str]) -> float:
    """Seconds a command takes (it must succeed)."""
    start = time.perf_counter()
    subprocess.run(command, check=True, env=_env(), cwd=HERE.parent, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def forwarded(vault: Path) -> int:
    """How many instances the node's journal records as forwarded."""
    from pseudo.serve.folder import NodeFolder
    from pseudo.serve.journal import Journal

    path = NodeFolder.of(vault, "bench").journal
    if not path.exists():
        return 0
    journal = Journal(path, read_only=True)
    try:
        return journal.counts()["forwarded"]
    finally:
        journal.close()


def through_node(source: Path, files: int, vault: Path, work: Path, workers: int) -> float:
    """Seconds from the start of ``dcmsend`` until the node has forwarded every instance."""
    shutil.rmtree(vault / "serve" / "bench", ignore_errors=True)
    received = work / "storescp"
    shutil.rmtree(received, ignore_errors=True)
    received.mkdir(parents=True)
    port = free_port()
    destination = subprocess.Popen(
        ["storescp", "+xa", "-aet", "DEST", "-od", str(received), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=DCMTK_ENV,
    )
    log = work / "node.log"
    with log.open("w") as handle:
        node = subprocess.Popen(
            [
                *(sys.executable, "-m", "pseudo", "serve", "--project", "bench"),
                *("--vault", str(vault), "--port", "0", "--allow", "BENCH"),
                *("--forward", f"127.0.0.1:{port}:DEST", "--workers", str(workers)),
            ],
            stderr=handle,
            env=_env(),
            cwd=HERE.parent,
        )
    try:
        while not (found := re.search(r"listening on [\d.]+:(\d+)", log.read_text())):
            if node.poll() is not None:
                raise SystemExit(f"pseudo serve did not start: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        start = time.perf_counter()
        subprocess.run(
            [
                *("dcmsend", "-dn", "-aet", "BENCH", "-aec", "PSEUDO", "+sd", "+r"),
                *("127.0.0.1", found.group(1), str(source)),
            ],
            check=True,
            capture_output=True,
            env=DCMTK_ENV,
        )
        while forwarded(vault) < files:
            if node.poll() is not None:
                raise SystemExit(f"pseudo serve stopped: {log.read_text()[-2000:]}")
            time.sleep(0.02)
        return time.perf_counter() - start
    finally:
        node.send_signal(signal.SIGTERM)
        node.wait()
        destination.terminate()
        destination.wait()


def spread(values: list[float]) -> str:
    """``median (lowest-highest)``."""
    return f"{statistics.median(values):.2f}x ({min(values):.2f}-{max(values):.2f}x)"


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--workdir", type=Path, default=HERE / "_work")
    parser.add_argument("--canary", type=Path, default=CANARY)
    args = parser.parse_args()
    if shutil.which("dcmsend") is None or shutil.which("storescp") is None:
        raise SystemExit("needs DCMTK (dcmsend, storescp): apt-get install dcmtk")
    work = args.workdir.resolve() / "serve"
    source = work / f"canary-x{args.copies}"
    if not source.exists():
        build_canary_cohort(source, args.canary, args.copies)
    files = sum(1 for _ in source.rglob("*.dcm"))
    from keystore.session import VaultSession
    from keystore.vault import Vault
    from tests.conftest import FAST_KDF

    vault = work / "vault"
    if not (vault / "vault.json").exists():
        Vault.init(vault)
        with VaultSession(vault) as session:
            session.vault.create_project("bench", OPERATOR, REID, kdf=FAST_KDF)
    empty = Path(tempfile.mkdtemp(dir=work))
    print(machine())
    print(f"cohort: {files} instances ({source})", flush=True)
    for workers in args.workers:
        runs, bare_runs, nodes, ratios, bare_ratios = [], [], [], [], []
        for _ in range(args.repeats):
            extra = ("--workers", str(workers))
            startup = timed(fresh_run_command(empty, work / "empty-out", vault, *extra))
            run = timed(fresh_run_command(source, work / "run-out", vault, *extra))
            node = through_node(source, files, vault, work, workers)
            runs.append(run)
            bare_runs.append(run - startup)
            nodes.append(node)
            ratios.append(run / node)
            bare_ratios.append((run - startup) / node)
            print(
                f"  round {len(runs)}: {workers} worker(s): pseudo run {run:.1f} s "
                f"({run - startup:.1f} s without its start), node {node:.1f} s: "
                f"{run / node:.2f}x ({(run - startup) / node:.2f}x), load average "
                f"{os.getloadavg()[0]:.1f}",
                flush=True,
            )
        print(
            f"{workers} worker(s): pseudo run {files / statistics.median(runs):.1f} files/s "
            f"({files / statistics.median(bare_runs):.1f} without its "
            f"{statistics.median(runs) - statistics.median(bare_runs):.1f} s start); "
            f"node {files / statistics.median(nodes):.1f} files/s; "
            f"node vs run {spread(ratios)}, vs run without its start {spread(bare_ratios)}"
        )
    shutil.rmtree(empty, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
