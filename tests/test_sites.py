"""Sites (issue 17): the same patient ID at two sites is two patients, each re-identified with
its site; a project of several sites refuses a run that names none; the first site keeps the
pseudonyms of the runs made before sites existed (an old vault's too)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pseudo.api import open_project
from tests.conftest import OPERATOR, cli
from tests.fixtures.make_vault_fixture import PROJECT
from tests.patients import audit_actions, patients_in, reidentify, run, write_patient
from tests.test_old_vault import EXPECTED, FIXTURE, check_outputs
from tests.test_old_vault import inputs as inputs  # a fixture
from tests.test_old_vault import old as old  # a fixture


def add_site(vault: Path, site: str, *extra: str) -> None:
    """``pseudo project add-site`` for project ``trial``, which must succeed."""
    result = cli("project", "add-site", site, "--project", "trial", "--vault", vault, *extra)
    assert result.code == 0, result.stderr


def test_the_same_id_at_two_sites_is_two_patients(vault: Path, tmp_path: Path, env: None) -> None:
    add_site(vault, "lyon", "--site-id", "0042")
    add_site(vault, "oslo")
    write_patient(tmp_path / "a", "100234", name="MARTIN^ANNE", birth_date="19600101")
    write_patient(tmp_path / "b", "100234", name="HANSEN^OLE", birth_date="19801231", sex="M")
    first = run(vault, tmp_path / "a", tmp_path / "out", "--site", "lyon")
    second = run(vault, tmp_path / "b", tmp_path / "out", "--site", "oslo")
    assert first.code == 0 and second.code == 0, first.stderr + second.stderr
    pseudonyms = patients_in(tmp_path / "out")
    assert len(pseudonyms) == 2
    answers = {p: reidentify(vault, p).json() for p in pseudonyms}
    by_site = {answer["site"]: answer for answer in answers.values()}
    assert by_site["lyon"]["patient_name"] == "MARTIN^ANNE"
    assert by_site["oslo"]["patient_name"] == "HANSEN^OLE"
    assert all(
        a["patient_id"] == "100234" and not a.get("other_identities") for a in by_site.values()
    )
    text = cli(
        *("reidentify", "--project", "trial", "--pseudonym", by_site["oslo"]["pseudonym"]),
        *("--requester", "DPO", "--reason", "finding", "--vault", vault),
    )
    assert any(line.split() == ["site:", "oslo"] for line in text.stdout.splitlines())
    verified = cli(
        *("verify", tmp_path / "b", tmp_path / "out", "--project", "trial", "--site", "oslo"),
        *("--vault", vault, "--json"),
    )
    assert verified.code == 0, verified.stdout + verified.stderr
    assert verified.json()["paired_with_input"] == 1, "pseudo verify pairs by the site's pseudonym"


def test_an_issuer_in_the_file_wins_over_the_site(vault: Path, tmp_path: Path, env: None) -> None:
    add_site(vault, "lyon")
    add_site(vault, "oslo")
    write_patient(tmp_path / "a", "7", issuer="REGION-ID")
    write_patient(tmp_path / "b", "7", issuer="REGION-ID", study="s2")
    assert run(vault, tmp_path / "a", tmp_path / "out", "--site", "lyon").code == 0
    assert run(vault, tmp_path / "b", tmp_path / "out", "--site", "oslo").code == 0
    assert len(patients_in(tmp_path / "out")) == 1


def test_a_run_without_a_site_on_a_multi_site_project_is_refused(
    vault: Path, tmp_path: Path, env: None
) -> None:
    write_patient(tmp_path / "in", "1")
    add_site(vault, "lyon")
    assert run(vault, tmp_path / "in", tmp_path / "one-site").code == 0, "one site: taken"
    add_site(vault, "oslo")
    refused = run(vault, tmp_path / "in", tmp_path / "out")
    assert refused.code == 2 and refused.stderr.count("\n") == 1
    assert "--site" in refused.stderr and "lyon, oslo" in refused.stderr
    assert not (tmp_path / "out").exists()
    dry = cli(
        *("run", tmp_path / "in", "--dry-run", "--project", "trial", "--vault", vault),
    )
    assert dry.code == 2 and "--site" in dry.stderr
    unknown = run(vault, tmp_path / "in", tmp_path / "out", "--site", "paris")
    assert unknown.code == 2 and "add-site" in unknown.stderr
    with pytest.raises(Exception, match="several sites"):
        open_project(vault, "trial", OPERATOR)


def test_the_first_site_keeps_the_pseudonyms_of_earlier_runs(
    vault: Path, tmp_path: Path, env: None
) -> None:
    write_patient(tmp_path / "in", "100234")
    assert run(vault, tmp_path / "in", tmp_path / "before").code == 0
    add_site(vault, "lyon")
    add_site(vault, "oslo")
    assert run(vault, tmp_path / "in", tmp_path / "lyon", "--site", "lyon").code == 0
    assert run(vault, tmp_path / "in", tmp_path / "oslo", "--site", "oslo").code == 0
    assert patients_in(tmp_path / "lyon") == patients_in(tmp_path / "before")
    assert patients_in(tmp_path / "oslo") != patients_in(tmp_path / "before")


def test_sites_are_audited_checked_and_covered_by_the_settings_mac(
    vault: Path, tmp_path: Path, env: None
) -> None:
    add_site(vault, "lyon", "--site-id", "0042")
    again = cli("project", "add-site", "lyon", "--project", "trial", "--vault", vault)
    assert again.code == 2 and "already has a site" in again.stderr
    same_id = cli(
        *("project", "add-site", "oslo", "--site-id", "0042", "--project", "trial"),
        *("--vault", vault),
    )
    assert same_id.code == 2
    (listed,) = cli("project", "list", "--vault", vault, "--json").json()
    assert listed["sites"] == [{"name": "lyon", "site_id": "0042", "legacy_namespace": True}]
    records = audit_actions(vault, "site.")
    assert [(a, o) for a, o, _ in records] == [("site.add", "success")]
    assert records[0][2]["legacy_namespace"] is True and records[0][2]["site_id"] == "0042"
    path = vault / "projects" / "trial.json"
    data = json.loads(path.read_text())
    assert data["format"] == "pseudo-project/4"
    data["sites"][0]["namespace"] = "site:other"
    path.write_text(json.dumps(data))
    write_patient(tmp_path / "in", "1")
    edited = run(vault, tmp_path / "in", tmp_path / "out")
    assert edited.code == 2 and "altered outside pseudo" in edited.stderr


def test_an_old_vault_keeps_its_pseudonyms_at_its_first_site(
    old: Path, inputs: Path, tmp_path: Path
) -> None:
    """The 0.1.0 fixture: with a first site registered, a run at it gives 0.1.0's outputs."""
    vault = old / "vault"
    added = cli("project", "add-site", "lyon", "--project", PROJECT, "--vault", vault)
    assert added.code == 0, added.stderr
    result = cli(
        *("run", inputs, tmp_path / "out", "--project", PROJECT, "--vault", vault),
        *("--workers", "1", "--quiet", "--json", "--site", "lyon"),
    )
    assert result.code == 0, result.stderr
    check_outputs(tmp_path / "out", EXPECTED["runs"]["output"], FIXTURE / "output")


def test_the_site_reaches_the_per_file_context_and_the_sealed_record() -> None:
    """The pseudonymizer knows the run's site (the Clinical Trial attributes read it from the
    per-file context) and seals it with the patient."""
    from pseudo.deid.context import FileContext
    from pseudo.deid.engine import Pseudonymizer
    from pseudo.deid.identity import Site
    from pseudo.policy import load_policy
    from tests.synthetic import dataset, make_keyring

    site = Site("oslo", "0107", "site:oslo")
    engine = Pseudonymizer(make_keyring(), load_policy("default"), site=site)
    result = engine.pseudonymize(dataset())
    (patient,) = [entry for entry in result.linkage if entry.kind == "patient"]
    assert patient.fields["site"] == "oslo"
    assert json.loads(str(patient.fields["identity_key"])) == [
        "patient-id",
        "",
        "12345678",
        "site",
        "site:oslo",
    ]
    assert "site" in FileContext.__dataclass_fields__
    legacy = Pseudonymizer(make_keyring(), load_policy("default")).pseudonymize(dataset())
    (old,) = [entry for entry in legacy.linkage if entry.kind == "patient"]
    assert "site" not in old.fields and "identity_key" not in old.fields, "bytes as before"
    assert result.pseudonym != legacy.pseudonym
