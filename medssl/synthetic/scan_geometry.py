"""Scanner geometry of a synthetic acquisition: grid shape, spacing, axis directions and position.

A phantom is defined in world millimetres (RAS+, origin at the patient's anatomical centre); an
acquisition is a voxel grid placed in that world by an affine. The image and its mask are both
rendered by evaluating the anatomy at the world position of every voxel of the *stored* grid, so no
resampling is needed and the mask is voxel-aligned with the image by construction, whatever the
orientation (flipped axes, oblique planes).

``affine = [[D @ diag(spacing), origin], [0, 0, 0, 1]]`` where the columns of ``D`` are the unit
world directions of the array axes; the origin is chosen so that the centre of the grid lands on
``center_mm``.

CT storage conventions simulated (DICOM axial, LPS world; ``RAS = diag(-1, -1, 1) @ LPS``):

============== ============================================== =======================================
variant        ImageOrientationPatient (row, column) in LPS   slice order
============== ============================================== =======================================
standard       (1, 0, 0), (0, 1, 0)                           feet to head (IPP z increasing)
reversed       (1, 0, 0), (0, 1, 0)                           head to feet (IPP z decreasing)
flipped_lr     (-1, 0, 0), (0, 1, 0)                          feet to head (the row axis mirrored)
feet_first     (-1, 0, 0), (0, 1, 0)                          head to feet
oblique        standard rotated 8-20 degrees (gantry tilt     feet to head
               about x, plus a small roll about z)
============== ============================================== =======================================

Example:
    >>> g = ScanGeometry((4, 4, 3), (2.0, 2.0, 5.0), ct_directions("standard"))
    >>> g.affine[:3, :3].diagonal().tolist()
    [-2.0, -2.0, 5.0]
    >>> g.world_points().shape
    (3, 4, 4, 3)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import nibabel as nib
import numpy as np

from medssl.synthetic.fields import rotation_matrix

CT_VARIANTS = ("standard", "reversed", "flipped_lr", "feet_first", "oblique")

# Array-axis directions in RAS world for the DICOM axial default: columns run to patient Left
# (-x in RAS), rows to Posterior (-y in RAS), slices to Superior.
_CT_STANDARD = np.diag([-1.0, -1.0, 1.0])


def ct_directions(variant: str, rng: np.random.Generator | None = None) -> np.ndarray:
    """Unit direction matrix ``D`` (columns: array axes in RAS) for a CT storage ``variant``.

    ``oblique`` needs ``rng`` to draw the tilt (8-20 degrees about x, either sign) and a roll of up
    to 8 degrees about z.
    """
    if variant == "standard":
        return _CT_STANDARD.copy()
    if variant == "reversed":
        return _CT_STANDARD @ np.diag([1.0, 1.0, -1.0])
    if variant == "flipped_lr":
        return _CT_STANDARD @ np.diag([-1.0, 1.0, 1.0])
    if variant == "feet_first":
        return _CT_STANDARD @ np.diag([-1.0, 1.0, -1.0])
    if variant == "oblique":
        if rng is None:
            raise ValueError("the oblique variant draws its angles from rng; pass one")
        tilt = np.deg2rad(rng.uniform(8.0, 20.0)) * rng.choice([-1.0, 1.0])
        roll = np.deg2rad(rng.uniform(-8.0, 8.0))
        return rotation_matrix((tilt, 0.0, roll)) @ _CT_STANDARD
    raise ValueError(f"unknown CT geometry variant {variant!r}; choose one of {CT_VARIANTS}")


def axcode_directions(axcodes: str) -> np.ndarray:
    """Direction matrix for NIfTI axis codes such as ``"LAS"`` or ``"PIR"`` (via nibabel).

    Example:
        >>> axcode_directions("LAS").diagonal().tolist()
        [-1.0, 1.0, 1.0]
    """
    ornt = nib.orientations.axcodes2ornt(tuple(axcodes))
    directions = np.zeros((3, 3))
    for array_axis, (world_axis, flip) in enumerate(ornt):
        directions[int(world_axis), array_axis] = float(flip)
    return directions


@dataclass
class ScanGeometry:
    """A voxel grid in the world: ``shape`` ``(X, Y, Z)``, ``spacing`` in mm, directions ``D`` (3x3,
    columns are unit vectors), and ``center_mm`` the world position of the grid centre."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    directions: np.ndarray
    center_mm: np.ndarray = field(default_factory=lambda: np.zeros(3))

    @property
    def affine(self) -> np.ndarray:
        """The 4x4 voxel-to-RAS affine of the stored array."""
        linear = np.asarray(self.directions, dtype=np.float64) @ np.diag(np.asarray(self.spacing, dtype=np.float64))
        half = (np.asarray(self.shape, dtype=np.float64) - 1.0) / 2.0
        affine = np.eye(4)
        affine[:3, :3] = linear
        affine[:3, 3] = np.asarray(self.center_mm, dtype=np.float64) - linear @ half
        return affine

    def world_points(self) -> np.ndarray:
        """World RAS coordinates of every voxel, shape ``(3, X, Y, Z)``, float64."""
        affine = self.affine
        axes = [np.arange(n, dtype=np.float64) for n in self.shape]
        points = np.empty((3,) + tuple(self.shape))
        for row in range(3):  # broadcasting instead of a matrix product: no BLAS threads
            points[row] = (affine[row, 3] + affine[row, 0] * axes[0][:, None, None]
                           + affine[row, 1] * axes[1][None, :, None] + affine[row, 2] * axes[2][None, None, :])
        return points

    @property
    def axcodes(self) -> str:
        """The nibabel axis codes of the stored array (``"LPS"`` for the standard CT storage)."""
        return "".join(nib.orientations.aff2axcodes(self.affine))
