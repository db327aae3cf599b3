"""A project that remembers: its vault is named, its policy recorded, its output its own.

Issue 17: no implicit vault (only ``vault init`` creates one); a run with another policy than
the project's is refused unless ``--change-policy`` (audited, said in the report); batch 2
without ``--policy`` gets batch 1's offsets; OUTPUT inside INPUT and INPUT inside OUTPUT are
refused, and so is an output holding another project's pseudonyms; the inputs file is kept in
the vault, not beside the export.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pydicom
import pytest

from keystore.session import VaultSession
from keystore.vault import PolicyChangedError
from pseudo.api import open_project
from pseudo.batch.report import load_report
from pseudo.demo import build_cohort
from tests.conftest import OPERATOR, CliResult, cli, make_vault


@pytest.fixture()
def cohort(tmp_path: Path) -> Path:
    """The demo cohort: 3 patients, 18 files."""
    folder = tmp_path / "input"
    build_cohort(folder)
    return folder


@pytest.mark.parametrize(
    "command",
    [
        ("vault", "init"),
        ("project", "create", "study", "--prefix", "S"),
        ("project", "list"),
        ("audit", "verify"),
        ("audit", "show"),
        ("reidentify", "--project", "p", "--pseudonym", "X", "--requester", "r", "--reason", "w"),
    ],
)
def test_without_a_vault_every_command_stops_and_creates_nothing(
    command: tuple[str, ...], tmp_path: Path, env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = cli(*command)
    assert result.code == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "no vault given" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_run_without_a_vault_stops_and_creates_nothing(
    cohort: Path, tmp_path: Path, env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    result = cli("run", cohort, work / "out", "--project", "trial")
    assert result.code == 2 and "no vault given" in result.stderr
    assert list(work.iterdir()) == []


def test_a_missing_vault_is_not_created_by_any_command_but_init(tmp_path: Path, env: None) -> None:
    missing = tmp_path / "missing"
    for command in (("project", "create", "s", "--prefix", "S"), ("audit", "show")):
        result = cli(*command, "--vault", missing)
        assert result.code == 2 and "no vault here" in result.stderr
        assert not missing.exists()
    assert "vault init" in result.stderr and "link to nothing" in result.stderr
    assert cli("vault", "init", "--vault", missing).code == 0
    assert (missing / "vault.json").is_file()
    assert os.stat(missing).st_mode & 0o777 == 0o700


def _run(vault: Path, source: Path, target: Path, *extra: str | Path) -> CliResult:
    return cli(
        *("run", source, target, "--project", "trial", "--vault", vault),
        *("--workers", "1", "--quiet", "--json", *extra),
    )


def _offsets(output: Path) -> dict[str, str]:
    """Study date by patient folder: the date offset made visible."""
    dates = {}
    for path in sorted(output.rglob("*.dcm")):
        dates[path.relative_to(output).parts[0]] = str(pydicom.dcmread(path).StudyDate)
    return dates


def _policy_records(vault: Path) -> list[Any]:
    with VaultSession(vault) as session:
        return [r for r in session.audit.records() if r.action == "project.policy"]


@pytest.fixture()
def anchored(tmp_path: Path) -> Path:
    """A policy file with an anchor date."""
    path = tmp_path / "anchored.yaml"
    path.write_text("name: anchored\nextends: default\ndates:\n  anchor: 2000-01-01\n")
    return path


def test_batch_2_without_policy_gets_batch_1s_policy_and_offsets(
    vault: Path, cohort: Path, anchored: Path, tmp_path: Path, env: None
) -> None:
    first = _run(vault, cohort, tmp_path / "b1", "--policy", anchored)
    assert first.code == 0, first.stderr
    second = _run(vault, cohort, tmp_path / "b2")
    assert second.code == 0, second.stderr
    assert _offsets(tmp_path / "b2") == _offsets(tmp_path / "b1")
    report = load_report(Path(second.json()["report"]))
    assert report["policy"]["name"] == "anchored"
    assert report["project_policy"] == {"recorded": False, "previous": ANY, "changed": []}
    records = _policy_records(vault)
    assert len(records) == 1 and records[0].outcome == "success"


def test_a_changed_policy_is_refused_then_audited_with_change_policy(
    vault: Path, cohort: Path, anchored: Path, tmp_path: Path, env: None
) -> None:
    assert _run(vault, cohort, tmp_path / "b1").code == 0
    refused = _run(vault, cohort, tmp_path / "b2", "--policy", anchored)
    assert refused.code == 2 and refused.stderr.count("\n") == 1
    assert "--change-policy" in refused.stderr and "anchor" in refused.stderr
    assert not (tmp_path / "b2").exists()
    changed = _run(vault, cohort, tmp_path / "b2", "--policy", anchored, "--change-policy")
    assert changed.code == 0, changed.stderr
    report = load_report(Path(changed.json()["report"]))
    assert report["project_policy"]["previous"]["name"] == "default"
    assert {"anchor", "name", "sha256"} <= set(report["project_policy"]["changed"])
    recorded, refusal, change = _policy_records(vault)
    assert recorded.outcome == "success" and json.loads(recorded.details)["previous"] is None
    assert refusal.outcome.startswith("refused")
    assert change.outcome == "success"
    assert json.loads(change.details)["previous"]["name"] == "default"
    again = _run(vault, cohort, tmp_path / "b3")
    assert again.code == 0 and load_report(Path(again.json()["report"]))["policy"]["name"] == (
        "anchored"
    )


def test_the_api_is_held_to_the_recorded_policy(
    vault: Path, cohort: Path, anchored: Path, tmp_path: Path
) -> None:
    with open_project(vault, "trial", OPERATOR, policy=str(anchored)) as project:
        assert project.policy_check is not None and project.policy_check.previous is None
    with pytest.raises(PolicyChangedError):
        open_project(vault, "trial", OPERATOR, policy="default")
    with open_project(vault, "trial", OPERATOR) as project:
        assert project.policy.name == "anchored"


def test_an_edited_recorded_policy_stops_the_run(
    vault: Path, cohort: Path, anchored: Path, tmp_path: Path, env: None
) -> None:
    assert _run(vault, cohort, tmp_path / "b1", "--policy", anchored).code == 0
    path = vault / "projects" / "trial.json"
    data = json.loads(path.read_text())
    data["policy"]["anchor"] = "1990-01-01"
    path.write_text(json.dumps(data))
    edited = _run(vault, cohort, tmp_path / "b2", "--policy", anchored)
    assert edited.code == 2 and "altered outside pseudo" in edited.stderr
    del data["policy"]
    data["format"] = "pseudo-project/2"
    path.write_text(json.dumps(data))
    removed = _run(vault, cohort, tmp_path / "b3")
    assert removed.code == 2 and "altered outside pseudo" in removed.stderr


def test_both_nestings_are_refused(cohort: Path, vault: Path, env: None) -> None:
    inside_input = _run(vault, cohort, cohort / "out")
    assert inside_input.code == 2 and "inside the input" in inside_input.stderr
    batch = cohort / next(p.name for p in cohort.iterdir() if p.is_dir())
    inside_output = _run(vault, batch, cohort)
    assert inside_output.code == 2 and "inside the output" in inside_output.stderr
    assert not any(p.name.startswith("TRIAL-") for p in cohort.iterdir())


def test_an_output_of_another_project_is_refused_unless_asked(
    cohort: Path, tmp_path: Path, env: None
) -> None:
    first = make_vault(tmp_path / "v1", prefix="AA")
    second = make_vault(tmp_path / "v2", prefix="BB")
    target = tmp_path / "out"
    assert _run(first, cohort, target).code == 0
    assert _run(first, cohort, target).code == 0, "the same project may write again"
    mixed = _run(second, cohort, target)
    assert mixed.code == 2 and "another project" in mixed.stderr and "AA" in mixed.stderr
    assert _run(second, cohort, target, "--allow-mixed-output").code == 0
    assert {p.name[:3] for p in target.iterdir() if p.is_dir()} == {"AA-", "BB-"}


def test_the_inputs_file_is_kept_in_the_vault(
    vault: Path, cohort: Path, tmp_path: Path, env: None
) -> None:
    result = _run(vault, cohort, tmp_path / "out")
    report = Path(result.json()["report"])
    assert not list(report.parent.glob("*.inputs.json")), "nothing identifying beside the export"
    kept = list((vault / "runs" / "trial").glob("run-*.inputs.json"))
    assert len(kept) == 1 and kept[0].stat().st_mode & 0o777 == 0o600
    assert (vault / "runs").stat().st_mode & 0o777 == 0o700
    assert str(cohort) in kept[0].read_text()
    assert str(cohort) not in report.read_text().replace(str(kept[0]), "")
    loaded = load_report(report)
    assert all(item["input"].startswith(str(cohort)) for item in loaded["files"])
    moved = tmp_path / "elsewhere"
    shutil.move(vault / "runs" / "trial", moved)
    assert "input" not in load_report(report)["files"][0]
    assert "input" in load_report(report, inputs_folder=moved)["files"][0]
