#!/usr/bin/env python3
"""Fuzz the file pipeline for a bounded time: mutated real files and generated data sets.

Usage: python scripts/fuzz.py [--minutes 10] [--seed N] [--limit 10] [--no-public]

Mutation seeds are pydicom's bundled files and, when ../shared/corpus/public exists, the files
of the public corpus (read in place). Generated cases come from the hypothesis strategies of
tests/fuzz_strategies.py. Exits 1 if any invariant failed (crash, hang, canary in an output);
see tests/fuzzing.py for the invariants and docs/hardening.md for how to read the report.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--limit", type=float, default=10.0, help="seconds allowed per case")
    parser.add_argument("--no-public", action="store_true", help="pydicom's files only")
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    from hypothesis import HealthCheck, given, settings

    from tests.fuzz_strategies import datasets
    from tests.fuzzing import Harness, new_work_folder

    public = None if args.no_public else REPO.parent / "shared" / "corpus" / "public"
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    rng = random.Random(seed)
    harness = Harness(new_work_folder(), limit=args.limit, public=public)

    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=datasets())
    def generated(case: tuple[Any, list[str]]) -> None:
        harness.generated_case(case[0], case[1], "generated")

    started = time.monotonic()
    deadline = started + args.minutes * 60
    while time.monotonic() < deadline:
        harness.mutation_cases(rng, 100)
        generated()
    report = harness.report
    print(
        f"seed {seed}; {time.monotonic() - started:.0f} s; {report.mutations} mutation cases, "
        f"{report.generated} generated cases"
    )
    print(report.line())
    for reason, count in report.internal.most_common(10):
        print(f"  quarantined as 'cannot process': {count} x {reason}")
    for failure in report.failures[:20]:
        print(f"  FAILURE {failure}")
    harness.close()
    return 1 if report.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
