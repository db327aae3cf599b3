"""Peak memory of a command and its worker processes, as the kernel counts it.

``wait4``'s ``ru_maxrss`` is not usable for this: Linux carries a process's peak across
``exec``, so a command started from a large process (a pytest worker) reports that process's
size. ``VmHWM`` in ``/proc/PID/status`` belongs to the program that runs; it is polled while the
command runs, for the command and each of its descendants.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path


def _descendants(pid: int) -> list[int]:
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                children = [int(c) for c in task.read_text().split()]
            except OSError:
                continue
            found += children
            queue += children
    return found


def _high_water_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def wait_with_peaks(process: subprocess.Popen[bytes] | subprocess.Popen[str]) -> dict[int, int]:
    """Wait for ``process``; return pid -> peak resident memory (kB) of it and its children."""
    peaks: dict[int, int] = {}
    while process.poll() is None:
        for pid in [process.pid, *_descendants(process.pid)]:
            peaks[pid] = max(peaks.get(pid, 0), _high_water_kb(pid))
        time.sleep(0.02)
    return peaks
