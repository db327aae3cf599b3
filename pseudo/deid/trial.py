"""The clinical trial attributes of a project's outputs, as CTP writes them.

A project may hold trial settings (sponsor, protocol, ethics committee, coordinating center:
``pseudo project create`` or ``pseudo project set-trial``); a run may name its site
(``--site``) and timepoint (``--timepoint``). With them, every output carries

* the Clinical Trial Subject module: Sponsor Name, Protocol ID and Name, Site ID and Name,
  the ethics committee when given, and Subject ID = the patient's pseudonym;
* the Clinical Trial Study module: Time Point ID and Description (a run with a timepoint);
* the Clinical Trial Series module: Coordinating Center Name.

The input's own values of these attributes (a site's subject ID may identify its patient) are
treated by the policy like any other attribute first (PS3.15 Table E.1-1 says what to do with
each); then the project's values overwrite them. An attribute the project does not give is left
as the policy made it; a Type 2 one that the input does not have is added empty, so the
module is complete. None of these values comes from the input: they are project metadata and
the pseudonym. The policy's own ``add`` rules (:mod:`pseudo.policy.additions`) are applied the
same way, last.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, model_validator
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from pseudo.deid.identity import Site
from pseudo.dicom.capacity import MAX_LENGTH
from pseudo.errors import PseudoError
from pseudo.findings import RejectedFile
from pseudo.policy.additions import Addition, render


class TrialSettingsError(PseudoError):
    """Trial settings, a site or a timepoint that cannot be written into a file (exit 2)."""


def _text_of(vr: str, what: str, value: str) -> str:
    """``value`` checked for an attribute of ``vr``: printable ASCII (the value is written
    whatever the file's character set), no backslash, within the VR's length."""
    text = value.strip()
    limit = MAX_LENGTH.get(vr)
    if not text:
        raise ValueError(f"{what} is empty")
    if not text.isascii() or not text.isprintable() or "\\" in text:
        raise ValueError(f"{what} {text!r}: use printable ASCII characters, no backslash")
    if limit is not None and len(text) > limit:
        raise ValueError(f"{what} {text!r} is longer than {limit} characters ({vr})")
    return text


def _lo(value: str) -> str:
    return _text_of("LO", "value", value)


LoText = Annotated[str, AfterValidator(_lo)]


class TrialSettings(BaseModel):
    """A project's trial settings, as the project file keeps them (``trial``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sponsor: LoText
    protocol_id: LoText
    protocol_name: LoText | None = None
    ethics_committee: LoText | None = None
    ethics_approval: LoText | None = None
    coordinating_center: LoText | None = None

    @model_validator(mode="after")
    def _committee_with_its_approval(self) -> TrialSettings:
        # Type 1C: the committee's name is required with its approval number, and dciodvfy
        # reads the condition as "only with it" too: the two go together.
        if (self.ethics_approval is None) != (self.ethics_committee is None):
            raise ValueError("give the ethics committee's name and its approval number together")
        return self

    def record(self) -> dict[str, Any]:
        """What the project file keeps (the fields given)."""
        return self.model_dump(exclude_none=True)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> TrialSettings:
        """The settings a project file keeps; :class:`TrialSettingsError` if they are not
        valid (a hand-edited file would not pass the settings MAC anyway)."""
        return parse_settings(dict(record))


def settings_of(record: Mapping[str, Any] | None) -> TrialSettings | None:
    """The trial settings a project file keeps (``ProjectFile.trial``), or None."""
    return TrialSettings.from_record(record) if record is not None else None


def parse_settings(fields: dict[str, Any]) -> TrialSettings:
    """Trial settings from their fields, or :class:`TrialSettingsError` naming the problem."""
    try:
        return TrialSettings(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        raise TrialSettingsError(
            f"trial settings: {where + ': ' if where else ''}{message}"
        ) from None


@dataclass(frozen=True)
class TrialValues:
    """What one run writes into the clinical trial modules: the project's settings (if any),
    the run's site and timepoint (if given)."""

    settings: TrialSettings | None = None
    site_id: str | None = None
    site_name: str | None = None
    timepoint_id: str | None = None
    timepoint_description: str | None = None

    @classmethod
    def of(
        cls,
        settings: TrialSettings | None,
        *,
        site: Site | None = None,
        timepoint_id: str | None = None,
        timepoint_description: str | None = None,
    ) -> TrialValues | None:
        """The run's values, checked (:class:`TrialSettingsError`); None when there are none
        to write (no settings, no timepoint)."""
        if timepoint_description is not None and timepoint_id is None:
            raise TrialSettingsError("--timepoint-description needs --timepoint")
        try:
            values = cls(
                settings,
                _optional("LO", "site ID", site.site_id if site is not None else None),
                _optional("LO", "site name", site.name if site is not None else None),
                _optional("LO", "timepoint", timepoint_id),
                _optional("ST", "timepoint description", timepoint_description),
            )
        except ValueError as exc:
            raise TrialSettingsError(str(exc)) from None
        return values if settings is not None or timepoint_id is not None else None

    def fields(self, pseudonym: str) -> dict[str, str | None]:
        """The template fields (:data:`pseudo.policy.additions.TEMPLATE_FIELDS`) of one
        patient's files."""
        settings = self.settings
        return {
            "pseudonym": pseudonym,
            "sponsor": settings.sponsor if settings else None,
            "protocol_id": settings.protocol_id if settings else None,
            "protocol_name": settings.protocol_name if settings else None,
            "ethics_committee": settings.ethics_committee if settings else None,
            "ethics_approval": settings.ethics_approval if settings else None,
            "coordinating_center": settings.coordinating_center if settings else None,
            "site_id": self.site_id,
            "site_name": self.site_name,
            "timepoint_id": self.timepoint_id,
            "timepoint_description": self.timepoint_description,
        }

    def report(self) -> dict[str, Any]:
        """What a run report says of the values (project metadata, no patient's)."""
        return {
            "settings": self.settings.record() if self.settings else None,
            "site": {"id": self.site_id, "name": self.site_name},
            "timepoint": {"id": self.timepoint_id, "description": self.timepoint_description},
        }

    @property
    def digest(self) -> str:
        """A short hash of the values (for a run's file fingerprints: a file done with other
        trial values is done again)."""
        text = json.dumps(self.report(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _optional(vr: str, what: str, value: str | None) -> str | None:
    return None if value is None else _text_of(vr, what, value)


@dataclass(frozen=True)
class ModuleAttribute:
    """One attribute of a clinical trial module and the field that fills it."""

    keyword: str
    field: str
    #: Type 2: added empty when neither the run nor the input gives a value
    type2: bool = False

    @property
    def tag(self) -> int:
        """The attribute's tag."""
        tag = tag_for_keyword(self.keyword)
        assert tag is not None, self.keyword
        return tag


#: Clinical Trial Subject (PS3.3 C.7.1.3) and Series (C.7.3.2): with the project's settings.
SUBJECT_AND_SERIES = (
    ModuleAttribute("ClinicalTrialSponsorName", "sponsor"),
    ModuleAttribute("ClinicalTrialProtocolID", "protocol_id"),
    ModuleAttribute("ClinicalTrialProtocolName", "protocol_name", type2=True),
    ModuleAttribute("ClinicalTrialSiteID", "site_id", type2=True),
    ModuleAttribute("ClinicalTrialSiteName", "site_name", type2=True),
    ModuleAttribute("ClinicalTrialSubjectID", "pseudonym"),
    ModuleAttribute("ClinicalTrialProtocolEthicsCommitteeName", "ethics_committee"),
    ModuleAttribute("ClinicalTrialProtocolEthicsCommitteeApprovalNumber", "ethics_approval"),
    ModuleAttribute("ClinicalTrialCoordinatingCenterName", "coordinating_center", type2=True),
)
#: Clinical Trial Study (C.7.2.3): with the run's timepoint.
STUDY = (
    ModuleAttribute("ClinicalTrialTimePointID", "timepoint_id", type2=True),
    ModuleAttribute("ClinicalTrialTimePointDescription", "timepoint_description"),
)


def module_attributes(trial: TrialValues) -> tuple[ModuleAttribute, ...]:
    """The attributes a run with ``trial`` writes: the Subject and Series modules with the
    project's settings, the Study module with a timepoint."""
    chosen: tuple[ModuleAttribute, ...] = ()
    if trial.settings is not None:
        chosen += SUBJECT_AND_SERIES
    if trial.timepoint_id is not None:
        chosen += STUDY
    return chosen


def add_attributes(
    ds: Dataset, pseudonym: str, trial: TrialValues | None, additions: Sequence[Addition]
) -> dict[int, str]:
    """Write the clinical trial modules of ``trial`` and the policy's ``additions`` into the
    top level of ``ds`` (after the walk: what the input had there was treated by the policy
    already). Returns the values written, by tag. Raises :class:`RejectedFile` when a value
    does not fit its attribute (an ``add`` template with long literal text)."""
    fields = trial.fields(pseudonym) if trial is not None else {"pseudonym": pseudonym}
    written: dict[int, str] = {}
    for attribute in module_attributes(trial) if trial is not None else ():
        value = fields.get(attribute.field)
        if value is None and attribute.type2 and attribute.tag not in ds:
            value = ""
        if value is not None:
            written[attribute.tag] = _set(ds, attribute.tag, value, attribute.keyword)
    for addition in additions:
        value = render(addition.template, fields)
        if value is not None:
            written[addition.tag] = _set(ds, addition.tag, value, addition.keyword)
    return written


def _set(ds: Dataset, tag: int, value: str, keyword: str) -> str:
    vr = dictionary_VR(tag)
    limit = MAX_LENGTH.get(vr)
    if not value.isascii() or "\\" in value:
        raise RejectedFile(f"{keyword}: the value to add is not ASCII text of one value")
    if limit is not None and len(value) > limit:
        raise RejectedFile(f"{keyword}: the value to add is longer than {vr} allows ({limit})")
    ds[tag] = DataElement(tag, vr, value)
    return value
