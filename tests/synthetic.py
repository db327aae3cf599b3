"""Synthetic datasets for engine and policy tests."""

from __future__ import annotations

import hashlib

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian

from keystore.keyring import Keyring, ProjectSettings

SECRET = hashlib.sha256(b"engine tests").digest()


def make_keyring() -> Keyring:
    """A keyring with a fixed secret (offsets between -100 and -1 days)."""
    return Keyring.from_secret(SECRET, ProjectSettings("t", "T", -100, -1), bytes(32))


def dataset() -> Dataset:
    """A CT-like dataset with identifiers, dates, private blocks, overlays and references."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.2")
    ds.file_meta.MediaStorageSOPInstanceUID = UID("1.2.3.4.5.6")
    ds.file_meta.SourceApplicationEntityTitle = "HOSPITAL_PACS"
    ds.file_meta.PrivateInformationCreatorUID = UID("1.2.3.999")
    ds.file_meta.PrivateInformation = b"SECRET\x00"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = "1.2.3.4.5.6"
    ds.StudyInstanceUID = "1.2.3.4.5"
    ds.SeriesInstanceUID = "1.2.3.4.5.1"
    ds.FrameOfReferenceUID = "1.2.3.4.9"
    ds.PatientName = "DOE^JOHN"
    ds.PatientID = "12345678"
    ds.PatientBirthDate = "19700101"
    ds.PatientAge = "053Y"
    ds.AccessionNumber = "ACC-1"
    ds.StudyID = "STUDY7"
    ds.StudyDate = "20230105"
    ds.StudyTime = "101500"
    ds.AcquisitionDateTime = "20230105101600.123+0100"
    ds.InstitutionName = "General Hospital"
    ds.ReferringPhysicianName = "WHO^DR"
    ds.StudyDescription = "CT CHEST for DOE JOHN"
    ds.Modality = "CT"
    ds.Rows = 2
    ds.Columns = 4
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.add_new(0x00181202, "DT", "20230104")  # DateTime of Last Calibration
    ds.add_new(0x00191010, "LO", "vendor secret")  # private, no creator
    block = ds.private_block(0x0029, "ACME 1.0", create=True)
    block.add_new(0x10, "LO", "DOE^JOHN")
    ds.add_new(0x00990010, "LO", "unknown even?")  # odd group: private creator
    ds.add_new(0x00080000, "UL", 100)  # group length
    ds.add_new(0x50000010, "US", 1)  # curve
    ds.add_new(0x60003000, "OW", b"\x00\x01")  # overlay data
    ds.add_new(0x60000010, "US", 1)
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ref.ReferencedSOPInstanceUID = "1.2.3.4.5.7"
    inner = Dataset()
    inner.ReferencedSOPInstanceUID = "1.2.3.4.5.8"
    inner.PatientName = "NESTED^NAME"
    ref.SourceImageSequence = Sequence([inner])
    ds.ReferencedImageSequence = Sequence([ref])
    request = Dataset()
    request.RequestedProcedureID = "RP1"
    request.AccessionNumber = "ACC-1"
    ds.RequestAttributesSequence = Sequence([request])
    ds.PixelData = b"\x01\x02\x03\x04\x05\x06\x07\x08"
    return ds
