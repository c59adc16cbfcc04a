"""Shared test helpers for the io layer and the manifest: reference readers and data writers.

Nothing here downloads: pydicom's test files are listed from the installed package (``get_testdata_file``
with ``download=False``), never through ``get_testdata_files`` (which tries the network).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_color_lut, apply_modality_lut
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from scipy.spatial.transform import Rotation

from medssl.io.volume import Volume

PYDICOM_TEST_ROOT = Path(pydicom.data.DATA_ROOT) / "test_files"


def pydicom_test_file(name: str) -> Path:
    """One of pydicom's shipped test files (never downloaded)."""
    path = pydicom.data.get_testdata_file(name, download=False)
    assert path is not None, f"pydicom test file {name} is not installed"
    return Path(path)


def pydicom_local_files() -> list[Path]:
    """Every test file shipped inside the installed pydicom package."""
    return sorted(p for p in PYDICOM_TEST_ROOT.rglob("*") if p.is_file() and p.suffix != ".py")


def pydicom_pixel_files() -> list[Path]:
    """The shipped files that pydicom reads as a data set holding pixel data."""
    found = []
    for path in pydicom_local_files():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                dataset = pydicom.dcmread(path, defer_size="1 KB", force=True)
            except Exception:
                continue
        if any(t in dataset for t in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
            found.append(path)
    return found


def pydicom_reference(path: Path) -> np.ndarray:
    """What pydicom gives after the modality LUT, as ``(frames, rows, columns, channels)`` float64.

    MONOCHROME1 inverted within the modality LUT's output range, palettes expanded, RT dose scaled:
    the documented medssl conventions, computed here with pydicom's own functions. Raises whatever
    pydicom raises when it cannot decode.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = pydicom.dcmread(path, force=True)
        if "TransferSyntaxUID" not in dataset.file_meta:
            implicit, little = dataset.original_encoding
            dataset.file_meta.TransferSyntaxUID = (
                pydicom.uid.ImplicitVRLittleEndian
                if implicit
                else (ExplicitVRLittleEndian if little else pydicom.uid.ExplicitVRBigEndian)
            )
        array = dataset.pixel_array
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    photometric = str(dataset.get("PhotometricInterpretation", "")).upper()
    if photometric == "PALETTE COLOR":
        array = apply_color_lut(array, dataset).astype(np.float64)
        return array.reshape((frames,) + array.shape[-3:])
    samples = int(dataset.get("SamplesPerPixel", 1))
    if samples > 1:
        return array.astype(np.float64).reshape((frames,) + array.shape[-3:])
    values = np.asarray(apply_modality_lut(array, dataset), dtype=np.float64)
    if photometric == "MONOCHROME1":
        bits = int(dataset.BitsStored)
        signed = int(dataset.PixelRepresentation) == 1
        lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        ends = np.asarray(apply_modality_lut(np.array([lo, hi]), dataset), dtype=np.float64)
        values = ends.min() + ends.max() - values
    if str(dataset.get("Modality", "")) == "RTDOSE" and "DoseGridScaling" in dataset:
        values = values * float(dataset.DoseGridScaling)
    return values.reshape((frames,) + values.shape[-2:] + (1,))


def random_ct(shape: tuple[int, int, int], affine: np.ndarray, seed: int = 0) -> Volume:
    """A CT-like volume of integer HU (exact through int16 storage with intercept -1024)."""
    rng = np.random.default_rng(seed)
    array = rng.integers(-1000, 1500, size=(1, *shape)).astype(np.float32)
    return Volume(array, affine, "CT")


def oblique_affine(angles_deg=(25.0, -35.0, 70.0), spacing=(0.8, 0.9, 2.5), origin=(12.0, -40.0, 25.0)) -> np.ndarray:
    """A RAS affine rotated far enough that the closest canonical order permutes axes."""
    affine = np.eye(4)
    affine[:3, :3] = Rotation.from_euler("xyz", angles_deg, degrees=True).as_matrix() @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


def sitk_series(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """An independent reader: SimpleITK (GDCM) series -> ``(1, X, Y, Z)`` array and RAS affine (native order)."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    direction = np.array(image.GetDirection()).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.array(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    array = sitk.GetArrayFromImage(image).astype(np.float32).T[None]
    return array, np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine


def write_enhanced_ct(
    volume: Volume,
    path: Path,
    *,
    frame_order: np.ndarray | None = None,
    slopes: np.ndarray | None = None,
    intercept: float = -1024.0,
    patient_id: str = "ENH-PATIENT-77",
    patient_name: str = "ENHANCED^EDNA",
) -> Path:
    """An Enhanced CT Image (multi-frame, per-frame functional groups) holding ``volume``.

    Frames are stored in ``frame_order`` (default: slice order) and each frame has its own
    RescaleSlope (``slopes[k]`` for slice ``k``) in its PixelValueTransformationSequence.
    """
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ volume.affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    f_row, f_col = lps[:3, 0] / spacing[0], lps[:3, 1] / spacing[1]
    n = volume.spatial_shape[2]
    order = np.arange(n) if frame_order is None else np.asarray(frame_order)
    slopes = np.ones(n) if slopes is None else np.asarray(slopes, dtype=np.float64)

    ds = Dataset()
    ds.SOPClassUID = pydicom.uid.EnhancedCTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.Modality, ds.PatientID, ds.PatientName = "CT", patient_id, patient_name
    ds.Manufacturer = "MEDSSL-TEST"
    ds.SeriesNumber, ds.SeriesDescription = 7, "ENHANCED"
    ds.Rows, ds.Columns = volume.spatial_shape[1], volume.spatial_shape[0]
    ds.NumberOfFrames = len(order)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]
    measures.SliceThickness = f"{spacing[2]:.6f}"
    plane_orientation = Dataset()
    plane_orientation.ImageOrientationPatient = [f"{v:.8f}" for v in (*f_row, *f_col)]
    shared.PixelMeasuresSequence = [measures]
    shared.PlaneOrientationSequence = [plane_orientation]
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame, pixels = [], []
    for k in order:
        item = Dataset()
        position = Dataset()
        position.ImagePositionPatient = [f"{v:.6f}" for v in (lps @ np.array([0.0, 0.0, k, 1.0]))[:3]]
        item.PlanePositionSequence = [position]
        transform = Dataset()
        transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = f"{slopes[k]:g}", f"{intercept:g}", "HU"
        item.PixelValueTransformationSequence = [transform]
        per_frame.append(item)
        stored = np.round((volume.array[0, :, :, k] - intercept) / slopes[k]).astype(np.int16)
        pixels.append(np.ascontiguousarray(stored.T))
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.PixelData = np.stack(pixels).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def truncate(path: Path, keep_fraction: float) -> None:
    """Cut a file short (a copy interrupted mid-transfer)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])


PLANTED = {
    "patient_name": "ZZTOPSECRET^WILHELMINA",
    "patient_id": "MRN-99887766",
    "patient_birth_date": "19411231",
    "accession_number": "ACC-55443322",
    "institution_name": "St Plantedname Hospital",
    "study_date": "20230719",
}
UIDS = {"study_uid": "1.2.826.0.1.3680043.8.498.424242", "series_uid": "1.2.826.0.1.3680043.8.498.434343"}


def planted_strings() -> list[str]:
    """Every identifier the tests plant, and the parts of names a leak could show."""
    values = list(PLANTED.values()) + list(UIDS.values())
    return values + ["ZZTOPSECRET", "WILHELMINA", "99887766", "Plantedname"]


def write_planted_series(folder, seed: int = 0, shape=(5, 5, 3), **overrides):
    """A CT series carrying every planted identifier (overrides replace some of them)."""
    from medssl.io.dicom_write import write_dicom_series

    kwargs = {**PLANTED, **UIDS, **overrides}
    return write_dicom_series(random_ct(shape, np.diag([1.0, 1.0, 2.0, 1.0]), seed), folder, manufacturer="ACME",
                              body_part="CHEST", series_description="AX 2.0", extra={"ReferringPhysicianName": "DR^PLANTEDNAME"}, **kwargs)
