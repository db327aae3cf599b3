"""The ``add`` action: an attribute set from a template of project values once a data set's
other attributes are done, and added when the input does not have it.

A template is text with fields in braces (``"{site_id}"``, ``"Visit {timepoint_id}"``); its
fields come only from the project's trial settings, the run's site and timepoint and the
patient's pseudonym (:data:`TEMPLATE_FIELDS`), never from a value of the input. A template
with a field the run does not give leaves the attribute as the rest of the policy made it.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass

#: The fields a template may name, and what each holds.
TEMPLATE_FIELDS: dict[str, str] = {
    "pseudonym": "the patient's pseudonym",
    "sponsor": "the project's trial sponsor name",
    "protocol_id": "the project's trial protocol ID",
    "protocol_name": "the project's trial protocol name",
    "ethics_committee": "the name of the protocol's ethics committee",
    "ethics_approval": "the protocol's ethics committee approval number",
    "coordinating_center": "the trial's coordinating center",
    "site_id": "the run's site (--site): its ID",
    "site_name": "the run's site (--site): its name",
    "timepoint_id": "the run's timepoint (--timepoint)",
    "timepoint_description": "the run's timepoint description (--timepoint-description)",
}

#: The VRs an added value may have: text, one value.
ADDABLE_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC"})


@dataclass(frozen=True)
class Addition:
    """One attribute the ``add`` action sets: at the top level of the data set."""

    tag: int
    keyword: str
    vr: str
    template: str
    #: the rule it comes from (``policy NAME rule N (file:line)``)
    source: str


def template_fields(template: str) -> list[str]:
    """The fields a template names; raise :class:`ValueError` for an unknown field, a format
    specification or an unbalanced brace."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"value template {template!r}: {exc}") from exc
    fields = []
    for _, field, spec, conversion in parts:
        if field is None:
            continue
        if field not in TEMPLATE_FIELDS or spec or conversion:
            known = ", ".join("{" + name + "}" for name in TEMPLATE_FIELDS)
            raise ValueError(f"value template {template!r}: unknown field {{{field}}} ({known})")
        fields.append(field)
    return fields


def render(template: str, values: Mapping[str, str | None]) -> str | None:
    """The template filled with ``values``; None when a field it names has no value."""
    fields = template_fields(template)
    if any(values.get(field) is None for field in fields):
        return None
    return template.format_map({field: values[field] for field in fields})
