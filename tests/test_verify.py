"""``pseudo verify`` finds leaks planted in correct outputs, and nothing in correct outputs."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from tests.conftest import OPERATOR, CanaryRun, cli


@pytest.fixture()
def operator_env() -> Iterator[None]:
    os.environ["PSEUDO_PASSPHRASE"] = OPERATOR
    yield
    del os.environ["PSEUDO_PASSPHRASE"]


def _verify(canary_dir: Path, output: Path, vault: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    result = cli(
        "verify", canary_dir, output, "--project", "canary", "--vault", vault, "--json", *extra
    )
    assert "Traceback" not in result.stderr
    return result.code, result.json()


def test_correct_canary_outputs_verify_clean(
    canary_run: CanaryRun, canary_dir: Path, operator_env: None
) -> None:
    code, report = _verify(canary_dir, canary_run.output, canary_run.vault)
    assert code == 0, [f for f in report["findings"] if f["severity"] == "leak"]
    assert report["leaks"] == 0
    assert report["paired_with_input"] == report["outputs"] == 95
    assert report["skipped_values"], "the report says what was not searched for"


@dataclass
class CopiedOutput:
    """A copy of the canary output to plant leaks in, and where each input's output is."""

    root: Path
    pairs: dict[str, Path]  # answer-key path -> output file in the copy

    def edit(self, key: str, change: Callable[[pydicom.Dataset], None]) -> str:
        """Change the output of input ``key``; return its path relative to the copy."""
        path = self.pairs[key]
        ds = pydicom.dcmread(path)
        change(ds)
        ds.save_as(path, enforce_file_format=True)
        return str(path.relative_to(self.root))


def _copy_output(canary_run: CanaryRun, tmp_path: Path) -> CopiedOutput:
    output = tmp_path / "out"
    shutil.copytree(canary_run.output, output)
    pairs = {k: output / p.relative_to(canary_run.output) for k, p in canary_run.pairs.items()}
    return CopiedOutput(output, pairs)


def _item(**values: Any) -> Dataset:
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def test_planted_leaks_are_found_with_file_and_path(
    canary_run: CanaryRun,
    canary_dir: Path,
    answer_key: dict[str, Any],
    operator_env: None,
    tmp_path: Path,
) -> None:
    copy = _copy_output(canary_run, tmp_path)
    output, pairs, edit = copy.root, copy.pairs, copy.edit
    files = sorted(answer_key["files"])
    sr_key = next(k for k in files if answer_key["files"][k]["modality"] == "SR")
    image_ref = "ReferencedImageSequence[0].ReferencedSOPInstanceUID"
    referencing = next(
        k
        for k in files
        if any(r["path"] == image_ref for r in answer_key["files"][k]["references"])
    )
    ct_keys = [k for k in files if answer_key["files"][k]["modality"] == "CT" and k != referencing]
    plain, deep, dated, renamed = ct_keys[:4]

    def original(key: str) -> pydicom.Dataset:
        return pydicom.dcmread(canary_dir / key)

    def surname(key: str) -> str:
        return str(original(key).PatientName).split("^")[0]

    expected: list[tuple[str, str, str]] = []  # (output, path, check)

    def private(ds: pydicom.Dataset) -> None:
        block = ds.private_block(0x0011, "LEAKY VENDOR", create=True)
        block.add_new(0x01, "LO", str(original(plain).PatientID))

    rel = edit(plain, private)
    expected += [(rel, "(0011,1001)", "leak"), (rel, "(0011,1001)", "private-attribute")]

    def three_deep(ds: pydicom.Dataset) -> None:
        inner = _item(CodeMeaning=f"seen by {surname(deep)}")
        middle = _item(PurposeOfReferenceCodeSequence=Sequence([inner]))
        ds.ReferencedSeriesSequence = Sequence(
            [_item(ReferencedInstanceSequence=Sequence([middle]))]
        )

    rel = edit(deep, three_deep)
    path = (
        "ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]."
        "PurposeOfReferenceCodeSequence[0].CodeMeaning"
    )
    expected.append((rel, path, "leak"))

    def sr_text(ds: pydicom.Dataset) -> None:
        ds.ContentSequence = Sequence(
            [_item(ValueType="TEXT", TextValue=f"{surname(sr_key)} reviewed")]
        )

    expected.append((edit(sr_key, sr_text), "ContentSequence[0].TextValue", "leak"))

    def description(ds: pydicom.Dataset) -> None:
        ds.StudyDescription = f"CT CHEST follow-up for {surname(plain)}"

    expected.append((edit(plain, description), "StudyDescription", "leak"))

    def date_in_dt(ds: pydicom.Dataset) -> None:
        ds.AcquisitionDateTime = str(original(dated).StudyDate) + "101500"

    expected.append((edit(dated, date_in_dt), "AcquisitionDateTime", "leak"))

    other_uid = str(original(plain).SOPInstanceUID)

    def original_uid(ds: pydicom.Dataset) -> None:
        ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID = other_uid

    rel = edit(referencing, original_uid)
    expected.append((rel, image_ref, "leak"))

    target = pairs[renamed]
    leaky_name = target.with_name(f"{original(renamed).PatientID}.dcm")
    target.rename(leaky_name)
    expected.append((str(leaky_name.relative_to(output)), "(file name)", "file-name"))

    code, report = _verify(canary_dir, output, canary_run.vault)
    assert code == 1
    found = {(f["output"], f["path"], f["check"]) for f in report["findings"]}
    for item in expected:
        assert item in found, f"not found: {item}"
    kinds = {(f["path"], f["kind"]) for f in report["findings"]}
    assert ("AcquisitionDateTime", "date") in kinds
    assert ("ReferencedImageSequence[0].ReferencedSOPInstanceUID", "instance UID") in kinds
    assert all("value" not in f for f in report["findings"]), "values only with --show-values"

    _, shown = _verify(canary_dir, output, canary_run.vault, "--show-values")
    values = {f["path"]: f.get("value") for f in shown["findings"] if f["check"] == "leak"}
    assert values["StudyDescription"].upper() == surname(plain).upper()


def test_without_project_names_and_ids_are_still_found(
    canary_run: CanaryRun, canary_dir: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    key, path = next(iter(canary_run.pairs.items()))
    target = output / path.relative_to(canary_run.output)
    target.parent.mkdir(parents=True)
    ds = pydicom.dcmread(path)
    ds.StudyDescription = f"for {str(pydicom.dcmread(canary_dir / key).PatientName).split('^')[0]}"
    ds.save_as(target, enforce_file_format=True)
    result = cli("verify", canary_dir, output, "--json")
    assert result.code == 1
    report = result.json()
    assert [f["path"] for f in report["findings"] if f["severity"] == "leak"] == [
        "StudyDescription"
    ]
    assert any("not paired" in note for note in report["notes"])


def test_a_value_the_policy_keeps_is_a_warning_not_a_quarantine(
    tmp_path: Path, vault: Path, env: None
) -> None:
    """A name that a rule keeps on purpose (here in Study Description) is the policy's choice:
    the run releases the files and each says where the name was kept, as a warning; the
    same run without verification writes the same files."""
    from pseudo.batch.report import load_report
    from pseudo.demo import build_cohort

    build_cohort(tmp_path / "in")
    policy = tmp_path / "keeps.yaml"
    policy.write_text(
        "name: keeps\nextends: default\nrules:\n  - {select: StudyDescription, action: keep}\n"
    )
    result = cli(
        "run",
        tmp_path / "in",
        tmp_path / "out",
        "--project",
        "trial",
        "--vault",
        vault,
        "--policy",
        policy,
        "--json",
        "--quiet",
    )
    assert result.code == 0, result.stdout
    counts = result.json()
    assert counts["quarantined"] == 0 and counts["written"] == 18 and counts["leaks"] == 0
    report = load_report(Path(counts["report"]))
    kept = [
        (finding["path"], finding["severity"])
        for entry in report["files"]
        for finding in entry.get("verification", [])
        if finding["check"] == "kept-value"
    ]
    assert kept and set(kept) == {("StudyDescription", "warning")}
    clean = cli(
        "run",
        tmp_path / "in",
        tmp_path / "out2",
        "--project",
        "trial",
        "--vault",
        vault,
        "--policy",
        policy,
        "--no-verify",
        "--json",
        "--quiet",
    )
    assert clean.code == 0 and clean.json()["written"] == 18


def test_leaks_in_other_spellings_and_hidden_places_are_found(
    canary_run: CanaryRun,
    canary_dir: Path,
    answer_key: dict[str, Any],
    operator_env: None,
    tmp_path: Path,
) -> None:
    """Names as `John Doe`, day-first dates, deep SR text, nested UIDs, file-meta values, text
    after an icon's pixel data or after the pixel data, folder names, broken references."""
    copy = _copy_output(canary_run, tmp_path)
    output, pairs, edit = copy.root, copy.pairs, copy.edit
    files = sorted(answer_key["files"])

    def of(modality: str) -> list[str]:
        return [k for k in files if answer_key["files"][k]["modality"] == modality]

    mr = of("MR")
    sr, rtstruct, ct = of("SR")[0], of("RTSTRUCT")[0], of("CT")[0]

    def original(key: str) -> pydicom.Dataset:
        return pydicom.dcmread(canary_dir / key)

    expected: list[tuple[str, str, str, str]] = []  # (output, path, check, kind)

    name = original(mr[0]).PatientName
    spelled = f"{name.given_name.title()} {name.family_name.title()}"  # DOE^JOHN -> John Doe
    rel = edit(mr[0], lambda ds: setattr(ds, "ImageComments", f"reviewed with {spelled} today"))
    expected.append((rel, "ImageComments", "leak", "person name"))

    study_date = str(original(mr[1]).StudyDate)
    day_first = f"{study_date[6:8]}.{study_date[4:6]}.{study_date[:4]}"
    rel = edit(mr[1], lambda ds: setattr(ds, "ImageComments", f"prior exam on {day_first}"))
    expected.append((rel, "ImageComments", "leak", "date"))

    sr_name = original(sr).PatientName

    def sr_plant(ds: pydicom.Dataset) -> None:
        text = _item(ValueType="TEXT", TextValue=f"{sr_name.family_name} called")
        middle = _item(ValueType="CONTAINER", ContentSequence=Sequence([text]))
        ds.ContentSequence = Sequence(
            [_item(ValueType="CONTAINER", ContentSequence=Sequence([middle]))]
        )

    rel = edit(sr, sr_plant)
    path = "ContentSequence[0].ContentSequence[0].ContentSequence[0].TextValue"
    expected.append((rel, path, "leak", "person name"))

    other_uid = str(original(mr[3]).SOPInstanceUID)

    def nested_uid(ds: pydicom.Dataset) -> None:
        instance = _item(ReferencedSOPClassUID=ds.SOPClassUID, ReferencedSOPInstanceUID=other_uid)
        ds.ReferencedSeriesSequence = Sequence(
            [_item(ReferencedInstanceSequence=Sequence([instance]))]
        )

    rel = edit(mr[2], nested_uid)
    path = "ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID"
    expected.append((rel, path, "leak", "instance UID"))

    source_ae = str(original(mr[4]).file_meta.SourceApplicationEntityTitle)
    rel = edit(mr[4], lambda ds: setattr(ds, "ImageComments", f"sent by {source_ae}"))
    expected.append((rel, "ImageComments", "leak", "AE title"))

    struct_name = original(rtstruct).PatientName.family_name

    def after_icon(ds: pydicom.Dataset) -> None:
        icon = _item(Rows=1, Columns=1, BitsAllocated=8, PixelData=b"\x00\x00")
        ds.IconImageSequence = Sequence([icon])
        ds.TextString = f"annotated by {struct_name}"

    rel = edit(rtstruct, after_icon)
    expected.append((rel, "TextString", "leak", "person name"))

    ct_id = str(original(ct).PatientID)
    rel = edit(ct, lambda ds: setattr(ds, "DataSetTrailingPadding", f"{ct_id} ".encode()))
    expected.append((rel, "DataSetTrailingPadding", "leak", "identifier"))

    moved_key = mr[5]
    moved = pairs[moved_key]
    folder = output / f"for-{original(moved_key).PatientID}" / moved.name
    folder.parent.mkdir()
    moved.rename(folder)
    expected.append((str(folder.relative_to(output)), "(file name)", "file-name", "identifier"))

    code, report = _verify(canary_dir, output, canary_run.vault)
    assert code == 1
    found = {(f["output"], f["path"], f["check"], f["kind"]) for f in report["findings"]}
    for item in expected:
        assert item in found, f"not found: {item}"
    paths = [(f["output"], f["path"], f["kind"]) for f in report["findings"]]
    assert len(paths) == len(set(paths)), "one finding per file, path and kind"


def test_broken_references_and_burned_in_text_are_flagged(
    canary_run: CanaryRun,
    canary_dir: Path,
    answer_key: dict[str, Any],
    operator_env: None,
    tmp_path: Path,
) -> None:
    copy = _copy_output(canary_run, tmp_path)
    output = copy.root
    files = answer_key["files"]
    image_ref = "ReferencedImageSequence[0].ReferencedSOPInstanceUID"
    referencing = next(
        k for k in sorted(files) if any(r["path"] == image_ref for r in files[k]["references"])
    )

    def break_it(ds: pydicom.Dataset) -> None:
        ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID = "2.25.1234567890"
        ds.BurnedInAnnotation = "YES"

    rel = copy.edit(referencing, break_it)
    code, report = _verify(canary_dir, output, canary_run.vault)
    assert code == 1
    found = {(f["output"], f["path"], f["check"]) for f in report["findings"]}
    assert (rel, image_ref, "reference") in found
    assert (rel, "BurnedInAnnotation", "burned-in") in found


def test_a_non_ascii_file_meta_ae_title_is_looked_for_as_pydicom_decodes_it() -> None:
    """An AE title is ASCII by the standard, but a station may write Latin-1: the needle must
    be the text pydicom reads (STATIÉN1), not a replacement character that matches nothing."""
    from pydicom.dataelem import RawDataElement
    from pydicom.dataset import FileMetaDataset
    from pydicom.tag import Tag

    from pseudo.verify.recording import Recorder

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    tag = Tag(0x00020016)  # Source Application Entity Title
    ds.file_meta._dict[tag] = RawDataElement(tag, "AE", 8, b"STATI\xc9N1", 0, False, True)
    recorder = Recorder()
    recorder.file_meta(ds)
    assert [n.text for n in recorder.needles.items.values()] == ["STATIÉN1"]


def test_quiet_pydicom_silences_loggers_that_logged_before(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A pydicom warning logged before (which makes the logger cache "warnings enabled") is
    no reason for one to get through while pydicom is silenced: they can quote values."""
    import logging

    from pseudo.io.pydicom_internals import quiet_pydicom

    loggers = [logging.getLogger("pydicom"), logging.getLogger("pydicom.pixels.utils")]
    with caplog.at_level(logging.WARNING):
        for logger in loggers:
            logger.warning("before")
        with quiet_pydicom():
            for logger in loggers:
                logger.warning("DOE^JANE inside")
        for logger in loggers:
            logger.warning("after")
    messages = [record.getMessage() for record in caplog.records]
    assert messages == ["before", "before", "after", "after"]


def test_quiet_pydicom_restores_pydicom_after_overlapping_threads() -> None:
    """Silencing is process-wide: the first of overlapping uses silences, the last restores,
    whatever the order in which threads leave."""
    import logging
    import threading

    from pydicom import config

    from pseudo.io.pydicom_internals import quiet_pydicom

    before = (
        config.settings._reading_validation_mode,
        config.settings._writing_validation_mode,
        logging.getLogger("pydicom").level,
    )
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen: list[int] = []

    def first() -> None:
        with quiet_pydicom():
            first_in.set()
            second_in.wait(5)
        first_out.set()

    def second() -> None:
        first_in.wait(5)
        with quiet_pydicom():
            second_in.set()
            first_out.wait(5)
            seen.append(config.settings.reading_validation_mode)  # still silenced

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert seen == [config.IGNORE]
    after = (
        config.settings._reading_validation_mode,
        config.settings._writing_validation_mode,
        logging.getLogger("pydicom").level,
    )
    assert after == before
