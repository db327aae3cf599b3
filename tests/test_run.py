"""``pseudo run`` on trees: determinism, re-runs, bad files, atomic and safe output."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pydicom
import pytest

from keystore.session import VaultSession
from pseudo.batch.report import load_report
from pseudo.demo import build_cohort
from tests.conftest import CANARY_SECRET, OPERATOR, cli, make_vault, tree_digest


@pytest.fixture()
def cohort(tmp_path: Path) -> Path:
    folder = tmp_path / "input"
    build_cohort(folder)
    return folder


def run(vault: Path, source: Path, target: Path, *extra: str) -> dict[str, Any]:
    result = cli(
        "run", source, target, "--project", "trial", "--vault", vault, "--json", "--quiet", *extra
    )
    assert result.code in (0, 1), result.stderr
    counts: dict[str, Any] = result.json()
    return counts | {"code": result.code, "stderr": result.stderr}


def test_same_input_twice_gives_byte_identical_output(
    vault: Path, cohort: Path, tmp_path: Path, env: None
) -> None:
    first = run(vault, cohort, tmp_path / "a", "--workers", "1")
    second = run(vault, cohort, tmp_path / "b", "--workers", "2")
    assert first["written"] == second["written"] == 18
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")


def test_input_split_in_two_runs_gives_the_same_output(
    tmp_path: Path, canary_dir: Path, env: None
) -> None:
    vault = make_vault(tmp_path / "vault", "trial", secret=CANARY_SECRET)
    whole = tmp_path / "whole"
    # the pixel step works file by file: a split cannot change it (and its OCR is most of
    # the time of a canary run)
    run(vault, canary_dir, whole, "--pixels", "off")
    split = tmp_path / "split"
    patients = sorted(p for p in canary_dir.iterdir() if p.is_dir())
    for part in (patients[: len(patients) // 2], patients[len(patients) // 2 :]):
        staged = tmp_path / f"stage-{part[0].name}"
        for patient in part:
            shutil.copytree(patient, staged / patient.name)
        run(vault, staged, split, "--pixels", "off")
    assert tree_digest(whole) == tree_digest(split)


def test_rerun_adds_nothing_and_changes_nothing(
    vault: Path, cohort: Path, tmp_path: Path, env: None
) -> None:
    target = tmp_path / "out"
    first = run(vault, cohort, target)
    before = tree_digest(target)
    with VaultSession(vault) as session:
        records = session.linkage.count("trial")
    second = run(vault, cohort, target)
    # 3 patients, 6 studies, 12 series, 18 instances
    assert first["written"] == 18 and first["new_linkage_records"] == records == 3 + 6 + 12 + 18
    assert (
        second["written"] == 0 and second["unchanged"] == 18 and second["new_linkage_records"] == 0
    )
    assert tree_digest(target) == before
    with VaultSession(vault) as session:
        assert session.linkage.count("trial") == records


def test_the_report_names_an_input_by_the_same_id_in_every_run(
    vault: Path, cohort: Path, tmp_path: Path, env: None
) -> None:
    """The run report names input files by a keyed digest of their path, the same whether a
    file is written or found unchanged, and its inputs file maps each id back to its path."""
    target = tmp_path / "out"
    ids = []
    for expected in ("written", "unchanged"):
        report = load_report(Path(run(vault, cohort, target)["report"]))
        assert {item["status"] for item in report["files"]} == {expected}
        ids.append({item["input_id"]: item["input"] for item in report["files"]})
    first, second = ids
    assert first == second
    assert sorted(first.values()) == sorted(str(p) for p in cohort.rglob("*") if p.is_file())
    assert all(re.fullmatch(r"[0-9a-f]{16}", input_id) for input_id in first)


def test_discovery_takes_regular_files_and_links_to_them_in_order(tmp_path: Path) -> None:
    """Input discovery: regular files and links to regular files, sorted folder by folder;
    no broken link, no FIFO, no link to a folder followed; sizes and times as ``stat`` has
    them (the fingerprint of a re-run)."""
    import os

    from pseudo.io.listing import discover, inventory

    root = tmp_path / "in"
    (root / "b-sub").mkdir(parents=True)
    (root / "a.dcm").write_bytes(b"a" * 3)
    (root / "b-sub" / "c.dcm").write_bytes(b"c" * 5)
    (root / "link-to-a").symlink_to(root / "a.dcm")
    (root / "broken").symlink_to(root / "missing")
    (root / "folder-link").symlink_to(root / "b-sub", target_is_directory=True)
    os.mkfifo(root / "fifo")
    expected = [root / "a.dcm", root / "link-to-a", root / "b-sub" / "c.dcm"]
    assert discover(root) == expected
    assert inventory(root) == [
        (str(path), path.stat().st_size, path.stat().st_mtime_ns) for path in expected
    ]
    assert discover(root / "a.dcm") == [root / "a.dcm"]


def test_a_deleted_output_is_written_again(
    vault: Path, cohort: Path, tmp_path: Path, env: None
) -> None:
    target = tmp_path / "out"
    run(vault, cohort, target)
    before = tree_digest(target)
    victim = next(target.rglob("*.dcm"))
    victim.unlink()
    again = run(vault, cohort, target)
    assert again["written"] == 1 and again["unchanged"] == 17
    assert tree_digest(target) == before


def test_input_is_never_modified(vault: Path, cohort: Path, tmp_path: Path, env: None) -> None:
    before = tree_digest(cohort)
    run(vault, cohort, tmp_path / "out")
    assert tree_digest(cohort) == before


def test_output_paths_carry_nothing_of_the_input(
    vault: Path, cohort: Path, tmp_path: Path, env: None
) -> None:
    run(vault, cohort, tmp_path / "out")
    names = {
        part
        for p in (tmp_path / "out").rglob("*")
        for part in p.relative_to(tmp_path / "out").parts
    }
    assert names
    pattern = re.compile(r"^(TRIAL-[A-Z2-7]{16}|2\.25\.\d{1,39}|2\.25\.\d{1,39}\.dcm)$")
    for name in names:
        assert pattern.match(name), name


def test_output_inside_input_is_refused(vault: Path, cohort: Path, env: None) -> None:
    result = cli("run", cohort, cohort / "out", "--project", "trial", "--vault", vault)
    assert result.code == 2
    assert "must not be inside the input" in result.stderr
    assert not (cohort / "out").exists()


def test_bad_files_are_skipped_or_quarantined_and_the_run_goes_on(
    vault: Path, cohort: Path, tmp_path: Path, env: None
) -> None:
    good = sorted(cohort.rglob("*.dcm"))[0]
    data = good.read_bytes()
    (cohort / "notes.txt").write_text("not an image\n")
    (cohort / "empty.dcm").write_bytes(b"")
    (cohort / "truncated.dcm").write_bytes(data[: len(data) // 2])
    (cohort / "header-only.dcm").write_bytes(data[:300])
    result = cli(
        "run", cohort, tmp_path / "out", "--project", "trial", "--vault", vault, "--json", "--quiet"
    )
    assert result.code == 1, "quarantined files make the run end with status 1"
    counts = result.json()
    assert counts["written"] == 18
    report = load_report(Path(counts["report"]))
    status = {Path(f["input"]).name: (f["status"], f["reason"]) for f in report["files"]}
    assert status["notes.txt"][0] == "skipped"
    for name in ("empty.dcm", "truncated.dcm", "header-only.dcm"):
        assert status[name][0] in ("quarantined", "skipped"), name
        assert status[name][1], name
    assert status["truncated.dcm"][0] == "quarantined"
    assert "truncated" in status["truncated.dcm"][1]
    assert len(list((tmp_path / "out").rglob("*.dcm"))) == 18
    assert not list((tmp_path / "out").rglob("*.part"))


def test_missing_passphrase_without_terminal_is_one_line(
    vault: Path, cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PSEUDO_PASSPHRASE", raising=False)
    result = cli("run", cohort, tmp_path / "out", "--project", "trial", "--vault", vault)
    assert result.code == 2
    assert result.stderr.count("\n") == 1 and "PSEUDO_PASSPHRASE" in result.stderr


def test_wrong_operator_passphrase(
    vault: Path, cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PSEUDO_PASSPHRASE", "wrong passphrase")
    result = cli("run", cohort, tmp_path / "out", "--project", "trial", "--vault", vault)
    assert result.code == 3
    assert "wrong operator passphrase" in result.stderr


def test_passphrase_file(
    vault: Path, cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PSEUDO_PASSPHRASE", raising=False)
    secret = tmp_path / "pass.txt"
    secret.write_text(OPERATOR + "\n")
    result = cli(
        "run",
        cohort,
        tmp_path / "out",
        "--project",
        "trial",
        "--vault",
        vault,
        "--passphrase-file",
        secret,
        "--quiet",
    )
    assert result.code == 0, result.stderr


def test_single_file_input(vault: Path, cohort: Path, tmp_path: Path, env: None) -> None:
    one = sorted(cohort.rglob("*.dcm"))[0]
    counts = run(vault, one, tmp_path / "out")
    assert counts["written"] == 1
    written = next((tmp_path / "out").rglob("*.dcm"))
    assert pydicom.dcmread(written).PatientID.startswith("TRIAL-")


def test_different_projects_give_unlinkable_pseudonyms(
    tmp_path: Path, cohort: Path, env: None
) -> None:
    vault = make_vault(tmp_path / "vault", "trial")
    with VaultSession(vault) as session:
        from tests.conftest import FAST_KDF, REID

        session.vault.create_project("other", OPERATOR, REID, prefix="TRIAL", kdf=FAST_KDF)
    run(vault, cohort, tmp_path / "a")
    cli("run", cohort, tmp_path / "b", "--project", "other", "--vault", vault, "--quiet")
    first = {p.name for p in (tmp_path / "a").iterdir()}
    second = {p.name for p in (tmp_path / "b").iterdir()}
    assert len(first) == len(second) == 3
    assert not first & second
