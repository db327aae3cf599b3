"""Redaction of boxes in pixel data, for every transfer syntax and layout the corpora hold.

Each case takes a real image, draws text-like strokes into it (written back in its own
transfer syntax where pydicom can encode it), redacts a box around them, writes the output as
the pipeline does, and checks that the box is blank, that everything outside it is unchanged
(every byte for native data, every decoded value for encapsulated data), that pydicom decodes
the output and that dcmdump reads it.
"""

from __future__ import annotations

import copy
import filecmp
import io
import os
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pydicom
import pydicom.data
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSLossless,
    JPEGLSNearLossless,
)

from pseudo.io.dicomio import read_source, write_temporary
from pseudo.pixels.boxes import Box
from pseudo.pixels.codecs import LOSSY_METHOD, NATIVE
from pseudo.pixels.failures import UndecodablePixels, UnsupportedPixels
from pseudo.pixels.frames import display_gray8, iter_frames, thumbnail
from pseudo.pixels.graphics import remove_icons_and_overlays
from pseudo.pixels.jpeg_scan import sequential_scans
from pseudo.pixels.redact import blank_value, redact
from tests.conftest import PUBLIC, need

PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"
MARGIN = 2


class Case(NamedTuple):
    """One image: the first file of the corpora with its syntax and layout."""

    path: Path
    syntax: str
    layout: str


def _header(path: Path) -> Dataset | None:
    """The header of a DICOM file that has pixel data; None for any other file."""
    try:
        with warnings.catch_warnings(), path.open("rb") as handle:
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(handle, stop_before_pixels=True)
            if str(ds.file_meta.get("TransferSyntaxUID", "")) == DeflatedExplicitVRLittleEndian:
                return ds if "PixelData" in pydicom.dcmread(path) else None
            position = handle.tell()
            return ds if handle.seek(0, os.SEEK_END) > position else None
    except Exception:
        return None


def _cases() -> list[Case]:
    """One case per (transfer syntax, bits, samples, planar, multi-frame, photometric)."""
    files = sorted(PYDICOM_FILES.glob("*.dcm"))
    if PUBLIC.exists():
        files = sorted(PUBLIC.rglob("*.dcm")) + files
    cases: dict[tuple[str, str], Case] = {}
    for path in files:
        ds = _header(path)
        meta = getattr(ds, "file_meta", None)
        if ds is None or meta is None or "TransferSyntaxUID" not in meta or "Rows" not in ds:
            continue
        try:
            layout = "{}b-{}s-p{}-{}f-{}".format(
                ds.get("BitsAllocated"),
                ds.get("SamplesPerPixel"),
                ds.get("PlanarConfiguration", 0),
                "n" if int(ds.get("NumberOfFrames", 1) or 1) > 1 else "1",
                str(ds.get("PhotometricInterpretation", "")).strip(),
            )
        except ValueError:
            continue  # a malformed header: the hostile-input tests have it
        key = (str(meta.TransferSyntaxUID), layout)
        cases.setdefault(key, Case(path, str(meta.TransferSyntaxUID), layout))
    return list(cases.values())


CASES = _cases()


def _frames(ds: Dataset) -> np.ndarray:
    """All decoded frames as (frames, rows, columns[, samples])."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        array = ds.pixel_array
    if int(ds.get("NumberOfFrames", 1) or 1) == 1:
        array = array[np.newaxis]
    return np.asarray(array)


def _boxes(ds: Dataset) -> list[Box]:
    """A box in every frame, and for a multi-frame image one more in its second frame only."""
    rows, columns = int(ds.Rows), int(ds.Columns)
    boxes = [Box(columns // 4, rows // 4, columns // 4 + max(1, columns // 5), rows // 4 + 2)]
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        boxes.append(Box(columns // 2, rows // 2, columns - 1, rows - 1, frame=1))
    return boxes


def _mask(shape: tuple[int, ...], boxes: list[Box]) -> np.ndarray:
    """True where a box (grown by the margin, clipped) covers a pixel of a frame."""
    mask = np.zeros(shape[:3], dtype=bool)
    for box in boxes:
        grown = box.grown(MARGIN, shape[2], shape[1])
        frames = range(shape[0]) if box.frame is None else [box.frame]
        for index in frames:
            mask[index, grown.y1 : grown.y2 + 1, grown.x1 : grown.x2 + 1] = True
    return mask


def _draw_text(frames: np.ndarray, boxes: list[Box], top: int) -> None:
    """Strokes of a bright glyph-like pattern in each box, where the boxes apply."""
    for box in boxes:
        targets = range(frames.shape[0]) if box.frame is None else [box.frame]
        for index in targets:
            region = frames[index, box.y1 : box.y2 + 1, box.x1 : box.x2 + 1]
            pattern = (np.indices(region.shape[:2]).sum(axis=0) % 3) == 0
            region[pattern] = top


def _with_text(case: Case, tmp_path: Path) -> Path:
    """A copy of the case's file with text drawn into its boxes, in its own syntax where it
    can be written (native, RLE, JPEG-LS, JPEG 2000 by pydicom; JPEG baseline by Pillow); the
    file as it is otherwise (JPEG Lossless: no encoder; its image content fills the box)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(case.path)
    syntax = UID(case.syntax)
    target = tmp_path / "input.dcm"
    bits = int(ds.BitsAllocated)
    top = (1 << int(ds.get("BitsStored") or bits) - 1) - 1 if bits > 1 else 1
    try:
        if syntax in NATIVE:
            _draw_native(ds, syntax, top)
        elif syntax == JPEGBaseline8Bit:
            _draw_jpeg(ds, top)
        else:
            frames = _frames(ds).copy()
            _draw_text(frames, _boxes(ds), top)
            single = frames[0] if frames.shape[0] == 1 else frames
            options: dict[str, object] = {"jls_error": 1} if syntax == JPEGLSNearLossless else {}
            options |= {"j2k_cr": [4]} if syntax == JPEG2000 else {}
            if frames.ndim == 4:
                ds.PhotometricInterpretation = "RGB"
            ds.compress(syntax, single, **options)  # type: ignore[arg-type]
        ds.save_as(target)
        return target
    except Exception:
        pass  # pydicom cannot write this one: the original image is used
    shutil.copy(case.path, target)
    return target


def _draw_native(ds: Dataset, syntax: UID, top: int) -> None:
    """Draw the text into native pixel data, in its own byte order and packing."""
    bits = int(ds.BitsAllocated)
    data = np.frombuffer(bytearray(ds.PixelData), np.uint8)
    swapped = syntax == ExplicitVRBigEndian and bits == 8 and ds["PixelData"].VR == "OW"
    if swapped:
        data = data.reshape(-1, 2)[:, ::-1].ravel()
    if bits == 1:
        count = int(ds.get("NumberOfFrames", 1) or 1)
        unpacked = np.unpackbits(data, bitorder="little")
        size = count * int(ds.Rows) * int(ds.Columns)
        _draw_text(unpacked[:size].reshape(count, int(ds.Rows), int(ds.Columns)), _boxes(ds), 1)
        ds.PixelData = np.packbits(unpacked, bitorder="little").tobytes()
        return
    if _subsampled(ds):  # Y1 Y2 Cb Cr: bright luma in the pairs of the boxes
        count, rows, columns = int(ds.get("NumberOfFrames", 1) or 1), int(ds.Rows), int(ds.Columns)
        pairs = data.reshape(count, rows, columns // 2, 4)
        luma = pairs[..., :2].reshape(count, rows, columns)  # a copy: written back below
        _draw_text(luma, _boxes(ds), 255)
        pairs[..., :2] = luma.reshape(count, rows, columns // 2, 2)
        ds.PixelData = data.tobytes()
        return
    frames = _raw_frames(ds, syntax, data)
    _draw_text(frames, _boxes(ds), top)
    if swapped:
        data = data.reshape(-1, 2)[:, ::-1].ravel()
    ds.PixelData = data.tobytes()


def _subsampled(ds: Dataset) -> bool:
    """Native YBR_FULL_422: two pixels share a chroma, so redaction blanks whole pairs."""
    syntax = UID(str(ds.file_meta.TransferSyntaxUID))
    return syntax in NATIVE and str(ds.PhotometricInterpretation).strip() == "YBR_FULL_422"


def _draw_jpeg(ds: Dataset, top: int) -> None:
    """Draw the text into a JPEG baseline image, encoded again by Pillow (4:2:2 for colour)."""
    frames = _frames(ds).copy()
    _draw_text(frames, _boxes(ds), top)
    encoded = []
    for frame in frames:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, "JPEG", quality=95, subsampling=1)
        encoded.append(buffer.getvalue())
    ds.PixelData = encapsulate(encoded)
    ds["PixelData"].VR = "OB"
    if frames.ndim == 4:
        ds.PhotometricInterpretation = "YBR_FULL_422"


def _raw_frames(ds: Dataset, syntax: UID, data: np.ndarray) -> np.ndarray:
    """The stored frames of native pixel data, as (frames, rows, columns[, samples]): a
    writable view of ``data``, its bytes in their own order."""
    order = ">" if syntax == ExplicitVRBigEndian else "<"
    kind = "i" if int(ds.get("PixelRepresentation", 0) or 0) else "u"
    dtype = np.dtype(f"{order}{kind}{int(ds.BitsAllocated) // 8}")
    count = int(ds.get("NumberOfFrames", 1) or 1)
    rows, columns, samples = int(ds.Rows), int(ds.Columns), int(ds.SamplesPerPixel)
    size = count * rows * columns * samples
    flat = data[: size * dtype.itemsize].view(dtype)
    if samples == 1:
        return flat.reshape(count, rows, columns)
    if int(ds.get("PlanarConfiguration", 0) or 0) == 1:
        return flat.reshape(count, samples, rows, columns).transpose(0, 2, 3, 1)
    return flat.reshape(count, rows, columns, samples)


def _dcmdump_reads(path: Path) -> None:
    dcmdump = shutil.which("dcmdump")
    if dcmdump is None:
        if os.environ.get("PSEUDO_CI"):
            pytest.fail("dcmdump (dcmtk) is required in CI (PSEUDO_CI is set)")
        pytest.skip("dcmdump not found: install dcmtk (apt-get install dcmtk)")
    result = subprocess.run([dcmdump, "-q", "-E", str(path)], capture_output=True, check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[:300]


def _pydicom_decodes(path: Path) -> bool:
    try:
        _frames(pydicom.dcmread(path))
    except Exception:
        return False
    return True


def test_every_transfer_syntax_of_the_public_corpus_is_a_case() -> None:
    if not PUBLIC.exists():
        pytest.skip(f"public DICOM corpus not found at {PUBLIC} (../shared beside the repo)")
    syntaxes = set()
    for path in PUBLIC.rglob("*.dcm"):
        ds = _header(path)
        meta = getattr(ds, "file_meta", None)
        if ds is not None and meta is not None and "TransferSyntaxUID" in meta:
            syntaxes.add(str(meta.TransferSyntaxUID))
    assert syntaxes <= {case.syntax for case in CASES}
    assert len(syntaxes) >= 11  # native x4, RLE, JPEG x3, JPEG-LS near-lossless, J2K x2


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{UID(c.syntax).name}-{c.layout}")
def test_a_box_of_text_is_blanked_and_nothing_else_changes(case: Case, tmp_path: Path) -> None:
    path = _with_text(case, tmp_path)
    source = read_source(path)
    ds = source.dataset
    boxes = _boxes(ds)
    if not _pydicom_decodes(path):
        # what cannot be decoded cannot be redacted: refused, nothing left behind
        with pytest.raises((UndecodablePixels, UnsupportedPixels)):
            redact(ds, source.pixels, boxes, tmp_path)
        assert not list(tmp_path.glob(".pseudo-pixels-*"))
        return
    before = _frames(pydicom.dcmread(path))
    photometric = str(ds.PhotometricInterpretation).strip()
    redaction = redact(ds, source.pixels, boxes, tmp_path)
    output_ds = copy.deepcopy(ds)
    redaction.apply(output_ds)
    written, _ = write_temporary(output_ds, tmp_path, redaction.pixels, sync=False)
    redaction.discard()
    out = pydicom.dcmread(written)
    after = _frames(out)
    assert after.shape == before.shape
    mask = _mask(after.shape, boxes)
    if _subsampled(ds):
        mask = np.repeat(mask[..., 0::2] | mask[..., 1::2], 2, axis=-1)
    if not filecmp.cmp(path, case.path, shallow=False):  # text was drawn: the box had it
        assert np.ptp(before[mask]) > 0
    assert np.array_equal(after[~mask], before[~mask]), "a value outside the boxes changed"
    expected = blank_value(ds, "RGB" if after.ndim == 4 else photometric)
    inside = after[mask].reshape(-1, *after.shape[3:])
    assert (inside == np.array(expected, dtype=after.dtype)).all(), "a box is not blank"
    assert int(out.get("NumberOfFrames", 1) or 1) == int(ds.get("NumberOfFrames", 1) or 1)
    assert all(len(note) <= 64 for note in redaction.notes)  # De-identification Method: LO
    if UID(case.syntax) in NATIVE:
        assert redaction.syntax == case.syntax
        _only_box_bytes_changed(pydicom.dcmread(path), out, mask)
    else:
        assert UID(str(out.file_meta.TransferSyntaxUID)) == redaction.syntax
        assert redaction.syntax.is_encapsulated or redaction.syntax == "1.2.840.10008.1.2.1"
        if UID(case.syntax) in LOSSY_METHOD:
            assert out.LossyImageCompression == "01" and out.LossyImageCompressionMethod
            assert not redaction.syntax.is_encapsulated or redaction.syntax not in LOSSY_METHOD
    _dcmdump_reads(written)


def _only_box_bytes_changed(before: Dataset, after: Dataset, mask: np.ndarray) -> None:
    """Every byte of native pixel data outside the boxes is the input's."""
    old, new = np.frombuffer(before.PixelData, np.uint8), np.frombuffer(after.PixelData, np.uint8)
    assert old.size == new.size
    bits, samples = int(before.BitsAllocated), int(before.get("SamplesPerPixel", 1) or 1)
    if _subsampled(before):  # a pair of pixels is 4 bytes
        allowed = np.repeat(mask[..., 0::2].ravel(), 4)
        assert not ((old != new)[: allowed.size] & ~allowed).any(), "a byte outside changed"
        return
    sample_mask = np.repeat(mask[..., np.newaxis], samples, axis=3) if samples > 1 else mask
    if samples > 1 and int(before.get("PlanarConfiguration", 0) or 0) == 1:
        sample_mask = sample_mask.transpose(0, 3, 1, 2)
    flat = sample_mask.ravel()
    if bits == 1:
        allowed = np.zeros(old.size * 8, dtype=bool)
        allowed[: flat.size] = flat
        allowed_bytes = allowed.reshape(-1, 8).any(axis=1)
    else:
        allowed_bytes = np.zeros(old.size, dtype=bool)
        allowed_bytes[: flat.size * bits // 8] = np.repeat(flat, bits // 8)
    if (
        UID(str(before.file_meta.TransferSyntaxUID)) == ExplicitVRBigEndian
        and bits == 8
        and before["PixelData"].VR == "OW"
    ):
        allowed_bytes = allowed_bytes.reshape(-1, 2)[:, ::-1].ravel()
    changed = old != new
    assert not (changed & ~allowed_bytes).any(), "a byte outside the boxes changed"


def test_redaction_is_deterministic(tmp_path: Path) -> None:
    path = PYDICOM_FILES / "SC_rgb_rle_2frame.dcm"
    source = read_source(path)
    boxes = _boxes(source.dataset)
    first = redact(source.dataset, source.pixels, boxes, tmp_path)
    second = redact(source.dataset, source.pixels, boxes, tmp_path)
    assert first.pixels and second.pixels
    assert first.pixels.path.read_bytes() == second.pixels.path.read_bytes()
    assert first.boxes == second.boxes and first.frames == (0, 1)


def test_jpeg_lossless_is_written_as_jpeg_ls_lossless_and_said_so(tmp_path: Path) -> None:
    path = PYDICOM_FILES / "SC_rgb_jpeg_gdcm.dcm"
    source = read_source(path)
    redaction = redact(source.dataset, source.pixels, [Box(0, 0, 3, 3)], tmp_path)
    assert redaction.syntax == JPEGLSLossless
    assert "JPEGLosslessSV1 to JPEGLSLossless" in redaction.notes[0]
    assert all(len(note) <= 64 for note in redaction.notes)
    assert redaction.attributes.get("PhotometricInterpretation", "RGB") == "RGB"


def test_a_lossy_image_is_written_losslessly_and_stays_marked_lossy(tmp_path: Path) -> None:
    path = PYDICOM_FILES / "SC_rgb_jpeg_dcmtk.dcm"
    source = read_source(path)
    redaction = redact(source.dataset, source.pixels, [Box(0, 0, 3, 3)], tmp_path)
    assert redaction.syntax == JPEGLSLossless
    assert redaction.attributes["LossyImageCompression"] == "01"
    ds = copy.deepcopy(source.dataset)
    del ds.LossyImageCompressionMethod
    redaction = redact(ds, source.pixels, [Box(0, 0, 3, 3)], tmp_path)
    assert redaction.attributes["LossyImageCompressionMethod"] == "ISO_10918_1"


def test_corrupt_encapsulated_pixel_data_is_refused_and_nothing_left(tmp_path: Path) -> None:
    original = PYDICOM_FILES / "MR_small_RLE.dcm"
    data = bytearray(original.read_bytes())
    item = data.rindex(b"\xfe\xff\x00\xe0")  # the frame's item: its RLE header follows
    data[item + 8 : item + 16] = (15).to_bytes(4, "little") + (9999).to_bytes(4, "little")
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(bytes(data))
    source = read_source(broken)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UndecodablePixels):
        redact(source.dataset, source.pixels, [Box(0, 0, 3, 3)], out)
    assert not list(out.iterdir())


def test_a_box_in_a_frame_the_image_lacks_is_refused(tmp_path: Path) -> None:
    path = PYDICOM_FILES / "CT_small.dcm"
    source = read_source(path)
    with pytest.raises(UnsupportedPixels, match="frame 3 of 1"):
        redact(source.dataset, source.pixels, [Box(0, 0, 3, 3, frame=3)], tmp_path)


def test_the_gray_view_is_what_a_viewer_shows() -> None:
    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME1"
    frame = np.array([[0, 100], [200, 400]], dtype=np.uint16)
    gray = display_gray8(frame, ds)
    assert gray.dtype == np.uint8 and gray.shape == (2, 2)
    assert gray[0, 0] == 255 and gray[1, 1] == 0  # MONOCHROME1: low values are white
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.WindowCenter, ds.WindowWidth = 100, 100
    assert list(display_gray8(frame, ds).ravel()) == [0, 128, 255, 255]
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 255, 255)
    ds.PhotometricInterpretation = "RGB"
    assert display_gray8(rgb, ds)[0, 0] == 255 and display_gray8(rgb, ds)[1, 1] == 0


def test_palette_colour_and_thumbnails() -> None:
    path = PYDICOM_FILES / "examples_palette.dcm"
    source = read_source(path)
    frame = next(iter_frames(source.dataset, source.pixels))
    gray = display_gray8(frame, source.dataset)
    assert gray.ndim == 2 and gray.dtype == np.uint8 and gray.max() > gray.min()
    small, factor = thumbnail(gray, 64)
    assert max(small.shape) <= 64 and factor >= 2


def test_icons_and_overlays_are_removed() -> None:
    path = need(PUBLIC / "pydicom-data" / "MR-SIEMENS-DICOM-WithOverlays.dcm", "public corpus")
    ds = pydicom.dcmread(path)
    icon = Dataset()
    icon.Rows = 1
    ds.IconImageSequence = [icon]
    removed = remove_icons_and_overlays(ds)
    assert "Icon Image Sequence" in removed and "overlay group 6000" in removed
    assert "IconImageSequence" not in ds and not [t for t in ds.keys() if t >> 16 == 0x6000]
    ds.add_new(0x60000100, "US", 16)  # Overlay Bits Allocated 16: bits inside the pixels
    with pytest.raises(UnsupportedPixels, match="unused bits"):
        remove_icons_and_overlays(ds)


def test_a_data_set_in_memory_gets_its_redacted_pixel_data(tmp_path: Path) -> None:
    ds = pydicom.dcmread(PYDICOM_FILES / "SC_rgb_rle_2frame.dcm")
    before = _frames(ds)
    redaction = redact(ds, None, [Box(0, 0, 9, 9, frame=1)], tmp_path)
    assert redaction.pixels is None and redaction.element is not None
    redaction.apply(ds)
    after = _frames(ds)
    assert (after[1, :12, :12] == 0).all()
    assert np.array_equal(after[0], before[0]) and np.array_equal(after[1, 12:], before[1, 12:])
    assert not list(tmp_path.iterdir())


def test_an_8_bit_jpeg_extended_image_is_redacted(tmp_path: Path) -> None:
    # The corpus's JPEG Extended files are 12-bit (see the tests below); an 8-bit one
    # (Process 2) goes through redaction like JPEG Baseline.
    ds = pydicom.dcmread(PYDICOM_FILES / "image_dfl.dcm")  # 8-bit MONOCHROME2
    _draw_jpeg(ds, 255)
    ds.file_meta.TransferSyntaxUID = JPEGExtended12Bit
    path = tmp_path / "jpeg-extended.dcm"
    ds.save_as(path)
    source = read_source(path)
    boxes = _boxes(source.dataset)
    before = _frames(pydicom.dcmread(path))
    redaction = redact(source.dataset, source.pixels, boxes, tmp_path)
    redaction.apply(source.dataset)
    written, _ = write_temporary(source.dataset, tmp_path, redaction.pixels, sync=False)
    after = _frames(pydicom.dcmread(written))
    mask = _mask(after.shape, boxes)
    assert np.ptp(before[mask]) > 0 and (after[mask] == 0).all()
    assert np.array_equal(after[~mask], before[~mask])
    assert redaction.syntax == JPEGLSLossless and redaction.attributes["LossyImageCompression"]
    _dcmdump_reads(written)


def _dcmtk(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("PSEUDO_CI"):
            pytest.fail(f"{tool} (dcmtk) is required in CI (PSEUDO_CI is set)")
        pytest.skip(f"{tool} not found: install dcmtk (apt-get install dcmtk)")
    return path


@pytest.mark.parametrize("name", ["MR4_JPLY.dcm", "NM1_JPLY.dcm"])
def test_12_bit_jpeg_extended_decodes_as_the_ijg_library_decodes_it(
    name: str, tmp_path: Path
) -> None:
    # Their scan headers say Se = 0 where a sequential scan says 63: the IJG library (dcmtk's
    # dcmdjpeg here) warns and decodes; pylibjpeg-libjpeg decodes once the header is repaired.
    path = need(PUBLIC / "dicom-test-files" / "WG04" / "JPLY" / name, "NEMA WG-04 JPEG file")
    reference = tmp_path / "reference.dcm"
    subprocess.run([_dcmtk("dcmdjpeg"), str(path), str(reference)], check=True, capture_output=True)
    source = read_source(path)
    assert int(source.dataset.BitsStored) == 12
    ours = np.stack(list(iter_frames(source.dataset, source.pixels)))
    theirs = _frames(pydicom.dcmread(reference))
    assert ours.shape == theirs.shape
    # lossy JPEG: two IDCT implementations may round a value differently, never by more
    difference = np.abs(ours.astype(np.int32) - theirs.astype(np.int32))
    assert difference.max() <= 1 and (difference > 0).mean() < 0.05
    assert np.array_equal(_frames(pydicom.dcmread(path)), ours)  # pixel_array (thumbnails) too


def test_12_bit_jpeg_extended_is_redacted_losslessly(tmp_path: Path) -> None:
    path = need(PUBLIC / "dicom-test-files" / "WG04" / "JPLY" / "MR4_JPLY.dcm", "WG-04 file")
    source = read_source(path)
    before = _frames(pydicom.dcmread(path))
    boxes = _boxes(source.dataset)
    redaction = redact(source.dataset, source.pixels, boxes, tmp_path)
    redaction.apply(source.dataset)
    written, _ = write_temporary(source.dataset, tmp_path, redaction.pixels, sync=False)
    redaction.discard()
    out = pydicom.dcmread(written)
    after = _frames(out)
    mask = _mask(after.shape, boxes)
    assert np.ptp(before[mask]) > 0 and (after[mask] == 0).all()
    assert np.array_equal(after[~mask], before[~mask])
    assert redaction.syntax == JPEGLSLossless and out.BitsStored == 12
    assert out.LossyImageCompression == "01" and "ISO_10918_1" in out.LossyImageCompressionMethod
    _dcmdump_reads(written)


def test_scan_headers_are_made_sequential_and_nothing_else() -> None:
    buffer = io.BytesIO()
    gradient = np.add.outer(np.arange(32), np.arange(48)).astype(np.uint8)
    Image.fromarray(gradient).save(buffer, "JPEG", quality=90)
    stream = buffer.getvalue()
    assert sequential_scans(stream) is stream  # a correct stream is left as it is
    scan = stream.find(b"\xff\xda")
    selection = scan + 5 + 2 * stream[scan + 4]  # Ss, Se, Ah/Al after the components
    assert stream[selection : selection + 3] == b"\x00\x3f\x00"
    broken = stream[: selection + 1] + b"\x00" + stream[selection + 2 :]
    assert sequential_scans(broken) == stream
    assert sequential_scans(b"\xff\xd8\xff\xda\x00") == b"\xff\xd8\xff\xda\x00"  # cut short
    progressive = io.BytesIO()
    Image.fromarray(gradient).save(progressive, "JPEG", progressive=True)
    assert sequential_scans(progressive.getvalue()) == progressive.getvalue()
