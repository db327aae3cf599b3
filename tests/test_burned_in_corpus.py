"""Done-when of issue 15 on ``../shared/corpus/burned-in`` (read in place), default policy.

Every file is written; at least 99 % of the JSON value boxes are removed (the output box is
blank, or no longer resembles the input box: the measure of ``shared/tools/score_burned_in.py``,
whose own figures this test cross-checks); at least 98 % of the pixels outside the boxes (2-pixel
margin) are unchanged; no header identifier; and the OCR reads no burned-in value back.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from pseudo.batch.report import load_report
from pseudo.pixels.detect import read_text
from tests.burned_in import gray8
from tests.conftest import OPERATOR, SHARED, cli, make_vault, need

CORPUS = SHARED / "corpus" / "burned-in" / "dicom"
SCORER = SHARED / "tools" / "score_burned_in.py"
pytestmark = pytest.mark.slow  # the detector reads 90 full-size images


@dataclass
class Scored:
    """The burned-in corpus pseudonymized once, its outputs paired with their inputs."""

    output: Path
    report: dict[str, Any]
    pairs: dict[Path, Path]


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scored]:
    """``pseudo run`` of the corpus with the default policy, two workers."""
    source = need(CORPUS, "burned-in corpus")
    base = tmp_path_factory.mktemp("burned-in")
    vault = make_vault(base / "vault")
    output = base / "out"
    os.environ["PSEUDO_PASSPHRASE"] = OPERATOR
    try:
        ran = cli("run", source, output, "--project", "trial", "--vault", vault, "--json", "-q")
    finally:
        del os.environ["PSEUDO_PASSPHRASE"]
    report = load_report(Path(ran.json()["report"]))
    pairs = {Path(f["input"]): output / f["output"] for f in report["files"] if f.get("output")}
    yield Scored(output, report, pairs)


def _value_boxes(path: Path) -> list[tuple[str, list[int]]]:
    notes = json.loads(path.with_suffix(".json").read_text())
    return [(a["value"]["text"], a["value"]["bbox"]) for a in notes["annotation"] if a.get("value")]


def _removed(before: np.ndarray, after: np.ndarray) -> bool:
    """The scorer's test: the output box is near-constant, or uncorrelated with the input's."""
    if after.std() < 2:
        return True
    return bool(np.corrcoef(before.ravel(), after.ravel())[0, 1] < 0.3)


def test_every_file_is_written(scored: Scored) -> None:
    inputs = sorted(CORPUS.glob("*.dcm"))
    assert scored.report["counts"]["quarantined"] == 0, [
        f["reason"] for f in scored.report["files"] if f["status"] == "quarantined"
    ]
    assert {p.resolve() for p in scored.pairs} == {p.resolve() for p in inputs}


@dataclass
class Figures:
    """The done-when's two pixel figures: value boxes removed, pixels outside them unchanged."""

    total: int
    removed: int
    same: int
    outside: int


@pytest.fixture(scope="module")
def figures(scored: Scored) -> Figures:
    """Every value box of the JSON files scored on the outputs, as the scorer does."""
    total = removed = same = outside = 0
    for source, target in scored.pairs.items():
        before = pydicom.dcmread(source).pixel_array.astype(float)
        after = pydicom.dcmread(target).pixel_array.astype(float)
        assert before.shape == after.shape
        mask = np.zeros(before.shape, bool)
        for _, (x1, y1, x2, y2) in _value_boxes(source):
            mask[max(0, y1 - 2) : y2 + 3, max(0, x1 - 2) : x2 + 3] = True
            box_before = before[y1 : y2 + 1, x1 : x2 + 1]
            if box_before.size == 0 or box_before.std() == 0:
                continue  # an empty box in the JSON: nothing was burned in
            total += 1
            removed += _removed(box_before, after[y1 : y2 + 1, x1 : x2 + 1])
        outside += int((~mask).sum())
        same += int((before[~mask] == after[~mask]).sum())
    return Figures(total, removed, same, outside)


def test_the_pixels_outside_the_value_boxes_are_unchanged(figures: Figures) -> None:
    assert figures.total > 400
    assert figures.same / figures.outside >= 0.98, (
        f"{figures.same / figures.outside:.4f} of the pixels outside unchanged"
    )


def test_value_boxes_removed_and_the_scorer_agrees(scored: Scored, figures: Figures) -> None:
    total, removed, same, outside = figures.total, figures.removed, figures.same, figures.outside
    assert removed / total >= 0.99, (
        f"{removed}/{total} value boxes removed ({same / outside:.4f} of the pixels outside "
        "unchanged)"
    )
    scorer = _score(scored.output)
    assert scorer["pixel_boxes"] == total
    assert scorer["pixel_boxes_removed"] == removed
    assert scorer["files_missing"] == 0
    assert abs(scorer["outside_boxes_unchanged_pct"] - 100 * same / outside) < 0.01


def _score(output: Path) -> dict[str, Any]:
    """The figures of ``shared/tools/score_burned_in.py`` for ``output``."""
    need(SCORER, "score_burned_in.py")
    done = subprocess.run(
        [sys.executable, str(SCORER), str(CORPUS), str(output)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_no_identifier_in_any_header_or_path(scored: Scored) -> None:
    scorer = _score(scored.output)
    assert scorer["header_leak_pairs"] == 0, scorer["examples"]
    assert scorer["path_leak_files"] == 0


def _normal(text: str) -> str:
    return re.sub(r"[^0-9A-Z]", "", text.upper())


def test_the_ocr_reads_no_burned_in_value_back(scored: Scored) -> None:
    read_back = []
    for source, target in scored.pairs.items():
        values = {_normal(text) for text, _ in _value_boxes(source)} - {""}
        values = {v for v in values if len(v) >= 3}
        image = gray8(pydicom.dcmread(target))
        assert image is not None
        lines = [_normal(box.text) for box in read_text(image)]
        read_back += [source.name for v in values if any(v in line for line in lines)]
    assert not read_back, f"{len(read_back)} values read back"
