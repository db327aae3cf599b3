"""``pseudo verify``: check an output tree for every identifying value of its input tree.

With the project's keys, each input is paired with the output it became (the output path is
derived from the same keys), so dates (with the patient's offset) and references are checked
too. Without keys, every output is searched for the identifying values of every input, dates
and references excepted.
"""

from __future__ import annotations

from pathlib import Path

from pydicom.dataset import Dataset

from keystore.keyring import Keyring
from keystore.linkage import LinkageStore
from pseudo.batch.runner import TEMP_DIR_NAME, discover
from pseudo.deid import anchors
from pseudo.deid.engine import Pseudonymizer
from pseudo.deid.identity import read_identity
from pseudo.deid.uids import remap_uid
from pseudo.findings import RejectedFile
from pseudo.io.dicomio import NotDicom, bytes_outside_pixels, read_dataset, read_source
from pseudo.io.pydicom_internals import quiet_pydicom
from pseudo.policy.compiled import CompiledPolicy
from pseudo.verify import core as verify


def _read(path: Path) -> Dataset | None:
    try:
        return read_dataset(path)
    except (NotDicom, RejectedFile):
        return None


def _read_output(path: Path) -> tuple[Dataset, bytes | None] | None:
    """An output's header (its pixel data is not needed) and its bytes but the pixel data
    (None for a deflated file). One read, unless elements follow the pixel data: they are
    not in the header, so the whole file is read to search them by attribute too."""
    try:
        source = read_source(path)
        ds = read_dataset(path) if source.after_pixels else source.dataset
    except (NotDicom, RejectedFile):
        return None
    return ds, bytes_outside_pixels(path, source)


def _expected_output(engine: Pseudonymizer, ds: Dataset) -> tuple[str, int] | None:
    """The relative output path and date offset this input would get with these keys."""
    try:
        pseudonym, offset = engine.patient(read_identity(ds))
        parts = [str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)]
    except (RejectedFile, AttributeError):
        return None
    study, series, sop = (remap_uid(engine.keyring, uid) for uid in parts)
    return f"{pseudonym}/{study}/{series}/{sop}.dcm", offset


def verify_tree(
    source: Path,
    target: Path,
    policy: CompiledPolicy,
    keyring: Keyring | None = None,
    store: LinkageStore | None = None,
    *,
    show_values: bool = False,
) -> verify.TreeReport:
    """Verify every output file under ``target`` against the inputs under ``source``."""
    report = verify.TreeReport()
    outputs = {
        str(p.relative_to(target)): p
        for p in discover(target)
        if TEMP_DIR_NAME not in p.parts and p.suffix == ".dcm"
    }
    report.outputs = len(outputs)
    everything = verify.Needles()
    references = verify.CrossFileCheck()
    paired: set[str] = set()
    engine = Pseudonymizer(keyring, policy) if keyring is not None else None
    with quiet_pydicom():
        inputs = [(path, ds) for path in discover(source) if (ds := _read(path)) is not None]
        if engine is not None and keyring is not None and policy.anchor is not None and store:
            scans = [anchors.scan_file(str(path)) for path, _ in inputs]
            offsets = anchors.resolve(keyring, policy, store, scans, record=False)
            engine = Pseudonymizer(keyring, policy, offsets)
        for _path, ds in inputs:
            pending = verify.prepare(ds, policy)
            verify.collect(ds, policy, pending.recorder)
            everything.merge(pending.needles)
            expected = _expected_output(engine, ds) if engine is not None else None
            if expected is None or expected[0] not in outputs:
                continue
            relative, offset = expected
            read = _read_output(outputs[relative])
            if read is None:
                continue
            out, raw = read
            paired.add(relative)
            findings, evidence = verify.finish(
                pending, out, relative, offset, raw, policy, show_values=show_values
            )
            report.findings.extend(findings)
            report.skipped.update(pending.needles.skipped)
            references.add(evidence, relative)
        report.paired = len(paired)
        unpaired = [r for r in outputs if r not in paired]
        if unpaired:
            matcher = verify.Matcher(everything)
            for relative in unpaired:
                read = _read_output(outputs[relative])
                if read is None:
                    continue
                out, raw = read
                report.findings.extend(
                    verify.check(out, relative, matcher, policy, raw, show_values=show_values)
                )
            report.skipped.update(everything.skipped)
    if engine is None:
        report.notes.append(
            "outputs were not paired with inputs (no --project): dates and references not checked"
        )
    elif unpaired:
        report.notes.append(
            f"{len(unpaired)} outputs have no input in INPUT: searched for every input's values, "
            "dates and references excepted"
        )
    report.findings.extend(references.findings(show_values=show_values))
    return report
