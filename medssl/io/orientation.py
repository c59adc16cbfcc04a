"""One reorientation rule for every reader: the closest RAS+ voxel order, as nibabel computes it.

NIfTI and DICOM volumes both pass through :func:`reorient_to_ras`, so a volume written in both formats
loads with the same array and affine. The rule is nibabel's ``as_closest_canonical``
(``io_orientation`` + ``apply_orientation`` + ``inv_ornt_aff``): permute and flip voxel axes so that
axis ``i`` points as closely as possible along world axis ``i`` (R, A, S), changing no voxel values
and no world positions (oblique and sheared affines keep their true geometry; only axis order and
direction change).

Gap filled here: nibabel works on image objects or on arrays whose first axes are spatial; medssl
arrays are channel-first ``(C, X, Y, Z)``, the manifest needs the reoriented shape and affine without
any data, and a 2D image must keep ``Z == 1``. For an image whose last axis has size 1 (a radiograph,
a single slice) a full canonical reorientation can move that axis (a coronal chest X-ray would
become ``(X, 1, Z)``); there the in-plane axes are flipped and ordered and the size-1 axis stays last
(its affine column is made to point along its dominant world axis, which moves no voxel).

Example:
    >>> import numpy as np
    >>> array = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4)
    >>> affine = np.diag([-1.0, 1.0, 1.0, 1.0])  # X runs right-to-left (LAS)
    >>> out, out_affine = reorient_to_ras(array, affine)
    >>> bool((out[0, ::-1] == array[0]).all()), float(out_affine[0, 0])
    (True, 1.0)
"""

from __future__ import annotations

import numpy as np
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation

#: DICOM patient coordinates (LPS) to NIfTI world coordinates (RAS), and back (its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def canonical_ornt(affine: np.ndarray, spatial_shape: tuple[int, int, int]) -> np.ndarray:
    """The nibabel orientation array ``(3, 2)`` that takes voxel axes to the closest RAS+ order.

    Row ``i`` is ``(new axis of input axis i, +1 or -1 flip)``. Follows the 2D rule in the module
    docstring when the last axis has size 1 and a full reorientation would move it.
    """
    ornt = io_orientation(np.asarray(affine, dtype=np.float64))
    if spatial_shape[2] != 1 or int(ornt[2, 0]) == 2:
        return ornt
    # 2D image: order the two in-plane axes by the world axis they run along, flip them to point
    # positive, keep the size-1 axis last.
    directions = np.asarray(affine, dtype=np.float64)[:3, :3]
    world_axis = [int(np.argmax(np.abs(directions[:, i]))) for i in range(3)]
    in_plane = sorted(range(2), key=lambda i: (world_axis[i], i))
    ornt = np.zeros((3, 2))
    for new_axis, old_axis in enumerate(in_plane):
        sign = np.sign(directions[world_axis[old_axis], old_axis]) or 1.0
        ornt[old_axis] = (new_axis, sign)
    ornt[2] = (2, np.sign(directions[world_axis[2], 2]) or 1.0)
    return ornt


def reoriented_geometry(
    affine: np.ndarray, spatial_shape: tuple[int, int, int]
) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and affine after :func:`reorient_to_ras`, computed without any voxel data (manifests)."""
    ornt = canonical_ornt(affine, spatial_shape)
    new_affine = np.asarray(affine, dtype=np.float64) @ inv_ornt_aff(ornt, spatial_shape)
    new_shape = [0, 0, 0]
    for old_axis, (new_axis, _) in enumerate(ornt):
        new_shape[int(new_axis)] = int(spatial_shape[old_axis])
    return (new_shape[0], new_shape[1], new_shape[2]), new_affine


def reorient_to_ras(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorient a channel-first ``(C, X, Y, Z)`` array and its voxel-to-RAS affine to closest RAS+.

    Returns a C-contiguous array (a copy only when axes move) and the new affine; world coordinates
    of every voxel are unchanged.
    """
    spatial_shape = tuple(int(s) for s in array.shape[1:])
    ornt = canonical_ornt(affine, spatial_shape)  # type: ignore[arg-type]
    if np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
        return array, np.asarray(affine, dtype=np.float64)
    _, new_affine = reoriented_geometry(affine, spatial_shape)  # type: ignore[arg-type]
    channels_last = np.moveaxis(array, 0, -1)
    moved = apply_orientation(channels_last, ornt)
    return np.ascontiguousarray(np.moveaxis(moved, -1, 0)), new_affine


def orientation_code(affine: np.ndarray) -> str:
    """Axis codes of an affine as nibabel names them (``"RAS"``, ``"LPS"``, ``"RSA"``...)."""
    from nibabel.orientations import aff2axcodes

    return "".join(str(c) for c in aff2axcodes(np.asarray(affine, dtype=np.float64)))
