"""Pseudonymize one pydicom dataset in memory: the heart of ``pseudo``.

>>> from pseudo.api import Pseudonymizer                       # doctest: +SKIP
>>> result = Pseudonymizer(keyring, load_policy("default")).pseudonymize(ds)   # doctest: +SKIP
>>> result.dataset.PatientID, result.relative_path                              # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from pydicom import config
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from keystore.identities import IdentityBook, identity_check
from keystore.keyring import Keyring
from keystore.records import (
    InstanceRecordV1,
    LinkageEntry,
    PatientRecordV1,
    SeriesRecordV1,
    StudyRecordV1,
)
from pseudo import __version__
from pseudo.deid.context import FileContext
from pseudo.deid.identity import PatientIdentity, Site, read_identity
from pseudo.deid.tokens import keyed_patient
from pseudo.deid.trial import TrialValues, add_attributes
from pseudo.deid.uids import remap_uid
from pseudo.deid.walker import IDENTIFYING_TAGS, Dropped, Recorder, Walker
from pseudo.dicom.tags import decision_vr
from pseudo.findings import Finding, NotAnInstance, RejectedFile
from pseudo.io.dicomio import new_file_meta, raw_elements, raw_uid
from pseudo.io.layout import output_path
from pseudo.io.pydicom_internals import element_map, quiet_pydicom
from pseudo.policy.compiled import CompiledPolicy
from pseudo.policy.conditions import CONDITION_TAGS
from pseudo.policy.model import Action

#: pseudo's own Implementation Class UID (a fixed 2.25 UUID-derived UID) and version name.
IMPLEMENTATION_CLASS_UID = UID("2.25.29132904577173474198588004560027537061")
IMPLEMENTATION_VERSION_NAME = f"PSEUDO_{__version__}"[:16]
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
#: Top-level attributes read by the engine or the verification besides the policy's action:
#: never left out by the reader, whatever the policy does with them.
ENGINE_TAGS = IDENTIFYING_TAGS | frozenset(
    tag_for_keyword(keyword)
    for keyword in (
        "SpecificCharacterSet",
        "SOPClassUID",
        "SOPInstanceUID",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "AccessionNumber",
        "StudyDate",
        "PatientID",
        "IssuerOfPatientID",
        "PatientName",
        "PatientBirthDate",
        "PatientSex",
        "IssuerOfPatientIDQualifiersSequence",
        "PatientAge",
        "BurnedInAnnotation",
        "Modality",
    )
)


@dataclass
class PseudonymizedDataset:
    """The result of pseudonymizing one dataset."""

    dataset: Dataset
    pseudonym: str
    date_offset_days: int
    study_uid: str
    series_uid: str
    sop_instance_uid: str
    linkage: list[LinkageEntry] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    #: top-level values written from the project's values, not the input's (see
    #: :mod:`pseudo.deid.trial`), by tag
    added: dict[int, str] = field(default_factory=dict)
    #: the study, series and instance UIDs that name the output's folders and file, when they
    #: differ from the output's own (a policy that keeps the original UIDs)
    path_uids: tuple[str, str, str] | None = None

    @property
    def relative_path(self) -> str:
        """Output path built only from pseudonymous values."""
        uids = self.path_uids or (self.study_uid, self.series_uid, self.sop_instance_uid)
        return output_path(self.pseudonym, *uids)


def _overlay_groups(ds: Dataset) -> set[int]:
    """Overlay groups (60xx) that hold Overlay Data."""
    return {group for group in range(0x6000, 0x6020, 2) if (group << 16) | 0x3000 in ds}


def _drop_overlays_without_data(ds: Dataset, ctx: FileContext, had_data: set[int]) -> None:
    """An overlay plane whose Overlay Data the policy removed is removed whole (it would be
    invalid, and its other attributes describe a bitmap that is gone)."""
    for group in had_data:
        if (group << 16) | 0x3000 in ds:
            continue
        tags = [t for t in ds.keys() if t >> 16 == group]
        for tag in tags:
            del ds[tag]
        if tags:
            ctx.note(f"({group:04X},xxxx)", "overlay-removed", "overlay plane without data removed")


def _recompute_age(ds: Dataset) -> None:
    """Keep Patient's Age consistent with a birth date reduced to its year."""
    if not ds.get("PatientAge") or not ds.get("PatientBirthDate"):
        return
    birth, study = str(ds.PatientBirthDate), str(ds.get("StudyDate") or "")
    if len(birth) < 8 or len(study) < 8 or not (birth[:8] + study[:8]).isdigit():
        return
    years = int(study[:4]) - int(birth[:4]) - int(study[4:8] < birth[4:8])
    ds.PatientAge = f"{max(years, 0):03d}Y"


#: The tags of the UIDs every file must have.
_UID_TAGS: dict[str, int] = {
    keyword: tag_for_keyword(keyword)  # type: ignore[misc]
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
}


def _uid_text(ds: Dataset, keyword: str) -> str:
    """``str(ds.get(keyword) or "")`` for a UID, without building the element of a single raw
    value (as read, or as remapped) unless pydicom must check it."""
    if config.settings.reading_validation_mode != config.RAISE:
        text = raw_uid(element_map(ds).get(cast(BaseTag, _UID_TAGS[keyword])))
        if text is not None:
            return text
    return str(ds.get(keyword) or "")


def _required_uid(ds: Dataset, keyword: str) -> str:
    try:
        value = _uid_text(ds, keyword).strip()
    except Exception as exc:
        raise RejectedFile(f"{keyword} cannot be read ({exc.__class__.__name__})") from exc
    if not value:
        raise RejectedFile(f"no {keyword}: the file cannot be named or referenced")
    return value


def original_transfer_syntax(ds: Dataset) -> UID:
    """The transfer syntax the dataset was read with (from its meta, else its encoding)."""
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts:
        return UID(str(ts))
    encoding = getattr(ds, "original_encoding", None) or (True, True)
    implicit, little = encoding
    pixels = ds.get_item(0x7FE00010) if 0x7FE00010 in ds else None
    if pixels is not None and getattr(pixels, "length", 0) == 0xFFFFFFFF:
        raise RejectedFile("compressed pixel data but no Transfer Syntax UID in the file meta")
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def _deidentification_marks(policy: CompiledPolicy) -> Dataset:
    """The attributes that say how a file was de-identified (the same for every file)."""
    ds = Dataset()
    ds.PatientIdentityRemoved = "YES" if policy.removes_identity else "NO"
    ds.DeidentificationMethod = policy.method
    items = []
    from pydicom.sr.codedict import codes  # 0.1 s to import: only when a file is done

    for keyword in policy.option_codes:
        code = getattr(codes.DCM, keyword)
        item = Dataset()
        item.CodeValue = code.value
        item.CodingSchemeDesignator = code.scheme_designator
        item.CodeMeaning = code.meaning
        items.append(item)
    if items:
        ds.DeidentificationMethodCodeSequence = Sequence(items)
    if policy.profile == "ps3.15":
        ds.LongitudinalTemporalInformationModified = policy.temporal
    return ds


def _other_uids(remapped: dict[str, str], *main: str) -> dict[str, str] | None:
    """The UIDs a file had remapped besides its study, series and instance (None if none)."""
    others = {old: new for old, new in remapped.items() if old not in main}
    return others or None


#: Entries a cache of the pseudonymizer holds before it is emptied (about 10 MB).
CACHE_LIMIT = 50_000


def _bounded(cache: dict[Any, Any]) -> dict[Any, Any]:
    """``cache``, emptied first if it has grown to :data:`CACHE_LIMIT` entries."""
    if len(cache) >= CACHE_LIMIT:
        cache.clear()
    return cache


class Pseudonymizer:
    """Applies one compiled policy with one project's keyring to datasets.

    ``anchored_offsets`` maps pseudonyms to their date offsets when the policy anchors each
    patient's earliest study to a fixed date (resolved before the files are processed, see
    :mod:`pseudo.deid.anchors`); otherwise offsets are derived from the keyring. ``site`` is
    the run's site (the namespace of patient IDs without an issuer) and ``book`` the
    project's identity rules (imported subject IDs, merges, splits). ``expected_check``,
    when not None, is what the run's header scan saw of the file's identity
    (:func:`keystore.identities.identity_check`; empty: it saw none): the file is rejected
    unless the full read sees the same, so the run's identity checks cannot be bypassed.
    ``trial`` holds the clinical trial values a run writes into every output
    (:mod:`pseudo.deid.trial`).
    """

    def __init__(
        self,
        keyring: Keyring,
        policy: CompiledPolicy,
        anchored_offsets: Mapping[str, int] | None = None,
        *,
        site: Site | None = None,
        book: IdentityBook | None = None,
        expected_check: str | None = None,
        trial: TrialValues | None = None,
    ) -> None:
        self.keyring = keyring
        self.policy = policy
        self.anchored_offsets: Mapping[str, int] = anchored_offsets or {}
        self.site = site
        self.book = book or IdentityBook()
        self.expected_check = expected_check
        self.trial = trial
        self._droppable: dict[tuple[int, str | None], bool] = {}
        self._marks: dict[UID, dict[BaseTag, RawDataElement]] = {}
        # Pure functions of the keyring, kept across the files of a run (a study's and a
        # patient's values recur in each of their files); emptied when they grow large.
        self._uids: dict[str, str] = {}
        self._patients: dict[tuple[str, ...], tuple[str, int]] = {}

    def with_offsets(
        self, anchored_offsets: Mapping[str, int], expected_check: str | None = None
    ) -> Pseudonymizer:
        """The same pseudonymizer with anchored date offsets and the identity the header scan
        saw (and the same caches)."""
        other = Pseudonymizer(
            self.keyring,
            self.policy,
            anchored_offsets,
            site=self.site,
            book=self.book,
            expected_check=expected_check,
            trial=self.trial,
        )
        other._droppable, other._marks = self._droppable, self._marks
        other._uids, other._patients = self._uids, self._patients
        return other

    def patient(self, identity: PatientIdentity) -> tuple[str, int]:
        """The pseudonym and date offset of a patient (the same in every run): the keyed ones,
        or those an identity rule gives (an imported subject ID, a merge, a split)."""
        rule = self.book.find(self.keyring, identity.key, identity.traits)
        if rule is not None:
            known: tuple[str, int] | None = (rule.pseudonym, rule.offset_days)
        else:
            known = self._patients.get(identity.key)
        if known is None:
            known = keyed_patient(self.keyring, identity.key)
            _bounded(self._patients)[identity.key] = known
        patient_pseudonym, offset = known
        if self.policy.anchor is not None:
            anchored = self.anchored_offsets.get(patient_pseudonym)
            if anchored is None:
                raise RejectedFile("no study date to anchor this patient's dates to")
            return patient_pseudonym, anchored
        return patient_pseudonym, offset

    def droppable(self, tag: int, vr: str | None) -> bool:
        """Whether a top-level element of this tag and VR (None in Implicit VR) is removed by
        the policy whatever its value and the rest of the file, and nothing but the removal
        reads it: then a reader may leave it out (see :func:`pseudo.io.dicomio.read_source`)."""
        key = (tag, vr)
        known = self._droppable.get(key)
        if known is None:
            known = self._droppable[key] = self._is_droppable(tag, vr)
        return known

    def _is_droppable(self, tag: int, vr: str | None) -> bool:
        if (
            self.policy.has_conditions
            or tag in ENGINE_TAGS
            or tag in CONDITION_TAGS  # the walk reads whether it was there
            or ((tag >> 16) & 1 and 0x10 <= tag & 0xFFFF <= 0xFF)  # private creators
            or 0x6000 <= tag >> 16 <= 0x601F
        ):
            return False
        decision = self.policy.static_decision(tag, decision_vr(vr, tag))
        # A combined code is resolved by the file's IOD in the walk: never dropped before it.
        return (
            decision is not None and decision.action is Action.REMOVE and decision.compound is None
        )

    def pseudonymize(
        self,
        ds: Dataset,
        recorder: Recorder | None = None,
        dropped: Dropped | None = None,
    ) -> PseudonymizedDataset:
        """Pseudonymize ``ds`` in place and return it with its linkage records.

        ``recorder`` (see :mod:`pseudo.verify.recording`) is told about every data set and
        every attribute the policy does not keep before it changes, and, once, about those in
        ``dropped`` (left out by the reader, see :meth:`droppable`). Raises
        :class:`~pseudo.findings.RejectedFile` when the dataset cannot be processed safely;
        ``ds`` must then be discarded.
        """
        with quiet_pydicom():
            return self._pseudonymize(ds, recorder, dropped)

    def _pseudonymize(
        self, ds: Dataset, recorder: Recorder | None, dropped: Dropped | None = None
    ) -> PseudonymizedDataset:
        meta = getattr(ds, "file_meta", None)
        media_class = str(meta.get("MediaStorageSOPClassUID", "")) if meta is not None else ""
        if DICOMDIR_SOP_CLASS in (media_class, str(ds.get("SOPClassUID", ""))):
            raise NotAnInstance(
                "DICOMDIR: its records name patients, it is never copied; "
                "`pseudo dicomdir OUTPUT MEDIA` builds new media from the output"
            )
        sop_class = _required_uid(ds, "SOPClassUID")
        transfer_syntax = original_transfer_syntax(ds)
        identity = read_identity(ds, self.site)
        self._confirm(identity)
        study_uid = _required_uid(ds, "StudyInstanceUID")
        series_uid = _required_uid(ds, "SeriesInstanceUID")
        instance_uid = _required_uid(ds, "SOPInstanceUID")
        accession = str(ds.get("AccessionNumber") or "").strip()
        study_date = str(ds.get("StudyDate") or "").strip()

        patient_pseudonym, offset = self.patient(identity)
        ctx = FileContext(
            self.keyring,
            self.policy,
            patient_pseudonym,
            offset,
            _uids=_bounded(self._uids),
            site=self.site,
        )
        overlays = _overlay_groups(ds)
        Walker(ctx, ds, recorder, dropped).walk(ds)
        _drop_overlays_without_data(ds, ctx, overlays)
        added: dict[int, str] = {}
        if self.trial is not None or self.policy.additions:
            added = add_attributes(ds, patient_pseudonym, self.trial, self.policy.additions)
        self._finish(ds, ctx, sop_class, transfer_syntax)

        pseudo_study = ctx.remap(study_uid)
        pseudo_series = _required_uid(ds, "SeriesInstanceUID")
        pseudo_instance = _required_uid(ds, "SOPInstanceUID")
        linkage = [
            LinkageEntry.of(
                patient_pseudonym,
                patient_pseudonym,
                PatientRecordV1(
                    patient_id=identity.patient_id or None,
                    issuer_of_patient_id=identity.issuer or None,
                    patient_name=identity.name or None,
                    patient_birth_date=identity.birth_date or None,
                    date_offset_days=offset,
                    identity_basis=identity.basis,
                    site=identity.site or None,
                    identity_key=identity.recorded_key,
                ),
            ),
            LinkageEntry.of(
                pseudo_study,
                patient_pseudonym,
                StudyRecordV1(
                    study_uid=study_uid,
                    accession_number=accession or None,
                    study_date=study_date or None,
                ),
            ),
            LinkageEntry.of(
                pseudo_series,
                patient_pseudonym,
                SeriesRecordV1(
                    series_uid=series_uid, study_uid=study_uid, pseudo_study_uid=pseudo_study
                ),
            ),
            LinkageEntry.of(
                pseudo_instance,
                patient_pseudonym,
                InstanceRecordV1(
                    sop_instance_uid=instance_uid,
                    series_uid=series_uid,
                    study_uid=study_uid,
                    pseudo_series_uid=pseudo_series,
                    pseudo_study_uid=pseudo_study,
                    remapped=_other_uids(ctx.remapped, study_uid, series_uid, instance_uid),
                ),
            ),
        ]
        output_study = _required_uid(ds, "StudyInstanceUID")
        originals = (study_uid, series_uid, instance_uid)
        outputs = (output_study, pseudo_series, pseudo_instance)
        return PseudonymizedDataset(
            dataset=ds,
            pseudonym=patient_pseudonym,
            date_offset_days=offset,
            study_uid=output_study,
            series_uid=pseudo_series,
            sop_instance_uid=pseudo_instance,
            linkage=linkage,
            findings=ctx.findings,
            added=added,
            path_uids=self._path_uids(originals, outputs),
        )

    def _confirm(self, identity: PatientIdentity) -> None:
        """Reject the file unless its identity is the one the run's header scan checked."""
        expected = self.expected_check
        if expected is None:
            return
        if not expected:
            raise RejectedFile(
                "its patient's identity could not be read by the run's header scan, so it "
                "could not be checked against the project's"
            )
        if identity_check(self.keyring, identity.key, identity.traits) != expected:
            raise RejectedFile(
                "its patient's identity reads differently in the full file than in its header "
                "scan (changed during the run?): run again"
            )

    def _path_uids(
        self, originals: tuple[str, str, str], outputs: tuple[str, str, str]
    ) -> tuple[str, str, str] | None:
        """The UIDs that name the output's path when the policy kept an original one (Retain
        UIDs, the original level): its keyed remap, so that a path never holds an original
        UID, whatever the file holds. None when every UID was remapped."""
        if all(o != p for o, p in zip(originals, outputs, strict=True)):
            return None
        named = (
            remap_uid(self.keyring, o) if o == p else p
            for o, p in zip(originals, outputs, strict=True)
        )
        study, series, instance = named
        return study, series, instance

    def _finish(self, ds: Dataset, ctx: FileContext, sop_class: str, ts: UID) -> None:
        """Mark the dataset as de-identified and give it a new, minimal file meta."""
        policy = self.policy
        if policy.birth_date == "year":
            _recompute_age(ds)
        for keyword in ("PatientID", "PatientName"):
            tag = {"PatientID": 0x00100020, "PatientName": 0x00100010}[keyword]
            if policy.decide(tag, "LO").action is Action.PSEUDONYM and keyword not in ds:
                setattr(ds, keyword, ctx.pseudonym)
        marks = self._marks.get(ts)
        if marks is None:
            marks = self._marks[ts] = raw_elements(_deidentification_marks(policy), ts)
        element_map(ds).update(marks)  # shared tuples: a data set converts its own copy if it must
        ds.file_meta = new_file_meta(
            sop_class,
            _required_uid(ds, "SOPInstanceUID"),
            ts,
            IMPLEMENTATION_CLASS_UID,
            IMPLEMENTATION_VERSION_NAME,
        )
        ds.preamble = b"\x00" * 128
