"""``load_volume``: one entry point for every image file medssl reads.

Dispatch: a path ending in ``.nii``/``.nii.gz`` -> :func:`medssl.io.nifti.load_nifti`; any other
file, a folder or a list of files -> :func:`medssl.io.dicom.load_dicom`. Both return a
:class:`~medssl.io.Volume` in RAS+ voxel order with a de-identified ``meta``, and apply the same
NaN/inf policy (``nonfinite``, see :mod:`medssl.io.nifti`).

Example:
    >>> import numpy as np, tempfile, os
    >>> from medssl.io.nifti import save_volume
    >>> path = os.path.join(tempfile.mkdtemp(), "ct.nii.gz")
    >>> _ = save_volume(Volume(np.zeros((1, 4, 4, 3), np.float32), np.diag([0.8, 0.8, 2.0, 1])), path)
    >>> load_volume(path, modality="CT")
    Volume(modality='CT', shape=(1, 4, 4, 3), spacing=(0.8, 0.8, 2), orientation='RAS')
"""

from __future__ import annotations

import os
from typing import Literal, Sequence

from medssl.errors import VolumeReadError
from medssl.io.dicom import load_dicom
from medssl.io.nifti import NonFinitePolicy, handle_nonfinite, is_nifti_path, load_nifti
from medssl.io.volume import Volume


def load_volume(
    path: str | os.PathLike | Sequence[str | os.PathLike],
    series_uid: str | None = None,
    *,
    on_uneven: Literal["error", "resample"] = "error",
    nonfinite: NonFinitePolicy = "replace",
    modality: str | None = None,
    reorient: bool = True,
    salt: str | bytes | None = None,
) -> Volume:
    """Load a NIfTI file, a DICOM file, a folder of DICOM series or a list of one series' files.

    Args:
        path: the file, folder or list of DICOM files.
        series_uid: which series to load when a folder or list holds several (DICOM only).
        on_uneven: DICOM series with missing slices or uneven spacing: ``"error"`` or ``"resample"``
            (linear interpolation onto a regular grid; ``meta["resampled_slices"]`` is then set).
        nonfinite: NaN/inf voxels: ``"replace"`` (recorded in ``meta["nonfinite_replaced"]``),
            ``"error"`` or ``"keep"``.
        modality: overrides the modality (NIfTI files do not store one).
        reorient: ``False`` keeps the file's voxel order (DICOM: column, row, slice).
        salt: pseudonymisation salt for the keys in ``meta`` (default: ``$MEDSSL_DEID_SALT``).

    Returns:
        a :class:`Volume` ``(C, X, Y, Z)`` float32, RAS+ affine in mm, CT in HU.

    Raises:
        NotAnImageError: a DICOM object that holds no image (SR, RTSTRUCT, presentation state).
        VolumeReadError: anything that cannot be read into a trustworthy volume, naming the file and
            the reason.
    """
    if isinstance(path, (str, os.PathLike)):
        if not os.path.exists(path):
            raise VolumeReadError(path, "no such file or folder")
        if is_nifti_path(path):
            if series_uid is not None:
                raise VolumeReadError(path, "series_uid applies to DICOM, not to a NIfTI file")
            return load_nifti(path, modality, nonfinite=nonfinite, reorient=reorient)
    elif not path:
        raise VolumeReadError("<empty list>", "no files given")
    volume = load_dicom(path, series_uid, on_uneven=on_uneven, reorient=reorient, salt=salt)
    source = path if isinstance(path, (str, os.PathLike)) else os.path.commonpath([os.fspath(p) for p in path])
    volume.array, replaced = handle_nonfinite(volume.array, nonfinite, source)
    if replaced:
        volume.meta["nonfinite_replaced"] = replaced
    if modality:
        volume.modality = modality.upper()
    return volume
