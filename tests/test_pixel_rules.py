"""Pixel rules as policy data: validation (fail closed), matching, regions, explain.

The ``pixels:`` section of a policy (issue 15): rules with conditions on the input's header and
regions (boxes and bands), plus the detector's settings. See docs/pixels.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from pseudo.pixels.boxes import Box
from pseudo.pixels.protect import flat_border
from pseudo.pixels.rules import plan, region_box
from pseudo.policy import PolicyError, load_policy
from pseudo.policy.model import Region
from tests.conftest import cli

BAND_POLICY = """\
name: band
extends: default
pixels:
  detector:
    margin: 1
  rules:
    - name: acme-us-header
      when:
        Manufacturer: ACME
        Modality: {in: [US, OT]}
        Rows: "32"
      regions:
        - top: 8
        - box: [40, 20, 47, 31]
      why: the ACME scanner writes the patient's name in its top rows
    - name: scanned-documents
      when:
        SOPClassUID: 1.2.840.10008.5.1.4.1.1.104.1
      quarantine: encapsulated documents carry text no rule can place
"""


def _policy(tmp_path: Path, text: str = BAND_POLICY, name: str = "band.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _header(**values: str | int) -> Dataset:
    ds = Dataset()
    ds.Rows, ds.Columns = 32, 48
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def test_a_band_rule_applies_to_the_matching_image_only(tmp_path: Path) -> None:
    pixels = load_policy(str(_policy(tmp_path))).pixels
    assert pixels.margin == 1 and pixels.detector
    matching = plan(_header(Manufacturer="ACME", Modality="US"), pixels)
    assert matching.rule is not None and matching.rule.name == "acme-us-header"
    assert matching.boxes == (
        Box(0, 0, 47, 7, None, "rule:acme-us-header"),
        Box(40, 20, 47, 31, None, "rule:acme-us-header"),
    )
    assert not matching.detect  # the rule covers the image: no detector unless it says so
    for other in (
        _header(Manufacturer="OTHER", Modality="US"),
        _header(Manufacturer="ACME", Modality="CT"),
        _header(Manufacturer="ACME"),
    ):
        decided = plan(other, pixels)
        assert decided.rule is None and decided.boxes == () and decided.detect


def test_bands_and_boxes_are_clipped_to_the_image() -> None:
    assert region_box(Region(bottom=10), 32, 48, "r") == Box(0, 22, 47, 31, None, "r")
    assert region_box(Region(left=4), 32, 48, "r") == Box(0, 0, 3, 31, None, "r")
    assert region_box(Region(right=100), 32, 48, "r") == Box(0, 0, 47, 31, None, "r")
    assert region_box(Region(box=[40, 30, 99, 99]), 32, 48, "r") == Box(40, 30, 47, 31, None, "r")
    assert region_box(Region(box=[60, 0, 70, 5]), 32, 48, "r") is None


def test_a_quarantine_rule_is_a_plan_with_its_reason(tmp_path: Path) -> None:
    pixels = load_policy(str(_policy(tmp_path))).pixels
    decided = plan(_header(SOPClassUID="1.2.840.10008.5.1.4.1.1.104.1"), pixels)
    assert decided.quarantine == "encapsulated documents carry text no rule can place"


def test_a_child_policys_rules_come_before_its_parents(tmp_path: Path) -> None:
    _policy(tmp_path)
    child = _policy(
        tmp_path,
        "name: child\nextends: band\npixels:\n  rules:\n    - name: acme-all\n"
        "      when: {Manufacturer: ACME}\n      regions: [{bottom: 2}]\n",
        "child.yaml",
    )
    pixels = load_policy(str(child)).pixels
    assert [r.name for r in pixels.rules] == ["acme-all", "acme-us-header", "scanned-documents"]
    assert pixels.margin == 1  # inherited
    decided = plan(_header(Manufacturer="ACME", Modality="US"), pixels)
    assert decided.rule is not None and decided.rule.name == "acme-all"


RULE = "  rules:\n    - name: r\n      when: {Modality: US}\n"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            "  rules:\n    - name: r\n      when: {Modality: US}\n      regoins: [{top: 3}]\n",
            "unknown key 'regoins' (did you mean 'regions'?)",
        ),
        (
            RULE + "      regions: [{top: 3, bottom: 2}]\n",
            "exactly one of box, top, bottom, left or right",
        ),
        (
            RULE + "      regions: [{box: [5, 5, 1, 9]}]\n",
            "x1 <= x2",
        ),
        ("  rules:\n    - name: r\n      when: {Modality: US}\n", "an image no one looks at"),
        ("  rules:\n    - name: r\n      regions: [{top: 3}]\n", "when: Field required"),
        (
            "  rules:\n    - name: r\n      when: {Modalty: US}\n      regions: [{top: 3}]\n",
            "Modalty",
        ),
        (
            "  detector:\n    enabled: true\n    margins: 3\n",
            "unknown key 'margins' (did you mean 'margin'?)",
        ),
        ("  detector:\n    max_anatomy_loss: 1.5\n", "max_anatomy_loss"),
    ],
)
def test_a_pixel_section_it_does_not_understand_is_refused_with_its_line(
    tmp_path: Path, section: str, message: str
) -> None:
    path = _policy(tmp_path, "name: bad\nextends: default\npixels:\n" + section)
    with pytest.raises(PolicyError) as caught:
        load_policy(str(path))
    text = str(caught.value)
    assert message in text, text
    assert text.startswith(f"{path}:")


def test_a_policy_without_pixel_rules_keeps_its_hash(tmp_path: Path) -> None:
    plain = _policy(tmp_path, "name: plain\nextends: default\n", "plain.yaml")
    empty = _policy(tmp_path, "name: plain\nextends: default\npixels: {}\n", "empty.yaml")
    ruled = _policy(tmp_path, BAND_POLICY.replace("name: band", "name: plain"), "ruled.yaml")
    assert load_policy(str(plain)).sha256 == load_policy(str(empty)).sha256
    assert load_policy(str(plain)).sha256 != load_policy(str(ruled)).sha256


def test_the_flat_border_criterion_tells_background_from_anatomy() -> None:
    import numpy as np

    image = np.zeros((40, 80), np.uint8)
    box = Box(20, 15, 59, 24)
    assert flat_border(image, box, 2) == 1.0  # text on the black border of the image
    rng = np.random.default_rng(7)
    image[:, :] = rng.integers(60, 200, image.shape, dtype=np.uint8)  # anatomy-like texture
    assert flat_border(image, box, 2) < 0.3
    # a neighbouring line of text is not part of the ring
    image[:, :] = 0
    image[5:12, 20:60] = 255
    assert flat_border(image, box, 2) < 1.0
    assert flat_border(image, box, 2, [Box(20, 6, 59, 11)]) == 1.0


def test_policy_explain_pixel_data_names_the_rule_for_a_file(tmp_path: Path, env: None) -> None:
    path = _policy(tmp_path)
    image = tmp_path / "image.dcm"
    from tests.test_pixel_pipeline import write_image

    write_image(image, Manufacturer="ACME", Modality="US")
    result = cli("policy", "explain", str(path), "PixelData", "--file", str(image))
    assert result.code == 0, result.stderr
    assert "pixel rule 1. acme-us-header" in result.stdout
    assert "pixel rule acme-us-header (band.yaml:" in result.stdout
    assert "blank top 8 rows, box [40, 20, 47, 31]" in result.stdout
    other = tmp_path / "other.dcm"
    write_image(other, Manufacturer="OTHER", Modality="US")
    result = cli("policy", "explain", str(path), "PixelData", "--file", str(other), "--json")
    assert result.json()["pixels"]["plan"] == "no pixel rule applies: the detector scans the image"


def test_text_across_the_anatomy_costs_its_area_and_text_beside_it_nothing() -> None:
    import numpy as np

    from pseudo.pixels.protect import anatomy_loss

    image = np.zeros((100, 100), np.uint8)
    rng = np.random.default_rng(3)
    image[40:100, 20:80] = rng.integers(80, 200, (60, 60), dtype=np.uint8)  # the anatomy
    beside = [Box(5, 5, 60, 14)]  # on the black border
    assert anatomy_loss(image, beside, 2) == 0.0
    across = [Box(20, 60, 79, 99)]  # the lower two thirds of the anatomy
    assert anatomy_loss(image, across, 2) > 0.5


def test_the_rule_language_example_of_the_docs_loads_and_does_what_it_says(
    tmp_path: Path,
) -> None:
    import re

    from tests.conftest import REPO

    text = (REPO / "docs" / "pixels.md").read_text()
    example = re.search(r"```yaml\n(pixels:\n.*?)```", text, re.S)
    assert example is not None
    path = _policy(tmp_path, "name: doc\nextends: default\n" + example.group(1), "doc.yaml")
    pixels = load_policy(str(path)).pixels
    header = _header(
        Manufacturer="ACME",
        ManufacturerModelName="Sono 3",
        Modality="US",
        BurnedInAnnotation="YES",
    )
    header.Rows, header.Columns = 480, 640
    decided = plan(header, pixels)
    assert decided.rule is not None and decided.rule.name == "acme-us-header"
    assert [(b.x1, b.y1, b.x2, b.y2) for b in decided.boxes] == [
        (0, 0, 639, 39),
        (0, 456, 639, 479),
        (600, 0, 639, 479),
    ]
    document = plan(_header(SOPClassUID="1.2.840.10008.5.1.4.1.1.104.1"), pixels)
    assert document.quarantine is not None
