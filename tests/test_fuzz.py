"""A short run of the fuzzing harness (the long one: python scripts/fuzz.py --minutes N)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from pydicom.dataset import Dataset

from tests.conftest import PUBLIC
from tests.fuzz_strategies import datasets
from tests.fuzzing import Harness, seed_files

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    work = tmp_path_factory.mktemp("fuzz")
    instance = Harness(work, public=PUBLIC if PUBLIC.is_dir() else None, limit=20)
    yield instance
    instance.close()


#: The public corpus's 10-frame echo: the pixel step reads text on every frame of each mutated
#: copy (3 s a case, three quarters of the test's time); its mutations run under ``-m slow``.
ECHO = "US-PAL-8-10x-echo.dcm"


def test_mutated_real_files_never_crash_hang_or_leak(harness: Harness) -> None:
    harness.seeds = [seed for seed in harness.seeds if seed.name != ECHO]
    harness.mutation_cases(random.Random(20261201), 150)
    assert not harness.report.failures, harness.report.failures[:5]
    assert harness.report.cases >= 120, "seeds that pydicom cannot round-trip are left out"
    assert harness.report.outcomes["written"] > 10, "mutations that keep a file readable"
    assert harness.report.outcomes["quarantined"] > 10, "and mutations that break it"
    assert harness.report.canaries_checked > 50, "written outputs were searched for canaries"


@pytest.mark.slow
def test_mutated_copies_of_the_echo_never_crash_hang_or_leak(harness: Harness) -> None:
    echo = [seed for seed in seed_files(PUBLIC if PUBLIC.is_dir() else None) if seed.name == ECHO]
    if not echo:
        pytest.skip(f"{ECHO} not found in the public corpus at {PUBLIC} (../shared)")
    before = len(harness.report.failures)
    harness.seeds = echo
    harness.mutation_cases(random.Random(20261202), 20)
    assert len(harness.report.failures) == before, harness.report.failures[before:]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=datasets())
def test_generated_datasets_never_crash_or_leak(
    harness: Harness, case: tuple[Dataset, list[str]]
) -> None:
    ds, planted = case
    before = len(harness.report.failures)
    harness.generated_case(ds, planted, "generated")
    assert len(harness.report.failures) == before, harness.report.failures[before:]


def test_a_work_folder_holds_no_leftovers(harness: Harness) -> None:
    assert not list(Path(harness.work / "tmp").glob("*.part"))
