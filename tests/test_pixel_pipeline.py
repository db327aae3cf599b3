"""The pixel step of the per-file path (issue 15): rules blank their regions, ``--pixels off``
leaves every pixel alone and says so, the project remembers the setting, text that cannot be
removed with confidence quarantines the file, and the output is the same whatever the workers.

Real files, a real vault, the real CLI; the images are drawn by the tests themselves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import UID, ExplicitVRLittleEndian, JPEGLSLossless, generate_uid

from keystore.keyring import Keyring
from keystore.session import VaultSession
from pseudo.batch.report import load_report
from pseudo.batch.runner import Runner
from pseudo.pipeline.outcome import FileStatus
from pseudo.pixels.boxes import Box
from pseudo.pixels.detect import Detection, read_text, read_text_after
from pseudo.policy import load_policy
from pseudo.verify import pixels as verify_pixels
from tests.conftest import OPERATOR, SHARED, cli, need
from tests.test_pixel_rules import BAND_POLICY
from tests.test_review import _browser

ROWS, COLUMNS = 32, 48


def gradient() -> np.ndarray:
    """A smooth text-free image (no detector finds text in it)."""
    ys, xs = np.mgrid[0:ROWS, 0:COLUMNS]
    image: np.ndarray = (60 + xs + ys).astype(np.uint8)
    return image


def write_image(
    path: Path,
    pixels: np.ndarray | None = None,
    *,
    encapsulated: bytes | None = None,
    **header: Any,
) -> Path:
    """A small single-frame 8-bit MONOCHROME2 image with a patient and ``header``."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.7")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.StudyDate = "DOE^JANE", "PID-4242", "20240102"
    ds.Modality = "OT"
    ds.Rows, ds.Columns = ROWS, COLUMNS
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    for keyword, value in header.items():
        setattr(ds, keyword, value)
    if encapsulated is not None:
        ds.file_meta.TransferSyntaxUID = JPEGLSLossless
        ds.PixelData = encapsulate([encapsulated])
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = (gradient() if pixels is None else pixels).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture()
def session(vault: Path) -> Iterator[tuple[VaultSession, Keyring]]:
    """An open vault session and the project's operator keyring."""
    with VaultSession(vault) as opened:
        yield opened, opened.vault.unlock_operator("trial", OPERATOR)


def _run(
    session: tuple[VaultSession, Keyring], policy: str, source: Path, target: Path, **kw: Any
) -> dict[str, Any]:
    opened, keyring = session
    compiled = load_policy(policy)
    if kw.pop("pixels", "on") == "off":
        compiled.pixels = compiled.pixels.off()
    summary = Runner(keyring, compiled, opened.linkage, source, target, **kw).run()
    return {Path(o.input).name: o for o in summary.outcomes}


def _written(target: Path, outcome: Any) -> pydicom.Dataset:
    assert outcome.status == FileStatus.WRITTEN, outcome.reason
    return pydicom.dcmread(target / outcome.output)


def test_a_band_rule_blanks_the_top_rows_of_a_matching_image_only(
    session: tuple[VaultSession, Keyring], tmp_path: Path
) -> None:
    policy = tmp_path / "band.yaml"
    policy.write_text(BAND_POLICY)
    source = tmp_path / "in"
    write_image(source / "acme.dcm", Manufacturer="ACME")
    write_image(source / "other.dcm", Manufacturer="OTHER")
    outcomes = _run(session, str(policy), source, tmp_path / "out", workers=1)
    acme = _written(tmp_path / "out", outcomes["acme.dcm"])
    after = acme.pixel_array
    grown_top, box = slice(0, 8 + 1), (slice(20 - 1, 32), slice(40 - 1, 48))  # margin 1
    assert (after[grown_top] == 0).all() and (after[box] == 0).all()
    untouched = np.ones((ROWS, COLUMNS), bool)
    untouched[grown_top] = False
    untouched[box] = False
    assert (after[untouched] == gradient()[untouched]).all()
    assert acme.BurnedInAnnotation == "NO"
    assert "113101" in {item.CodeValue for item in acme.DeidentificationMethodCodeSequence}
    assert "burned-in text blanked: 2 by rule acme-us-header" in acme.DeidentificationMethod
    assert outcomes["acme.dcm"].pixels.rule == "acme-us-header"
    other = _written(tmp_path / "out", outcomes["other.dcm"])
    assert other.PixelData == gradient().tobytes()  # scanned, nothing found: byte-identical
    assert "pixels examined: no burned-in text found" in other.DeidentificationMethod
    assert other.BurnedInAnnotation == "NO"


#: A rule that blanks a corner of ACME's images and lets no detector look at the rest: only the
#: verifier's reading of the written pixels can see what the rule missed.
CORNER_POLICY = """\
name: corner
extends: default
pixels:
  rules:
    - name: acme-corner
      when: {Manufacturer: ACME}
      regions:
        - box: [0, 0, 15, 15]
      why: the corner holds the logo (the name elsewhere is missed on purpose)
"""


def test_a_name_left_readable_in_the_written_pixels_quarantines_the_file(
    session: tuple[VaultSession, Keyring], tmp_path: Path
) -> None:
    policy = tmp_path / "corner.yaml"
    policy.write_text(CORNER_POLICY)
    image = np.full((160, 320), 30, np.uint8)
    cv2.putText(image, "DOE JANE", (40, 90), cv2.FONT_HERSHEY_SIMPLEX, 1.2, 255, 2)
    source = tmp_path / "in"
    write_image(source / "named.dcm", image, Manufacturer="ACME", Rows=160, Columns=320)
    outcomes = _run(session, str(policy), source, tmp_path / "out", workers=1)
    outcome = outcomes["named.dcm"]
    assert outcome.status == FileStatus.QUARANTINED
    assert outcome.reason == "verification found burned-in text: patient name readable in pixels"
    assert not list((tmp_path / "out").rglob("*.dcm"))


def test_only_images_whose_pixels_changed_or_were_not_scanned_are_read_back(
    session: tuple[VaultSession, Keyring], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    read: list[tuple[int, ...]] = []
    reader = read_text

    def counting(image: np.ndarray) -> list[Box]:
        read.append(image.shape)
        return reader(image)

    monkeypatch.setattr(verify_pixels, "read_text", counting)
    policy = tmp_path / "band.yaml"
    policy.write_text(BAND_POLICY)
    source = tmp_path / "in"
    write_image(source / "acme.dcm", Manufacturer="ACME")  # blanked by rule: read back
    for index in range(3):  # scanned, nothing found, written byte for byte: not read again
        write_image(source / f"clean{index}.dcm", Manufacturer="OTHER", PatientID=f"P{index}")
    outcomes = _run(session, str(policy), source, tmp_path / "out", workers=1)
    assert {o.status for o in outcomes.values()} == {FileStatus.WRITTEN}
    assert read == [(ROWS, COLUMNS)]


def test_an_image_the_detector_read_is_read_back_from_what_it_found(
    session: tuple[VaultSession, Keyring], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the written image of an input the detector read is read from the detector's findings
    # (read_text_after), never searched whole again (read_text)
    calls: list[str] = []
    after, whole = read_text_after, read_text

    def reading_after(
        image: np.ndarray, detection: Detection, blanked: Sequence[Box] = ()
    ) -> list[Box]:
        calls.append(f"after {len(detection.lines)} lines, {len(blanked)} blanked")
        return after(image, detection, blanked)

    def reading_whole(image: np.ndarray) -> list[Box]:
        calls.append("whole")
        return whole(image)

    monkeypatch.setattr(verify_pixels, "read_text_after", reading_after)
    monkeypatch.setattr(verify_pixels, "read_text", reading_whole)
    image = np.full((160, 320), 30, np.uint8)
    cv2.putText(image, "DOE JANE", (40, 90), cv2.FONT_HERSHEY_SIMPLEX, 1.2, 255, 2)
    source = tmp_path / "in"
    write_image(source / "named.dcm", image, Rows=160, Columns=320)
    outcomes = _run(session, "default", source, tmp_path / "out", workers=1)
    written = _written(tmp_path / "out", outcomes["named.dcm"])
    assert outcomes["named.dcm"].pixels.detected >= 1
    assert not (written.pixel_array == 255).any()  # the name is blanked
    assert len(calls) == 1 and calls[0].startswith("after")
    assert not calls[0].startswith("after 0 lines") and not calls[0].endswith(" 0 blanked")


def test_pixels_off_leaves_every_pixel_and_says_so(
    session: tuple[VaultSession, Keyring], tmp_path: Path
) -> None:
    policy = tmp_path / "band.yaml"
    policy.write_text(BAND_POLICY)
    source = write_image(tmp_path / "in" / "acme.dcm", Manufacturer="ACME").parent
    outcomes = _run(session, str(policy), source, tmp_path / "out", workers=1, pixels="off")
    written = _written(tmp_path / "out", outcomes["acme.dcm"])
    assert written.PixelData == gradient().tobytes()
    assert "pixel data not examined for burned-in text (--pixels off)" in (
        written.DeidentificationMethod
    )
    codes = {item.CodeValue for item in written.get("DeidentificationMethodCodeSequence", [])}
    assert "113101" not in codes and written.get("BurnedInAnnotation") != "NO"
    assert outcomes["acme.dcm"].pixels is None


def test_the_project_remembers_pixels_off_and_a_change_is_a_change_of_policy(
    vault: Path, tmp_path: Path, env: None
) -> None:
    source = write_image(tmp_path / "in" / "a.dcm").parent
    base = ("--project", "trial", "--vault", vault, "--quiet")
    first = cli("run", source, tmp_path / "out1", *base, "--pixels", "off", "--json")
    assert first.code == 0, first.stderr
    report = load_report(Path(first.json()["report"]))
    assert report["pixels"]["protection"] == "off"
    again = cli("run", source, tmp_path / "out2", *base, "--json")  # no --pixels: remembered
    assert again.code == 0, again.stderr
    assert load_report(Path(again.json()["report"]))["pixels"]["protection"] == "off"
    refused = cli("run", source, tmp_path / "out3", *base, "--pixels", "on")
    assert refused.code != 0 and "--change-policy" in refused.stderr
    changed = cli("run", source, tmp_path / "out3", *base, "--pixels", "on", "--change-policy")
    assert changed.code == 0, changed.stderr
    later = cli("run", source, tmp_path / "out4", *base, "--json")
    assert load_report(Path(later.json()["report"]))["pixels"]["protection"] == "on"
    bad = cli("run", source, tmp_path / "out5", *base, "--pixels", "maybe")
    assert bad.code == 2 and bad.stderr.count("\n") == 1 and "expected on or off" in bad.stderr


def test_undecodable_pixel_data_is_quarantined_with_its_reason(
    session: tuple[VaultSession, Keyring], tmp_path: Path
) -> None:
    source = write_image(tmp_path / "in" / "broken.dcm", encapsulated=b"\xff\xd8 not a codestream")
    outcomes = _run(session, "default", source.parent, tmp_path / "out", workers=1)
    outcome = outcomes["broken.dcm"]
    assert outcome.status == FileStatus.QUARANTINED
    assert (outcome.reason or "").startswith("cannot decode the pixel data (JPEG-LS Lossless")
    assert not list((tmp_path / "out").rglob("*.dcm"))
    # with --pixels off nobody decodes it: written, pixel data copied byte for byte
    off = _run(session, "default", source.parent, tmp_path / "off", workers=1, pixels="off")
    assert off["broken.dcm"].status == FileStatus.WRITTEN


def test_a_quarantine_rule_refuses_matching_files(
    session: tuple[VaultSession, Keyring], tmp_path: Path
) -> None:
    policy = tmp_path / "band.yaml"
    policy.write_text(BAND_POLICY)
    document = "1.2.840.10008.5.1.4.1.1.104.1"
    source = tmp_path / "in"
    write_image(source / "doc.dcm", SOPClassUID=document)
    outcomes = _run(session, str(policy), source, tmp_path / "out", workers=1)
    assert outcomes["doc.dcm"].status == FileStatus.QUARANTINED
    assert outcomes["doc.dcm"].reason == (
        "pixel rule scanned-documents: encapsulated documents carry text no rule can place"
    )


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.dcm"))
    }


def test_the_output_is_byte_identical_whatever_the_number_of_workers(
    session: tuple[VaultSession, Keyring], tmp_path: Path
) -> None:
    policy = tmp_path / "band.yaml"
    policy.write_text(BAND_POLICY)
    source = tmp_path / "in"
    for index in range(4):
        write_image(source / f"acme{index}.dcm", Manufacturer="ACME", PatientID=f"P{index}")
        write_image(source / f"other{index}.dcm", PatientID=f"P{index}")
    _run(session, str(policy), source, tmp_path / "one", workers=1)
    _run(session, str(policy), source, tmp_path / "two", workers=2)
    one, two = _digests(tmp_path / "one"), _digests(tmp_path / "two")
    assert one == two and len(one) == 8


def test_review_shows_thumbnails_and_inspect_counts_redactions(
    vault: Path, tmp_path: Path, env: None
) -> None:
    policy = tmp_path / "band.yaml"
    policy.write_text(BAND_POLICY)
    source = tmp_path / "in"
    write_image(source / "acme.dcm", Manufacturer="ACME")
    write_image(source / "other.dcm", Manufacturer="OTHER")
    out = tmp_path / "out"
    ran = cli("run", source, out, "--project", "trial", "--vault", vault, "--policy", policy)
    assert ran.code == 0, ran.stderr
    assert "pixels" in ran.stderr and "1 of 2 images redacted (1 by rule, 0 by detection)" in (
        ran.stderr
    )
    inspected = cli("inspect", out, "--json").json()["pixels"]
    assert inspected == {
        "images": 2,
        "redacted": 1,
        "by_rule": 1,
        "by_detection": 0,
        "rules": {"acme-us-header": 1},
        "clean": 1,
        "not_examined": 0,
    }
    page = tmp_path / "review.html"
    assert cli("diff", source, out, "--html", page).code == 0
    browser = _browser()
    try:
        browser.get(page.as_uri())
        figures = browser.find_elements("css selector", "#thumbnails figure")
        assert sorted(int(f.get_attribute("data-regions")) for f in figures) == [0, 2]
        for image in browser.find_elements("css selector", "#thumbnails img"):
            assert browser.execute_script("return arguments[0].naturalWidth", image) == COLUMNS
        note = browser.find_element("css selector", "#images-note").text
        assert "2 images, before and after" in note and "hidden" in note
    finally:
        browser.quit()


@pytest.mark.slow
def test_text_free_canary_images_keep_their_pixels(
    session: tuple[VaultSession, Keyring], tmp_path: Path
) -> None:
    """No canary file is quarantined, and the only images redacted are the ultrasound ones,
    which carry real burned-in text (pydicom's US1 and OT-PAL images: an institution, dates,
    settings) that the detector rightly removes; every other image keeps its pixels."""
    source = need(SHARED / "corpus" / "phi-canary" / "dicom", "canary corpus")
    outcomes = _run(session, "default", source, tmp_path / "out", workers=2)
    quarantined = {name for name, o in outcomes.items() if o.status == FileStatus.QUARANTINED}
    assert quarantined == set()  # the 12-bit JPEG Extended images too (pseudo.pixels.jpeg_scan)
    redacted = {name for name, o in outcomes.items() if o.pixels and o.pixels.redacted}
    ultrasound = {
        path.name
        for path in source.rglob("*.dcm")
        if str(pydicom.dcmread(path, stop_before_pixels=True).get("Modality", "")) == "US"
    }
    assert redacted <= ultrasound
    assert len(redacted) <= 6  # measured 2026-12-03: the 6 US images with text, of 12
