"""Write a :class:`~medssl.io.Volume` as a DICOM series, one file per slice, the way a scanner does.

Used by the synthetic cohort (:mod:`medssl.synthetic`) and by tests that need hospital-style
series: oblique geometry, shuffled file names, reversed instance numbers, compressed transfer
syntaxes. It is not a de-identifier: it writes exactly the identifiers it is given.

Geometry (DICOM PS3.3 C.7.6.2): the world position of pixel ``(row r, column c)`` of slice ``k`` is
``ImagePositionPatient_k + c * PixelSpacing[1] * F_row + r * PixelSpacing[0] * F_col`` in LPS
millimetres, where ``ImageOrientationPatient = (F_row, F_col)``. The volume's voxel axis X becomes
the column index, Y the row index and Z the slice index; ``LPS = diag(-1, -1, 1) @ RAS``.

Example:
    >>> import numpy as np, tempfile
    >>> from medssl.io.volume import Volume
    >>> vol = Volume(np.full((1, 8, 8, 4), -1000.0, np.float32), np.diag([0.7, 0.7, 2.5, 1]), "CT")
    >>> files = write_dicom_series(vol, tempfile.mkdtemp(), patient_id="12345")
    >>> len(files)
    4
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medssl.io.volume import Volume

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])

_SOP_CLASS = {
    "CT": pydicom.uid.CTImageStorage,
    "MR": pydicom.uid.MRImageStorage,
}


def _uid(seed: str | None) -> str:
    """A DICOM UID; deterministic when ``seed`` is given (same seed, same UID)."""
    return generate_uid(entropy_srcs=[seed]) if seed is not None else generate_uid()


def write_dicom_series(
    volume: Volume,
    folder: str | os.PathLike,
    *,
    patient_name: str = "ANON^PATIENT",
    patient_id: str = "ANON0001",
    patient_birth_date: str = "19700101",
    patient_sex: str = "O",
    study_uid: str | None = None,
    series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    uid_seed: str | None = None,
    study_date: str = "20240101",
    accession_number: str = "ACC0001",
    institution_name: str = "General Hospital",
    manufacturer: str = "MEDSSL-SYNTH",
    body_part: str = "",
    series_description: str = "",
    series_number: int = 1,
    rescale_slope: float = 1.0,
    rescale_intercept: float = -1024.0,
    instance_order: str = "ascending",
    file_names: Sequence[str] | None = None,
    transfer_syntax_uid: str = ExplicitVRLittleEndian,
    extra: dict | None = None,
    rng: np.random.Generator | None = None,
) -> list[Path]:
    """Write ``volume`` (one channel) as a series of single-slice DICOM files in ``folder``.

    Stored values are ``round((value - intercept) / slope)`` as int16, so HU survive the trip when
    ``slope`` divides their precision. ``instance_order`` is ``"ascending"``, ``"reversed"`` or
    ``"shuffled"`` (InstanceNumber is then useless for sorting, as it is in some archives);
    ``file_names`` overrides the default ``IM000001.dcm`` names (give names without extension to
    mimic a PACS export). ``extra`` sets further attributes by keyword on every slice.

    Returns:
        the written paths, in slice order (Z index 0 first).
    """
    if volume.num_channels != 1:
        raise ValueError("write_dicom_series writes one channel; got %d" % volume.num_channels)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    modality = volume.modality if volume.modality in _SOP_CLASS else "CT"
    sop_class = _SOP_CLASS[modality]
    seed = uid_seed
    study_uid = study_uid or _uid(None if seed is None else f"{seed}/study")
    series_uid = series_uid or _uid(None if seed is None else f"{seed}/series")
    frame_uid = frame_of_reference_uid or _uid(None if seed is None else f"{seed}/frame")

    lps = RAS_TO_LPS @ volume.affine
    axes = lps[:3, :3]
    spacing = np.linalg.norm(axes, axis=0)
    f_row = axes[:, 0] / spacing[0]  # direction of increasing column index (voxel X)
    f_col = axes[:, 1] / spacing[1]  # direction of increasing row index (voxel Y)
    n_slices = volume.spatial_shape[2]

    stored = np.round((volume.array[0] - rescale_intercept) / rescale_slope)
    info = np.iinfo(np.int16)
    stored = np.clip(stored, info.min, info.max).astype(np.int16)

    numbers = np.arange(1, n_slices + 1)
    if instance_order == "reversed":
        numbers = numbers[::-1]
    elif instance_order == "shuffled":
        numbers = (rng or np.random.default_rng(0)).permutation(numbers)
    elif instance_order != "ascending":
        raise ValueError(f"instance_order must be ascending, reversed or shuffled, got {instance_order!r}")
    if file_names is not None and len(file_names) != n_slices:
        raise ValueError(f"file_names has {len(file_names)} names for {n_slices} slices")

    now = datetime.datetime(2024, 1, 1, 12, 0, 0)
    paths: list[Path] = []
    for k in range(n_slices):
        position = (lps @ np.array([0.0, 0.0, k, 1.0]))[:3]
        ds = Dataset()
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = _uid(None if seed is None else f"{seed}/sop/{k}")
        ds.Modality = modality
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = patient_birth_date
        ds.PatientSex = patient_sex
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.StudyDate = study_date
        ds.SeriesDate = study_date
        ds.StudyTime = now.strftime("%H%M%S")
        ds.AccessionNumber = accession_number
        ds.InstitutionName = institution_name
        ds.Manufacturer = manufacturer
        ds.ReferringPhysicianName = "DR^REFERRER"
        ds.StudyID = "1"
        ds.SeriesNumber = series_number
        ds.InstanceNumber = int(numbers[k])
        if body_part:
            ds.BodyPartExamined = body_part
        if series_description:
            ds.SeriesDescription = series_description
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*f_row, *f_col)]
        ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]
        ds.SliceThickness = f"{spacing[2]:.6f}"
        ds.SliceLocation = f"{position[2]:.6f}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        pixels = np.ascontiguousarray(stored[:, :, k].T)  # rows = voxel Y, columns = voxel X
        ds.Rows, ds.Columns = pixels.shape
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleSlope = f"{rescale_slope:g}"
        ds.RescaleIntercept = f"{rescale_intercept:g}"
        if modality == "CT":
            ds.RescaleType = "HU"
            ds.KVP = "120"
        for keyword, value in (extra or {}).items():
            setattr(ds, keyword, value)

        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        ds.PixelData = pixels.tobytes()
        if transfer_syntax_uid != ExplicitVRLittleEndian:
            ds.compress(transfer_syntax_uid, pixels, generate_instance_uid=False)

        name = file_names[k] if file_names is not None else f"IM{k + 1:06d}.dcm"
        path = folder / name
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
