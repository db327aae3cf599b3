"""``pseudo diff``, ``pseudo inspect`` and ``pseudo dump`` (the HTML report in a real browser and
the 80-column output: tests/test_review_views.py)."""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from pseudo.demo import build_cohort
from tests.conftest import CanaryRun, cli

REMOVAL = {"removed", "emptied", "replaced", "cleaned"}


def _removed(changes: dict[str, str]) -> tuple[list[str], set[tuple[str, ...]]]:
    """A file's diff rows shown as gone: their paths, and those paths without item indexes
    or ``FileMeta.``, split at the dots (made once per file for :func:`_covered`)."""
    paths = [path for path, kind in changes.items() if kind in REMOVAL]
    plain = {tuple(re.sub(r"\[\d+\]", "", p).removeprefix("FileMeta.").split(".")) for p in paths}
    return paths, plain


def _covered(attribute: str, removed: tuple[list[str], set[tuple[str, ...]]]) -> bool:
    """Whether the diff shows the answer key's attribute (or a sequence holding it) as gone."""
    paths, plain = removed
    attribute = attribute.removeprefix("FileMeta>")
    private = re.search(r"\(([0-9A-F]{4}),xx([0-9A-F]{2})\)", attribute)
    if private:
        pattern = re.compile(rf"\({private[1]},[0-9A-F]{{2}}{private[2]}\)")
        return any(pattern.search(path) for path in paths)
    parts = [re.sub(r"\(.*\)$", "", p) for p in attribute.split(">")]
    return any(tuple(parts[:depth]) in plain for depth in range(1, len(parts) + 1))


def test_diff_of_the_canary_corpus_shows_every_canary_attribute_gone(
    canary_run: CanaryRun, canary_diff: dict[str, Any], answer_key: dict[str, Any]
) -> None:
    data = canary_diff  # exit 0 checked by the fixture
    assert data["paired_by"] == "run report" and data["pairs"] == 95
    by_file: dict[str, dict[str, str]] = {}
    for row in data["changes"]:
        by_file.setdefault(row["b"], {})[row["attribute"]] = row["change"]
    assert all(row["a"].startswith("input ") for row in data["changes"]), "input paths hidden"
    attributes = answer_key["attributes"]
    checked: set[str] = set()
    for key, entry in answer_key["files"].items():
        changes = by_file[str(canary_run.pairs[key].relative_to(canary_run.output))]
        removed = _removed(changes)
        for token in entry["canaries"]:
            attribute = attributes[answer_key["canaries"][token]["a"]]["attribute"]
            assert _covered(attribute, removed), f"{key}: {attribute} not shown as removed"
            checked.add(token)
    assert len(checked) == answer_key["meta"]["n_canaries"]


def test_diff_outputs_csv_and_masks_values(tmp_path: Path, vault: Path, env: None) -> None:
    build_cohort(tmp_path / "in")
    cli("run", tmp_path / "in", tmp_path / "out", "--project", "trial", "--vault", vault, "--quiet")
    files = sorted((tmp_path / "in").rglob("*.dcm"))
    result = cli("diff", tmp_path / "in", tmp_path / "out", "--csv", "-")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert {r["change"] for r in rows} >= {
        "removed",
        "replaced",
        "shifted",
        "remapped",
        "kept",
        "emptied",
    }
    assert "before" not in rows[0]
    assert "DOE^JANE" not in result.stdout and "MRN100234" not in result.stdout
    shown = cli("diff", tmp_path / "in", tmp_path / "out", "--csv", "-", "--show-values")
    assert "DOE^JANE" in shown.stdout
    single = cli("diff", files[0], next((tmp_path / "out").rglob("*.dcm")), "--json").json()
    assert single["paired_by"] == "files" and single["pairs"] == 1
    # Without a run report, trees pair by their identical pixel data.
    shutil.rmtree(tmp_path / "out.pseudo-run")
    by_pixels = cli("diff", tmp_path / "in", tmp_path / "out", "--json").json()
    assert by_pixels["paired_by"] == "pixel data"


def _browser() -> Any:
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    for binary in ("/usr/bin/chromium", "/usr/bin/chromedriver"):
        if not Path(binary).exists() and not os.environ.get("PSEUDO_CI"):
            pytest.skip(f"{binary} missing (Debian packages chromium and chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def test_inspect(tmp_path: Path) -> None:
    build_cohort(tmp_path / "in")
    data = cli("inspect", tmp_path / "in", "--json").json()
    assert data["counts"] == {"patients": 3, "studies": 6, "series": 12, "instances": 18}
    patient = next(p for p in data["patients"] if p["label"].startswith("MRN100234"))
    assert patient["modalities"] == ["CT", "MR"]
    assert patient["date_range"] == ["20190304", "20190902"]
    assert "DEMO-VENDOR 1.0" in patient["private_creators"]
    assert "StudyDate" in patient["differing"] and "PatientName" not in patient["differing"]
    ct = next(s for st in patient["children"] for s in st["children"] if "CT" in s["modalities"])
    assert ct["instances"] == 2 and "InstanceNumber" in ct["differing"]
    instances = ct["children"]
    assert [i["level"] for i in instances] == ["instance", "instance"]
    assert all(Path(i["file"]).is_file() and i["label"].startswith("1.") for i in instances)
    text = cli("inspect", tmp_path / "in")
    assert text.code == 0 and "patient MRN100234" in text.stdout
    assert re.search(r"instance #1\s", text.stdout)


def test_dump(tmp_path: Path) -> None:
    files = build_cohort(tmp_path / "in")
    result = cli("dump", files[-1])
    assert result.code == 0
    lines = result.stdout.splitlines()
    assert "(0002,0010) UI TransferSyntaxUID [1.2.840.10008.1.2.1]" in lines
    assert any(line.startswith("(0010,0010) PN PatientName [") for line in lines)
    assert "(0008,1140) SQ ReferencedImageSequence (1 items)" in lines
    assert any(line.startswith("    (0008,1155) UI ReferencedSOPInstanceUID [") for line in lines)
    assert any("Private [DEMO-VENDOR 1.0]" in line for line in lines)
    assert any("PixelData <" in line for line in lines)
    missing = cli("dump", tmp_path / "nothing.dcm")
    assert missing.code == 2 and missing.stderr.count("\n") == 1
