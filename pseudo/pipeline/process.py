"""The per-file path: read -> pseudonymize -> pixels -> write to a temporary name -> verify ->
outcome.

One :class:`FileProcessor` serves every caller: the workers of ``pseudo run`` (which then
commit the outcome, see :mod:`pseudo.batch.commit`), ``--dry-run`` (which throws the written
file away and keeps the changes), ``pseudo verify`` (which needs only where each input's
output is and what to look for in it) and the Python API (a data set in memory). None of them
repeats a step, so they cannot disagree on what happens to a file.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian

from keystore.identities import IdentityBook
from keystore.keyring import Keyring
from pseudo.deid.engine import PseudonymizedDataset, Pseudonymizer
from pseudo.deid.identity import Site
from pseudo.deid.trial import TrialValues
from pseudo.dicom.tags import tag_text
from pseudo.findings import Finding, NotAnInstance, RejectedFile
from pseudo.io.dicomio import (
    PIXEL_TAGS,
    NotDicom,
    OutputFailure,
    PixelSpan,
    Source,
    encode,
    read_source,
    sanitize,
    write_temporary,
)
from pseudo.io.pydicom_internals import quiet_pydicom
from pseudo.pipeline.outcome import FileOutcome, FileStatus, PixelSummary
from pseudo.pixels import rules as pixel_rules
from pseudo.pixels.frames import display_gray8, iter_frames
from pseudo.pixels.protect import PixelResult, has_pixels, protect
from pseudo.policy.compiled import CompiledPolicy
from pseudo.verify import check as checking
from pseudo.verify import recording
from pseudo.verify.pixels import ATTRIBUTES as PIXEL_VALUE_KEYWORDS
from pseudo.verify.pixels import identifying_values, readable_values

#: A patient's anchored date offset, as a task carries it: ((pseudonym, offset days),) or ().
Anchored = tuple[tuple[str, int], ...]


@dataclass
class Prepared:
    """An input read and pseudonymized in memory, not yet written."""

    source: Source
    result: PseudonymizedDataset
    #: what the verification looks for in the output (None when verification is off)
    pending: recording.Pending | None
    #: what the pixel step does to the image, decided from the input's header
    plan: pixel_rules.PixelPlan
    #: the input as read, before pseudonymization (only when asked for: a dry run's diff)
    original: Dataset | None = None
    #: what the pixel step did (once it ran)
    pixels: PixelResult | None = None
    #: the input's identifying values that the OCR of the written pixels looks for (None:
    #: no pixel verification)
    pixel_values: dict[str, list[str]] | None = None


class FileProcessor:
    """Pseudonymizes files one at a time with one project's keys and one policy."""

    def __init__(
        self,
        keyring: Keyring,
        policy: CompiledPolicy,
        *,
        check: bool = True,
        anchored_offsets: Mapping[str, int] | None = None,
        site: Site | None = None,
        book: IdentityBook | None = None,
        trial: TrialValues | None = None,
    ) -> None:
        self.policy = policy
        self.check = check
        self.engine = Pseudonymizer(
            keyring, policy, anchored_offsets, site=site, book=book, trial=trial
        )
        self._pixel_tags = policy.pixels.condition_tags if policy.pixels.enabled else frozenset()
        if self._verifies_pixels:
            self._pixel_tags |= {int(tag_for_keyword(k) or 0) for k in PIXEL_VALUE_KEYWORDS}

    @property
    def _verifies_pixels(self) -> bool:
        """Whether the written pixels are read back (verification on, pixels examined)."""
        return self.check and self.policy.pixels.enabled

    def _droppable(self, tag: int, vr: str | None) -> bool:
        """What the reader may leave out: what the engine only deletes, unless a pixel rule
        reads it."""
        return tag not in self._pixel_tags and self.engine.droppable(tag, vr)

    def prepare(
        self,
        path: Path,
        *,
        anchored: Anchored = (),
        original: bool = False,
        identity_check: str | None = None,
    ) -> Prepared:
        """Read ``path`` and pseudonymize it in memory.

        Raises :class:`NotDicom`, :class:`~pseudo.findings.NotAnInstance` or
        :class:`~pseudo.findings.RejectedFile` (and, for a hostile file, anything else: the
        callers that must never stop use :meth:`process`). With ``original``, every attribute
        is read and a copy of the input is kept for a diff. ``identity_check`` is what a run's
        header scan saw of the file's identity (see :class:`~pseudo.deid.engine.Pseudonymizer`).
        """
        engine = self.engine
        if anchored or identity_check is not None:
            engine = engine.with_offsets(dict(anchored), identity_check)
        keep = recording.records_removed if self.check else False
        source = read_source(path, None if original else self._droppable, keep_dropped=keep)
        ds = source.dataset
        before = copy.deepcopy(ds) if original else None
        plan = pixel_rules.plan(ds, self.policy.pixels)
        values = None
        if self._verifies_pixels and has_pixels(ds, source.pixels):
            values = identifying_values(ds)
        pending = recording.prepare(ds, self.policy) if self.check else None
        result = engine.pseudonymize(ds, pending.recorder if pending else None, source.dropped)
        return Prepared(source, result, pending, plan, before, pixel_values=values)

    def protect_pixels(self, prepared: Prepared, temp_dir: Path) -> PixelSpan | None:
        """The pixel step: blank the burned-in text of the pseudonymized image (see
        :mod:`pseudo.pixels.protect`); return where the pixel data to write still lies in the
        input (None when the data set now holds new pixel data, or never had any)."""
        out = prepared.result.dataset
        pixels = prepared.source.pixels
        done = protect(prepared.plan, out, pixels, self.policy.pixels, temp_dir)
        prepared.pixels = done
        if done.redaction is None:
            return pixels
        done.redaction.apply(out)
        return done.redaction.pixels

    def process(
        self,
        path: Path,
        temp_dir: Path,
        *,
        fingerprint: str = "",
        size: int = 0,
        anchored: Anchored = (),
        sync: bool = True,
        inspect: Callable[[Dataset, Dataset], None] | None = None,
        identity_check: str | None = None,
    ) -> FileOutcome:
        """Pseudonymize one file into a temporary file in ``temp_dir`` and verify it; never
        raise for bad input (a hostile file is quarantined, never stops a batch).

        The outcome is ``written`` with the temporary file in ``outcome.temp`` (the caller
        commits it, or removes it), or ``skipped`` / ``quarantined`` with a reason and nothing
        left on disk, or ``failed`` when the output cannot be written. ``inspect(input,
        output)``, when given, is shown each written file's data set before and after (a dry
        run counts the changes).
        """
        outcome = FileOutcome(str(path), fingerprint, FileStatus.QUARANTINED, size=size)
        with quiet_pydicom():
            try:
                prepared = self.prepare(
                    path,
                    anchored=anchored,
                    original=inspect is not None,
                    identity_check=identity_check,
                )
                result = prepared.result
                try:
                    pixels = self.protect_pixels(prepared, temp_dir)
                    temp, header = write_temporary(result.dataset, temp_dir, pixels, sync=sync)
                finally:
                    if prepared.pixels is not None and prepared.pixels.redaction is not None:
                        prepared.pixels.redaction.discard()
                try:
                    pending = prepared.pending
                    if pending is not None and not self._verified(outcome, pending, result, header):
                        temp.unlink(missing_ok=True)
                        return outcome
                    if _pixels_to_verify(prepared) and not self._pixels_unreadable(
                        outcome, temp, prepared.pixel_values or {}, prepared.pixels
                    ):
                        temp.unlink(missing_ok=True)
                        return outcome
                    if inspect is not None and prepared.original is not None:
                        inspect(prepared.original, result.dataset)
                except BaseException:
                    # a written file that cannot be read back (its pixels undecodable...) is
                    # quarantined below: its temporary file must not stay behind
                    temp.unlink(missing_ok=True)
                    raise
            except NotDicom as exc:
                outcome.status, outcome.reason = FileStatus.SKIPPED, f"not DICOM: {exc}"
                return outcome
            except OutputFailure as exc:
                outcome.status, outcome.reason = FileStatus.FAILED, str(exc)
                return outcome
            except NotAnInstance as exc:
                outcome.status, outcome.reason = FileStatus.SKIPPED, exc.reason
                return outcome
            except RejectedFile as exc:
                outcome.reason = exc.reason
                return outcome
            except RecursionError:
                outcome.reason = "nesting too deep to parse"
                return outcome
            except Exception as exc:
                outcome.reason = f"cannot process ({exc.__class__.__name__}: {sanitize(str(exc))})"
                return outcome
        outcome.temp = str(temp)
        outcome.status = FileStatus.WRITTEN
        outcome.output = result.relative_path
        outcome.linkage = result.linkage
        outcome.findings = result.findings
        outcome.pixels = _summary(prepared.pixels)
        after = prepared.source.after_pixels
        if after:
            tags = ", ".join(tag_text(t) for t in after[:8])
            outcome.findings.append(
                Finding("(after the pixel data)", "after-pixel-data", f"removed: {tags}")
            )
        return outcome

    def pseudonymize_dataset(self, ds: Dataset) -> PseudonymizedDataset:
        """Pseudonymize a data set held in memory (in place) and verify the result as a run
        verifies a written file; raise :class:`~pseudo.findings.RejectedFile` when it cannot
        be pseudonymized safely or the verification finds a leak."""
        with quiet_pydicom():
            plan = pixel_rules.plan(ds, self.policy.pixels)
            pending = recording.prepare(ds, self.policy) if self.check else None
            result = self.engine.pseudonymize(ds, pending.recorder if pending else None)
            with tempfile.TemporaryDirectory(prefix="pseudo-pixels-") as folder:
                done = protect(plan, result.dataset, None, self.policy.pixels, Path(folder))
                if done.redaction is not None:
                    done.redaction.apply(result.dataset)  # a data set holds its pixel data
            if pending is not None:
                pixels = PIXEL_TAGS.intersection(result.dataset.keys())
                header = None if pixels else encode(result.dataset)  # pixels: by attribute
                outcome = FileOutcome("(data set)", "", FileStatus.QUARANTINED)
                if not self._verified(outcome, pending, result, header):
                    raise RejectedFile(outcome.reason or "verification found a leak")
        return result

    def _pixels_unreadable(
        self,
        outcome: FileOutcome,
        written: Path,
        values: dict[str, list[str]],
        done: PixelResult | None,
    ) -> bool:
        """OCR the written image: an identifying value of the input still readable there is a
        leak, and the file is quarantined (the reason names the kind of value, not the
        value). Where the detector read every frame of the input (``done``), what it found
        there is read again rather than searched for anew, the regions blanked since told
        (see :func:`readable_values`)."""
        source = read_source(written)
        frames = (
            display_gray8(frame, source.dataset)
            for frame in iter_frames(source.dataset, source.pixels)
        )
        detections = done.detections if done is not None and done.detections else None
        blanked = done.redaction.boxes if done is not None and done.redaction else ()
        found = readable_values(frames, values, detections, blanked)
        if found:
            outcome.reason = f"verification found burned-in text: {', '.join(found)}"
            return False
        return True

    def _verified(
        self,
        outcome: FileOutcome,
        pending: recording.Pending,
        result: PseudonymizedDataset,
        header: bytes | None,
    ) -> bool:
        """Check the written output for residual PHI; a leak quarantines the file (it is
        never released)."""
        syntax = str(result.dataset.file_meta.TransferSyntaxUID)
        raw = None if syntax == DeflatedExplicitVRLittleEndian else header
        findings, evidence = checking.finish(
            pending,
            result.dataset,
            result.relative_path,
            result.date_offset_days,
            raw,
            self.policy,
            added=frozenset(result.added),
        )
        outcome.verification = findings
        outcome.evidence = evidence
        outcome.skipped_checks = dict(pending.skipped)
        leaks = [f for f in findings if f.severity == "leak"]
        if leaks:
            kinds = ", ".join(sorted({f"{f.kind} at {f.path}" for f in leaks})[:5])
            outcome.reason = f"verification found {len(leaks)} leak(s): {kinds}"
            return False
        return True


def _pixels_to_verify(prepared: Prepared) -> bool:
    """Whether the written pixels are OCR'd: always, but for an image the detector scanned
    and found no text in, written byte for byte (the OCR would read the very pixels the
    detector has just read: the cost of a second reading of every text-free image, for
    nothing the detector did not see)."""
    done = prepared.pixels
    if prepared.pixel_values is None or done is None:
        return prepared.pixel_values is not None
    scanned_clean = done.examined and not done.redacted and prepared.plan.detect
    return not scanned_clean


def _summary(done: PixelResult | None) -> PixelSummary | None:
    """What a run report and ``pseudo inspect`` keep of the pixel step (no text, no boxes)."""
    if done is None or not done.examined:
        return None
    return PixelSummary(done.rule, len(done.ruled), len(done.detected))
