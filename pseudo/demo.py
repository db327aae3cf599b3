"""A small synthetic cohort for the demo and the tests, built from pydicom's own test files.

Three fictitious patients, two timepoints each, one study per timepoint with a CT series of two
instances and an MR series whose image references the first CT instance. Each file carries
fake names, IDs and dates, a private block, a nested request sequence and a free-text
description naming the patient, and the input folders are named after the patients, as they
often are in real exports. The repository ships no patient-like data: this is generated.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, generate_uid


@dataclass(frozen=True)
class DemoPatient:
    """A fictitious patient."""

    name: str
    patient_id: str
    birth_date: str
    sex: str


PATIENTS = (
    DemoPatient("DOE^JANE", "MRN100234", "19610412", "F"),
    DemoPatient("SMITH^JOHN", "MRN100871", "19550930", "M"),
    DemoPatient("GARCIA^MARIA", "MRN101552", "19720105", "F"),
)
ISSUER = "DEMO-GENERAL"
BASELINE = date(2019, 3, 4)


def _uid(*parts: object) -> str:
    return str(generate_uid(entropy_srcs=["pseudo-demo", *map(str, parts)]))


def _age(birth: str, on: date) -> str:
    born = date(int(birth[:4]), int(birth[4:6]), int(birth[6:]))
    years = on.year - born.year - ((on.month, on.day) < (born.month, born.day))
    return f"{years:03d}Y"


def _instance(
    base: str,
    patient: DemoPatient,
    index: int,
    timepoint: int,
    study_date: date,
    series: int,
    number: int,
) -> Dataset:
    source = get_testdata_file(base)
    if not isinstance(source, str):
        raise FileNotFoundError(f"pydicom's test file {base} is missing from this installation")
    ds = pydicom.dcmread(source)
    day = study_date.strftime("%Y%m%d")
    family, given = patient.name.split("^")
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.IssuerOfPatientID = ISSUER
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.PatientAge = _age(patient.birth_date, study_date)
    ds.StudyInstanceUID = _uid("study", index, timepoint)
    ds.SeriesInstanceUID = _uid("series", index, timepoint, series)
    ds.SOPInstanceUID = _uid("instance", index, timepoint, series, number)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.FrameOfReferenceUID = _uid("frame", index, timepoint)
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = day
    ds.StudyTime, ds.SeriesTime = "083000", f"08{30 + series:02d}00"
    ds.AccessionNumber = f"ACC{index + 1}{timepoint + 1}{day[2:]}"
    ds.StudyID = f"{timepoint + 1}"
    ds.SeriesNumber, ds.InstanceNumber = series, number
    ds.InstitutionName = "Demo General Hospital"
    ds.ReferringPhysicianName = "WELBY^MARCUS"
    ds.StudyDescription = (
        f"CT CHEST {'baseline' if timepoint == 0 else 'follow-up'} for {family}^{given}"
    )
    block = ds.private_block(0x0009, "DEMO-VENDOR 1.0", create=True)
    block.add_new(0x01, "LO", f"{family} {patient.patient_id}")
    request = Dataset()
    request.RequestedProcedureID = f"RP{patient.patient_id[-4:]}{timepoint}"
    request.ScheduledProcedureStepID = f"SPS{patient.patient_id[-4:]}{timepoint}"
    request.AccessionNumber = ds.AccessionNumber
    ds.RequestAttributesSequence = Sequence([request])
    return ds


def build_cohort(folder: Path) -> list[Path]:
    """Write the cohort under ``folder``; return the files written, sorted."""
    written = []
    for index, patient in enumerate(PATIENTS):
        family, given = patient.name.split("^")
        for timepoint in range(2):
            study_date = BASELINE + timedelta(days=7 * index + timepoint * (182 + 3 * index))
            where = folder / f"{family}_{given}" / study_date.isoformat()
            ct = [
                _instance("CT_small.dcm", patient, index, timepoint, study_date, 1, n)
                for n in (1, 2)
            ]
            mr = _instance("MR_small.dcm", patient, index, timepoint, study_date, 2, 1)
            reference = Dataset()
            reference.ReferencedSOPClassUID = ct[0].SOPClassUID
            reference.ReferencedSOPInstanceUID = ct[0].SOPInstanceUID
            mr.ReferencedImageSequence = Sequence([reference])
            for name, ds in (("CT/1.dcm", ct[0]), ("CT/2.dcm", ct[1]), ("MR/1.dcm", mr)):
                path = where / name
                path.parent.mkdir(parents=True, exist_ok=True)
                ds.save_as(path, enforce_file_format=True)
                written.append(path)
    return sorted(written)


def burned_in_image(folder: Path) -> Path:
    """Write one image of the first patient's first study with her name, ID and birth date
    burned into its pixels (as a viewer's screenshot would carry them), in a black band above
    the anatomy; return its path. ``pseudo demo`` shows it before and after."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    patient = PATIENTS[0]
    ds = _instance("CT_small.dcm", patient, 0, 0, BASELINE, 3, 1)
    anatomy = ds.pixel_array.astype(np.float64)
    anatomy = (anatomy - anatomy.min()) * (255.0 / max(float(np.ptp(anatomy)), 1.0))
    canvas = np.zeros((anatomy.shape[0] * 2 + 64, anatomy.shape[1] * 2), np.uint8)
    enlarged = np.kron(anatomy, np.ones((2, 2)))
    canvas[64:, :] = np.rint(enlarged).astype(np.uint8)
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=14)
    birth = f"{patient.birth_date[:4]}-{patient.birth_date[4:6]}-{patient.birth_date[6:]}"
    draw.text((8, 8), patient.name.replace("^", " "), fill=255, font=font)
    draw.text((8, 32), f"{patient.patient_id}  {birth}", fill=255, font=font)
    pixels = np.asarray(picture, np.uint8)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.7")
    ds.Modality = "OT"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    for keyword in ("RescaleIntercept", "RescaleSlope", "WindowCenter", "WindowWidth"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PhotometricInterpretation, ds.SamplesPerPixel = "MONOCHROME2", 1
    ds.BurnedInAnnotation = "NO"  # as real data often says, wrongly
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OB"
    where = folder / "DOE_JANE" / BASELINE.isoformat() / "SC" / "1.dcm"
    where.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(where, enforce_file_format=True)
    return where
