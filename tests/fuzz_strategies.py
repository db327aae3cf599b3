"""Hypothesis strategies for generated data sets: random standard attributes of text VRs,
nested sequences, private blocks and character sets, with canaries planted where they must go."""

from __future__ import annotations

import random

from hypothesis import strategies as st
from pydicom._dicom_dict import DicomDictionary
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from tests.fuzzing import base_dataset, plant

TEXT_VRS = ("LO", "SH", "PN", "LT", "ST", "UT", "CS", "DA", "DT", "TM", "UI", "AE", "UC")
_TAGS = sorted(
    tag
    for tag, entry in DicomDictionary.items()
    if entry[0] in TEXT_VRS and entry[3] == "" and keyword_for_tag(tag) and tag >> 16 not in (0, 2)
)
_SEQUENCES = sorted(
    tag for tag, entry in DicomDictionary.items() if entry[0] == "SQ" and entry[3] == ""
)
CHARSETS = [None, "ISO_IR 100", "ISO_IR 192", "ISO_IR 144", "ISO 2022 IR 87", "GB18030"]

_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=40)


@st.composite
def values(draw: st.DrawFn, vr: str) -> str:
    """A value for ``vr``: mostly valid-looking, sometimes not at all."""
    if draw(st.booleans()):
        return draw(_text)
    if vr == "DA":
        return draw(st.from_regex(r"\A(19|20)\d\d(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])\Z"))
    if vr == "DT":
        return draw(st.from_regex(r"\A20\d{6}(\d{6}(\.\d{1,6})?)?([+-]\d{4})?\Z"))
    if vr == "TM":
        return draw(st.from_regex(r"\A([01]\d|2[0-3])[0-5]\d([0-5]\d)?\Z"))
    if vr == "UI":
        return draw(st.from_regex(r"\A1\.2(\.[1-9]\d{0,8}){1,8}\Z"))
    if vr == "PN":
        return "^".join(draw(st.lists(_text, min_size=1, max_size=3)))
    return draw(_text)


@st.composite
def items(draw: st.DrawFn, depth: int = 0) -> Dataset:
    """One data set (or sequence item) of random attributes."""
    ds = Dataset()
    for tag in draw(st.lists(st.sampled_from(_TAGS), max_size=12, unique=True)):
        vr = DicomDictionary[tag][0]
        ds.add_new(tag, vr, draw(values(vr)))
    if depth < 3 and draw(st.booleans()):
        tag = draw(st.sampled_from(_SEQUENCES))
        ds.add_new(tag, "SQ", Sequence(draw(st.lists(items(depth + 1), max_size=3))))
    if draw(st.booleans()):
        block = ds.private_block(
            0x0011 + 2 * draw(st.integers(0, 3)), draw(_text) or "X", create=True
        )
        block.add_new(draw(st.integers(0x10, 0xFF)), "LO", draw(_text))
    return ds


@st.composite
def datasets(draw: st.DrawFn) -> tuple[Dataset, list[str]]:
    """A whole data set with canaries planted; returns it and the canaries."""
    ds = base_dataset()
    charset = draw(st.sampled_from(CHARSETS))
    if charset:
        ds.SpecificCharacterSet = charset
    extra = draw(items())
    for element in extra:
        if element.tag not in ds:
            ds.add(element)
    planted = plant(ds, random.Random(draw(st.integers(0, 2**32))))
    return ds, planted
