"""Groups of value representations that the actions treat alike."""

#: VRs holding free text or names (the ``clean`` and ``substitute`` actions work on them).
TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "UR"})
#: VRs holding dates that a patient's offset moves.
DATE_VRS = frozenset({"DA", "DT"})
#: Other VRs whose values are character strings.
STRING_VRS = frozenset({"AS", "DA", "DS", "DT", "IS", "TM", "UI"})
