"""Standard DICOM media (a DICOMDIR and its File-set) built from pseudonymized output.

``pseudo run`` never copies an input DICOMDIR: its directory records repeat patient names and
IDs. This module builds a fresh one from the pseudonymized instances with pydicom's own
:class:`pydicom.fileset.FileSet`, which copies each instance into its standard
``PT000000/ST000000/SE000000/IM000000`` layout and writes ``DICOMDIR`` beside it. The
directory records take their values from the instances themselves, so they hold only
pseudonyms, shifted dates, tokens and remapped UIDs.

The media is built in a hidden folder inside MEDIA (pydicom's staging copies included, so
nothing lands in the system's temporary folder) and moved into place only when pydicom has
written and re-read the DICOMDIR: an error leaves MEDIA as it was.

A file the File-set cannot index is left off the media and listed (with why, naming no
value); the rest is built. One case is filled instead, as the standard allows: the STUDY
directory record's Study ID (0020,0010) is Type 1 (PS3.3 F.5, Study Keys: Study Date, Study
Time and Study ID are Type 1; Study Description and Accession Number Type 2), while in an
instance it is Type 2 (General Study module) and often empty: the input had none, or the
policy emptied it (PS3.15 Table E.1-1 gives it action Z). Skipping those files would leave
most real outputs without media, so the STUDY record of such a study gets an invented Study
ID, the study's number on the media (1, 2, ...), like other media creators do (dcmmkdir
``--invent``). It is written in the DICOMDIR only; the instance copied onto the media keeps its
empty Study ID, and the number says nothing about the patient. Any other missing Type 1 key
(Study Date, Modality, Series Number, ...) is not invented: that file is skipped and listed.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.fileset import DIRECTORY_RECORDERS, FileSet
from pydicom.uid import MediaStorageDirectoryStorage

from pseudo.errors import ErrorKind
from pseudo.io.dicomio import NotDicom, sanitize, sniff
from pseudo.io.layout import TEMP_DIR_NAME
from pseudo.io.listing import discover
from pseudo.io.pydicom_internals import quiet_pydicom

#: The File-set ID written when none is given: says nothing about the data.
DEFAULT_FILESET_ID = "PSEUDO"
#: Hidden work folder inside MEDIA while the media is built.
PARTIAL_DIR_NAME = ".pseudo-partial"
#: File-set ID is a CS value of at most 16 characters (PS3.3 F.3.2.1, PS3.5 6.2).
_FILESET_ID = re.compile(r"[A-Z0-9_](?:[A-Z0-9_ ]{0,14}[A-Z0-9_])?")
_RECORD_CREATOR = re.compile(r"default '([A-Z0-9 ]+)' record creator")
_MISSING = re.compile(r"(\([0-9A-Fa-f]{4},[0-9A-Fa-f]{4}\)) '([^']*)' element (is missing|cannot)")
_NO_ATTRIBUTE = re.compile(r"has no attribute '([A-Za-z0-9_]+)'")


class MediaError(Exception):
    """The media cannot be built; nothing was left in MEDIA. Printed as one line."""

    def __init__(self, message: str, kind: ErrorKind = ErrorKind.USAGE) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class MediaSummary:
    """What was written: the media folder, its DICOMDIR and the record counts."""

    media: Path
    dicomdir: Path
    fileset_id: str
    fileset_uid: str
    instances: int
    patients: int
    studies: int
    series: int
    skipped: int
    duplicates: int
    #: files left off the media: (path relative to OUTPUT, why), naming no value
    refused: list[tuple[str, str]] = field(default_factory=list)
    #: studies whose STUDY record got an invented Study ID (their own was empty)
    invented_study_ids: int = 0

    def to_json(self) -> dict[str, object]:
        """The summary as a JSON-ready dictionary (paths as strings)."""
        return {
            "media": str(self.media),
            "dicomdir": str(self.dicomdir),
            "fileset_id": self.fileset_id,
            "fileset_uid": self.fileset_uid,
            "instances": self.instances,
            "patients": self.patients,
            "studies": self.studies,
            "series": self.series,
            "skipped": self.skipped,
            "duplicates": self.duplicates,
            "refused": [{"file": file, "reason": reason} for file, reason in self.refused],
            "invented_study_ids": self.invented_study_ids,
        }


def check_fileset_id(value: str) -> str:
    """A valid File-set ID (1 to 16 of ``A-Z 0-9 _``, inner spaces), else :class:`MediaError`."""
    if not _FILESET_ID.fullmatch(value):
        raise MediaError(
            f"--fileset-id {value!r}: use 1 to 16 upper-case letters, digits, '_' or spaces"
        )
    return value


def check_media_paths(output: Path, media: Path) -> tuple[Path, Path]:
    """Resolve OUTPUT and MEDIA; refuse a missing OUTPUT, a MEDIA inside OUTPUT, or a MEDIA
    that exists and is not an empty folder."""
    if not output.is_dir():
        raise MediaError(f"{output}: not found or not a folder (give the output of `pseudo run`)")
    source, target = output.resolve(), media.resolve()
    if target == source or target.is_relative_to(source):
        raise MediaError(f"{media}: the media folder must not be inside the output folder")
    if source.is_relative_to(target):
        raise MediaError(f"{media}: the media folder must not contain the output folder")
    if target.exists() or target.is_symlink():
        if not target.is_dir():
            raise MediaError(f"{media}: exists and is not a folder")
        entries = {entry.name for entry in target.iterdir()}
        if entries == {PARTIAL_DIR_NAME}:
            raise MediaError(
                f"{media}: holds an unfinished build ({PARTIAL_DIR_NAME}); remove it and run again"
            )
        if entries:
            raise MediaError(f"{media}: exists and is not empty (give a new or empty folder)")
    return source, target


def find_instances(output: Path) -> tuple[list[Path], int]:
    """The DICOM ``.dcm`` files under ``output`` (not in its temporary folder), and how many
    ``.dcm`` files were skipped because they are not DICOM."""
    files: list[Path] = []
    skipped = 0
    for path in discover(output):
        relative = path.relative_to(output)
        if TEMP_DIR_NAME in relative.parts or path.suffix.lower() != ".dcm":
            continue
        try:
            sniff(path)
        except NotDicom:
            skipped += 1
            continue
        except OSError as exc:
            raise MediaError(f"{path}: cannot read ({exc.strerror})") from exc
        files.append(path)
    return files, skipped


def _refusal(exc: Exception) -> str:
    """Why pydicom refused an instance, in a few words that quote no value."""
    text = str(exc)
    record = _RECORD_CREATOR.search(text)
    missing = _MISSING.search(str(exc.__cause__ or text))
    if record and missing:
        state = "missing" if missing.group(3) == "is missing" else "empty"
        needed = f"{missing.group(1)} {missing.group(2)}"
        return f"its {record.group(1)} record needs {needed}, which is {state}"
    attribute = _NO_ATTRIBUTE.search(text)
    if isinstance(exc, AttributeError) and attribute:
        return f"it has no {attribute.group(1)}"
    return sanitize(text) or exc.__class__.__name__


@contextmanager
def _staging_in(folder: Path) -> Iterator[None]:
    """Make pydicom stage the instances it copies in ``folder``, not the system temp folder
    (which may be small, or shared): a :class:`FileSet` creates its stage when it is
    constructed and again when it reloads the DICOMDIR it wrote."""
    previous = tempfile.tempdir
    tempfile.tempdir = str(folder)
    try:
        yield
    finally:
        tempfile.tempdir = previous


class StudyIds:
    """Invents the Study ID of a STUDY record whose instance has none (see the module's
    docstring): the study's number on the media, the same for every instance of the study."""

    def __init__(self) -> None:
        self.numbers: dict[str, str] = {}

    def record(self, original: Callable[[Dataset], Dataset], ds: Dataset) -> Dataset:
        """The STUDY record of ``ds`` made by pydicom's ``original`` recorder, from a copy of
        ``ds`` with an invented Study ID when its own is missing or empty."""
        if str(ds.get("StudyID") or "").strip():
            return original(ds)
        study = str(ds.get("StudyInstanceUID") or "")
        number = self.numbers.setdefault(study, str(len(self.numbers) + 1))
        present, own = "StudyID" in ds, ds.get("StudyID")
        ds.StudyID = number
        try:
            return original(ds)
        finally:  # the instance is copied onto the media with its own Study ID
            if present:
                ds.StudyID = own
            else:
                del ds.StudyID


@contextmanager
def _inventing(ids: StudyIds) -> Iterator[None]:
    """pydicom's STUDY recorder, with :class:`StudyIds` filling an empty Study ID, while the
    media is built (pydicom's documented way to change how records are made)."""
    original = DIRECTORY_RECORDERS["STUDY"]
    DIRECTORY_RECORDERS["STUDY"] = lambda ds: ids.record(original, ds)
    try:
        yield
    finally:
        DIRECTORY_RECORDERS["STUDY"] = original


def _add_all(fileset: FileSet, files: list[Path], output: Path) -> list[tuple[str, str]]:
    """Add every file to the File-set; returns those pydicom refuses (path relative to
    OUTPUT, why), which are left off the media. A DICOMDIR among them stops the build."""
    refused: list[tuple[str, str]] = []
    for path in files:
        try:
            ds = pydicom.dcmread(path)
            if ds.file_meta.get("MediaStorageSOPClassUID") == MediaStorageDirectoryStorage:
                raise MediaError(f"{path}: is a DICOMDIR, not an instance; remove it from OUTPUT")
            fileset.add(ds)
        except MediaError:
            raise
        except OSError as exc:
            raise MediaError(f"{path}: cannot read ({exc.strerror})") from exc
        except Exception as exc:
            refused.append((str(path.relative_to(output)), _refusal(exc)))
    if len(refused) == len(files):
        first, why = refused[0]
        raise MediaError(
            f"{output}: none of its {len(files)} DICOM files can be put on media "
            f"(the first, {first}: {why})"
        )
    return refused


def _count_records(dicomdir: Path) -> Counter[str]:
    """How many directory records of each type the written DICOMDIR holds."""
    ds = pydicom.dcmread(dicomdir)
    return Counter(str(record.DirectoryRecordType) for record in ds.DirectoryRecordSequence)


def _move_into(built: Path, media: Path, moved: list[Path]) -> None:
    """Move the built media's entries into MEDIA, the DICOMDIR last (a DICOMDIR in MEDIA means
    the media is complete); ``moved`` lists what is already there."""
    for entry in sorted(built.iterdir(), key=lambda entry: entry.name == "DICOMDIR"):
        os.rename(entry, media / entry.name)
        moved.append(media / entry.name)


def build_media(output: Path, media: Path, fileset_id: str = DEFAULT_FILESET_ID) -> MediaSummary:
    """Build standard DICOM media in MEDIA from every DICOM ``.dcm`` file under OUTPUT.

    Files that pydicom's File-set refuses are left off and listed in the summary's
    ``refused``; an empty Study ID is invented in the STUDY record (see the module's docstring).
    Raises :class:`MediaError` (one line, naming the file) for bad paths, an OUTPUT without
    DICOM files, a DICOMDIR among the files, or when no file can be put on media; exit code 5
    when MEDIA cannot be written. MEDIA is left as it was on any error.
    """
    fileset_id = check_fileset_id(fileset_id)
    source, target = check_media_paths(output, media)
    with quiet_pydicom():
        files, skipped = find_instances(source)
        if not files:
            raise MediaError(f"{output}: holds no DICOM files (.dcm) to put on media")
        created = not target.exists()
        work = target / PARTIAL_DIR_NAME
        try:
            work.mkdir(parents=True)
        except OSError as exc:
            error = MediaError(f"{media}: cannot create ({exc.strerror})", ErrorKind.UNAVAILABLE)
            raise error from exc
        moved: list[Path] = []
        done = False
        try:
            ids = StudyIds()
            with _staging_in(work), _inventing(ids):
                fileset = FileSet()
                fileset.ID = fileset_id
                refused = _add_all(fileset, files, source)
                built = work / "media"
                fileset.write(built)
                instances, uid = len(fileset), str(fileset.UID)
                del fileset
            counts = _count_records(built / "DICOMDIR")
            _move_into(built, target, moved)
            done = True
        except OSError as exc:
            reason = exc.strerror or exc.__class__.__name__
            error = MediaError(f"{media}: cannot write the media ({reason})", ErrorKind.UNAVAILABLE)
            raise error from exc
        finally:
            shutil.rmtree(work, ignore_errors=True)
            if not done:
                _undo(target, moved, created)
    return MediaSummary(
        media=target,
        dicomdir=target / "DICOMDIR",
        fileset_id=fileset_id,
        fileset_uid=uid,
        instances=instances,
        patients=counts["PATIENT"],
        studies=counts["STUDY"],
        series=counts["SERIES"],
        skipped=skipped,
        duplicates=len(files) - len(refused) - instances,
        refused=refused,
        invented_study_ids=len(ids.numbers),
    )


def _undo(target: Path, moved: list[Path], created: bool) -> None:
    """After a failure: remove what was moved into MEDIA, and MEDIA itself if it was new."""
    for entry in moved:
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    if created:
        with suppress(OSError):
            target.rmdir()
