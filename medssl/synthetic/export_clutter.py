"""What a real PACS export holds besides images: reports, broken transfers and operating-system junk.

A scan of a hospital archive must record these and carry on (``build_manifest``), never stop or
list them as training volumes. This module writes, deterministically:

* :func:`write_text_report` - a DICOM Basic Text Structured Report (SOP class
  1.2.840.10008.5.1.4.1.1.88.11): a readable DICOM object with patient identifiers and no pixels;
* :func:`write_truncated_copy` - a DICOM file cut short, as an interrupted transfer leaves it;
* :func:`write_os_junk` - ``.DS_Store`` (macOS Finder), ``Thumbs.db`` (Windows Explorer) and a
  ``README.txt`` from the export tool.

Gap filled: pydicom writes any dataset but ships no generator of realistic non-image objects or
broken files; these are the few lines that make them.

Example:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> sorted(p.name for p in write_os_junk(folder, seed="demo"))
    ['.DS_Store', 'README.txt', 'Thumbs.db']
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medssl.synthetic.identities import FakeIdentity

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def write_text_report(
    path: str | os.PathLike,
    identity: FakeIdentity,
    *,
    study_uid: str,
    study_date: str,
    accession_number: str,
    text: str,
    uid_seed: str,
) -> Path:
    """Write a Basic Text SR holding ``text`` as the report's findings, in ``identity``'s study."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = Dataset()
    ds.SOPClassUID = BASIC_TEXT_SR
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[f"{uid_seed}/sop"])
    ds.Modality = "SR"
    ds.PatientName = identity.dicom_name
    ds.PatientID = identity.patient_id
    ds.PatientBirthDate = identity.birth_date
    ds.PatientSex = identity.sex
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[f"{uid_seed}/series"])
    ds.StudyDate = study_date
    ds.ContentDate = study_date
    ds.ContentTime = "120000"
    ds.StudyTime = "120000"
    ds.AccessionNumber = accession_number
    ds.InstitutionName = identity.institution
    ds.ReferringPhysicianName = identity.referring_physician
    ds.Manufacturer = "MEDSSL-SYNTH"
    ds.SeriesNumber = 900
    ds.InstanceNumber = 1
    ds.StudyID = "1"
    ds.SeriesDescription = "RADIOLOGY REPORT"
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.ConceptNameCodeSequence = [_code("11528-7", "LN", "Radiology Report")]
    finding = Dataset()
    finding.RelationshipType = "CONTAINS"
    finding.ValueType = "TEXT"
    finding.ConceptNameCodeSequence = [_code("121071", "DCM", "Finding")]
    finding.TextValue = text
    ds.ContentSequence = [finding]

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)
    return path


def write_truncated_copy(source: str | os.PathLike, destination: str | os.PathLike, fraction: float = 0.6) -> Path:
    """Copy the first ``fraction`` of ``source``'s bytes to ``destination`` (header intact, pixel
    data cut: what an interrupted network transfer leaves behind)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    data = Path(source).read_bytes()
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_bytes(data[: int(len(data) * fraction)])
    return destination


def write_os_junk(folder: str | os.PathLike, seed: str) -> list[Path]:
    """Write ``.DS_Store``, ``Thumbs.db`` (deterministic pseudo-binary content) and ``README.txt``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    blob = b"".join(hashlib.blake2b(f"{seed}/{i}".encode(), digest_size=64).digest() for i in range(32))
    written = []
    ds_store = folder / ".DS_Store"
    ds_store.write_bytes(b"\x00\x00\x00\x01Bud1" + blob[:2040])
    written.append(ds_store)
    thumbs = folder / "Thumbs.db"
    thumbs.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + blob)
    written.append(thumbs)
    readme = folder / "README.txt"
    readme.write_text(
        "PACS EXPORT - research copy\n"
        "Exported with the archive's study export tool; no DICOMDIR was written.\n"
        "Folders: patient / study / series. Some series were exported without file extensions.\n"
        "Contact the imaging informatics team before sharing outside the institution.\n",
        encoding="utf-8",
    )
    written.append(readme)
    return written
