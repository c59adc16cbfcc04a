"""DICOM geometry: from slice positions and orientations to a voxel grid and its affine.

Used by both :func:`medssl.io.load_volume` and the manifest (which never decodes pixels), so the
geometry a manifest reports is the geometry a load gives.

DICOM PS3.3 C.7.6.2.1.1: the world position (LPS, mm) of pixel ``(row r, column c)`` of a plane is
``P = IPP + c * dc * F_row + r * dr * F_col`` with ``IOP = (F_row, F_col)``, ``PixelSpacing = (dr,
dc)``. A stack of planes is sorted by the distance of each ``IPP`` along the slice normal
``n = F_row x F_col``, ``d_k = IPP_k . n``, never by file name or InstanceNumber (both are
unreliable in exports). The native voxel grid is ``(column, row, slice)`` and its LPS affine is::

    [ F_row * dc | F_col * dr | v * s | IPP_0 ]

where ``s`` is the slice spacing fitted to the positions and ``v`` the unit-normal-projected stack
direction ``dIPP / dd`` (``v . n = 1``): ``v == n`` for ordinary stacks, and for a CT with gantry
tilt ``v`` leans along the tilt, so the affine is sheared and keeps the true position of every voxel
(the tilt angle is ``arccos(1 / |v|)``). A stack whose positions leave gaps (missing slices) or vary
in spacing beyond ``tolerance * s`` is refused, or resampled onto a regular grid by linear
interpolation between the two nearest acquired planes when asked (``on_uneven="resample"``).

Gap filled here: pydicom reads attributes but assembles no volumes; SimpleITK/GDCM sort series but
silently ignore gaps and tilt, and MONAI's readers delegate to them.

Example:
    >>> import numpy as np
    >>> planes = [PlaneGeometry((0.0, 0.0, z), (1, 0, 0, 0, 1, 0), (0.5, 0.5), 4, 4) for z in (5.0, 0.0, 2.5)]
    >>> stack = assemble_stack(planes, name="demo series")
    >>> stack.order, stack.spacing
    ([1, 2, 0], (0.5, 0.5, 2.5))
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np

from medssl.errors import VolumeReadError

logger = logging.getLogger(__name__)

#: The axial orientation DICOM implies when a 2D image gives none (rows along +x, columns along +y).
DEFAULT_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
#: Relative tolerance on slice positions (fraction of the slice spacing).
SPACING_TOLERANCE = 0.05

_PATIENT_DIRECTIONS = {
    "L": (1.0, 0.0, 0.0),
    "R": (-1.0, 0.0, 0.0),
    "P": (0.0, 1.0, 0.0),
    "A": (0.0, -1.0, 0.0),
    "H": (0.0, 0.0, 1.0),
    "F": (0.0, 0.0, -1.0),
}


@dataclass(frozen=True, slots=True)
class PlaneGeometry:
    """Geometry of one image plane (a file, or a frame of a multi-frame file).

    ``position`` is ImagePositionPatient (LPS mm) or ``None``; ``orientation`` is
    ImageOrientationPatient (6 direction cosines) or ``None``; ``pixel_spacing`` is
    ``(row spacing, column spacing)`` in mm or ``None``.
    """

    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, float] | None
    rows: int
    columns: int


@dataclass
class StackGeometry:
    """A voxel grid built from planes: which plane fills each slice, and the native LPS affine.

    ``order[k]`` is the input plane shown at slice ``k``. When ``resample`` is set, slice ``k`` is
    ``(1 - w) * plane[lo] + w * plane[hi]`` for ``resample[k] == (lo, hi, w)`` (indices into the
    input planes) and ``order`` lists the planes read. ``notes`` go into ``Volume.meta``.
    """

    order: list[int]
    affine_lps: np.ndarray
    shape: tuple[int, int, int]
    resample: list[tuple[int, int, float]] | None = None
    issue: str | None = None
    notes: dict = field(default_factory=dict)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(round(float(s), 6) for s in np.linalg.norm(self.affine_lps[:3, :3], axis=0))  # type: ignore[return-value]


def _unit(vector: np.ndarray, what: str, name: str) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm < 1e-6:
        raise VolumeReadError(name, f"{what} is not a direction ({vector.tolist()})", hint="ImageOrientationPatient is corrupt")
    return vector / norm


def orientation_axes(orientation: Sequence[float], name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(F_row, F_col, normal)`` unit vectors from ImageOrientationPatient."""
    values = np.asarray(orientation, dtype=np.float64)
    if values.shape != (6,):
        raise VolumeReadError(name, f"ImageOrientationPatient has {values.size} values, 6 expected")
    f_row = _unit(values[:3], "the row direction", name)
    f_col = _unit(values[3:], "the column direction", name)
    if abs(float(f_row @ f_col)) > 1e-3:
        raise VolumeReadError(name, "ImageOrientationPatient row and column directions are not orthogonal")
    return f_row, f_col, np.cross(f_row, f_col)


def orientation_from_patient_orientation(codes: Sequence[str] | None) -> tuple[float, ...] | None:
    """Direction cosines from PatientOrientation (e.g. ``("L", "F")`` for a PA chest radiograph).

    The first code is the direction of increasing column index (along a row), the second of
    increasing row index; of combined codes (``"FL"``) the first letter, the dominant one, is used.
    """
    if not codes or len(codes) != 2:
        return None
    try:
        row = _PATIENT_DIRECTIONS[str(codes[0]).strip().upper()[0]]
        col = _PATIENT_DIRECTIONS[str(codes[1]).strip().upper()[0]]
    except (KeyError, IndexError):
        return None
    if abs(float(np.dot(row, col))) > 0.5:
        return None
    return (*row, *col)


def _check_same_grid(planes: Sequence[PlaneGeometry], name: str) -> None:
    first = planes[0]
    sizes = {(p.rows, p.columns) for p in planes}
    if len(sizes) > 1:
        shown = " and ".join(f"{r}x{c}" for r, c in sorted(sizes)[:2])
        raise VolumeReadError(
            name,
            f"planes differ in size ({shown})",
            hint="the series mixes images (a localizer?); load the files of one stack as a list",
        )
    orientations = np.array([p.orientation for p in planes], dtype=np.float64)
    if np.max(np.abs(orientations - orientations[0])) > 1e-4:
        raise VolumeReadError(
            name,
            "planes differ in orientation (ImageOrientationPatient)",
            hint="the series mixes stacks (a localizer or several orientations); load one stack as a list of files",
        )
    missing = {p.pixel_spacing is None for p in planes}
    if len(missing) > 1:
        raise VolumeReadError(name, "planes differ in PixelSpacing (some have none)")
    if first.pixel_spacing is not None:
        spacings = np.array([p.pixel_spacing for p in planes], dtype=np.float64)
        if np.max(np.abs(spacings - spacings[0])) > 1e-4 * float(np.max(spacings[0])):
            raise VolumeReadError(name, "planes differ in PixelSpacing")


def _in_plane_columns(plane: PlaneGeometry, orientation: Sequence[float], name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    f_row, f_col, normal = orientation_axes(orientation, name)
    row_spacing, col_spacing = plane.pixel_spacing or (1.0, 1.0)
    if not (row_spacing > 0 and col_spacing > 0):
        raise VolumeReadError(name, f"PixelSpacing must be positive, got {plane.pixel_spacing}")
    return f_row * col_spacing, f_col * row_spacing, normal


def single_plane(
    plane: PlaneGeometry,
    *,
    slice_spacing: float | None = None,
    patient_orientation: Sequence[str] | None = None,
    n_slices: int = 1,
    name: str = "image",
) -> StackGeometry:
    """Geometry of one plane (a 2D image, ``Z == 1``) or of ``n_slices`` unpositioned frames.

    Without ImageOrientationPatient the orientation comes from PatientOrientation, else the axial
    default; without ImagePositionPatient the origin is 0; without PixelSpacing the pixel is 1 mm.
    Frames without positions (cine, NM) are stacked along the normal at ``slice_spacing`` (1 mm when
    unknown), in stored order. ``notes`` record every assumption.
    """
    notes: dict = {}
    orientation = plane.orientation
    if orientation is None:
        orientation = orientation_from_patient_orientation(patient_orientation)
        notes["orientation_assumed"] = orientation is None
        orientation = orientation or DEFAULT_ORIENTATION
    col_axis, row_axis, normal = _in_plane_columns(plane, orientation, name)
    if plane.pixel_spacing is None:
        notes["pixel_spacing_assumed"] = True
    if plane.position is None:
        notes["position_assumed"] = True
    if n_slices > 1:
        notes["frames_positioned"] = False
    step = float(slice_spacing) if slice_spacing and slice_spacing > 0 else 1.0
    affine = np.eye(4)
    affine[:3, 0] = col_axis
    affine[:3, 1] = row_axis
    affine[:3, 2] = normal * step
    affine[:3, 3] = plane.position if plane.position is not None else (0.0, 0.0, 0.0)
    return StackGeometry(list(range(n_slices)), affine, (plane.columns, plane.rows, n_slices), notes=notes)


def assemble_stack(
    planes: Sequence[PlaneGeometry],
    *,
    name: str = "series",
    on_uneven: Literal["error", "resample"] = "error",
    tolerance: float = SPACING_TOLERANCE,
    slice_spacing: float | None = None,
) -> StackGeometry:
    """Sort positioned planes along their normal into a regular grid (see the module docstring).

    Args:
        planes: every plane has a position and an orientation; same size, orientation and spacing.
        name: how errors name the series (a folder and description; never a UID or patient name).
        on_uneven: ``"error"`` raises on missing slices or uneven spacing; ``"resample"`` builds a
            regular grid at the typical (median) spacing and records ``resampled_slices``.
        tolerance: allowed deviation of a position from the regular grid, as a fraction of the spacing.
        slice_spacing: used only for a single plane (SpacingBetweenSlices or SliceThickness).

    Raises:
        VolumeReadError: inconsistent planes, two planes at one position, gaps or uneven spacing (with
            ``on_uneven="error"``), or positions that do not lie on a line.
    """
    if not planes:
        raise VolumeReadError(name, "no image planes")
    if any(p.position is None or p.orientation is None for p in planes):
        raise VolumeReadError(name, "some planes have no ImagePositionPatient/ImageOrientationPatient")
    _check_same_grid(planes, name)
    col_axis, row_axis, normal = _in_plane_columns(planes[0], planes[0].orientation, name)  # type: ignore[arg-type]
    positions = np.array([p.position for p in planes], dtype=np.float64)
    distance = positions @ normal
    order = np.argsort(distance, kind="stable")
    d = distance[order]
    p = positions[order]
    affine = np.eye(4)
    affine[:3, 0] = col_axis
    affine[:3, 1] = row_axis
    affine[:3, 3] = p[0]
    spacing_notes = {"pixel_spacing_assumed": True} if planes[0].pixel_spacing is None else {}
    if len(planes) == 1:
        step = float(slice_spacing) if slice_spacing and slice_spacing > 0 else 1.0
        affine[:3, 2] = normal * step
        return StackGeometry([int(order[0])], affine, (planes[0].columns, planes[0].rows, 1), notes=dict(spacing_notes))

    gaps = np.diff(d)
    typical = float(np.median(gaps))
    min_pixel = float(min(np.linalg.norm(col_axis), np.linalg.norm(row_axis)))
    duplicate = gaps <= max(1e-3, 1e-3 * min_pixel, 0.01 * max(typical, 0.0))
    if np.any(duplicate):
        raise VolumeReadError(
            name,
            f"{int(np.sum(duplicate)) + 1} planes share slice positions with another",
            hint="the series holds several volumes (echoes, phases, time points); load them as separate lists of files",
        )
    # Each gap should be a whole number of slice spacings (1, or more where slices are missing).
    multiples = np.rint(gaps / typical)
    uneven = bool(np.any(np.abs(gaps / typical - multiples) > tolerance))
    index = np.concatenate([[0], np.cumsum(np.maximum(multiples, 1))]).astype(int)
    # Least-squares grid d = d0 + index * spacing, and stack direction v = dIPP / dd.
    design = np.stack([np.ones_like(d), index.astype(np.float64)], axis=1)
    (d0, spacing), *_ = np.linalg.lstsq(design, d, rcond=None)
    spacing = round(float(spacing), 6)  # DICOM positions carry ~6 decimals; drop least-squares noise
    residual = d - (d0 + index * spacing)
    uneven = uneven or bool(np.max(np.abs(residual)) > tolerance * spacing)
    offsets = p - p[0]
    along = d - d[0]
    direction = (along @ offsets) / float(along @ along)
    off_line = float(np.max(np.linalg.norm(offsets - np.outer(along, direction), axis=1)))
    if off_line > max(0.01, 0.1 * min_pixel):
        raise VolumeReadError(
            name,
            f"slice positions do not lie on a straight line (up to {off_line:.3g} mm off)",
            hint="the series mixes stacks; load the files of one stack as a list",
        )
    missing = 0 if uneven else int(index[-1] + 1 - len(index))
    notes: dict = dict(spacing_notes)
    tilt = float(np.degrees(np.arccos(min(1.0, 1.0 / float(np.linalg.norm(direction))))))
    if tilt > 0.01:
        notes["gantry_tilt_deg"] = round(tilt, 3)

    issue = None
    if missing or uneven:
        parts = []
        if missing:
            parts.append(f"{missing} missing slice{'s' if missing > 1 else ''} (gaps up to {np.max(gaps) / spacing:.1f}x the spacing)")
        if uneven:
            parts.append(f"uneven slice spacing ({gaps.min():.4g} to {gaps.max():.4g} mm)")
        issue = " and ".join(parts)
        if on_uneven == "error":
            raise VolumeReadError(
                name, issue, hint='pass on_uneven="resample" to interpolate onto a regular grid, or restore the missing files'
            )
        if on_uneven != "resample":
            raise ValueError(f'on_uneven must be "error" or "resample", got {on_uneven!r}')
        step = typical if uneven else float(spacing)
        n_out = int(np.floor((d[-1] - d[0]) / step + 1e-6)) + 1
        targets = d[0] + step * np.arange(n_out)
        plan = []
        for target in targets:
            hi = int(np.clip(np.searchsorted(d, target, side="left"), 1, len(d) - 1))
            lo = hi - 1
            weight = float(np.clip((target - d[lo]) / (d[hi] - d[lo]), 0.0, 1.0))
            plan.append((int(order[lo]), int(order[hi]), weight))
        notes.update(resampled_slices=True, source_slices=len(planes), slice_issue=issue)
        logger.info("%s: %s; resampled to %d slices at %.4g mm", name, issue, n_out, step)
        affine[:3, 2] = direction * step
        return StackGeometry(
            [int(i) for i in order], affine, (planes[0].columns, planes[0].rows, n_out), plan, issue, notes
        )
    affine[:3, 2] = direction * spacing
    return StackGeometry([int(i) for i in order], affine, (planes[0].columns, planes[0].rows, len(planes)), notes=notes)
