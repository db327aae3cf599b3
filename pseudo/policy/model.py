"""Pydantic models of a policy file (``policies/*.yaml``).

A policy names a profile (the generated PS3.15 Table E.1-1), the PS3.15 options it applies,
defaults for attributes the table does not list, settings for dates and free-text cleaning,
and rules that override all of these. ``docs/policies.md`` is the reference.
"""

from __future__ import annotations

import datetime as _dt
import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Action(StrEnum):
    """What happens to an attribute."""

    REMOVE = "remove"  # X: the attribute is deleted
    EMPTY = "empty"  # Z: kept with a zero-length value (a sequence with no items)
    DUMMY = "dummy"  # D: replaced by a fixed, meaningless value valid for its VR
    KEEP = "keep"  # K: kept; sequences are kept and their items processed
    CLEAN = "clean"  # C: dates shifted, free text cleaned, sequences processed
    REMAP_UID = "remap_uid"  # U: instance UIDs replaced by keyed 2.25 UIDs
    SHIFT_DATE = "shift_date"  # dates moved by the patient's offset; times kept
    TOKEN = "token"  # keyed HMAC token sized to the VR
    PSEUDONYM = "pseudonym"  # the patient's pseudonym
    ENCRYPT = "encrypt"  # reversible token (AES-SIV)
    REPLACE = "replace"  # a constant given in the rule
    SUBSTITUTE = "substitute"  # regular-expression substitution in each value
    YEAR_ONLY = "year_only"  # a date reduced to 1 January of its (shifted) year
    TEMPORAL = "temporal"  # as the table's dates under the chosen temporal option
    INSTANCE_UID = "instance_uid"  # remap, or keep under Retain UIDs
    ADD = "add"  # set from a template of project values once the rest is done; added if absent


#: PS3.15 option identifiers and their CID 7050 keywords in pydicom's code dictionary.
OPTIONS: dict[str, str] = {
    "retain_safe_private": "RetainSafePrivateOption",
    # TCIA's Private Tag Knowledge Base: the de-identifier's own knowledge of safe private
    # attributes, as PS3.15 E.3.10 allows (Table E.3.10-1 lists examples only).
    "retain_safe_private_tcia": "RetainSafePrivateOption",
    "retain_uids": "RetainUidsOption",
    "retain_device_identity": "RetainDeviceIdentityOption",
    "retain_institution_identity": "RetainInstitutionIdentityOption",
    "retain_patient_characteristics": "RetainPatientCharacteristicsOption",
    "retain_longitudinal_full_dates": "RetainLongitudinalTemporalInformationFullDatesOption",
    "retain_longitudinal_modified_dates": (
        "RetainLongitudinalTemporalInformationModifiedDatesOption"
    ),
    "clean_descriptors": "CleanDescriptorsOption",
    "clean_structured_content": "CleanStructuredContentOption",
    "clean_graphics": "CleanGraphicsOption",
}

Strict = ConfigDict(extra="forbid", frozen=True)


class Selector(BaseModel):
    """Attributes chosen by several properties at once (all must hold).

    ``tag`` is a keyword, a tag or a tag pattern (``(0029,xx10)``); ``creator`` a private creator
    string (the block number does not matter); ``vr`` a value representation; ``path`` a
    sequence path such as ``RequestAttributesSequence[*].RequestedProcedureID``.
    """

    model_config = Strict

    tag: str | None = None
    creator: str | None = None
    vr: str | None = None
    path: str | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> Selector:
        if not any((self.tag, self.creator, self.vr, self.path)):
            raise ValueError("a selector needs at least one of tag, creator, vr or path")
        if self.path and self.tag:
            raise ValueError("give either path or tag in one selector, not both")
        return self


SelectorSpec = str | Selector


class Condition(BaseModel):
    """A test on one attribute of the file's top level (its original value)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    equals: str | None = None
    matches: str | None = None
    present: bool | None = None
    one_of: list[str] | None = Field(default=None, alias="in")

    @model_validator(mode="after")
    def _exactly_one(self) -> Condition:
        given = [
            f for f in ("equals", "matches", "present", "one_of") if getattr(self, f) is not None
        ]
        if len(given) != 1:
            raise ValueError("a condition needs exactly one of equals, matches, present or in")
        if self.matches is not None:
            try:
                re.compile(self.matches)
            except re.error as exc:
                raise ValueError(f"matches: not a regular expression ({exc})") from exc
        return self


class Rule(BaseModel):
    """Apply ``action`` to the attributes that ``select`` names (see ``docs/policies.md``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    select: Annotated[list[SelectorSpec], Field(min_length=1)]
    exclude: list[SelectorSpec] = Field(default_factory=list, alias="except")
    action: Action
    value: str | None = None
    pattern: str | None = None
    replacement: str | None = None
    max_input_length: Annotated[int | None, Field(gt=0)] = None
    when: dict[str, str | Condition] | None = None
    why: str | None = None

    @field_validator("select", "exclude", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str | dict) else value

    @model_validator(mode="after")
    def _parameters(self) -> Rule:
        needs = {
            Action.REPLACE: {"value"},
            Action.ADD: {"value"},
            Action.SUBSTITUTE: {"pattern", "replacement"},
            Action.ENCRYPT: set(),
        }
        allowed = needs.get(self.action, set()) | (
            {"max_input_length"} if self.action is Action.ENCRYPT else set()
        )
        for name in ("value", "pattern", "replacement", "max_input_length"):
            given = getattr(self, name) is not None
            if given and name not in allowed:
                raise ValueError(f"'{name}' is not allowed with action '{self.action}'")
            if not given and name in needs.get(self.action, set()):
                raise ValueError(f"action '{self.action}' needs '{name}'")
        if self.action is Action.ADD and (self.when or self.exclude):
            raise ValueError("action 'add' takes neither 'when' nor 'except'")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern: not a regular expression ({exc})") from exc
        return self


class Defaults(BaseModel):
    """What happens to attributes that neither the table nor a rule decides."""

    model_config = Strict

    standard: Action | None = None  # attributes in the DICOM data dictionary
    unknown: Action | None = None  # public tags the dictionary does not know
    private: Action | None = None  # private tags (the table's private row comes first)
    #: standard attributes of the Patient, Visit and Person modules, or naming a person
    identifying: Action | None = None
    vr: dict[str, Action] = Field(default_factory=dict)  # safety nets by VR

    @field_validator("vr")
    @classmethod
    def _known_vrs(cls, value: dict[str, Action]) -> dict[str, Action]:
        from pydicom.valuerep import VR

        unknown = sorted(set(value) - {member.value for member in VR})
        if unknown:
            raise ValueError(f"unknown VR {', '.join(unknown)}")
        return value


class DateSettings(BaseModel):
    """How dates move: the per-patient offset, optionally anchored, and the birth date."""

    model_config = Strict

    #: Each patient's earliest study date becomes this date; every interval is kept.
    anchor: _dt.date | None = None
    #: Patient's Birth Date: emptied, shifted with the patient's offset, or reduced to a year.
    birth_date: Literal["empty", "shift", "year"] | None = None


class CleanSettings(BaseModel):
    """What the ``clean`` action removes from free text besides the dataset's own values."""

    model_config = Strict

    #: Replace the built-in patterns (dates, telephone numbers, e-mail addresses, long numbers).
    patterns: list[str] | None = None
    #: Patterns added to the built-in ones (or to ``patterns``).
    extra_patterns: list[str] = Field(default_factory=list)

    @field_validator("patterns", "extra_patterns")
    @classmethod
    def _compile(cls, value: list[str] | None) -> list[str] | None:
        for pattern in value or []:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r}: not a regular expression ({exc})") from exc
        return value


class PolicyFile(BaseModel):
    """One policy file as written by its author (before ``extends`` is resolved)."""

    model_config = Strict

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,39}$")]
    title: str | None = None
    description: str | None = None
    extends: str | None = None
    profile: Literal["ps3.15", "none"] | None = None
    options: list[str] = Field(default_factory=list)
    defaults: Defaults = Field(default_factory=Defaults)
    dates: DateSettings = Field(default_factory=DateSettings)
    clean: CleanSettings = Field(default_factory=CleanSettings)
    rules: list[Rule] = Field(default_factory=list)
    #: What the policy removes by ``defaults.standard`` (an allow-list) or empties by a rule
    #: follows the object's IOD: Type 1 a dummy, Type 2 empty, Type 3 removed (issue 20).
    conform_to_iod: bool | None = None

    @field_validator("options")
    @classmethod
    def _known_options(cls, value: list[str]) -> list[str]:
        unknown = [option for option in value if option not in OPTIONS]
        if unknown:
            raise ValueError(f"unknown option {', '.join(unknown)}; known: {', '.join(OPTIONS)}")
        return value
