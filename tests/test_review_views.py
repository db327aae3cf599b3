"""What a reviewer sees: the HTML report in a real browser, ``pseudo diff``, ``inspect`` and
``dump`` at 80 columns, and refusals that name the file."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pseudo.demo import build_cohort
from tests.conftest import CanaryRun, canary_tokens_in, cli
from tests.test_review import _browser


def _pseudo(*args: str | Path, columns: int = 80) -> subprocess.CompletedProcess[str]:
    """``pseudo`` in a subprocess whose stdout is a pipe (not a terminal) of ``columns``."""
    env = {**os.environ, "COLUMNS": str(columns)}
    env.pop("PSEUDO_VAULT", None)
    return subprocess.run(
        [sys.executable, "-m", "pseudo", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture()
def cohort(tmp_path: Path, vault: Path, env: None) -> tuple[Path, Path]:
    """The demo cohort and its pseudonymized copy."""
    build_cohort(tmp_path / "in")
    run = cli(
        "run", tmp_path / "in", tmp_path / "out", "--project", "trial", "--vault", vault, "--quiet"
    )
    assert run.code == 0, run.stderr
    return tmp_path / "in", tmp_path / "out"


def _embedded(page: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        page.split('<script type="application/json" id="data">')[1].split("</script>")[0]
    )
    return data


# -- the HTML report in a real browser ---------------------------------------------------------

_BOX = "const r = arguments[0].getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom];"
_ROWS = (
    "return [...document.querySelectorAll('#changes tbody tr[data-kind]')]"
    ".filter(r => r.offsetParent !== null).map(r => r.dataset.kind)"
)


class Page:
    """A report open in headless Chromium, with a viewport of an exact size."""

    def __init__(self, browser: Any, report: Path, folder: Path) -> None:
        self.browser, self.report, self.folder = browser, report, folder

    def open(self, width: int, height: int) -> None:
        """Load the report in a ``width`` x ``height`` viewport."""
        self.browser.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        self.browser.get(self.report.as_uri())
        assert self.js("return [innerWidth, innerHeight]") == [width, height]

    def js(self, script: str, *args: Any) -> Any:
        """Run ``script`` in the page."""
        return self.browser.execute_script(script, *args)

    def find(self, css: str) -> Any:
        """The first element matching ``css``."""
        from selenium.webdriver.common.by import By

        return self.browser.find_element(By.CSS_SELECTOR, css)

    def box(self, css: str) -> list[float]:
        """The element's [left, top, right, bottom] in the viewport."""
        box: list[float] = self.js(_BOX, self.find(css))
        return box

    def in_view(self, css: str, *, whole_width: bool = True) -> bool:
        """Whether the element shows in the viewport (its whole width, if asked)."""
        left, top, right, bottom = self.box(css)
        width, height = self.js("return [innerWidth, innerHeight]")
        across = left >= 0 and right <= width if whole_width else left < width
        return bool(across and top < height and bottom > 0)

    def rows(self) -> list[str]:
        """The change of every row drawn and displayed."""
        rows: list[str] = self.js(_ROWS)
        return rows

    def shot(self, name: str) -> Path:
        """A screenshot of the viewport, kept beside the test's files."""
        path = self.folder / f"{name}.png"
        assert self.browser.save_screenshot(str(path)) and path.stat().st_size > 1000
        return path


def test_html_report_is_readable_in_a_browser(cohort: tuple[Path, Path], tmp_path: Path) -> None:
    source, output = cohort
    report = tmp_path / "review.html"
    assert cli("diff", source, output, "--html", report).code == 0
    page_text = report.read_text()
    assert "<script src" not in page_text and "<link" not in page_text, "self-contained"
    assert "DOE^JANE" not in page_text and "MRN100234" not in page_text, "values are masked"
    data = _embedded(page_text)
    changes = cli("diff", source, output, "--json").json()["changes"]
    changed = [row for row in changes if row["change"] != "kept"]
    from selenium.webdriver.support.ui import Select

    page = Page(_browser(), report, tmp_path)
    try:
        page.open(1280, 800)
        assert page.browser.title == "pseudo diff"
        # It opens on the summary per patient and study, in view.
        assert page.in_view("#summary") and page.in_view("#summary tbody tr:nth-child(2)")
        studies = page.js("return document.querySelectorAll('#summary tbody tr').length")
        assert studies == 1 + len(data["studies"]) == 1 + 6
        page.shot("report-1280-summary")
        # The changes: changed only by default, a page at a time, the attribute in view.
        page.js("document.getElementById('controls').scrollIntoView()")
        assert page.in_view("#changes thead th:first-child"), "attribute column at 1280"
        assert page.in_view("#changes tbody tr[data-kind] td.attribute")
        assert page.js("return document.documentElement.scrollWidth <= innerWidth")
        shown = page.rows()
        assert "kept" not in shown and len(shown) == min(250, len(changed))
        assert len(changed) > 250, "enough changes for a second page"
        assert page.find("#count").text.startswith(f"{len(changed)} of {len(changes)} rows")
        page.shot("report-1280-changes")
        page.find("#next").click()
        assert page.find("#page").text.startswith("page 2 of ")
        assert page.find("#count").text.endswith(f"rows 251\u2013{min(500, len(changed))}")
        # Filters change what is shown.
        page.find("#changed").click()
        assert page.find("#count").text.startswith(f"{len(changes)} of {len(changes)} rows")
        Select(page.find("#kind")).select_by_value("removed")
        removed = [row for row in changes if row["change"] == "removed"]
        assert set(page.rows()) == {"removed"} and len(page.rows()) == min(250, len(removed))
        Select(page.find("#kind")).select_by_value("")
        page.find("#changed").click()
        page.find("#attribute").send_keys("DEMO-VENDOR")
        private = [r for r in changed if r["creator"] == "DEMO-VENDOR 1.0"]
        assert private and len(page.rows()) == len(private)
        cell = page.find("#changes tbody tr[data-kind] td.attribute")
        assert cell.is_displayed() and "[DEMO-VENDOR 1.0]" in cell.text
        assert re.match(r"\([0-9A-F]{4},[0-9A-F]{4}\)", cell.text)
        page.shot("report-1280-private")
        # The file's header row: a short path, the whole one on hover.
        header = page.find("#changes tbody tr.file td")
        assert header.get_attribute("title").startswith(private[0]["b"])
        page.find("#attribute").clear()
        page.js("document.getElementById('attribute').dispatchEvent(new Event('input'))")
        # A click on a study of the summary shows that study's changes only.
        page.js("scrollTo(0, 0)")
        page.find("#summary tbody tr:nth-child(2)").click()
        count = int(page.find("#count").text.split()[0])
        assert 0 < count < len(changed)
        assert page.find("#where").get_attribute("value") == "s0"
        assert page.find("#images").is_displayed()

        page.open(800, 600)
        assert page.in_view("#summary", whole_width=False)
        assert page.in_view("#summary thead th:first-child")
        page.shot("report-800-summary")
        page.js("document.getElementById('controls').scrollIntoView()")
        assert page.in_view("#changes tbody tr[data-kind] td.attribute")
        assert page.in_view("#changes thead th:nth-child(2)"), "the change column too"
        assert page.js("return document.documentElement.scrollWidth <= innerWidth")
        page.shot("report-800-changes")
    finally:
        page.browser.quit()
    assert len(list(tmp_path.glob("report-*.png"))) == 5


def test_html_report_of_the_canary_corpus_is_compact_and_masked(
    canary_run: CanaryRun,
    canary_dir: Path,
    canary_diff: dict[str, Any],
    answer_key: dict[str, Any],
    tmp_path: Path,
) -> None:
    report = tmp_path / "review.html"
    assert cli("diff", canary_dir, canary_run.output, "--html", report).code == 0
    page = report.read_text()
    images = re.search(r'<section id="images">.*?</section>', page, re.S)
    assert images is not None
    # 95 files: 2.9 MB before rows were written as indexes; about 0.3 MB now, the images aside.
    assert len(page.replace(images.group(0), "").encode()) < 450_000
    # One gray thumbnail per image whose pixels did not change, two for the redacted ones.
    figures = images.group(0).count("<figure")
    changed = len(re.findall(r'data-regions="[1-9]', images.group(0)))
    assert figures > 70 and changed <= 6
    assert images.group(0).count("<img") == figures + changed
    assert images.group(0).count("pixels unchanged") == figures - changed
    assert len(images.group(0).encode()) < figures * 12_000
    assert not canary_tokens_in(page, answer_key["canaries"]), "no canary in the page"
    data = _embedded(page)
    assert len(data["files"]) == 95 and len(data["patients"]) == len(answer_key["patients"])
    assert "SIEMENS CSA HEADER" in {attr[3] for attr in data["attrs"]}
    rows = sum(len(data["patterns"][file[3]]) for file in data["files"])
    assert rows == len(canary_diff["changes"])


# -- the terminal ------------------------------------------------------------------------------


def _fits(lines: list[str], width: int = 80) -> None:
    too_long = [line for line in lines if len(line) > width]
    assert not too_long, too_long[:3]


def test_diff_prints_changes_only_grouped_by_file_at_80_columns(
    cohort: tuple[Path, Path],
) -> None:
    source, output = cohort
    result = _pseudo("diff", source, output)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    _fits(lines)
    assert not any(ch in result.stdout for ch in "│┃━"), "plain lines, not a table"
    headers = [line for line in lines if line.startswith("file ")]
    assert len(headers) == 18 and headers[0].startswith("file 1/18 (A: input 00001), ")
    changes = [line for line in lines if line.startswith("  ") and line.split()]
    assert not any(line.split()[-1] == "kept" for line in changes), "changes only"
    kinds = {m[1] for line in changes if (m := re.search(r"\s(removed|shifted|remapped)", line))}
    assert kinds == {"removed", "shifted", "remapped"}
    assert any(re.match(r"  \(0009,10\d\d\) \[DEMO-VENDOR 1\.0\] +removed", ln) for ln in lines)
    assert re.search(r"\n  StudyDate +shifted +[+-]\d+ days\n", result.stdout)
    assert "DOE^JANE" not in result.stdout, "values masked"
    assert "unchanged not shown (--all)" in result.stderr
    every = _pseudo("diff", source, output, "--all").stdout.splitlines()
    assert any(line.split()[-1] == "kept" for line in every if line.startswith("  "))
    _fits(every)
    values = _pseudo("diff", source, output, "--show-values").stdout
    assert re.search(r"\n  PatientName +replaced +DOE\^JANE -> \S", values)


def test_inspect_fits_80_columns_and_shows_what_differs(cohort: tuple[Path, Path]) -> None:
    source, _ = cohort
    result = _pseudo("inspect", source)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    _fits(lines)
    text = " ".join(line.strip() for line in lines)
    data = cli("inspect", source, "--json").json()
    differs = [line for line in lines if line.strip().startswith("differs: ")]
    assert differs, "the differing attributes are shown"

    def walk(node: dict[str, Any]) -> None:
        for name in node.get("differing", []):
            assert name in text, f"{name} missing"
        for child in node.get("children", []):
            if child["level"] != "instance":
                walk(child)

    for patient in data["patients"]:
        walk(patient)
    assert "…" not in result.stdout, "wrapped, not cropped"


def test_inspect_wraps_long_paths_and_uids_at_80_columns(canary_run: CanaryRun) -> None:
    result = _pseudo("inspect", canary_run.output)
    lines = result.stdout.splitlines()
    _fits(lines)
    folder = next(i for i, line in enumerate(lines) if line.strip().startswith("folder: "))
    joined = "".join(line.strip().removeprefix("folder: ") for line in lines[folder : folder + 4])
    assert re.match(r"CANARY-\w+/2\.25\.\d+/2\.25\.\d+", joined), "the whole folder, wrapped"


def test_dump_refuses_a_file_that_is_not_dicom(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("Patient notes, not an image\nsecond line\n")
    result = cli("dump", notes)
    assert result.code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "notes.txt: not a DICOM file" in result.stderr
