"""A matrix of broken and hostile input files, each with the outcome ``pseudo run`` must give.

Every case is built here from pydicom's bundled files or from scratch (nothing is copied from
../shared). ``outcomes`` lists the acceptable statuses: ``quarantined`` (never written, with a
reason), ``skipped`` (not DICOM, listed), ``written`` (processed, where that is safe; the
output is then checked by the tests for what must not survive).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

#: Names that must never survive in any encoding (decoded text, and the bytes of each file).
CHARSET_NAMES = {
    "japanese": ("ISO 2022 IR 13\\ISO 2022 IR 87", "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう", "山田"),
    "korean": ("ISO 2022 IR 149", "Hong^Gildong=洪^吉洞=홍^길동", "홍"),
    # Люксембург^Генрих and Διονυσιος, escaped: their letters look like Latin ones
    "cyrillic": (
        "ISO_IR 144",
        "\u041b\u044e\u043a\u0441\u0435\u043c\u0431\u0443\u0440\u0433^"
        "\u0413\u0435\u043d\u0440\u0438\u0445",
        "\u041b\u044e\u043a\u0441\u0435\u043c\u0431\u0443\u0440\u0433",
    ),
    "utf8": ("ISO_IR 192", "Wang^XiaoDong=王^小東=", "王"),
    "greek": (
        "ISO_IR 126",
        "\u0394\u03b9\u03bf\u03bd\u03c5\u03c3\u03b9\u03bf\u03c2",
        "\u0394\u03b9\u03bf\u03bd\u03c5\u03c3\u03b9\u03bf\u03c2",
    ),
}


@dataclass(frozen=True)
class Case:
    """One hostile input: how to build it, the acceptable outcomes, and a word of the reason."""

    name: str
    build: Callable[[Path], None]
    outcomes: tuple[str, ...]
    reason: str = ""  # expected in the reason of a quarantined or skipped file (lower case)


def _ct() -> Dataset:
    path = get_testdata_file("CT_small.dcm")
    assert isinstance(path, str)
    ds = pydicom.dcmread(path)
    ds.PatientName = "HOSTILE^CASE"
    ds.PatientID = "HOSTILE-0001"
    return ds


def _bytes(ds: Dataset, *, implicit: bool = False) -> bytes:
    buffer = io.BytesIO()
    if implicit:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


_SERIAL = iter(range(1_000_000))


def _minimal(**values: object) -> Dataset:
    """A small, valid Secondary Capture dataset with file meta (a new instance each time)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.7")
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid(entropy_srcs=["hostile", str(next(_SERIAL))])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.10.543.1"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.10.543.1.1"
    ds.PatientName = "HOSTILE^CASE"
    ds.PatientID = "HOSTILE-0002"
    ds.Modality = "OT"
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def _write(data: bytes) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        path.write_bytes(data)

    return build


def _truncated(fraction: float) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        data = _bytes(_ct())
        path.write_bytes(data[: int(len(data) * fraction)])

    return build


def _truncated_at(offset: int) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        path.write_bytes(_bytes(_ct())[:offset])

    return build


def _no_preamble(path: Path) -> None:
    path.write_bytes(_bytes(_ct())[128:])  # starts with "DICM"


def _wrong_transfer_syntax(path: Path) -> None:
    data = bytearray(_bytes(_ct(), implicit=True))
    old, new = b"1.2.840.10008.1.2\x00", b"1.2.840.10008.1.2.2"  # implicit LE -> explicit BE
    index = data.find(old)
    data[index : index + len(old)] = new
    path.write_bytes(bytes(data))


def _bundled(name: str) -> Callable[[Path], None]:
    """One of the malformed files that ship inside pydicom."""

    def build(path: Path) -> None:
        source = get_testdata_file(name)
        assert isinstance(source, str), name
        path.write_bytes(Path(source).read_bytes())

    return build


def _element(group: int, element: int, vr: bytes, value: bytes, *, long: bool = False) -> bytes:
    if long:
        return struct.pack("<HH2sHI", group, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


def _prefix() -> bytes:
    """File meta plus the first few attributes of a valid explicit VR LE data set."""
    ds = _minimal()
    data = _bytes(ds)
    return data[: data.find(b"\x08\x00\x16\x00")]  # up to (0008,0016)


def _tail() -> bytes:
    ds = _minimal()
    data = _bytes(ds)
    return data[data.find(b"\x08\x00\x16\x00") :]


def _open_sequence(path: Path) -> None:
    """A sequence of undefined length whose item and sequence are never closed."""
    item = b"\xfe\xff\x00\xe0\xff\xff\xff\xff" + _element(0x0008, 0x0100, b"SH", b"CODE01")
    sequence = struct.pack("<HH2sHI", 0x0008, 0x1140, b"SQ", 0, 0xFFFFFFFF) + item
    path.write_bytes(_prefix() + _tail() + sequence)


def _deep_sequence(depth: int, element: int = 0xA730) -> Callable[[Path], None]:
    """Sequences nested ``depth`` deep: (0040,A730) Content Sequence, which the basic profile
    removes whole, or (0008,eeee) such as (0008,1140) Referenced Image Sequence, walked."""
    group = 0x0040 if element == 0xA730 else 0x0008

    def build(path: Path) -> None:
        inner = b""
        for _ in range(depth):
            item = b"\xfe\xff\x00\xe0" + struct.pack("<I", len(inner)) + inner
            inner = struct.pack("<HH2sHI", group, element, b"SQ", 0, len(item)) + item
        data = _prefix() + _tail()
        if group == 0x0008:  # in tag order, before (0008,0016)
            data = _prefix() + inner + _tail()
            inner = b""
        path.write_bytes(data + inner)

    return build


def _huge_length(path: Path) -> None:
    """A value that claims 100 MB in a 1 KB file."""
    head = struct.pack("<HH2sHI", 0x0008, 0x2111, b"UT", 0, 100 * 1024 * 1024)
    path.write_bytes(_prefix() + _tail()[:0] + head + b"x" * 600)


def _wrong_vr(path: Path) -> None:
    """Patient's Name declared as US (2 bytes) holding text: the VR does not fit the value."""
    data = _bytes(_minimal())
    index = data.find(b"\x10\x00\x10\x00PN")
    length = struct.unpack("<H", data[index + 6 : index + 8])[0]
    data = data[:index] + b"\x10\x00\x10\x00US" + data[index + 6 :]
    assert length
    path.write_bytes(data)


def _un_vr(path: Path) -> None:
    """Explicit VR UN for standard text attributes (as some converters write)."""
    data = _bytes(_minimal(StudyDescription="CHEST HOSTILE^CASE"))
    index = data.find(b"\x08\x00\x30\x10LO")
    length = struct.unpack("<H", data[index + 6 : index + 8])[0]
    value = data[index + 8 : index + 8 + length]
    replaced = struct.pack("<HH2sHI", 0x0008, 0x1030, b"UN", 0, length) + value
    path.write_bytes(data[:index] + replaced + data[index + 8 + length :])


def _invalid_dates(path: Path) -> None:
    ds = _minimal(
        StudyDate="20230231",
        SeriesDate="2023-01-05",
        AcquisitionDateTime="2023023112",
        ContentDate="00000000",
        StudyTime="256100",
        PatientBirthDate="19501399",
        PatientAge="ABC",
    )
    path.write_bytes(_bytes(ds))


def _long_uid(path: Path) -> None:
    ds = _minimal()
    ds.SOPInstanceUID = "1.2." + "1234567890." * 7 + "1"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path.write_bytes(_bytes(ds))


def _charset(name: str, charset: str | None = None) -> Callable[[Path], None]:
    """A patient with no Patient ID whose name is written in ``name``'s character set (or in
    ``charset``: the same person in another encoding must get the same pseudonym)."""
    default, person, _ = CHARSET_NAMES[name]
    charset = charset or default

    def build(path: Path) -> None:
        ds = _minimal(SpecificCharacterSet=charset.split("\\"), PatientName=person)
        ds.PatientID = ""  # the name is then the basis of the pseudonym
        ds.PatientBirthDate = "19700101"
        ds.StudyDescription = person.split("=")[-1] or person
        path.write_bytes(_bytes(ds))

    return build


def _unknown_charset(path: Path) -> None:
    ds = _minimal(SpecificCharacterSet="ISO_IR 999", PatientName="Ünknown^Cäse")
    ds.PatientID = "HOSTILE-0003"
    path.write_bytes(_bytes(ds))


def _mixed_charset(path: Path) -> None:
    """A data set in ISO_IR 100 whose sequence item declares its own character set."""
    item = Dataset()
    item.SpecificCharacterSet = "ISO_IR 192"
    item.PersonName = "王^小東"
    ds = _minimal(SpecificCharacterSet="ISO_IR 100", PatientName="Müller^Jürgen")
    ds.ContentSequence = Sequence([item])
    path.write_bytes(_bytes(ds))


def _creator_missing(path: Path) -> None:
    """Private data elements with no private creator for their block."""
    ds = _minimal()
    ds.add_new(0x00091001, "LO", "HOSTILE^CASE")
    ds.add_new(0x00091002, "OB", b"HOSTILE-0002\x00\x01")
    path.write_bytes(_bytes(ds))


def _lonely_creator(path: Path) -> None:
    """A private creator whose block holds no element."""
    ds = _minimal()
    ds.private_block(0x0011, "LONELY CREATOR", create=True)
    path.write_bytes(_bytes(ds))


def _no_transfer_syntax(path: Path) -> None:
    """A real CT whose file meta lacks the Transfer Syntax UID (the data is explicit VR LE)."""
    ds = _ct()
    del ds.file_meta.TransferSyntaxUID
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, implicit_vr=False, little_endian=True)
    path.write_bytes(buffer.getvalue())


def _duplicate(path: Path) -> None:
    """Patient ID twice (the second copy is the one a careless reader keeps)."""
    data = _bytes(_minimal())
    index = data.find(b"\x10\x00\x20\x00LO")
    length = struct.unpack("<H", data[index + 6 : index + 8])[0]
    element = data[index : index + 8 + length]
    dup = _element(0x0010, 0x0020, b"LO", b"HOSTILE-DUP1")
    path.write_bytes(data[: index + len(element)] + dup + data[index + len(element) :])
    assert element


def _dicomdir(path: Path) -> None:
    source = get_testdata_file("DICOMDIR")
    assert isinstance(source, str)
    path.write_bytes(Path(source).read_bytes())


def _non_dicom(path: Path) -> None:
    path.write_text("Patient: HOSTILE^CASE, MRN HOSTILE-0002\n" * 20)


def _png(path: Path) -> None:
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 200)


CASES: list[Case] = [
    Case("zero-bytes.dcm", _write(b""), ("skipped",), "not dicom"),
    Case("text-named.dcm", _non_dicom, ("skipped",), "not dicom"),
    Case("png-named.dcm", _png, ("skipped",), "not dicom"),
    Case("truncated-10.dcm", _truncated_at(10), ("skipped",), "not dicom"),
    Case("truncated-131.dcm", _truncated_at(131), ("skipped",), "not dicom"),
    Case("truncated-in-meta.dcm", _truncated_at(170), ("quarantined",), "truncated"),
    Case("truncated-in-header.dcm", _truncated(0.05), ("quarantined",)),
    Case("truncated-in-pixels.dcm", _truncated(0.6), ("quarantined",), "truncated"),
    Case("truncated-last-byte.dcm", _truncated_at(-1), ("quarantined",), "truncated"),
    Case("no-preamble.dcm", _no_preamble, ("written",)),
    Case("no-file-meta.dcm", _bundled("ExplVR_LitEndNoMeta.dcm"), ("written",)),
    Case("wrong-transfer-syntax.dcm", _wrong_transfer_syntax, ("quarantined",)),
    Case("missing-transfer-syntax.dcm", _no_transfer_syntax, ("written",)),
    Case(
        "missing-ts-bundled.dcm", _bundled("meta_missing_tsyntax.dcm"), ("quarantined",), "no sop"
    ),
    # its Number of Frames is not a number: the pixels cannot be examined for burned-in text
    Case("bad-vr-bundled.dcm", _bundled("badVR.dcm"), ("quarantined",), "number of frames"),
    Case("rtplan-truncated.dcm", _bundled("rtplan_truncated.dcm"), ("quarantined",)),
    Case("mr-truncated.dcm", _bundled("MR_truncated.dcm"), ("quarantined",), "truncated"),
    Case("no-meta-bundled.dcm", _bundled("no_meta.dcm"), ("skipped",), "not dicom"),
    Case("un-sequence.dcm", _bundled("UN_sequence.dcm"), ("quarantined",), "no sop"),
    Case("open-sequence.dcm", _open_sequence, ("quarantined",)),
    Case("nested-1000-removed.dcm", _deep_sequence(1000), ("written",)),
    Case("nested-1000-walked.dcm", _deep_sequence(1000, 0x1140), ("quarantined",), "deep"),
    Case("nested-5000-walked.dcm", _deep_sequence(5000, 0x1140), ("quarantined",), "deep"),
    Case("nested-30.dcm", _deep_sequence(30), ("written",)),
    Case("huge-length.dcm", _huge_length, ("quarantined",), "truncated"),
    Case("wrong-vr.dcm", _wrong_vr, ("written",)),
    Case("un-vr.dcm", _un_vr, ("written",)),
    Case("invalid-dates.dcm", _invalid_dates, ("written",)),
    Case("uid-too-long.dcm", _long_uid, ("written",)),
    Case("charset-japanese.dcm", _charset("japanese"), ("written",)),
    Case("charset-japanese-as-utf8.dcm", _charset("japanese", "ISO_IR 192"), ("written",)),
    Case("charset-korean.dcm", _charset("korean"), ("written",)),
    Case("charset-cyrillic.dcm", _charset("cyrillic"), ("written",)),
    Case("charset-utf8.dcm", _charset("utf8"), ("written",)),
    Case("charset-greek.dcm", _charset("greek"), ("written",)),
    Case("charset-unknown.dcm", _unknown_charset, ("written",)),
    Case("charset-mixed.dcm", _mixed_charset, ("written",)),
    Case("private-no-creator.dcm", _creator_missing, ("written",)),
    Case("creator-no-block.dcm", _lonely_creator, ("written",)),
    Case("duplicate-element.dcm", _duplicate, ("quarantined",), "twice"),
    Case("DICOMDIR", _dicomdir, ("skipped",), "dicomdir"),
]


def build_matrix(folder: Path) -> dict[str, Path]:
    """Write every case into ``folder``; return name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for case in CASES:
        path = folder / case.name
        case.build(path)
        paths[case.name] = path
    return paths
