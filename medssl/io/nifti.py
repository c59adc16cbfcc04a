"""NIfTI files through nibabel: load into a RAS+ :class:`Volume`, save a :class:`Volume`.

(A first version for the walking skeleton; the io layer deepens it: NaN policy, 4D, qform/sform.)
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from medssl.errors import VolumeReadError
from medssl.io.volume import Volume
from medssl.utils.atomic import atomic_path


def load_nifti(path: str | os.PathLike, modality: str = "OT") -> Volume:
    """Read a NIfTI file and reorient it to the closest RAS+ order."""
    path = Path(path)
    try:
        image = nib.load(str(path))
        image = nib.as_closest_canonical(image)
        data = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel raises many kinds
        raise VolumeReadError(path, f"not a readable NIfTI file ({exc})") from exc
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim == 3:
        data = data[None]
    elif data.ndim == 4:
        data = np.moveaxis(data, -1, 0)
    else:
        raise VolumeReadError(path, f"expected a 2D, 3D or 4D image, got {data.ndim} dimensions")
    return Volume(data, image.affine, modality, {})


def save_volume(volume: Volume, path: str | os.PathLike) -> Path:
    """Write ``volume`` as NIfTI (``.nii`` or ``.nii.gz``), atomically. Several channels become 4D."""
    path = Path(path)
    data = volume.array[0] if volume.num_channels == 1 else np.moveaxis(volume.array, 0, -1)
    image = nib.Nifti1Image(data, volume.affine)
    image.set_qform(volume.affine, code=1)
    image.set_sform(volume.affine, code=1)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    with atomic_path(path, suffix=suffix) as tmp:
        nib.save(image, str(tmp))
    return path
