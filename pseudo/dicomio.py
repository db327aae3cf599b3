"""Reading input files and writing output files.

Reading tells three kinds of files apart: DICOM (processed), files that are not DICOM at all
(skipped and listed) and DICOM files that cannot be read completely (quarantined with a
reason). Writing goes to a temporary file in the output tree, flushed to disk; the caller
renames it into place only after the file's linkage records are committed.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from pseudo.findings import RejectedFile

UNDEFINED_LENGTH = 0xFFFFFFFF
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


class NotDicom(Exception):
    """A file that is not DICOM at all; it is skipped, not quarantined."""


def sanitize(message: str) -> str:
    """An exception message with quoted parts (which may be values) masked."""
    return _QUOTED.sub("'…'", message).splitlines()[0][:200] if message else ""


def sniff(path: Path) -> str:
    """``"part10"`` for a DICOM file with preamble, ``"raw"`` for a bare dataset, else raise."""
    with path.open("rb") as handle:
        head = handle.read(132)
    if len(head) == 132 and head[128:132] == b"DICM":
        return "part10"
    if head[:4] == b"DICM":
        return "part10"
    if len(head) >= 8:
        group = int.from_bytes(head[0:2], "little")
        vr = head[4:6]
        if group in (0x0002, 0x0008) and ((vr.isalpha() and vr.isupper()) or group == 0x0008):
            return "raw"
    raise NotDicom("no DICOM preamble and no recognizable data set")


def _check_complete(ds: Dataset) -> None:
    """Refuse a data set whose elements are shorter than their declared length (truncated)."""
    for tag in ds.keys():
        element = ds.get_item(tag)
        if isinstance(element, RawDataElement) and element.value is not None:
            length = element.length
            if length != UNDEFINED_LENGTH and len(element.value) < length:
                raise RejectedFile(
                    f"truncated: element ({tag >> 16:04X},{tag & 0xFFFF:04X}) declares "
                    f"{length} bytes but the file holds {len(element.value)}"
                )


def read_dataset(path: Path) -> Dataset:
    """Read a DICOM file completely, or raise :class:`NotDicom` / :class:`RejectedFile`."""
    try:
        kind = sniff(path)
    except OSError as exc:
        raise RejectedFile(f"cannot read: {exc.strerror}") from exc
    try:
        ds = pydicom.dcmread(path, force=(kind == "raw"))
    except InvalidDicomError as exc:
        raise RejectedFile(f"not a readable DICOM file: {sanitize(str(exc))}") from exc
    except (
        EOFError,
        OSError,
        ValueError,
        KeyError,
        IndexError,
        TypeError,
        NotImplementedError,
    ) as exc:
        raise RejectedFile(
            f"cannot parse ({exc.__class__.__name__}: {sanitize(str(exc))}); truncated or corrupt"
        ) from exc
    if len(ds) == 0:
        raise RejectedFile("empty data set")
    _check_complete(ds)
    return ds


def write_temporary(ds: Dataset, directory: Path) -> Path:
    """Write ``ds`` as a DICOM file into ``directory`` under a temporary name, synced to disk."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".pseudo-", suffix=".part", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            pydicom.dcmwrite(handle, ds, enforce_file_format=True)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)
