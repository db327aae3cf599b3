"""``pseudo verify``: check an output tree for every identifying value of its input tree.

With the project's keys, each input is paired with the output it became (the output path is
derived from the same keys), so dates (with the patient's offset) and references are checked
too. Without keys, every output is searched for the identifying values of every input, dates
and references excepted.
"""

from __future__ import annotations

from pathlib import Path

from pydicom.dataset import Dataset

from keystore.identities import IdentityStore
from keystore.keyring import Keyring
from keystore.linkage import LinkageStore
from pseudo.deid import anchors
from pseudo.deid.identity import Site
from pseudo.deid.trial import TrialValues
from pseudo.findings import RejectedFile
from pseudo.io.dicomio import NotDicom, bytes_outside_pixels, read_dataset, read_source
from pseudo.io.layout import TEMP_DIR_NAME
from pseudo.io.listing import discover
from pseudo.io.pydicom_internals import quiet_pydicom
from pseudo.pipeline.process import FileProcessor
from pseudo.policy.compiled import CompiledPolicy
from pseudo.verify.check import check, finish
from pseudo.verify.crossfile import CrossFileCheck
from pseudo.verify.matching import Matcher
from pseudo.verify.needles import Needles
from pseudo.verify.recording import Pending, collect
from pseudo.verify.report import TreeReport


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


def _expected(
    processor: FileProcessor, path: Path
) -> tuple[str, int, Pending, frozenset[int]] | None:
    """Where the pipeline puts this input's output, its date offset, what to look for in it
    (the values the pipeline recorded on the way) and the attributes that hold the project's
    trial values; None if it would not write it."""
    try:
        prepared = processor.prepare(path)
    except Exception:  # quarantined or skipped by a run: no output to pair
        return None
    if prepared.pending is None:
        return None
    result = prepared.result
    return result.relative_path, result.date_offset_days, prepared.pending, frozenset(result.added)


def verify_tree(
    source: Path,
    target: Path,
    policy: CompiledPolicy,
    keyring: Keyring | None = None,
    store: LinkageStore | None = None,
    *,
    show_values: bool = False,
    site: Site | None = None,
    trial: TrialValues | None = None,
) -> TreeReport:
    """Verify every output file under ``target`` against the inputs under ``source`` (which
    came from ``site``, as their run said).

    ``trial`` (the project's trial settings and the site) says which values of the outputs'
    clinical trial attributes are the project's rather than the input's; the timepoint of
    the runs is not known here."""
    report = TreeReport()
    outputs = {
        str(p.relative_to(target)): p
        for p in discover(target)
        if TEMP_DIR_NAME not in p.parts and p.suffix == ".dcm"
    }
    report.outputs = len(outputs)
    everything = Needles()
    references = CrossFileCheck()
    paired: set[str] = set()
    processor = None
    if keyring is not None:
        offsets = None
        book = IdentityStore(store.engine).book(keyring) if store is not None else None
        if policy.anchor is not None and store is not None:
            scans = [anchors.scan_file(str(path)) for path in discover(source)]
            offsets = anchors.resolve(
                keyring, policy, store, scans, record=False, site=site, book=book
            )
        processor = FileProcessor(
            keyring, policy, anchored_offsets=offsets, site=site, book=book, trial=trial
        )
    with quiet_pydicom():
        for path in discover(source):
            expected = _expected(processor, path) if processor is not None else None
            if expected is None:
                # not paired (no keys, or the input would not be written): its values are
                # still looked for in the outputs that have no input
                ds = _read(path)
                if ds is not None:
                    everything.merge(collect(ds, policy))
                continue
            relative, offset, pending, added = expected
            everything.merge(pending.needles)
            if relative not in outputs:
                continue
            read = _read_output(outputs[relative])
            if read is None:
                continue
            out, raw = read
            paired.add(relative)
            findings, evidence = finish(
                pending, out, relative, offset, raw, policy, show_values=show_values, added=added
            )
            report.findings.extend(findings)
            report.skipped.update(pending.needles.skipped)
            references.add(evidence, relative)
        report.paired = len(paired)
        unpaired = [r for r in outputs if r not in paired]
        if unpaired:
            matcher = Matcher(everything)
            for relative in unpaired:
                read = _read_output(outputs[relative])
                if read is None:
                    continue
                out, raw = read
                report.findings.extend(
                    check(out, relative, matcher, policy, raw, show_values=show_values)
                )
            report.skipped.update(everything.skipped)
    if processor is None:
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
