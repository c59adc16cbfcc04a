"""Broken files as hospital archives hold them, made on the fly (issue 17): each function writes one
and returns its path. Used by the io and manifest tests of bad input."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid


def write_nifti(path: Path | bytes, shape=(6, 5, 4), affine=None, seed: int = 0) -> Path | bytes:
    """An ordinary small NIfTI file (``path`` may be bytes: a name that is not valid UTF-8)."""
    data = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([1.5, 1.5, 3.0, 1.0]) if affine is None else affine), os.fsdecode(path))
    return path


def write_zero_sform_nifti(path: Path, *, with_qform: bool) -> Path:
    """A NIfTI whose sform is all zeros with sform_code 1 (a writer bug seen in real exports); the
    qform is a valid 2 mm grid with code 1, or absent (code 0)."""
    image = nib.Nifti1Image(np.arange(60, dtype=np.float32).reshape(5, 4, 3), None)
    image.set_qform(np.diag([2.0, 2.0, 2.0, 1.0]) if with_qform else None, code=1 if with_qform else 0)
    header = image.header
    header["srow_x"] = header["srow_y"] = header["srow_z"] = 0.0
    header["sform_code"] = 1
    header.set_data_offset(352)
    raw = header.binaryblock + b"\x00" * 4 + np.asarray(image.dataobj, dtype=np.float32).tobytes(order="F")
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as handle:
        handle.write(raw)
    assert int(nib.load(path).header["sform_code"]) == 1 and not nib.load(path).header.get_sform()[:3].any()
    return path


def write_huge_header_nifti(path: Path, shape=(30000, 30000, 30000), dtype=np.uint8) -> Path:
    """A tiny ``.nii.gz`` whose header claims ``shape`` (30000^3: 2.7e13 voxels) and holds no data."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    with gzip.open(path, "wb") as handle:
        handle.write(header.binaryblock + b"\x00" * 4)
    return path


def write_inflating_nifti(path: Path, side: int = 64) -> Path:
    """A ``.nii.gz`` of zeros: a few KB on disk, ``side**3 * 4`` bytes once inflated (a small
    stand-in for a gzip bomb; tests pair it with a tiny size limit)."""
    nib.save(nib.Nifti1Image(np.zeros((side, side, side), np.float32), np.eye(4)), path)
    return path


def cut_in_half(path: Path) -> Path:
    """Keep the first half of a file (a copy interrupted mid-transfer)."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2])
    return path


def _file_meta(dataset: Dataset, syntax=ExplicitVRLittleEndian) -> None:
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.file_meta.TransferSyntaxUID = syntax


def computed_radiograph(path: Path, pixel_spacing: str | None = "0\\0", rows: int = 24, columns: int = 20) -> Path:
    """A CR image like pydicom-data's RG1_UNCR: PixelSpacing ``0\\0`` and no other spacing tag."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientID = "CR", "CR-PATIENT-1"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if pixel_spacing is not None:
        ds.PixelSpacing = pixel_spacing
    ds.PixelData = (np.arange(rows * columns, dtype=np.uint16) % 4096).tobytes()
    _file_meta(ds)
    ds.save_as(path, enforce_file_format=True)
    return Path(path)


def mr_slice(
    path: Path,
    z: float,
    *,
    series_uid: str,
    echo_number: int | None = None,
    echo_time: float | None = None,
    seed: int = 0,
    rows: int = 6,
    columns: int = 5,
) -> Path:
    """One axial MR slice at height ``z`` (1 mm pixels) of series ``series_uid``, with an echo."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # MR Image Storage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.17", series_uid
    ds.Modality, ds.PatientID, ds.SeriesNumber, ds.SeriesDescription = "MR", "ECHO-PATIENT", 4, "ME GRE"
    ds.ImagePositionPatient = [0.0, 0.0, z]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [1.0, 1.0]
    ds.SliceThickness = 2.0
    if echo_number is not None:
        ds.EchoNumbers = echo_number
    if echo_time is not None:
        ds.EchoTime = echo_time
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.random.default_rng(seed).integers(0, 1000, (rows, columns)).astype(np.uint16).tobytes()
    _file_meta(ds)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return Path(path)


def damage_transfer_syntax(source: Path, target: Path, replacement: bytes = b"1.2.840.10008.1.2.9") -> Path:
    """A copy whose TransferSyntaxUID (0002,0010) is replaced by another UID of the same length
    (``1.2.840.10008.1.2.9`` is no transfer syntax), as a flipped byte in an archive does."""
    data = bytearray(Path(source).read_bytes())
    dataset = pydicom.dcmread(source, stop_before_pixels=True)
    old = str(dataset.file_meta.TransferSyntaxUID).encode()
    at = data.find(old)
    assert at > 0
    new = replacement[: len(old)].ljust(len(old), b"\x00")
    data[at : at + len(old)] = new
    Path(target).write_bytes(bytes(data))
    return Path(target)


def siemens_mosaic(
    path: Path,
    volume: np.ndarray,
    *,
    position=(-100.0, -80.0, 20.0),
    orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    spacing=(2.0, 2.5),
    slice_thickness: float = 3.0,
    with_count: bool = True,
) -> Path:
    """A Siemens mosaic holding ``volume`` ``(rows, columns, slices)`` as tiles on a ``side x side``
    grid, with ImageType ``MOSAIC`` and (``with_count``) NumberOfImagesInMosaic in (0019,100A)
    under the ``SIEMENS MR HEADER`` creator. ``position`` is that of the whole mosaic's corner, as
    Siemens writes it (see medssl.io.dicom_mosaic)."""
    import math

    rows, columns, count = volume.shape
    side = math.ceil(math.sqrt(count))
    mosaic = np.zeros((side * rows, side * columns), np.uint16)
    for k in range(count):
        r, c = divmod(k, side)
        mosaic[r * rows : (r + 1) * rows, c * columns : (c + 1) * columns] = volume[:, :, k]
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientID, ds.Manufacturer = "MR", "MOSAIC-PATIENT", "SIEMENS"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"]
    ds.ImagePositionPatient = list(position)
    ds.ImageOrientationPatient = list(orientation)
    ds.PixelSpacing = list(spacing)
    ds.SliceThickness = slice_thickness
    ds.Rows, ds.Columns = mosaic.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if with_count:
        ds.private_block(0x0019, "SIEMENS MR HEADER", create=True).add_new(0x0A, "US", count)
    ds.PixelData = mosaic.tobytes()
    _file_meta(ds)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return Path(path)
