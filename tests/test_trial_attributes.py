"""Clinical trial attributes (issue 17): the project's trial settings, the run's site and
timepoint fill the Clinical Trial Subject, Study and Series modules of every output, as CTP
does; Subject ID is the pseudonym. The input's own values of those attributes are treated by
the policy first and never survive; the settings are audited; the outputs stay deterministic,
verified and as valid as their inputs; a policy's ``add`` rule writes a template of project
values.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

import pydicom
import pytest

from keystore.session import VaultSession
from pseudo.api import open_project
from pseudo.batch.report import load_report
from pseudo.demo import build_cohort
from pseudo.errors import PseudoError
from pseudo.policy import load_policy
from tests.conftest import (
    CANARY_SECRET,
    OPERATOR,
    REPO,
    CliResult,
    cli,
    make_vault,
    tree_digest,
)

TRIAL = ("--sponsor", "ACME Pharma", "--protocol-id", "LT-01", "--protocol-name", "Lung Trial")
#: The attributes every output of a project with trial settings carries, by keyword.
EXPECTED = {
    "ClinicalTrialSponsorName": "ACME Pharma",
    "ClinicalTrialProtocolID": "LT-01",
    "ClinicalTrialProtocolName": "Lung Trial",
    "ClinicalTrialSiteID": "",
    "ClinicalTrialSiteName": "",
    "ClinicalTrialCoordinatingCenterName": "",
}


@pytest.fixture()
def cohort(tmp_path: Path) -> Path:
    """The demo cohort: 3 patients, 2 timepoints each, 18 files."""
    folder = tmp_path / "input"
    build_cohort(folder)
    return folder


def _timepoint(cohort: Path, index: int, target: Path) -> Path:
    """A batch of the cohort's ``index``-th timepoint of every patient (its dated folders)."""
    for patient in sorted(p for p in cohort.iterdir() if p.is_dir()):
        visit = sorted(patient.iterdir())[index]
        shutil.copytree(visit, target / patient.name / visit.name)
    return target


def _run(vault: Path, source: Path, target: Path, *extra: str | Path) -> CliResult:
    return cli(
        *("run", source, target, "--project", "trial", "--vault", vault),
        *("--workers", "1", "--quiet", "--json", *extra),
    )


def _outputs(folder: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(path) for path in sorted(folder.rglob("*.dcm"))]


def _set_trial(vault: Path, *options: str) -> CliResult:
    return cli("project", "set-trial", "--project", "trial", "--vault", vault, *options)


def _trial_records(vault: Path) -> list[Any]:
    with VaultSession(vault) as session:
        return [r for r in session.audit.records() if r.action == "project.trial"]


def _add_site(vault: Path, name: str, site_id: str) -> None:
    added = cli(
        "project", "add-site", "--project", "trial", name, "--site-id", site_id, "--vault", vault
    )
    assert added.code == 0, added.stderr


def test_trial_settings_site_and_timepoint_fill_every_output(
    vault: Path, cohort: Path, tmp_path: Path, env: None
) -> None:
    assert _set_trial(vault, *TRIAL).code == 0
    _add_site(vault, "lyon", "0042")
    result = _run(
        vault, cohort, tmp_path / "out", "--site", "lyon", "--timepoint", "BASELINE",
        "--timepoint-description", "Screening visit",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    outputs = _outputs(tmp_path / "out")
    assert len(outputs) == 18
    site = {"ClinicalTrialSiteID": "0042", "ClinicalTrialSiteName": "lyon"}
    for ds in outputs:
        for keyword, value in {**EXPECTED, **site}.items():
            assert keyword in ds and str(ds[keyword].value or "") == value, keyword
        assert ds.ClinicalTrialSubjectID == ds.PatientID  # the pseudonym
        assert ds.ClinicalTrialTimePointID == "BASELINE"
        assert ds.ClinicalTrialTimePointDescription == "Screening visit"
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.DeidentificationMethod[1].startswith("policy default ")
    report = load_report(Path(result.json()["report"]))
    assert report["trial"]["timepoint"] == {"id": "BASELINE", "description": "Screening visit"}
    assert report["trial"]["settings"]["sponsor"] == "ACME Pharma"
    assert report["trial"]["site"] == {"id": "0042", "name": "lyon"}


def test_two_sites_write_their_own_site_and_subjects(
    vault: Path, cohort: Path, tmp_path: Path, env: None
) -> None:
    """Each site's files carry their own site; the subject ID is the pseudonym at each (the
    identities themselves: tests/test_identity*.py)."""
    assert _set_trial(vault, *TRIAL).code == 0
    _add_site(vault, "lyon", "0042")
    _add_site(vault, "oslo", "0077")
    for name in ("lyon", "oslo"):
        result = _run(vault, cohort, tmp_path / name, "--site", name, "--timepoint", "M0")
        assert result.code == 0, result.stderr
    lyon, oslo = _outputs(tmp_path / "lyon"), _outputs(tmp_path / "oslo")
    assert {str(ds.ClinicalTrialSiteID) for ds in lyon} == {"0042"}
    assert {str(ds.ClinicalTrialSiteName) for ds in oslo} == {"oslo"}
    assert all(ds.ClinicalTrialSubjectID == ds.PatientID for ds in lyon + oslo)


def test_a_project_without_trial_settings_writes_none(
    vault: Path, cohort: Path, tmp_path: Path, env: None
) -> None:
    assert _run(vault, cohort, tmp_path / "out").code == 0
    for ds in _outputs(tmp_path / "out"):
        assert not [e for e in ds if e.tag.group == 0x0012 and e.tag.element < 0x0062]
    load = load_report(Path(_run(vault, cohort, tmp_path / "out").json()["report"]))
    assert "trial" not in load


def test_a_timepoint_alone_fills_the_study_module(
    vault: Path, cohort: Path, tmp_path: Path, env: None
) -> None:
    assert _run(vault, cohort, tmp_path / "out", "--timepoint", "M12").code == 0
    for ds in _outputs(tmp_path / "out"):
        assert ds.ClinicalTrialTimePointID == "M12"
        assert "ClinicalTrialSponsorName" not in ds and "ClinicalTrialSubjectID" not in ds


def _days(text: str) -> int:
    return date(int(text[:4]), int(text[4:6]), int(text[6:8])).toordinal()


def _subjects(result: CliResult, output: Path) -> dict[str, tuple[str, int]]:
    """Subject ID -> (its timepoint, its date offset in days), from a run's inputs and outputs
    (one offset per subject, or the test fails)."""
    report = load_report(Path(result.json()["report"]))
    found: dict[str, set[tuple[str, int]]] = {}
    for entry in report["files"]:
        before = pydicom.dcmread(entry["input"])
        after = pydicom.dcmread(output / entry["output"])
        offset = _days(str(after.StudyDate)) - _days(str(before.StudyDate))
        timepoint = str(after.ClinicalTrialTimePointID)
        found.setdefault(str(after.ClinicalTrialSubjectID), set()).add((timepoint, offset))
    assert all(len(values) == 1 for values in found.values()), found
    return {subject: next(iter(values)) for subject, values in found.items()}


def test_a_second_timepoint_a_year_later_keeps_subjects_and_offsets(
    vault: Path, cohort: Path, tmp_path: Path, env: None
) -> None:
    assert _set_trial(vault, *TRIAL).code == 0
    batch1 = _timepoint(cohort, 0, tmp_path / "batch1")
    batch2 = _timepoint(cohort, 1, tmp_path / "batch2")
    first = _run(vault, batch1, tmp_path / "out1", "--timepoint", "BASELINE")
    assert first.code == 0, first.stderr
    later = _run(vault, batch2, tmp_path / "out2", "--timepoint", "M12")
    assert later.code == 0, later.stderr
    before, after = _subjects(first, tmp_path / "out1"), _subjects(later, tmp_path / "out2")
    assert len(before) == 3 and set(before) == set(after)  # the same pseudonyms
    for subject, (timepoint, offset) in before.items():
        assert timepoint == "BASELINE" and after[subject] == ("M12", offset)  # same offset


def test_trial_settings_are_audited_and_covered_by_the_settings_mac(
    tmp_path: Path, cohort: Path, env: None
) -> None:
    vault = tmp_path / "vault"
    assert cli("vault", "init", "--vault", vault).code == 0
    created = cli("project", "create", "trial", "--vault", vault, *TRIAL)
    assert created.code == 0, created.stderr
    with VaultSession(vault) as session:
        create = next(r for r in session.audit.records() if r.action == "project.create")
    assert json.loads(create.details)["trial"]["protocol_id"] == "LT-01"
    changed = _set_trial(
        vault, "--protocol-name", "Lung Trial II", *("--ethics-committee", "EC-A"),
        *("--ethics-approval", "EC-2026-17"),
    )  # fmt: skip
    assert changed.code == 0, changed.stderr
    assert "ethics_approval, ethics_committee, protocol_name" in changed.stderr
    assert _set_trial(vault, "--protocol-name", "Lung Trial II").code == 0  # no change
    (record,) = _trial_records(vault)
    details = json.loads(record.details)
    assert record.outcome == "success" and record.actor
    assert details["previous"]["protocol_name"] == "Lung Trial"
    assert details["trial"]["protocol_name"] == "Lung Trial II"
    assert details["changed"] == ["ethics_approval", "ethics_committee", "protocol_name"]
    listed = cli("project", "list", "--vault", vault, "--json").json()
    assert listed[0]["trial"]["ethics_committee"] == "EC-A"
    path = vault / "projects" / "trial.json"
    data = json.loads(path.read_text())
    data["trial"]["sponsor"] = "Someone Else"
    path.write_text(json.dumps(data))
    edited = _run(vault, cohort, tmp_path / "out")
    assert edited.code == 2 and "altered outside pseudo" in edited.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--sponsor", "ACME"), "protocol_id"),
        (("--sponsor", "ACME\\X", "--protocol-id", "P"), "backslash"),
        (("--sponsor", "A" * 65, "--protocol-id", "P"), "longer than 64"),
        (("--sponsor", "ACME", "--protocol-id", "P", "--ethics-approval", "1"), "committee"),
    ],
)
def test_unusable_trial_settings_are_refused_in_one_line(
    vault: Path, env: None, options: tuple[str, ...], message: str
) -> None:
    result = _set_trial(vault, *options)
    assert result.code == 2 and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    assert _trial_records(vault) == []


def test_a_timepoint_that_does_not_fit_is_refused_before_any_file(
    vault: Path, cohort: Path, tmp_path: Path, env: None
) -> None:
    result = _run(vault, cohort, tmp_path / "out", "--timepoint", "T" * 65)
    assert result.code == 2 and "timepoint" in result.stderr and "64" in result.stderr
    alone = _run(vault, cohort, tmp_path / "out", "--timepoint-description", "x")
    assert alone.code == 2 and "--timepoint-description needs --timepoint" in alone.stderr
    assert not any((tmp_path / "out").rglob("*.dcm"))


#: What a site's own clinical trial attributes may hold: identifying values.
SITE_VALUES = {
    "ClinicalTrialSubjectID": "SITEPAT4711",
    "ClinicalTrialSubjectReadingID": "READER4711",
    "ClinicalTrialSiteName": "StElsewhereHospital",
    "ClinicalTrialSiteID": "ELSEWHERE22",
    "ClinicalTrialTimePointDescription": "DOE visit CNRYTRIAL1",
    "ClinicalTrialProtocolEthicsCommitteeApprovalNumber": "ECAPPROVAL99",
    "ClinicalTrialSponsorName": "ACME Pharma",  # the project's too: no leak to find
}


@pytest.mark.parametrize("with_settings", [True, False])
def test_an_inputs_own_clinical_trial_values_do_not_survive(
    vault: Path, cohort: Path, tmp_path: Path, env: None, with_settings: bool
) -> None:
    for path in cohort.rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        for keyword, value in SITE_VALUES.items():
            setattr(ds, keyword, value)
        ds.save_as(path)
    if with_settings:
        assert _set_trial(vault, *TRIAL).code == 0
    result = _run(vault, cohort, tmp_path / "out", "--timepoint", "M12")
    assert result.code == 0, result.stderr  # verified: no leak found, none quarantined
    for path in sorted((tmp_path / "out").rglob("*.dcm")):
        raw = path.read_bytes()
        for keyword, value in SITE_VALUES.items():
            if keyword != "ClinicalTrialSponsorName":
                assert value.encode() not in raw, (keyword, path)
        ds = pydicom.dcmread(path)
        assert ds.ClinicalTrialTimePointID == "M12"
        if with_settings:
            assert ds.ClinicalTrialSubjectID == ds.PatientID
            assert ds.ClinicalTrialSponsorName == "ACME Pharma"
        else:  # PS3.15 Table E.1-1: D (a dummy) for the subject ID and the sponsor
            assert ds.ClinicalTrialSubjectID not in ("", SITE_VALUES["ClinicalTrialSubjectID"])
            assert b"ACME" not in raw
    verified = cli(
        *("verify", cohort, tmp_path / "out", "--project", "trial", "--vault", vault, "--json")
    )
    assert verified.code == 0, verified.stdout
    assert verified.json()["leaks"] == 0 and verified.json()["paired_with_input"] == 18


def test_outputs_are_byte_identical_whatever_the_number_of_workers(
    vault: Path, cohort: Path, tmp_path: Path, env: None
) -> None:
    assert _set_trial(vault, *TRIAL).code == 0
    one = _run(vault, cohort, tmp_path / "one", "--timepoint", "BASELINE")
    two = cli(
        *("run", cohort, tmp_path / "two", "--project", "trial", "--vault", vault),
        *("--workers", "2", "--quiet", "--timepoint", "BASELINE"),
    )
    assert one.code == 0 and two.code == 0, two.stderr
    assert tree_digest(tmp_path / "one") == tree_digest(tmp_path / "two")


def test_another_timepoint_into_the_same_output_writes_the_files_again(
    vault: Path, cohort: Path, tmp_path: Path, env: None
) -> None:
    assert _run(vault, cohort, tmp_path / "out", "--timepoint", "A").code == 0
    again = _run(vault, cohort, tmp_path / "out", "--timepoint", "B")
    assert again.code == 0 and again.json()["written"] == 18
    assert {ds.ClinicalTrialTimePointID for ds in _outputs(tmp_path / "out")} == {"B"}


def _policy(tmp_path: Path, rules: str) -> Path:
    path = tmp_path / "added.yaml"
    path.write_text(f"name: added\nextends: default\nrules:\n{rules}")
    return path


def test_a_policy_add_rule_writes_its_template(
    vault: Path, cohort: Path, tmp_path: Path, env: None
) -> None:
    policy = _policy(
        tmp_path,
        "  - select: ClinicalTrialSeriesID\n    action: add\n    value: 'TP-{timepoint_id}'\n"
        "  - select: ClinicalTrialSeriesDescription\n    action: add\n"
        "    value: '{protocol_id} series'\n",
    )
    result = _run(vault, cohort, tmp_path / "out", "--policy", policy, "--timepoint", "M6")
    assert result.code == 0, result.stderr
    for ds in _outputs(tmp_path / "out"):
        assert ds.ClinicalTrialSeriesID == "TP-M6"
        # no trial settings: the template's {protocol_id} has no value, nothing is added
        assert "ClinicalTrialSeriesDescription" not in ds


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("  - select: ClinicalTrialSeriesID\n    action: add\n    value: '{PatientID}'\n",
         "unknown field {PatientID}"),
        ("  - select: ClinicalTrialSeriesID\n    action: add\n", "needs 'value'"),
        ("  - select: ReferencedImageSequence[*].ReferencedSOPInstanceUID\n    action: add\n"
         "    value: x\n", "top level"),
        ("  - select: StudyDate\n    action: add\n    value: '{timepoint_id}'\n", "VR DA"),
        ("  - select: [ClinicalTrialSeriesID, ClinicalTrialSeriesDescription]\n"
         "    action: add\n    value: x\n", "one selector"),
    ],
)  # fmt: skip
def test_an_add_rule_that_cannot_work_is_refused_at_load(
    tmp_path: Path, rule: str, message: str
) -> None:
    with pytest.raises(PseudoError, match=r"added\.yaml") as refused:
        load_policy(str(_policy(tmp_path, rule)))
    assert message in str(refused.value)


def test_outputs_gain_no_error_kind_from_the_trial_modules(
    canary_dir: Path, tmp_path: Path, env: None
) -> None:
    """Without the pixel step: the trial modules are header attributes; the images the pixel
    step redacts are checked with dciodvfy by test_iod_validity's default-level canary case
    (the suite's shared canary run), and the OCR would be most of this run's time."""
    from tests.test_iod_validity import ACCEPTED, error_kinds

    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed")
    vault = make_vault(tmp_path / "vault", secret=CANARY_SECRET)
    ethics = ("--ethics-committee", "EC-A", "--ethics-approval", "EC-2026-17")
    assert _set_trial(vault, *TRIAL, *ethics, "--coordinating-center", "CoreLab").code == 0
    result = cli(
        *("run", canary_dir.resolve(), tmp_path / "out", "--project", "trial"),
        *("--vault", vault, "--workers", "2", "--json", "--quiet", "--timepoint", "M12"),
        *("--pixels", "off"),
    )
    assert result.code == 0, result.stderr
    report = load_report(Path(result.json()["report"]))
    pairs = [(Path(f["input"]), tmp_path / "out" / f["output"]) for f in report["files"]]

    def gained(pair: tuple[Path, Path]) -> list[str]:
        return sorted(error_kinds(pair[1]) - error_kinds(pair[0]) - set(ACCEPTED))

    with ThreadPoolExecutor(2) as pool:
        worse = [new for new in pool.map(gained, pairs) if new]
    assert len(pairs) == 95 and not worse, worse


def _guide_commands(*headings: str) -> list[str]:
    """The ``pseudo`` commands of the user guide's sections under ``headings`` (each up to
    the next heading), continuation lines joined, comments dropped."""
    text = (REPO / "docs" / "user-guide.md").read_text()
    lines = []
    for heading in headings:
        section = re.split(r"\n#{2,4} ", text.split(f"\n{heading}\n", 1)[1])[0]
        for block in re.findall(r"```sh\n(.*?)```", section, re.S):
            for line in block.replace("\\\n", " ").splitlines():
                if line.strip().startswith("pseudo "):
                    lines.append(line.split("  #", 1)[0].strip())
    return lines


WALKTHROUGH = _guide_commands(
    "## Creating a vault and a project", "### A second timepoint a year later"
)


def test_the_walkthrough_has_its_commands() -> None:
    assert sum("--timepoint" in line for line in WALKTHROUGH) == 2
    assert any(line.startswith("pseudo project set-trial") for line in WALKTHROUGH)


@pytest.mark.parametrize("line", WALKTHROUGH)
def test_every_walkthrough_command_is_real(line: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    words = shlex.split(line)
    path = words[1:3] if words[1] in ("vault", "project", "audit", "policy") else words[1:2]
    result = cli(*path, "--help")
    assert result.code == 0, f"{line}: {result.stderr}"
    for option in (word for word in words if word.startswith("--")):
        assert option in result.stdout, f"{line}: {option} is not an option of {path}"


def test_an_incidental_finding_leads_the_dpo_to_the_original_image(
    vault: Path, cohort: Path, tmp_path: Path, env: None
) -> None:
    """operations.md, "An incidental finding": from a reported output file to the original
    image, with the request in the audit log."""
    assert _set_trial(vault, *TRIAL).code == 0
    result = _run(vault, cohort, tmp_path / "out", "--timepoint", "M12")
    entry = load_report(Path(result.json()["report"]))["files"][4]
    source = pydicom.dcmread(entry["input"])
    finding = pydicom.dcmread(tmp_path / "out" / entry["output"])
    why = ("--requester", "Dr A (DPO)", "--reason", "incidental finding, ticket 123")
    answer = cli(
        *("reidentify", "--project", "trial", "--vault", vault, "--json", *why),
        *("--instance-uid", str(finding.SOPInstanceUID)),
    )
    assert answer.code == 0, answer.stderr
    found = answer.json()
    assert found["pseudonym"] == finding.ClinicalTrialSubjectID
    assert found["patient_id"] == source.PatientID
    assert found["instance"]["sop_instance_uid"] == source.SOPInstanceUID
    assert found["instance"]["study_uid"] == source.StudyInstanceUID
    log = cli("audit", "show", "--project", "trial", "--action", "reidentify", "--vault", vault)
    assert log.code == 0 and "incidental finding, ticket 123" in log.stdout
    assert str(finding.SOPInstanceUID) in log.stdout


def test_the_api_writes_the_same_trial_attributes(
    vault: Path, cohort: Path, tmp_path: Path, env: None
) -> None:
    assert _set_trial(vault, *TRIAL).code == 0
    result = _run(vault, cohort, tmp_path / "out", "--timepoint", "M12")
    entry = load_report(Path(result.json()["report"]))["files"][0]
    with open_project(vault, "trial", OPERATOR, timepoint="M12") as project:
        done = project.pseudonymize(pydicom.dcmread(entry["input"]))
    written = pydicom.dcmread(tmp_path / "out" / entry["output"])
    for keyword in (*EXPECTED, "ClinicalTrialSubjectID", "ClinicalTrialTimePointID"):
        assert done.dataset[keyword].value == written[keyword].value


def test_policy_explain_shows_an_add_rule_and_when_it_acts(tmp_path: Path) -> None:
    policy = _policy(
        tmp_path,
        "  - select: ClinicalTrialSeriesID\n    action: add\n    value: 'TP-{timepoint_id}'\n",
    )
    shown = cli("policy", "explain", policy, "ClinicalTrialSeriesID")
    assert shown.code == 0, shown.stderr
    assert "1. add: policy added rule 1" in shown.stdout
    assert "[only if the run gives timepoint_id]" in shown.stdout
    assert "decided by: PS3.15" in shown.stdout  # what happens to the input's own value
