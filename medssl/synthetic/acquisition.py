"""Acquisition protocols of the synthetic cohort: grid sizes, scanner geometry draws, and writers.

The CT protocol mimics an abdominal CT from a 512-matrix scanner scaled down to a small grid: the
in-plane spacing is ``u * 512 / nx`` with ``u`` in 0.7-0.9 mm (5.6-7.2 mm at 64 voxels), the slices
cover 320-420 mm (lower chest to pelvis), and the stored orientation is one of the variants of
:mod:`medssl.synthetic.scan_geometry`. The MR protocol has a ~220 mm field of view
(``u * 220 / n``, ``u`` in 0.95-1.1), every third subject with 1.3x thicker slices, stored under
NIfTI axis codes (RAS, LAS, LPS, LIA, PIR...) or oblique (pitched 6-14 degrees).

Writers: :func:`write_ct_series` wraps :func:`medssl.io.dicom_write.write_dicom_series` with the
header fields a scanner fills; :func:`write_nifti` writes int16/uint8 NIfTI-1 with qform = sform =
the affine (deterministic gzip, atomic). Gap filled: nibabel writes whatever header it is given;
these fix the conventions of the synthetic archive in one place.

Example:
    >>> import numpy as np
    >>> ct_grid_shape(64), mr_grid_shape(64)
    ((64, 64, 40), (48, 48, 48))
    >>> g = draw_ct_geometry(np.random.default_rng(0), (64, 64, 40), "reversed")
    >>> g.axcodes, 5.6 <= g.spacing[0] <= 7.2
    ('LPI', True)
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from medssl.synthetic.fields import rotation_matrix
from medssl.synthetic.identities import FakeIdentity
from medssl.synthetic.scan_geometry import ScanGeometry, axcode_directions, ct_directions
from medssl.io.dicom_write import write_dicom_series
from medssl.io.volume import Volume
from medssl.utils.atomic import atomic_path


def ct_grid_shape(size: int) -> tuple[int, int, int]:
    """CT grid for a ``size``: ``(size, size, round(0.625 * size))`` (64 -> 64 x 64 x 40)."""
    return (size, size, max(4, int(round(0.625 * size))))


def mr_grid_shape(size: int) -> tuple[int, int, int]:
    """MR grid for a ``size``: ``round(0.75 * size)`` per side (64 -> 48^3)."""
    side = max(8, int(round(0.75 * size)))
    return (side, side, side)


def ct_nominal_spacing(shape: tuple[int, int, int]) -> float:
    """Nominal in-plane spacing of a CT grid: 0.8 mm at a 512 matrix, scaled to ``shape[0]``."""
    return 0.8 * 512.0 / shape[0]


def mr_nominal_spacing(shape: tuple[int, int, int]) -> float:
    """Nominal MR spacing: a 220 mm field of view over ``shape[0]`` voxels."""
    return 220.0 / shape[0]


def draw_ct_geometry(rng: np.random.Generator, shape: tuple[int, int, int], variant: str) -> ScanGeometry:
    """A CT acquisition grid: spacing ``u * 512 / nx`` (u in 0.7-0.9) in-plane, coverage 320-420 mm
    over the slices, the table centre a few cm off the anatomy's centre."""
    inplane = rng.uniform(0.7, 0.9) * 512.0 / shape[0]
    slice_spacing = rng.uniform(320.0, 420.0) / shape[2]
    spacing = (round(inplane, 3), round(inplane, 3), round(slice_spacing, 3))
    center = np.array([rng.uniform(-15, 15), rng.uniform(-10, 20), rng.uniform(-25, 25)])
    return ScanGeometry(tuple(shape), spacing, ct_directions(variant, rng), center)  # type: ignore[arg-type]


def draw_mr_geometry(rng: np.random.Generator, shape: tuple[int, int, int], variant: str) -> ScanGeometry:
    """An MR grid: ``u * 220 / n`` mm (u in 0.95-1.1), every third subject with 1.3x thicker slices
    along the third array axis; ``variant`` is axis codes or ``oblique`` (RAS pitched 6-14 degrees)."""
    base = rng.uniform(0.95, 1.1) * 220.0 / shape[0]
    thick = rng.uniform() < 0.33
    spacing = (round(base, 3), round(base, 3), round(base * (1.3 if thick else 1.0), 3))
    if variant == "oblique":
        pitch = np.deg2rad(rng.uniform(6.0, 14.0)) * rng.choice([-1.0, 1.0])
        directions = rotation_matrix((pitch, 0.0, np.deg2rad(rng.uniform(-5, 5))))
    else:
        directions = axcode_directions(variant)
    center = rng.uniform(-8.0, 8.0, 3)
    return ScanGeometry(tuple(shape), spacing, directions, center)  # type: ignore[arg-type]


def write_label_nifti(labels: np.ndarray, affine: np.ndarray, path: str | os.PathLike) -> Path:
    """Write an integer mask as a uint8 NIfTI with ``affine`` (sform and qform), atomically."""
    return write_nifti(labels.astype(np.uint8), affine, path, dtype=np.uint8)


def write_nifti(
    array: np.ndarray,
    affine: np.ndarray,
    path: str | os.PathLike,
    *,
    dtype: type = np.int16,
    slope: float = 1.0,
) -> Path:
    """Write ``array`` as NIfTI-1 stored as ``dtype`` with ``scl_slope = slope``, atomically.

    Stored values are ``round(array / slope)``, so a reader applying the slope gets ``array`` back
    to within ``slope / 2``. ``.nii.gz`` output is deterministic (nibabel writes gzip with mtime 0).
    """
    path = Path(path)
    stored = array if np.issubdtype(np.dtype(dtype), np.floating) else np.round(array / slope)
    if np.issubdtype(np.dtype(dtype), np.integer):
        info = np.iinfo(dtype)
        stored = np.clip(stored, info.min, info.max)
    image = nib.Nifti1Image(stored.astype(dtype), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    if slope != 1.0:
        image.header.set_slope_inter(slope, 0.0)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    with atomic_path(path, suffix=suffix) as tmp:
        nib.save(image, str(tmp))
    return path


def canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``array`` and ``affine`` reoriented to the closest RAS+ order (as ``load_volume`` does)."""
    image = nib.as_closest_canonical(nib.Nifti1Image(array, affine))
    return np.asarray(image.dataobj), image.affine


def write_ct_series(
    hu: np.ndarray,
    scan: ScanGeometry,
    folder: Path,
    identity: FakeIdentity,
    *,
    uid_seed: str,
    study_date: str,
    accession: str,
    contrast: str,
    series_number: int = 2,
    instance_order: str = "ascending",
    file_names: list[str] | None = None,
    rescale_intercept: float = -1024.0,
    rng: np.random.Generator | None = None,
    study_uid: str | None = None,
) -> list[Path]:
    """Write HU ``hu`` (stored grid of ``scan``) as a CT DICOM series with ``identity`` in the headers.

    The series description, contrast agent, kernel, station, operator and age fields are filled as a
    scanner would; UIDs derive from ``uid_seed`` (the study's from ``uid_seed`` too unless
    ``study_uid`` is given), so the files are byte-identical for the same inputs.
    """
    description = "PORTAL VENOUS 5.0 B30f" if contrast == "venous" else "NATIVE 5.0 B30f"
    extra = {
        "StationName": identity.station,
        "OperatorsName": identity.operator,
        "InstitutionAddress": identity.institution_address,
        "PatientAge": identity.age_on(study_date),
        "ConvolutionKernel": "B30f",
        "ContrastBolusAgent": "IOPAMIDOL 370" if contrast == "venous" else "",
        "ManufacturerModelName": "SYNTHETOM 64",
    }
    volume = Volume(hu[None], scan.affine, "CT")
    return write_dicom_series(
        volume,
        folder,
        patient_name=identity.dicom_name,
        patient_id=identity.patient_id,
        patient_birth_date=identity.birth_date,
        patient_sex=identity.sex,
        uid_seed=uid_seed,
        study_uid=study_uid,
        study_date=study_date,
        accession_number=accession,
        institution_name=identity.institution,
        body_part="ABDOMEN",
        series_description=description,
        series_number=series_number,
        rescale_intercept=rescale_intercept,
        instance_order=instance_order,
        file_names=file_names,
        extra=extra,
        rng=rng,
    )


def study_uid(uid_seed: str) -> str:
    """The StudyInstanceUID that ``write_dicom_series(..., uid_seed=uid_seed)`` gives a series."""
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[f"{uid_seed}/study"])
