"""The documented Python API gives the same result as the command line."""

from __future__ import annotations

from pathlib import Path

import pydicom

from keystore.session import VaultSession
from pseudo.api import open_project
from pseudo.demo import build_cohort
from tests.conftest import OPERATOR, cli


def test_api_matches_the_command_line(vault: Path, tmp_path: Path, env: None) -> None:
    files = build_cohort(tmp_path / "in")
    cli("run", tmp_path / "in", tmp_path / "out", "--project", "trial", "--vault", vault, "--quiet")
    with open_project(vault, "trial", OPERATOR) as project:
        ds = pydicom.dcmread(files[0])
        result = project.pseudonymize(ds)
        assert ds.PatientName == "DOE^JANE", "the input dataset is not modified"
        assert project.store(result) == 0, "the CLI already stored these records"
    written = tmp_path / "out" / result.relative_path
    assert written.is_file()
    on_disk = pydicom.dcmread(written)
    assert on_disk.PatientID == result.dataset.PatientID
    assert on_disk.StudyDate == result.dataset.StudyDate
    with VaultSession(vault) as session:
        assert session.audit.records()[-1].action == "pseudonymize.api"
