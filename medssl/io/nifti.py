"""NIfTI files through nibabel: load into a RAS+ :class:`Volume`, summarise a header, save a Volume.

Loading (:func:`load_nifti`):

* **Affine**: the one nibabel chooses (``image.affine``: the sform when its code is set, else the
  qform, else a scaled identity), recorded in ``meta["affine_source"]``.
* **Scaling**: ``scl_slope``/``scl_inter`` applied by nibabel (``get_fdata``), values in float32.
* **Dimensions**: 2D images get ``Z == 1``; 4D is ``(X, Y, Z, T)`` -> channels ``T``; 5D (vector or
  tensor intents, ``(X, Y, Z, 1, V)``) -> channels ``V`` (and ``T * V`` when both are larger than 1).
* **NaN and infinite values**, policy ``nonfinite``: ``"replace"`` (default) sets NaN to 0, ``+inf``
  to the largest and ``-inf`` to the smallest finite value of the image, and records the count in
  ``meta["nonfinite_replaced"]``; ``"error"`` raises :class:`~medssl.errors.VolumeReadError`;
  ``"keep"`` leaves them (downstream normalisation will then produce NaN). Registration outputs and
  masked statistical maps carry NaN outside the brain, so silently passing them on is never right.
* **Orientation**: :func:`medssl.io.orientation.reorient_to_ras`, the rule DICOM loading uses too.
* **Modality**: the ``modality`` argument, else ``"Modality"`` in a BIDS JSON sidecar beside the file,
  else the BIDS suffix (``_T1w``, ``_T2w``, ``_FLAIR``, ``_bold``, ``_dwi``... -> MR, ``_ct`` -> CT), else
  ``"OT"``. Allow-listed acquisition fields of the sidecar go to ``meta``
  (:func:`medssl.io.deid.filter_meta`); the NIfTI ``descrip`` text is not copied (free text).

Gap filled here: nibabel reads and canonicalises, but leaves the NaN policy, channel layout and
modality to the caller.

Example:
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "sub-01_T1w.nii.gz")
    >>> _ = save_volume(Volume(np.ones((1, 4, 5, 6), np.float32), np.diag([-1.0, 1, 1, 1])), path)
    >>> volume = load_nifti(path)
    >>> volume.modality, volume.orientation, volume.spatial_shape
    ('MR', 'RAS', (4, 5, 6))
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np

from medssl.errors import VolumeReadError
from medssl.io import deid
from medssl.io.limits import ReadLimits, as_limits
from medssl.io.orientation import orientation_code, reorient_to_ras, reoriented_geometry
from medssl.io.volume import Volume
from medssl.utils.atomic import atomic_path

logger = logging.getLogger(__name__)

NonFinitePolicy = Literal["replace", "error", "keep"]
NIFTI_SUFFIXES = (".nii", ".nii.gz")
_BIDS_MR_SUFFIXES = {
    "t1w", "t2w", "flair", "pd", "pdw", "t2star", "t2starw", "inplanet1", "inplanet2", "pdt2", "angio",
    "bold", "cbv", "dwi", "asl", "m0scan", "epi", "phasediff", "magnitude", "magnitude1", "magnitude2",
    "phase1", "phase2", "fieldmap", "unit1", "mp2rage", "t1map", "t2map", "r1map", "r2map", "mtr",
}  # fmt: skip


def is_nifti_path(path: str | os.PathLike) -> bool:
    name = os.fspath(path).lower()
    return name.endswith(NIFTI_SUFFIXES)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _sidecar(path: Path, log_name: str = "<file>") -> dict[str, Any]:
    sidecar = path.with_name(_stem(path) + ".json")
    if not sidecar.is_file():
        return {}
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        logger.warning("ignoring the unreadable JSON sidecar of %s (%s)", log_name, type(exc).__name__)
        return {}
    return data if isinstance(data, dict) else {}


def guess_modality(path: str | os.PathLike, sidecar: dict[str, Any] | None = None) -> str:
    """Modality of a NIfTI file from its BIDS sidecar or file-name suffix (see the module docstring)."""
    path = Path(path)
    sidecar = _sidecar(path) if sidecar is None else sidecar
    modality = sidecar.get("Modality")
    if isinstance(modality, str) and modality.strip():
        return modality.strip().upper()
    match = re.search(r"_([A-Za-z0-9]+)$", _stem(path))
    if match:
        suffix = match.group(1).lower()
        if suffix in _BIDS_MR_SUFFIXES:
            return "MR"
        if suffix == "ct":
            return "CT"
        if suffix == "pet":
            return "PT"
    return "OT"


def _channels_first(data: np.ndarray, path: Path) -> np.ndarray:
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim == 3:
        return data[None]
    if data.ndim in (4, 5):
        channels = int(np.prod(data.shape[3:]))
        return np.moveaxis(data.reshape(data.shape[:3] + (channels,)), -1, 0)
    raise VolumeReadError(path, f"expected a 2D to 5D image, got {data.ndim} dimensions", hint="split it into volumes first")


def handle_nonfinite(
    array: np.ndarray, policy: NonFinitePolicy, path: str | os.PathLike, *, log_name: str = "<file>"
) -> tuple[np.ndarray, int]:
    """Apply the NaN/inf policy (see the module docstring); returns the array and the count replaced.

    ``path`` goes into the error; the log record names ``log_name`` (never a path)."""
    if policy == "keep":
        return array, 0
    finite = np.isfinite(array)
    if finite.all():
        return array, 0
    count = int(array.size - np.count_nonzero(finite))
    if policy == "error":
        raise VolumeReadError(path, f"{count} voxels are NaN or infinite", hint='pass nonfinite="replace" to set them to finite values')
    if policy != "replace":
        raise ValueError(f'nonfinite must be "replace", "error" or "keep", got {policy!r}')
    values = array[finite]
    high = float(values.max()) if values.size else 0.0
    low = float(values.min()) if values.size else 0.0
    array = np.nan_to_num(array, nan=0.0, posinf=high, neginf=low)
    logger.info("%s: replaced %d NaN/infinite voxels", log_name, count)
    return array, count


def _valid_affine(affine: np.ndarray) -> bool:
    """Finite, and its 3x3 part invertible (a zero or collapsed sform/qform is not)."""
    matrix = affine[:3, :3]
    if not np.all(np.isfinite(affine)):
        return False
    return bool(abs(np.linalg.det(matrix)) > 1e-12 * max(1.0, float(np.abs(matrix).max()) ** 3))


def choose_affine(header: Any) -> tuple[np.ndarray, str, str | None, bool]:
    """``(affine, source, issue, spacing_known)``: the affine nibabel would choose (sform when its code
    is set, else qform, else the voxel sizes), skipping an invalid one (all zeros, NaN, singular).

    Gap filled here: nibabel returns an all-zero sform when its code is set (a writer bug seen in
    real exports), and every reorientation then fails. Here the next valid transform is used and
    ``issue`` says so; voxel sizes of 0 (no transform at all) become 1 mm, ``spacing_known=False``.
    """
    issues = []
    candidates = []
    if int(header["sform_code"]) > 0:
        candidates.append(("sform", header.get_sform))
    if int(header["qform_code"]) > 0:
        candidates.append(("qform", header.get_qform))
    for source, get in candidates:
        try:
            affine = np.asarray(get(), dtype=np.float64)
        except Exception as exc:  # a corrupt quaternion: nibabel raises HeaderDataError and others
            issues.append(f"the {source} cannot be read ({type(exc).__name__})")
            continue
        if _valid_affine(affine):
            issue = "; ".join(issues) + f"; used the {source}" if issues else None
            return affine, source, issue, True
        issues.append(f"the {source} (code {int(header[source + '_code'])}) is {'all zeros' if not affine[:3, :3].any() else 'singular or not finite'}")
    zooms = np.asarray(header.get_zooms()[:3], dtype=np.float64)
    zooms = np.concatenate([zooms, np.ones(3 - zooms.size)])
    spacing_known = bool(np.all(np.isfinite(zooms) & (zooms > 0)))
    if not spacing_known:
        zooms = np.where(np.isfinite(zooms) & (zooms > 0), zooms, 1.0)
        issues.append("voxel sizes (pixdim) are 0 or invalid: 1 mm assumed")
    shape = (tuple(int(s) for s in header.get_data_shape()) + (1, 1, 1))[:3]
    affine = np.diag([-zooms[0], zooms[1], zooms[2], 1.0])  # nibabel's base affine: LAS, centred
    affine[:3, 3] = -(np.asarray(shape) - 1) / 2.0 * np.diag(affine)[:3]
    if issues and candidates:
        issues.append("used the voxel sizes (orientation unknown)")
    return affine, "pixdim", "; ".join(issues) or None, spacing_known


def _describe(exc: Exception) -> str:
    """An exception as text that is never empty (nibabel raises some without a message)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _open(path: Path, limits: ReadLimits | None = None) -> Any:
    """nibabel's image of ``path`` after the checks that need no voxel data: not empty, a NIfTI
    header, within the size limits (:mod:`medssl.io.limits`), and (uncompressed) holding every
    byte of data its header promises."""
    if not path.is_file():
        raise VolumeReadError(path, "no such file")
    size = path.stat().st_size
    if size == 0:
        raise VolumeReadError(path, "empty file (0 bytes): an interrupted copy?", hint="copy it again")
    try:
        image = nib.load(str(path))
    except Exception as exc:  # nibabel raises many kinds
        raise VolumeReadError(path, f"not a readable NIfTI file ({_describe(exc)})") from exc
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise VolumeReadError(path, f"{type(image).__name__} is not a NIfTI image")
    header = image.header
    shape = tuple(int(s) for s in header.get_data_shape())
    if any(s <= 0 for s in shape):
        raise VolumeReadError(path, f"the header gives an empty shape {shape}")
    voxels = int(np.prod(shape, dtype=object))
    itemsize = np.dtype(header.get_data_dtype()).itemsize
    stored = voxels * itemsize
    problem = as_limits(limits).problem(voxels=voxels, stored_bytes=stored, shape=shape)
    if problem:
        raise VolumeReadError(path, f"the header promises {problem}", hint="check the file; raise the limit if it is real")
    if not path.name.lower().endswith(".gz"):
        needed = int(header.get_data_offset()) + stored
        if size < needed:
            raise VolumeReadError(path, f"file truncated: the header promises {needed} bytes, the file has {size}",
                                  hint="an interrupted copy? copy it again")
    return image


def load_nifti(
    path: str | os.PathLike,
    modality: str | None = None,
    *,
    nonfinite: NonFinitePolicy = "replace",
    reorient: bool = True,
    limits: ReadLimits | None = None,
    log_name: str | None = None,
) -> Volume:
    """Read a NIfTI-1/2 file (``.nii`` or ``.nii.gz``) into a RAS+ :class:`Volume`.

    ``limits``: the size guard checked from the header (:mod:`medssl.io.limits`). ``log_name``: how
    log records name the file (default ``<file>``; never its path).

    Raises:
        VolumeReadError: missing, empty, unreadable or truncated file, a header beyond the size
            limits, unsupported dimensions, or non-finite values with ``nonfinite="error"``.
    """
    path = Path(path)
    name = log_name or "<file>"
    image = _open(path, limits)
    try:
        data = image.get_fdata(dtype=np.float32)
    except Exception as exc:  # truncated data, bad datatype...
        raise VolumeReadError(path, f"NIfTI data cannot be read ({_describe(exc)})") from exc
    array = _channels_first(data, path)
    array, replaced = handle_nonfinite(array, nonfinite, path, log_name=name)
    affine, source, issue, spacing_known = choose_affine(image.header)
    if issue:
        logger.warning("%s: %s", name, issue)
    if reorient:
        try:
            array, affine = reorient_to_ras(array, affine)
        except Exception as exc:
            raise VolumeReadError(path, f"the affine cannot be reoriented ({_describe(exc)})") from exc
    sidecar = _sidecar(path, name)
    meta: dict[str, Any] = deid.filter_meta(sidecar)
    meta.update(
        source_format="nifti",
        affine_source=source,
        stored_dtype=str(image.get_data_dtype()),
        nonfinite_replaced=replaced,
        spacing_known=spacing_known,
    )
    if issue:
        meta["affine_issue"] = issue
    return Volume(array, affine, modality or guess_modality(path, sidecar), meta)


def nifti_summary(path: str | os.PathLike, limits: ReadLimits | None = None) -> dict[str, Any]:
    """Shape, spacing and orientation a load would give, from the header only (no voxel data read).

    ``issue`` says which affine was used when the preferred one is invalid (:func:`choose_affine`);
    ``spacing_known`` is false when the voxel sizes were assumed.

    Raises:
        VolumeReadError: what :func:`load_nifti` would raise before reading voxels (empty, not NIfTI,
            beyond the size limits, truncated uncompressed data).
    """
    path = Path(path)
    image = _open(path, limits)
    shape = tuple(int(s) for s in image.shape)
    spatial = (shape + (1, 1, 1))[:3]
    channels = int(np.prod(shape[3:])) if len(shape) > 3 else 1
    if len(shape) > 5:
        raise VolumeReadError(path, f"expected a 2D to 5D image, got {len(shape)} dimensions", hint="split it into volumes first")
    affine, source, issue, spacing_known = choose_affine(image.header)
    try:
        new_shape, affine = reoriented_geometry(affine, spatial)  # type: ignore[arg-type]
    except Exception as exc:
        raise VolumeReadError(path, f"the affine cannot be reoriented ({_describe(exc)})") from exc
    sidecar = _sidecar(path, "<file>")
    return {
        "modality": guess_modality(path, sidecar),
        "channels": channels,
        "shape": new_shape,
        "spacing": tuple(round(float(s), 6) for s in np.linalg.norm(affine[:3, :3], axis=0)),
        "orientation": orientation_code(affine),
        "affine_source": source,
        "affine_issue": issue,
        "spacing_known": spacing_known,
        "stored_dtype": str(image.get_data_dtype()),
        "meta": deid.filter_meta(sidecar),
    }


def save_volume(volume: Volume, path: str | os.PathLike) -> Path:
    """Write ``volume`` as NIfTI-1 (``.nii`` or ``.nii.gz``), atomically; several channels become 4D.

    The affine goes to the sform (code 1, scanner); the qform gets it too unless it is sheared (a
    tilted CT), which a qform cannot represent, and then has code 0 so readers use the sform.
    """
    path = Path(path)
    if not is_nifti_path(path):
        raise ValueError(f"save_volume writes NIfTI; the path must end in .nii or .nii.gz, got {path.name}")
    data = volume.array[0] if volume.num_channels == 1 else np.moveaxis(volume.array, 0, -1)
    image = nib.Nifti1Image(data, volume.affine)
    image.set_sform(volume.affine, code=1)
    columns = volume.affine[:3, :3] / np.linalg.norm(volume.affine[:3, :3], axis=0)
    orthogonal = np.allclose(columns.T @ columns, np.eye(3), atol=1e-6)
    image.set_qform(volume.affine if orthogonal else None, code=1 if orthogonal else 0)
    suffix = ".nii.gz" if path.name.lower().endswith(".nii.gz") else ".nii"
    with atomic_path(path, suffix=suffix) as tmp:
        nib.save(image, str(tmp))
    return path
