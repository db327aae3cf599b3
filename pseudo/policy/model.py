"""Pydantic models of a policy file (``policies/*.yaml``).

A policy names a profile (the generated PS3.15 Table E.1-1), the PS3.15 options it applies,
defaults for attributes the table does not list, and rules that override both. See
``docs/policies.md`` for the reference and the order in which decisions are taken.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

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


#: PS3.15 option identifiers and their CID 7050 keywords in pydicom's code dictionary.
OPTIONS: dict[str, str] = {
    "retain_safe_private": "RetainSafePrivateOption",
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


class Rule(BaseModel):
    """Apply ``action`` to the attributes that ``select`` names.

    ``select`` is a keyword (``PatientID``), a tag (``(0010,0020)``), a tag pattern with ``x``
    wildcards (``(60xx,xxxx)``), or a list of these.
    """

    model_config = Strict

    select: Annotated[list[str], Field(min_length=1)]
    action: Action
    value: str | None = None
    max_input_length: Annotated[int | None, Field(gt=0)] = None
    why: str | None = None

    @field_validator("select", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _parameters(self) -> Rule:
        if self.action is Action.REPLACE and self.value is None:
            raise ValueError("action 'replace' needs a 'value'")
        if self.action is not Action.REPLACE and self.value is not None:
            raise ValueError(f"'value' is only allowed with action 'replace', not {self.action}")
        if self.action is not Action.ENCRYPT and self.max_input_length is not None:
            raise ValueError("'max_input_length' is only allowed with action 'encrypt'")
        return self


class Defaults(BaseModel):
    """What happens to attributes that neither the table nor a rule decides."""

    model_config = Strict

    standard: Action | None = None  # attributes in the DICOM data dictionary
    unknown: Action | None = None  # public tags the dictionary does not know
    private: Action | None = None  # private tags (the table's private row comes first)
    vr: dict[str, Action] = Field(default_factory=dict)  # safety nets by VR

    @field_validator("vr")
    @classmethod
    def _known_vrs(cls, value: dict[str, Action]) -> dict[str, Action]:
        from pydicom.valuerep import VR

        unknown = sorted(set(value) - {member.value for member in VR})
        if unknown:
            raise ValueError(f"unknown VR {', '.join(unknown)}")
        return value


class PolicyFile(BaseModel):
    """One policy file as written by its author (before ``extends`` is resolved)."""

    model_config = Strict

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,39}$")]
    title: str | None = None
    description: str | None = None
    extends: str | None = None
    profile: str | None = None
    options: list[str] = Field(default_factory=list)
    defaults: Defaults = Field(default_factory=Defaults)
    rules: list[Rule] = Field(default_factory=list)

    @field_validator("options")
    @classmethod
    def _known_options(cls, value: list[str]) -> list[str]:
        unknown = [option for option in value if option not in OPTIONS]
        if unknown:
            raise ValueError(f"unknown option {', '.join(unknown)}; known: {', '.join(OPTIONS)}")
        return value

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, value: str | None) -> str | None:
        if value not in (None, "ps3.15"):
            raise ValueError("the only profile is 'ps3.15' (PS3.15 Table E.1-1)")
        return value
