"""Every readable file of ../shared/corpus/public is either pseudonymized into a file that
pydicom and dcmdump read back, or quarantined with a reason; none crashes the run."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pydicom
import pytest

from pseudo.batch.report import load_report
from tests.conftest import cli, make_vault


@pytest.fixture(scope="module")
def public_run(tmp_path_factory: pytest.TempPathFactory, public_dir: Path) -> dict[str, Any]:
    """The default policy over the public corpus, without the pixel step: the outputs whose
    pixels it blanks are read back, validated with dciodvfy, by
    ``test_iod_validity.py::test_no_output_gains_an_error_kind[default-public]``, and the OCR
    of the corpus's images with text is most of a run's time."""
    base = tmp_path_factory.mktemp("public")
    vault = make_vault(base / "vault")
    os.environ["PSEUDO_PASSPHRASE"] = "operator passphrase for tests"
    try:
        result = cli(
            "run",
            public_dir,
            base / "out",
            "--project",
            "trial",
            "--vault",
            vault,
            "--workers",
            "2",
            "--json",
            "--quiet",
            "--pixels",
            "off",
        )
    finally:
        del os.environ["PSEUDO_PASSPHRASE"]
    assert result.code in (0, 1), result.stderr
    assert "Traceback" not in result.stderr
    report = load_report(Path(result.json()["report"]))
    return {"out": base / "out", "report": report}


def test_every_file_has_an_outcome(public_run: dict[str, Any], public_dir: Path) -> None:
    files = {str(p.resolve()) for p in public_dir.rglob("*") if p.is_file()}
    outcomes = {f["input"]: f for f in public_run["report"]["files"]}
    assert set(outcomes) == files
    for outcome in outcomes.values():
        assert outcome["status"] in ("written", "quarantined", "skipped")
        if outcome["status"] != "written":
            assert outcome["reason"], outcome["input"]
    written = [o for o in outcomes.values() if o["status"] == "written"]
    assert len(written) >= 130


def test_dicomdirs_are_never_copied(public_run: dict[str, Any]) -> None:
    for outcome in public_run["report"]["files"]:
        if Path(outcome["input"]).name.startswith("DICOMDIR"):
            assert outcome["status"] == "skipped" and outcome["output"] is None
            assert "DICOMDIR" in outcome["reason"] and "pseudo dicomdir" in outcome["reason"]


def test_outputs_read_back_with_pydicom(public_run: dict[str, Any]) -> None:
    for path in public_run["out"].rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        for _ in ds.iterall():
            pass
        assert ds.PatientIdentityRemoved == "YES"


@pytest.mark.skipif(
    shutil.which("dcmdump") is None and not os.environ.get("PSEUDO_CI"),
    reason="dcmdump (Debian package dcmtk) is not installed",
)
def test_outputs_read_back_with_dcmdump(public_run: dict[str, Any]) -> None:
    paths = sorted(str(p) for p in public_run["out"].rglob("*.dcm"))
    failures: list[str] = []
    for start in range(0, len(paths), 50):
        chunk = paths[start : start + 50]
        result = subprocess.run(
            ["dcmdump", "-q", *chunk], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            failures.extend(
                p
                for p in chunk
                if subprocess.run(["dcmdump", "-q", p], capture_output=True, check=False).returncode
            )
    assert not failures
