"""What pseudo relies on in pydicom beyond its documented API: when pydicom is upgraded, this is
the file that must pass.

Each test pins one assumption, named for it. The private names themselves are reached only
through :mod:`pseudo.io.pydicom_internals`; the rest are behaviours of public functions that the
fast reader (:mod:`pseudo.io.headscan`), the fast writer (:func:`pseudo.io.dicomio.encode`) and
the walk over raw elements depend on to the byte. That the fast reader builds the data set
pydicom builds, element for element, over every file at hand (pydicom's bundled files, the
corpora, the hostile cases), is ``tests/test_headscan.py``; a few files are read both ways here
as well, with its comparison.
That the raw sequence reader (:mod:`pseudo.io.rawsequence`) gives the elements pydicom puts in a
sequence's items, with their encodings, is ``tests/test_rawsequence.py``.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pydicom
import pydicom.data
import pytest
from pydicom import config
from pydicom.charset import default_encoding
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement, empty_value_for_VR
from pydicom.dataset import Dataset
from pydicom.filereader import data_element_generator
from pydicom.tag import BaseTag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from pseudo.io import headscan
from pseudo.io.dicomio import encode, new_file_meta, raw_elements, raw_uid
from pseudo.io.pydicom_internals import (
    character_set,
    dictionary_entries,
    element_at,
    element_map,
    inherit_character_set,
    new_raw_element,
    quiet_pydicom,
    repeater_entries,
)

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"

#: Bundled files of every kind encode meets: Explicit and Implicit VR, Big Endian and Deflated
#: (both left to pydicom), encapsulated pixel data, sequences, private sequences, undefined
#: length, odd lengths, and the character sets ISO_IR 100, ISO_IR 192 and ISO 2022.
ENCODED = [
    "CT_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_padded.dcm",
    "image_dfl.dcm",
    "JPEG2000.dcm",
    "reportsi.dcm",
    "rtplan.dcm",
    "priv_SQ.dcm",
    "UN_sequence.dcm",
    "SC_rgb_small_odd.dcm",
    "J2K_pixelrep_mismatch.dcm",
    "waveform_ecg.dcm",
]


def _bundled(name: str) -> Path:
    """One of pydicom's bundled test files (never downloaded: the tests run offline)."""
    path = TEST_FILES / name
    if not path.is_file():
        pytest.skip(f"{name} is not bundled with this pydicom")
    return path


def _explicit(tag: int, vr: str, value: bytes) -> bytes:
    """One element in Explicit VR Little Endian."""
    if vr in ("OB", "OW", "SQ", "UN", "UT", "UC", "UR"):
        return struct.pack("<HH2sHL", tag >> 16, tag & 0xFFFF, vr.encode(), 0, len(value)) + value
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), len(value)) + value


def _read_one(data: bytes, implicit: bool = False) -> RawDataElement:
    """The single element in ``data``, as pydicom's element generator reads it."""
    (element,) = data_element_generator(io.BytesIO(data), implicit, True)
    assert isinstance(element, RawDataElement)
    return element


def _pydicom_bytes(ds: Dataset) -> bytes:
    out = io.BytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


# -- a data set's element mapping (element_map: Dataset._dict) -------------------------------


def test_dataset_keeps_raw_elements_in_its_element_map_until_accessed() -> None:
    """The walk, the UID look-ups and the reader's checks read ``element_map`` to see an
    element without converting it: dcmread leaves every element raw there (with its position)
    but the Specific Character Set (which reading the character set converts, as
    ``character_set`` does for headscan's data set), ``get_item`` does not convert, and looking
    an element up replaces it there by its conversion."""
    ds = pydicom.dcmread(_bundled("CT_small.dcm"), stop_before_pixels=True)
    elements = element_map(ds)
    tag = BaseTag(0x00100010)
    assert [t for t, e in elements.items() if not isinstance(e, RawDataElement)] == [0x00080005]
    raw = elements[tag]
    assert isinstance(raw, RawDataElement) and isinstance(raw.value, bytes)
    held: object = ds.get_item(tag)  # pydicom types it DataElement; it is the raw tuple
    assert held is raw and elements[tag] is raw
    assert raw.value_tell > 0 and raw.length == len(raw.value)
    converted = ds[tag]
    assert isinstance(converted, DataElement) and elements[tag] is converted
    assert str(converted.value) == raw.value.decode().rstrip(" ")
    assert list(elements) == list(ds.keys())
    assert element_at(ds, 0x00100020) is elements[BaseTag(0x00100020)], "a plain int finds it"
    assert element_at(ds, 0x00100021) is None


def test_an_element_stored_in_the_element_map_is_read_and_written_as_given() -> None:
    """The raw ASCII shortcut (pseudo.deid.actions) replaces a raw element by a copy with new
    bytes, straight into the mapping: pydicom then decodes and writes the new bytes."""
    ds = pydicom.dcmread(_bundled("CT_small.dcm"), stop_before_pixels=True)
    tag = BaseTag(0x00080020)  # Study Date, DA
    raw = element_map(ds)[tag]
    assert isinstance(raw, RawDataElement)
    element_map(ds)[tag] = raw._replace(length=8, value=b"20000101")
    written = _pydicom_bytes(ds)
    assert _explicit(tag, "DA", b"20000101") in written
    assert ds.StudyDate == "20000101"


def test_converting_a_shared_raw_element_replaces_it_in_that_data_set_only() -> None:
    """The de-identification marks are the same raw tuples put in every output data set
    (``element_map(ds).update(marks)``): converting one in one data set must leave the others'
    as they are."""
    raw = _read_one(_explicit(0x00120062, "CS", b"YES "))
    first, second = Dataset(), Dataset()
    for ds in (first, second):
        ds.set_original_encoding(False, True, default_encoding)
        element_map(ds).update({raw.tag: raw})
    first.PatientIdentityRemoved = "NO"
    assert element_map(second)[raw.tag] is raw
    assert second.PatientIdentityRemoved == "YES"


# -- character sets (character_set, inherit_character_set) -----------------------------------


def test_character_set_is_the_data_sets_own_else_the_inherited_one() -> None:
    """``character_set`` gives the Python encodings of the Specific Character Set, else those
    inherited (pydicom's default for a top-level data set); it converts a raw Specific
    Character Set in place, as dcmread leaves it."""
    raw = _read_one(_explicit(0x00080005, "CS", b"ISO_IR 100"))
    read = Dataset({raw.tag: raw})
    assert character_set(read) == ["latin_1"]
    assert isinstance(element_map(read)[raw.tag], DataElement)
    ds = Dataset()
    assert character_set(ds) == default_encoding
    ds.SpecificCharacterSet = "ISO_IR 192"
    assert character_set(ds) == ["UTF8"]
    holder = Dataset()
    inherit_character_set(holder, character_set(ds))
    assert character_set(holder) == ["UTF8"]
    holder.SpecificCharacterSet = "ISO_IR 100"
    assert character_set(holder) == ["latin_1"]


def test_items_of_a_sequence_inherit_the_character_set_as_inherit_character_set_sets_it() -> None:
    """The walk puts dropped elements in a data set of their own that must decode them as
    their data set does: pydicom does the same for the items of a sequence."""
    ds = pydicom.dcmread(_bundled("reportsi.dcm"), stop_before_pixels=True)
    assert character_set(ds) == ["latin_1"]
    item = ds.ContentSequence[0]
    assert "SpecificCharacterSet" not in item and character_set(item) == character_set(ds)
    ds.SpecificCharacterSet = "ISO_IR 192"

    name = "Müller^Jürgen".encode()
    raw = RawDataElement(BaseTag(0x00100010), "PN", len(name), name, 0, False, True)
    holder = Dataset({raw.tag: raw})
    holder.set_original_encoding(False, True, character_set(ds))
    inherit_character_set(holder, character_set(ds))
    assert str(holder.PatientName) == "Müller^Jürgen"


# -- the data dictionaries (dictionary_entries, repeater_entries) ----------------------------


def test_dictionary_entries_have_vr_vm_name_retired_keyword() -> None:
    """The policy checks read an entry as (VR, VM, name, retired, keyword), keyed by tag."""
    entries = dictionary_entries()
    assert entries[0x00100010] == ("PN", "1", "Patient's Name", "", "PatientName")
    assert entries[0x00080040] == ("US", "1", "Data Set Type", "Retired", "DataSetType")
    assert len(entries) > 4000
    for tag, entry in entries.items():
        assert isinstance(tag, int) and len(entry) == 5 and all(isinstance(f, str) for f in entry)
        assert entry[3] in ("", "Retired")
    assert dictionary_VR(0x00100010) == entries[0x00100010][0]
    assert keyword_for_tag(0x00100010) == entries[0x00100010][4]


def test_repeater_entries_are_keyed_by_masks_with_x_for_repeating_digits() -> None:
    """Repeating groups (overlays, curves...) are keyed ``"60xx3000"``; pseudo parses the mask
    as a tag pattern and reads the entry as the dictionary's."""
    entries = repeater_entries()
    assert entries["60xx3000"][0] == "OB or OW" and entries["60xx3000"][4] == "OverlayData"
    for mask, entry in entries.items():
        assert len(mask) == 8 and "x" in mask and int(mask.replace("x", "0"), 16) >= 0
        assert len(entry) == 5 and all(isinstance(f, str) for f in entry)


# -- validation modes (quiet_pydicom) --------------------------------------------------------


def test_validation_modes_are_stored_unset_as_none() -> None:
    """``quiet_pydicom`` saves and restores the stored modes: an unset mode is stored as None
    (and read as WARN), so that restoring None leaves it unset, as it was."""
    fresh = config.Settings()
    assert fresh._reading_validation_mode is None
    assert fresh.reading_validation_mode == config.WARN
    fresh.reading_validation_mode = config.IGNORE
    fresh._reading_validation_mode = None
    assert fresh.reading_validation_mode == config.WARN
    assert hasattr(fresh, "_writing_validation_mode")

    settings = config.settings
    stored = settings._reading_validation_mode, settings._writing_validation_mode
    with quiet_pydicom():
        assert settings.reading_validation_mode == config.IGNORE
        assert settings.writing_validation_mode == config.IGNORE
    assert (settings._reading_validation_mode, settings._writing_validation_mode) == stored


# -- what the fast reader builds (pseudo.io.headscan) ----------------------------------------


def test_raw_data_element_fields_are_the_ones_headscan_builds() -> None:
    """headscan builds ``RawDataElement(tag, VR, length, value, value_tell, implicit, little)``
    positionally, the rest left to their defaults: pydicom's generator builds equal tuples."""
    assert RawDataElement._fields[:7] == (
        "tag",
        "VR",
        "length",
        "value",
        "value_tell",
        "is_implicit_VR",
        "is_little_endian",
    )
    tag = BaseTag(0x00100020)
    explicit = _read_one(_explicit(tag, "LO", b"ID01"))
    assert explicit == RawDataElement(tag, "LO", 4, b"ID01", 8, False, True)
    implicit = _read_one(struct.pack("<HHL", 0x0010, 0x0020, 4) + b"ID01", implicit=True)
    assert implicit == RawDataElement(tag, None, 4, b"ID01", 8, True, True)
    long_vr = _read_one(_explicit(0x00091010, "OB", b"\x01\x02"))
    assert long_vr == RawDataElement(BaseTag(0x00091010), "OB", 2, b"\x01\x02", 12, False, True)


def test_new_raw_element_makes_the_named_tuple_its_constructor_makes() -> None:
    """The readers make raw elements with ``tuple.__new__`` (:data:`new_raw_element`): the
    same class, fields and defaults (``is_raw`` true, ``is_buffered`` false) as the named
    tuple's own constructor."""
    # (the first seven fields: the test above)
    assert RawDataElement._fields[7:] == ("is_raw", "is_buffered")
    assert RawDataElement._field_defaults == {"is_raw": True, "is_buffered": False}
    tag = BaseTag(0x00100020)
    made = new_raw_element((tag, "LO", 4, b"ID01", 8, False, True, True, False))
    expected = RawDataElement(tag, "LO", 4, b"ID01", 8, False, True)
    assert made.__class__ is RawDataElement
    assert made == expected and made.is_raw and not made.is_buffered


@pytest.mark.parametrize("vr", ["OB", "US", "AT", "PN", "LO", "UI", "DA"])
def test_an_empty_value_is_read_raw_as_empty_value_for_vr(vr: str) -> None:
    """A zero-length value is read as ``empty_value_for_VR(VR, raw=True)`` (None for binary
    VRs, ``b""`` for text): headscan gives the same, and lists the None ones for conversion."""
    element = _read_one(_explicit(0x00091010, vr, b""))
    assert element.value == empty_value_for_VR(vr, raw=True) == headscan._empty(vr)
    implicit = _read_one(struct.pack("<HHL", 0x0009, 0x1010, 0), implicit=True)
    assert implicit.value is None and headscan._empty(None) is None


@pytest.mark.parametrize(
    "name", ["CT_small.dcm", "MR_small_implicit.dcm", "JPEG2000.dcm", "no_meta_group_length.dcm"]
)
def test_the_file_meta_reader_converts_the_first_element_group_length_and_syntax(
    name: str,
) -> None:
    """dcmread converts the file meta's first element (its encoding check), its group length
    and its transfer syntax, and leaves the others raw: headscan converts the same ones."""
    meta = pydicom.dcmread(_bundled(name), stop_before_pixels=True).file_meta
    elements = element_map(meta)
    converted = {int(t) for t, e in elements.items() if not isinstance(e, RawDataElement)}
    expected = {int(next(iter(elements))), 0x00020000, 0x00020010} & {int(t) for t in elements}
    assert converted == expected


def test_the_element_generator_reads_an_undefined_length_element_to_its_delimiter() -> None:
    """headscan hands an undefined-length element to ``data_element_generator`` and expects
    the stream left just after its sequence delimiter, the element converted."""
    item = _explicit(0x00080100, "SH", b"CODE")
    sequence = (
        struct.pack("<HH2sHL", 0x0008, 0x1140, b"SQ", 0, 0xFFFFFFFF)
        + struct.pack("<HHL", 0xFFFE, 0xE000, len(item))
        + item
        + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    )
    stream = io.BytesIO(sequence + _explicit(0x00100010, "PN", b"DOE "))
    element = next(data_element_generator(stream, False, True, encoding=default_encoding))
    assert stream.tell() == len(sequence)
    assert isinstance(element, DataElement) and element.VR == "SQ"
    assert element.value[0].CodeValue == "CODE"


def test_headscan_reads_what_pydicom_reads() -> None:
    """A few bundled files read both ways (tests/test_headscan.py reads every one)."""
    from tests.test_headscan import _same

    names = ["CT_small.dcm", "MR_small_implicit.dcm", "JPEG2000.dcm", "reportsi.dcm"]
    assert all(_same(_bundled(name)) for name in names)


# -- what the fast writer writes (pseudo.io.dicomio.encode) ----------------------------------


@pytest.mark.parametrize("name", ENCODED)
def test_encode_gives_what_pydicom_writes(name: str) -> None:
    """encode writes raw elements itself (tag, VR, length, original bytes), the rest through
    pydicom: byte for byte dcmwrite's output, with the file's own file meta and with the one
    the engine gives (:func:`new_file_meta`).

    dcmwrite also brings the file meta's SOP class and instance in line with the data set's,
    which encode does not: with the file's own meta, only files where they agree compare."""
    with quiet_pydicom():
        ds = pydicom.dcmread(_bundled(name))
        meta = ds.file_meta
        if (meta.get("MediaStorageSOPClassUID"), meta.get("MediaStorageSOPInstanceUID")) == (
            ds.get("SOPClassUID"),
            ds.get("SOPInstanceUID"),
        ):
            expected = _pydicom_bytes(ds)
            assert encode(ds) == expected
        sop_class = str(ds.get("SOPClassUID", "1.2.840.10008.5.1.4.1.1.7"))
        sop_instance = str(ds.get("SOPInstanceUID", "1.2.3.4"))
        ds.file_meta = new_file_meta(
            sop_class, sop_instance, meta.TransferSyntaxUID, "1.2.3.4", "T1"
        )
        expected = _pydicom_bytes(ds)
        assert encode(ds) == expected


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_pydicom_writes_raw_elements_as_read_and_leaves_out_group_lengths_above_6(
    syntax: str,
) -> None:
    """The elements encode writes itself: raw values of short and long VRs, odd and empty, a
    short VR longer than 64 KiB (left to pydicom), and group lengths of groups above 6, which
    pydicom leaves out (as encode does)."""
    implicit = syntax == ImplicitVRLittleEndian
    values = {
        0x00080000: ("UL", b"\x10\x00\x00\x00"),
        0x00080016: ("UI", b"1.2.840.10008.5.1.4.1.1.7\x00"),
        0x00080018: ("UI", b"1.2.3.4\x00"),
        0x00090010: ("LO", b"CREATOR "),
        0x00091001: ("UN", b"\x01\x02\x03"),
        0x00091002: ("OB", b""),
        0x00100000: ("UL", b"\x00\x00\x00\x00"),
        0x00100010: ("PN", b"DOE^JOHN"),
        0x00104000: ("LT", b"x" * 0x10002),
    }
    ds = Dataset()
    for tag, (vr, value) in values.items():
        element_map(ds)[BaseTag(tag)] = RawDataElement(
            BaseTag(tag), None if implicit else vr, len(value), value, 0, implicit, True
        )
    ds.set_original_encoding(implicit, True, character_set(ds))
    ds.file_meta = new_file_meta(
        "1.2.840.10008.5.1.4.1.1.7", "1.2.3.4", pydicom.uid.UID(syntax), "1.2.3.4", "T1"
    )
    ds.preamble = b"\x00" * 128
    with quiet_pydicom():
        expected = _pydicom_bytes(ds)
        assert encode(ds) == expected
        written = pydicom.dcmread(io.BytesIO(expected))
    assert 0x00080000 not in written and 0x00100000 not in written
    assert element_map(written)[BaseTag(0x00104000)].value == b"x" * 0x10002


def test_elements_written_and_read_back_stay_raw_and_write_as_pydicom_does() -> None:
    """``raw_elements`` writes with ``write_dataset`` to a DicomBytesIO whose
    ``is_implicit_VR`` and ``is_little_endian`` say the encoding, and reads back with the
    element generator: raw tuples that encode writes as pydicom writes the data set."""
    ds = Dataset()
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "pseudo"
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.7", "1.2.3.4"
    for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        raws = raw_elements(ds, syntax)
        assert all(isinstance(e, RawDataElement) for e in raws.values())
        implicit = syntax == ImplicitVRLittleEndian
        again = Dataset()
        element_map(again).update(raws)
        again.set_original_encoding(implicit, True, default_encoding)
        again.file_meta = new_file_meta(
            "1.2.840.10008.5.1.4.1.1.7", "1.2.3.4", syntax, "1.2.3.4", "T1"
        )
        again.preamble = b"\x00" * 128
        ds.file_meta, ds.preamble = again.file_meta, again.preamble
        ds.set_original_encoding(implicit, True, default_encoding)
        with quiet_pydicom():
            assert encode(again) == _pydicom_bytes(ds)


def test_a_raw_uid_decodes_as_pydicom_decodes_it() -> None:
    """The UID look-ups read a raw UI value without converting it: the same text pydicom
    gives (padding stripped)."""
    ds = pydicom.dcmread(_bundled("MR_small_implicit.dcm"), stop_before_pixels=True)
    checked = 0
    for tag in list(ds.keys()):
        raw = element_map(ds)[tag]
        if isinstance(raw, RawDataElement) and dictionary_VR(tag) == "UI":
            text = raw_uid(raw)
            assert text == str(ds[tag].value)
            checked += 1
    assert checked >= 3
