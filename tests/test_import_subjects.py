"""``pseudo project import-subjects`` (issue 17): a trial's own subject IDs become the
pseudonyms of their patients (validated, sealed, audited, re-identified); the others keep
keyed pseudonyms."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from tests.conftest import CliResult, cli
from tests.patients import (
    audit_actions,
    linkage_count,
    patients_in,
    reidentify,
    run,
    write_patient,
)


def import_file(vault: Path, path: Path, text: str) -> CliResult:
    """Write ``text`` to ``path`` and import it into project ``trial``."""
    path.write_text(text)
    return cli("project", "import-subjects", path, "--project", "trial", "--vault", vault, "--json")


@pytest.fixture()
def sites(vault: Path, env: None) -> Path:
    """Project ``trial`` with sites lyon (the first) and oslo."""
    for site in ("lyon", "oslo"):
        added = cli("project", "add-site", site, "--project", "trial", "--vault", vault)
        assert added.code == 0, added.stderr
    return vault


def test_imported_subject_ids_are_the_pseudonyms_and_are_reidentified(
    sites: Path, tmp_path: Path
) -> None:
    csv = "site,patient_id,subject_id\nlyon,100234,LYO-001\noslo,100234,OSL-001\n"
    imported = import_file(sites, tmp_path / "subjects.csv", csv)
    assert imported.code == 0, imported.stderr
    assert imported.json() == {"project": "trial", "imported": 2, "already": 0}
    write_patient(tmp_path / "lyon", "100234", name="MARTIN^ANNE")
    write_patient(tmp_path / "lyon", "555", name="OTHER^PATIENT")
    write_patient(tmp_path / "oslo", "100234", name="HANSEN^OLE", sex="M", birth_date="19801231")
    assert run(sites, tmp_path / "lyon", tmp_path / "out", "--site", "lyon").code == 0
    assert run(sites, tmp_path / "oslo", tmp_path / "out", "--site", "oslo").code == 0
    folders = patients_in(tmp_path / "out")
    assert {"LYO-001", "OSL-001"} <= folders and len(folders) == 3
    (keyed,) = folders - {"LYO-001", "OSL-001"}
    assert keyed.startswith("TRIAL-"), "a patient not in the file keeps a keyed pseudonym"
    written = next((tmp_path / "out" / "LYO-001").rglob("*.dcm"))
    assert str(pydicom.dcmread(written).PatientID) == "LYO-001"
    lyon, oslo = reidentify(sites, "LYO-001").json(), reidentify(sites, "lyo-001").json()
    assert lyon == oslo, "a subject ID is found in any case"
    assert (lyon["patient_id"], lyon["site"]) == ("100234", "lyon")
    assert reidentify(sites, "OSL-001").json()["site"] == "oslo"
    again = import_file(sites, tmp_path / "subjects.csv", csv)
    assert again.json() == {"project": "trial", "imported": 0, "already": 2}
    actions = [(a, o, d["imported"]) for a, o, d in audit_actions(sites, "subjects.")]
    assert actions == [("subjects.import", "success", 2), ("subjects.import", "success", 0)]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("lyon,1,S-1\nlyon,2,S-1\n", "line 4: the subject ID of line 3 again"),
        ("lyon,1,S-1\nlyon,1,S-2\n", "line 4: the patient of line 3 again"),
        ("lyon,1,S 1\n", "line 3: a subject ID is 1-64"),
        ("lyon,1,TRIAL-AAAAAAAAAAAAAAAA\n", "the form of a keyed pseudonym"),
        ("lyon,1,SITE-ABCDEFGH\n", "the form of a keyed pseudonym"),
        ("paris,1,S-1\n", "line 3: the site is not one of the project's"),
        (f"lyon,1,{'S' * 65}\n", "line 3: a subject ID is 1-64"),
    ],
)
def test_an_invalid_file_imports_nothing(
    sites: Path, tmp_path: Path, rows: str, message: str
) -> None:
    before = linkage_count(sites)
    result = import_file(
        sites, tmp_path / "s.csv", "site,patient_id,subject_id\nlyon,9,OK-9\n" + rows
    )
    assert result.code == 2 and message in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1
    assert linkage_count(sites) == before
    (record,) = audit_actions(sites, "subjects.")
    assert record[1].startswith("refused: line")


def test_a_patient_already_pseudonymized_or_a_used_subject_id_is_refused(
    sites: Path, tmp_path: Path
) -> None:
    write_patient(tmp_path / "in", "42")
    assert run(sites, tmp_path / "in", tmp_path / "out", "--site", "lyon").code == 0
    (keyed,) = patients_in(tmp_path / "out")
    header = "site,patient_id,subject_id\n"
    late = import_file(sites, tmp_path / "a.csv", header + "lyon,42,S-42\n")
    assert late.code == 2 and keyed in late.stderr and "first run" in late.stderr
    assert import_file(sites, tmp_path / "b.csv", header + "oslo,42,S-42\n").code == 0
    reused = import_file(sites, tmp_path / "c.csv", header + "oslo,43,S-42\n")
    assert reused.code == 2 and "already a pseudonym" in reused.stderr
    missing = import_file(sites, tmp_path / "d.csv", "site,subject_id\nlyon,S-1\n")
    assert missing.code == 2 and "patient_id" in missing.stderr
