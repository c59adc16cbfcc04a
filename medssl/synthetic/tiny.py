"""Small synthetic images for tests: a CT torso series, a brain MR NIfTI, and in-memory phantoms.

Other test suites need realistic but tiny inputs (16-32 voxels a side) without building a cohort:

* :func:`make_tiny_ct_series` writes a DICOM series (+ optional mask) with invented identifiers;
* :func:`make_tiny_mr_nifti` writes a brain NIfTI in any stored orientation (+ optional mask);
* :func:`make_ct_phantom` / :func:`make_mr_phantom` return a RAS+ :class:`~medssl.io.Volume` and its
  mask in memory, as :func:`medssl.io.load_volume` would give them.

The anatomy, intensity tables and label maps are those of the cohort (:mod:`medssl.synthetic.cohort`).
Everything derives from ``seed``: the same call gives the same bytes.

Example:
    >>> volume, mask = make_ct_phantom(3, shape=(16, 16, 10))
    >>> volume.array.shape, mask.dtype.name
    ((1, 16, 16, 10), 'uint8')
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from medssl.synthetic.acquisition import (
    canonical,
    ct_nominal_spacing,
    draw_ct_geometry,
    draw_mr_geometry,
    mr_nominal_spacing,
    write_ct_series,
    write_label_nifti,
    write_nifti,
)
from medssl.synthetic.ct_torso import draw_torso_anatomy, render_torso_ct
from medssl.synthetic.identities import draw_accession, draw_identity
from medssl.synthetic.mr_brain import draw_brain_anatomy, render_brain_mr
from medssl.io.volume import Volume
from medssl.utils.seeding import make_rng


def make_ct_phantom(
    seed: int,
    shape: tuple[int, int, int] = (24, 24, 16),
    *,
    lesion: bool = True,
    geometry: str = "standard",
    contrast: str = "venous",
) -> tuple[Volume, np.ndarray]:
    """A CT torso in memory: a RAS+ :class:`Volume` in HU and its ``(1, X, Y, Z)`` uint8 mask.

    Example:
        >>> volume, mask = make_ct_phantom(0)
        >>> volume.modality, volume.array.shape == mask.shape, volume.orientation
        ('CT', True, 'RAS')
    """
    rng = make_rng(seed, "tiny-ct")
    anatomy = draw_torso_anatomy(rng, lesion=lesion, grid_scale_mm=ct_nominal_spacing(shape))
    scan = draw_ct_geometry(rng, shape, geometry)
    ct = render_torso_ct(anatomy, scan, rng, contrast=contrast, noise_hu=12.0)
    hu, affine = canonical(ct.hu, scan.affine)
    labels, _ = canonical(ct.labels, scan.affine)
    return Volume(hu[None], affine, "CT"), labels[None].astype(np.uint8)


def make_mr_phantom(
    seed: int,
    shape: tuple[int, int, int] = (24, 24, 24),
    *,
    lesion: bool = True,
    axcodes: str = "RAS",
    sequence: str = "T1w",
) -> tuple[Volume, np.ndarray]:
    """A brain MR in memory: a RAS+ :class:`Volume` and its ``(1, X, Y, Z)`` uint8 mask.

    Example:
        >>> volume, mask = make_mr_phantom(0, sequence="T2w")
        >>> volume.modality, int(mask.max())
        ('MR', 4)
    """
    rng = make_rng(seed, "tiny-mr")
    anatomy = draw_brain_anatomy(rng, lesion=lesion, grid_scale_mm=mr_nominal_spacing(shape))
    scan = draw_mr_geometry(rng, shape, axcodes)
    mr = render_brain_mr(anatomy, scan, rng, sequence=sequence)
    image, affine = canonical(mr.intensity, scan.affine)
    labels, _ = canonical(mr.labels, scan.affine)
    return Volume(image[None], affine, "MR"), labels[None].astype(np.uint8)


def make_tiny_ct_series(
    folder: str | os.PathLike,
    seed: int,
    shape: tuple[int, int, int] = (24, 24, 16),
    *,
    mask_path: str | os.PathLike | None = None,
    lesion: bool = True,
    geometry: str = "standard",
    contrast: str = "venous",
) -> Path:
    """Write a small CT torso as a DICOM series (``IM000001.dcm`` ...) into ``folder``; return ``folder``.

    The headers carry an invented identity (drawn from ``seed``; see
    :mod:`medssl.synthetic.identities`). With ``mask_path`` the label mask (:data:`CT_LABELS`) is
    written there as NIfTI with the series' geometry. ``geometry`` is one of ``standard``,
    ``reversed``, ``flipped_lr``, ``feet_first``, ``oblique``.

    Example:
        >>> import tempfile, pathlib
        >>> folder = make_tiny_ct_series(pathlib.Path(tempfile.mkdtemp()) / "ct", seed=1)
        >>> len(list(folder.glob("*.dcm")))
        16
    """
    rng = make_rng(seed, "tiny-ct-series")
    identity = draw_identity(make_rng(seed, "tiny-ct-identity"))
    anatomy = draw_torso_anatomy(rng, lesion=lesion, grid_scale_mm=ct_nominal_spacing(shape))
    scan = draw_ct_geometry(rng, shape, geometry)
    ct = render_torso_ct(anatomy, scan, rng, contrast=contrast, noise_hu=12.0)
    folder = Path(folder)
    write_ct_series(ct.hu, scan, folder, identity, uid_seed=f"medssl-tiny-ct/{seed}", study_date="20240105",
                     accession=draw_accession(rng), contrast=contrast)
    if mask_path is not None:
        write_label_nifti(ct.labels, scan.affine, mask_path)
    return folder


def make_tiny_mr_nifti(
    path: str | os.PathLike,
    seed: int,
    shape: tuple[int, int, int] = (24, 24, 24),
    *,
    mask_path: str | os.PathLike | None = None,
    lesion: bool = True,
    axcodes: str = "RAS",
    sequence: str = "T1w",
) -> Path:
    """Write a small brain MR as NIfTI (int16) at ``path``; return ``path``.

    With ``mask_path`` the label mask (:data:`MR_LABELS`) is written there with the same affine.
    ``axcodes`` sets the stored orientation (``"RAS"``, ``"LAS"``, ``"PIR"``..., or ``"oblique"``).

    Example:
        >>> import tempfile, pathlib
        >>> path = make_tiny_mr_nifti(pathlib.Path(tempfile.mkdtemp()) / "t1.nii.gz", seed=1, axcodes="LAS")
        >>> import nibabel as nib; "".join(nib.aff2axcodes(nib.load(path).affine))
        'LAS'
    """
    rng = make_rng(seed, "tiny-mr-nifti")
    anatomy = draw_brain_anatomy(rng, lesion=lesion, grid_scale_mm=mr_nominal_spacing(shape))
    scan = draw_mr_geometry(rng, shape, axcodes)
    mr = render_brain_mr(anatomy, scan, rng, sequence=sequence)
    write_nifti(mr.intensity, scan.affine, path)
    if mask_path is not None:
        write_label_nifti(mr.labels, scan.affine, mask_path)
    return Path(path)
