"""Rotation prediction: which of a fixed set of 90-degree rotations was applied to the patch.

Gidaris, Singh & Komodakis, "Unsupervised representation learning by predicting image rotations"
(ICLR 2018) in 2D; in 3D as Taleb et al., "3D self-supervised methods for medical imaging"
(NeurIPS 2020). Recognising the rotation needs a model of the anatomy's usual orientation, which
is what a segmentation or classification network later reuses. 90-degree rotations are exact
voxel permutations (``torch.rot90``): no interpolation artefact can give the answer away.

Class sets (``classes``), each rotation a sequence of ``torch.rot90`` steps about the patch centre,
``R_a(k)`` being ``k`` quarter turns about spatial axis ``a`` (axis ``x`` turns ``y`` towards ``z``,
``y`` turns ``z`` towards ``x``, ``z`` turns ``x`` towards ``y``):

* ``planar`` (2D, 4 classes): ``R(k)``, ``k = 0..3``, the Gidaris set.
* ``axis_angle`` (3D, 10 classes, Taleb 2020): class 0 the identity, then ``R_x(1), R_x(2),
  R_x(3), R_y(1), R_y(2), R_y(3), R_z(1), R_z(2), R_z(3)``. Quarter turns about ``x`` need
  ``Y == Z`` sides, and so on; cubic patches are the safe choice.
* ``axial`` (3D, 4 classes): ``R_z(k)``, rotations in the axial plane only (slab-shaped patches).
* ``cube`` (3D, 24 classes): the whole rotation group of the cube, class ``4 f + k`` being ``k``
  quarter turns about ``x`` followed by the turn bringing ``+x`` to face ``f`` of
  ``(+x, +y, -x, -y, +z, -z)``. Needs a cubic patch.

Example:
    >>> import torch
    >>> task = RotationPrediction(spatial_dims=3)
    >>> x = torch.rand(1, 8, 8, 8)
    >>> rotated, label = task(x, torch.Generator().manual_seed(0))
    >>> bool(torch.equal(task.unrotate(rotated, int(label)), x))
    True
"""

from __future__ import annotations

from typing import Literal

import torch

from medssl.errors import ConfigError
from medssl.pretext.base import PretextSpec, PretextTask

__all__ = ["RotationPrediction", "rotation_classes"]

RotationSet = Literal["planar", "axis_angle", "axial", "cube"]
Step = tuple[int, int, int]  # (k, first spatial axis, second spatial axis): torch.rot90(k, dims)

# quarter-turn planes about each spatial axis (x, y, z), oriented right-handedly
_PLANE_ABOUT = {0: (1, 2), 1: (2, 0), 2: (0, 1)}


def _turn(axis: int, k: int) -> tuple[Step, ...]:
    return ((k % 4,) + _PLANE_ABOUT[axis],) if k % 4 else ()


def rotation_classes(classes: RotationSet, spatial_dims: int) -> tuple[tuple[Step, ...], ...]:
    """The rotation of each class as ``rot90`` steps ``(k, axis_a, axis_b)`` on spatial axes."""
    if spatial_dims == 2:
        if classes != "planar":
            raise ConfigError(f"rotation: classes={classes!r} is 3D; 2D patches use classes='planar'")
        return tuple(((k, 0, 1),) if k else () for k in range(4))
    if spatial_dims != 3:
        raise ConfigError(f"rotation: spatial_dims must be 2 or 3, got {spatial_dims}")
    if classes == "axis_angle":
        return ((),) + tuple(_turn(axis, k) for axis in range(3) for k in (1, 2, 3))
    if classes == "axial":
        return tuple(_turn(2, k) for k in range(4))
    if classes == "cube":
        # turns bringing +x to each face: +x, +y, -x, -y (about z), +z, -z (about y)
        faces = (_turn(2, 0), _turn(2, 1), _turn(2, 2), _turn(2, 3), _turn(1, 3), _turn(1, 1))
        return tuple(_turn(0, k) + face for face in faces for k in range(4))
    if classes == "planar":
        raise ConfigError("rotation: classes='planar' is for 2D patches; use axis_angle, axial or cube in 3D")
    raise ConfigError(f"rotation: unknown classes={classes!r}; use planar, axis_angle, axial or cube")


def _apply(x: torch.Tensor, steps: tuple[Step, ...], inverse: bool = False) -> torch.Tensor:
    """Apply ``rot90`` steps to ``x (C, *S)`` (spatial axes offset by the channel axis)."""
    sequence = reversed(steps) if inverse else steps
    for k, a, b in sequence:
        x = torch.rot90(x, -k if inverse else k, dims=(a + 1, b + 1))
    return x


class RotationPrediction(PretextTask):
    """Rotate the patch by one of ``num_classes`` 90-degree rotations; the target is its index.

    Args:
        spatial_dims: 2 or 3.
        classes: the rotation set (module docstring); default ``planar`` in 2D, ``axis_angle`` in 3D.

    Output: ``input`` the rotated patch ``(C, *S')`` (``S'`` the permuted sides, equal to ``S`` for
    the patches each set requires), ``target`` an int64 scalar.
    """

    def __init__(self, spatial_dims: int = 3, classes: RotationSet | None = None) -> None:
        classes = classes or ("planar" if spatial_dims == 2 else "axis_angle")
        self.classes = classes
        self.rotations = rotation_classes(classes, spatial_dims)
        self.spec = PretextSpec("rotation", "class", len(self.rotations), 1, "cross_entropy", spatial_dims)

    def _check_shape(self, spatial: tuple[int, ...], steps: tuple[Step, ...]) -> None:
        for k, a, b in steps:
            if k % 2 and spatial[a] != spatial[b]:
                raise ValueError(
                    f"rotation: a quarter turn in the plane of axes ({a}, {b}) needs equal sides, patch "
                    f"spatial shape is {spatial}; use cubic patches or classes='axial' with square axial sides"
                )

    def rotate(self, patch: torch.Tensor, label: int) -> torch.Tensor:
        """``patch (C, *S)`` rotated as class ``label``."""
        steps = self.rotations[int(label)]
        self._check_shape(tuple(patch.shape[1:]), steps)
        return _apply(patch, steps).contiguous()

    def unrotate(self, rotated: torch.Tensor, label: int) -> torch.Tensor:
        """The inverse of :meth:`rotate` (undoes class ``label``)."""
        return _apply(rotated, self.rotations[int(label)], inverse=True).contiguous()

    def make_pair(self, patch, generator):
        label = torch.randint(len(self.rotations), (), generator=generator, dtype=torch.int64)
        return self.rotate(patch, int(label)), label
