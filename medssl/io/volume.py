"""The :class:`Volume`: one image in memory, channel-first, in RAS+ voxel order, with its geometry.

Conventions (see ``docs/architecture.md``):

* ``array`` is ``(C, X, Y, Z)`` float32; a 2D image has ``Z == 1``;
* ``affine`` (4x4) maps a voxel index ``(i, j, k, 1)`` to world millimetres in RAS+, as NIfTI
  defines it (+x towards the patient's Right, +y Anterior, +z Superior; DICOM's LPS is
  ``diag(-1, -1, 1)`` times RAS), and the array axes run in RAS+ order as
  ``nibabel.as_closest_canonical`` gives them (oblique volumes: the closest such order);
* ``spacing`` is derived from the affine: the length of each voxel axis in millimetres;
* ``modality`` is the DICOM modality code (``CT``, ``MR``, ``CR``, ``DX``, ``US``...) or ``OT``;
* ``meta`` is de-identified (acquisition fields on an allow-list, identifiers as salted pseudonyms).

Example:
    >>> import numpy as np
    >>> v = Volume(np.zeros((1, 4, 5, 6), np.float32), np.diag([0.8, 0.8, 2.5, 1.0]), "CT")
    >>> v.spacing
    (0.8, 0.8, 2.5)
    >>> v.spatial_shape
    (4, 5, 6)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Volume:
    """An image volume with geometry; see the module docstring for the conventions."""

    array: np.ndarray
    affine: np.ndarray
    modality: str = "OT"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        array = np.asarray(self.array)
        if array.ndim != 4:
            raise ValueError(f"Volume.array must be (C, X, Y, Z), got shape {array.shape}")
        if array.dtype != np.float32:
            array = array.astype(np.float32)
        self.array = array
        affine = np.asarray(self.affine, dtype=np.float64)
        if affine.shape != (4, 4):
            raise ValueError(f"Volume.affine must be 4x4, got shape {affine.shape}")
        self.affine = affine
        self.modality = str(self.modality or "OT").upper()

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in millimetres along the array's X, Y, Z axes."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """``(X, Y, Z)``."""
        return tuple(int(s) for s in self.array.shape[1:])  # type: ignore[return-value]

    @property
    def num_channels(self) -> int:
        return int(self.array.shape[0])

    @property
    def orientation(self) -> str:
        """Axis codes of the array (``"RAS"`` after loading), as nibabel names them."""
        import nibabel as nib

        return "".join(nib.orientations.aff2axcodes(self.affine))

    def __repr__(self) -> str:
        spacing = ", ".join(f"{s:.3g}" for s in self.spacing)
        return (
            f"Volume(modality={self.modality!r}, shape={tuple(self.array.shape)}, "
            f"spacing=({spacing}), orientation={self.orientation!r})"
        )
