"""One per-file path: a run, a dry run, ``pseudo verify`` and the Python API agree.

They all go through :mod:`pseudo.pipeline`; these tests hold them to it on the corpora of
``../shared`` and on synthetic cohorts, under every shipped policy and every option.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from keystore.keyring import Keyring
from keystore.session import VaultSession
from pseudo.api import open_project
from pseudo.batch.runner import Runner
from pseudo.batch.verify_tree import verify_tree
from pseudo.demo import build_cohort
from pseudo.findings import RejectedFile
from pseudo.io.layout import output_path
from pseudo.pipeline.outcome import FileStatus
from pseudo.policy import load_policy, shipped_policy_names
from pseudo.policy.model import OPTIONS
from pseudo.review.dryrun import dry_run
from tests.conftest import OPERATOR, SHARED, cli, need


@pytest.fixture()
def session(vault: Path) -> Iterator[tuple[VaultSession, Keyring]]:
    """An open vault session and the project's operator keyring."""
    with VaultSession(vault) as opened:
        yield opened, opened.vault.unlock_operator("trial", OPERATOR)


#: (corpus, pixel step, every how many files). By default every file of every corpus without
#: the pixel step, and every third file of the burned-in corpus with it; every file with it is
#: slow (the OCR of the images with text, one 10-frame echo of the public corpus above all, is
#: most of the time, twice: the run and the dry run).
_FATE_CASES = [
    *(
        pytest.param(corpus, "off", 1, id=f"{corpus}-pixels-off")
        for corpus in ("public", "phi-canary/dicom", "burned-in")
    ),
    pytest.param("burned-in", "on", 3, id="burned-in-every-third"),
    *(
        pytest.param(corpus, "on", 1, id=corpus, marks=pytest.mark.slow)
        for corpus in ("public", "phi-canary/dicom", "burned-in")
    ),
]


@pytest.mark.parametrize(("corpus", "pixels", "step"), _FATE_CASES)
def test_a_dry_run_and_a_run_give_every_file_the_same_fate(
    corpus: str, pixels: str, step: int, session: tuple[VaultSession, Keyring], tmp_path: Path
) -> None:
    source = need(SHARED / "corpus" / corpus, f"corpus {corpus}")
    files = sorted(p for p in source.rglob("*") if p.is_file())
    if step > 1:
        source = tmp_path / "in"
        for index, path in enumerate(files[::step]):
            (source / f"{index:03d}").mkdir(parents=True)
            (source / f"{index:03d}" / path.name).symlink_to(path)
    opened, keyring = session
    policy = load_policy("default")
    if pixels == "off":
        policy.pixels = policy.pixels.off()
    dry = dry_run(keyring, policy, opened.linkage, source)
    summary = Runner(keyring, policy, opened.linkage, source, tmp_path / "out", workers=2).run()
    ran = {outcome.input: outcome.status for outcome in summary.outcomes}
    assert dry.outcomes == ran
    assert len(ran) == len(files[::step]) > 25
    assert dry.files["would write"] == summary.count(FileStatus.WRITTEN) > 0


def _policy_cases() -> list[str]:
    return [*shipped_policy_names(), *(f"option:{name}" for name in OPTIONS)]


@pytest.mark.parametrize("case", _policy_cases())
def test_verify_pairs_every_output_under_every_policy_and_option(
    case: str, session: tuple[VaultSession, Keyring], tmp_path: Path
) -> None:
    if case.startswith("option:"):
        option = case.removeprefix("option:")
        policy_file = tmp_path / "site.yaml"
        policy_file.write_text(f"name: with-{option}\nextends: basic\noptions: [{option}]\n")
        policy = load_policy(str(policy_file))
    else:
        policy = load_policy(case)
    opened, keyring = session
    build_cohort(tmp_path / "in")
    summary = Runner(keyring, policy, opened.linkage, tmp_path / "in", tmp_path / "out").run()
    written = summary.count(FileStatus.WRITTEN)
    assert written == len(summary.outcomes) > 0
    report = verify_tree(tmp_path / "in", tmp_path / "out", policy, keyring, opened.linkage)
    assert report.outputs == written
    assert report.paired == written, report.notes
    assert not any("have no input" in note for note in report.notes)


def test_the_output_path_is_built_in_one_place() -> None:
    assert output_path("P-1", "2.25.1", "2.25.2", "2.25.3") == "P-1/2.25.1/2.25.2/2.25.3.dcm"


def test_the_api_runs_the_pipeline_with_journal_verification_and_audit(
    vault: Path, tmp_path: Path
) -> None:
    files = build_cohort(tmp_path / "in")
    with open_project(vault, "trial", OPERATOR, actor="a script") as project:
        first = project.run(tmp_path / "in", tmp_path / "out", report_dir=tmp_path / "reports")
        again = project.run(tmp_path / "in", tmp_path / "out", report_dir=tmp_path / "reports")
    assert first.count(FileStatus.WRITTEN) == len(files)
    assert again.count(FileStatus.UNCHANGED) == len(files), "the journal knows the files"
    assert len(list((vault / "runs" / "trial").glob("run-*.inputs.json"))) == 2
    assert not list((tmp_path / "reports").glob("*.inputs.json")), "input paths stay in the vault"
    with VaultSession(vault) as opened:
        runs = [r for r in opened.audit.records() if r.action == "run"]
    assert [(r.actor, r.outcome) for r in runs] == [
        ("a script", "started"),
        ("a script", "completed"),
    ] * 2
    started, ended = (json.loads(r.details) for r in runs[:2])
    assert started["run_id"] == ended["run_id"] == first.run_id
    assert ended["written"] == len(files) and "written" not in started


def test_the_api_quarantines_a_data_set_whose_result_would_leak(
    vault: Path, tmp_path: Path
) -> None:
    """A site policy that writes the patient's ID into another attribute makes a leak that
    only the verification can see; the API refuses the result as a run quarantines it."""
    files = build_cohort(tmp_path / "in")
    ds = pydicom.dcmread(files[0])
    ds.SeriesDescription = "baseline"
    policy = tmp_path / "writes-the-id.yaml"
    policy.write_text(
        "name: writes-the-id\nextends: default\nrules:\n"
        f"  - select: [SeriesDescription]\n    action: replace\n    value: '{ds.PatientID}'\n"
    )
    with (
        open_project(vault, "trial", OPERATOR, policy=str(policy)) as project,
        pytest.raises(RejectedFile, match="verification found"),
    ):
        project.pseudonymize(ds)
    with open_project(vault, "trial", OPERATOR) as project:
        assert project.pseudonymize(pydicom.dcmread(files[0])).dataset.PatientID != ds.PatientID


def test_verify_with_a_project_uses_the_policy_the_project_recorded(
    vault: Path, tmp_path: Path, env: None
) -> None:
    """Made with a site policy file that keeps Institution Name (here holding the patient's
    family name); ``pseudo verify --project`` without ``--policy`` judges the outputs by that
    policy, as the run did (a kept value is a warning), not by the default (a leak)."""
    for path in build_cohort(tmp_path / "in"):
        ds = pydicom.dcmread(path)
        ds.InstitutionName = f"Clinic {str(ds.PatientName).split('^')[0]}"
        ds.save_as(path)
    policy = tmp_path / "site.yaml"
    policy.write_text(
        "name: site\nextends: default\nrules:\n  - select: [InstitutionName]\n"
        "    action: keep\n    why: a test\n"
    )
    made = cli(
        "run", tmp_path / "in", tmp_path / "out", "--project", "trial", "--vault", vault,
        "--policy", policy, "--quiet",
    )  # fmt: skip
    assert made.code == 0, made.stderr
    verify = ("verify", tmp_path / "in", tmp_path / "out", "--project", "trial", "--vault", vault)
    checked = cli(*verify, "--json")
    assert checked.code == 0, checked.stdout + checked.stderr
    report = checked.json()
    assert report["leaks"] == 0 and report["paired_with_input"] == report["outputs"] > 0
    assert report["warnings"] > 0, "the kept names are reported as kept, not ignored"
    by_default = cli(*verify, "--json", "--policy", "default")
    assert by_default.code == 1 and by_default.json()["leaks"] > 0
