"""Runs on a Dask distributed cluster give the same bytes as local runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import (
    CANARY_SECRET,
    CanaryRun,
    cli,
    cli_as_operator,
    make_vault,
    tree_digest,
)

distributed = pytest.importorskip("distributed", reason="dask distributed is not installed")


def _run(source: Path, target: Path, vault: Path, *extra: str) -> None:
    result = cli_as_operator(
        "run", source, target, "--project", "canary", "--vault", vault, "--quiet", *extra
    )
    assert result.code == 0, result.stderr


def _installed_setups() -> list[str]:
    from pseudo.batch import worker as batch

    return sorted(batch._installed)


def test_a_scheduler_address_gives_the_local_output(
    canary_run_without_pixels: CanaryRun, canary_dir: Path, tmp_path: Path
) -> None:
    """Without the pixel step (``test_dask_local_gives_the_local_output`` has it)."""
    canary_run = canary_run_without_pixels
    vault = make_vault(tmp_path / "vault", "canary", secret=CANARY_SECRET)
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        _run(
            *(canary_dir, tmp_path / "out", vault, "--scheduler", cluster.scheduler_address),
            *("--pixels", "off"),
        )
        with distributed.Client(cluster) as client:
            leftovers = client.run(_installed_setups)
    assert tree_digest(tmp_path / "out") == tree_digest(canary_run.output)
    assert all(not setups for setups in leftovers.values()), "the run's keys left the workers"


@pytest.mark.parametrize(
    "patients", ["P08", pytest.param("", marks=pytest.mark.slow)], ids=["P08", "every-patient"]
)
def test_dask_local_gives_the_local_output(
    canary_run: CanaryRun, canary_dir: Path, tmp_path: Path, patients: str
) -> None:
    """With the pixel step, on the patient whose ultrasound images (one of 30 frames) carry
    burned-in text, or (``-m slow``) on the whole corpus: the files of the local run."""
    vault = make_vault(tmp_path / "vault", "canary", secret=CANARY_SECRET)
    _run(canary_dir / patients, tmp_path / "out", vault, "--dask", "local:2")
    local = tree_digest(canary_run.output)
    expected = {
        path: local[path]
        for path in (
            str(output.relative_to(canary_run.output))
            for name, output in canary_run.pairs.items()
            if name.startswith(patients)
        )
    }
    assert tree_digest(tmp_path / "out") == (expected if patients else local)


def test_an_unreachable_scheduler_is_one_line(vault: Path, tmp_path: Path, env: None) -> None:
    source = tmp_path / "in"
    source.mkdir()
    (source / "x.dcm").write_bytes(b"not dicom")
    result = cli(
        "run",
        source,
        tmp_path / "out",
        "--project",
        "trial",
        "--vault",
        vault,
        "--scheduler",
        "tcp://127.0.0.1:9",
    )
    assert result.code == 2
    assert result.stderr.startswith("pseudo: error: --scheduler tcp://127.0.0.1:9: cannot connect")
    assert len(result.stderr.strip().splitlines()) == 1
