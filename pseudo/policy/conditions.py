"""Attributes whose PS3.3 condition depends on another attribute of the same data set.

When the policy removes the attribute a condition reads, the dependent attribute follows it
(it is removed too), so that an output never carries an attribute "present when condition
unsatisfied" that its input did not. Each pair cites the condition as PS3.3 words it.
"""

from __future__ import annotations

from pydicom.datadict import tag_for_keyword

#: dependent keyword -> (keyword its condition reads, PS3.3 condition)
DEPENDS_ON: dict[str, tuple[str, str]] = {
    "ClinicalTrialProtocolEthicsCommitteeName": (
        "ClinicalTrialProtocolEthicsCommitteeApprovalNumber",
        "C.7.1.3 Clinical Trial Subject: Required if Clinical Trial Protocol Ethics Committee "
        "Approval Number (0012,0082) is present",
    ),
    "TrackingUID": (
        "TrackingID",
        "C.8.20.2 Segment Description Macro: Required if Tracking ID (0062,0020) is present",
    ),
    "TrackingID": (
        "TrackingUID",
        "C.8.20.2 Segment Description Macro: Required if Tracking UID (0062,0021) is present",
    ),
    "UniversalEntityIDType": (
        "UniversalEntityID",
        "10.14 HL7v2 Hierarchic Designator Macro: Required if Universal Entity ID "
        "(0040,0032) is present",
    ),
}


def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise ValueError(f"not a DICOM keyword: {keyword}")
    return int(tag)


#: The same, by tag: dependent tag -> tag its condition reads.
DEPENDENT_TAGS: dict[int, int] = {_tag(d): _tag(c) for d, (c, _) in DEPENDS_ON.items()}
#: Every tag that some condition reads.
CONDITION_TAGS = frozenset(DEPENDENT_TAGS.values())


def dependents_to_remove(present_before: set[int], present_after: set[int]) -> list[int]:
    """Tags of dependent attributes still present whose condition attribute was present in the
    input and has been removed (the input satisfied the condition, the output would not)."""
    return [
        dependent
        for dependent, condition in DEPENDENT_TAGS.items()
        if dependent in present_after
        and condition in present_before
        and condition not in present_after
    ]
