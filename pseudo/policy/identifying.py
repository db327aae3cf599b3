"""Standard attributes that identify a person wherever they are: the fail-closed safety net
for attributes that Table E.1-1 does not list (``defaults.identifying``, docs/policies.md).

An attribute is identifying when it belongs to the Patient, Visit or Person modules (groups
0010 and 0038, Person Identification (0040,1101)-(0040,1104)) or when its dictionary keyword
names a person or a way to reach one (a person, a contact, an address, a telephone number, an
e-mail, a birth) and its VR can hold text.
"""

from __future__ import annotations

import re
from functools import cache

from pydicom.datadict import dictionary_VR, keyword_for_tag

from pseudo.dicom.tags import parse_tag_pattern
from pseudo.policy.table import confidentiality_table

#: Groups of the Patient (0010) and Visit (0038) modules.
IDENTIFYING_GROUPS = frozenset({0x0010, 0x0038})
#: Person Identification Code Sequence, Person's Address, Telephone Numbers, Telecom Information.
PERSON_TAGS = frozenset({0x00401101, 0x00401102, 0x00401103, 0x00401104})
#: Keywords that name a person or a way to reach one ("Name" alone is not enough: a coil, a
#: beam or a pulse sequence has a name too).
PERSON_WORDS = re.compile(
    r"Address|Telephone|Telecom|Email|Contact|Birth|Person|Physician|Operator"
    r"|Performer|Requester|Mother"
)
#: VRs that can hold such text.
TEXT_VRS = frozenset({"LO", "SH", "LT", "ST", "UT", "UC", "UR", "PN"})
#: Keywords matching PERSON_WORDS that name no person (schemes, codes, kinds of things).
NOT_A_PERSON = re.compile(r"Scheme|Code|Algorithm|Manufacturer|Model|Type|Class|Label|Protocol")


@cache
def is_identifying(tag: int) -> bool:
    """Whether the standard attribute ``tag`` identifies a person (see the module docstring)."""
    if tag >> 16 in IDENTIFYING_GROUPS or tag in PERSON_TAGS:
        return True
    keyword = keyword_for_tag(tag)
    if not keyword or not PERSON_WORDS.search(keyword) or NOT_A_PERSON.search(keyword):
        return False
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return False
    return bool(TEXT_VRS.intersection(vr.split(" or ")))


@cache
def identity_attributes() -> tuple[tuple[int, str], ...]:
    """(tag, VR) of the attributes that carry the patient's identity, as Table E.1-1 tells:
    its rows of the Patient (0010) and Visit (0038) groups that no option of the profile may
    keep (names, IDs and their issuers, other IDs, insurance plan, medical record locator,
    address, telephone, birth date...). Patient characteristics (sex, age, size, weight) and
    descriptions, which an option may keep, are not identity. A file says Patient Identity
    Removed = YES only when the policy removes or replaces every one of them."""
    found = []
    for row in confidentiality_table().rows:
        pattern = parse_tag_pattern(row.tag) if row.tag != "private" else None
        if pattern is None or not pattern.is_exact or row.options:
            continue
        if pattern.value >> 16 in IDENTIFYING_GROUPS:
            found.append((pattern.value, row.vr or "LO"))
    return tuple(sorted(found))
