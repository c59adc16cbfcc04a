"""Ultrasound speckle: multiplicative Rayleigh (amplitude) or gamma (intensity) noise with a grain size.

Gap filled: neither MONAI nor TorchIO ships a speckle model. Fully developed speckle is the
interference of many sub-resolution scatterers: the received complex signal is circular Gaussian,
so the envelope (amplitude) is Rayleigh distributed and the intensity is exponential (gamma with
shape ``L`` after averaging ``L`` independent looks / compounding angles); its spatial correlation
length is the resolution cell (Goodman 1976; Wagner et al. 1983).

Example:
    >>> import torch
    >>> t = Speckle(prob=1.0, strength=(1.0, 1.0), grain=(1.0, 1.0))
    >>> y = t(torch.full((1, 1, 16, 16, 16), 0.5), torch.Generator().manual_seed(0))
    >>> abs(float(y.mean()) - 0.5) < 1e-3
    True
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from medssl.errors import ConfigError
from medssl.transforms.intensity_base import RandomIntensityTransform, check_range, draw_uniform
from medssl.transforms.intensity_filters import apply_along_axis, linear_interpolation_matrix
from medssl.transforms.intensity_noise import draw_field_parameters, standard_normal_field

__all__ = ["Speckle"]


def _coarse_shape(spatial: tuple[int, ...], grain: float) -> tuple[int, ...]:
    """Grid points per axis: one per ``grain`` voxels (the full grid when ``grain`` is 1)."""
    return tuple(min(n, max(2, int(round(n / grain)))) for n in spatial)


class Speckle(RandomIntensityTransform):
    """Multiplicative speckle with a random strength and grain size.

    Simulates: ultrasound speckle, the granular texture from interfering echoes of sub-resolution
    scatterers; its strength depends on the tissue, the transducer and compounding, its grain on
    the resolution cell. Why an SSL invariance: speckle is a property of the imaging system more
    than of the anatomy (views with different speckle realisations should embed together).

    Formula: a circular complex Gaussian field ``z = u + i v`` (``u, v`` N(0, 1) from the noise
    bank) is drawn on a coarse grid of ``round(n / g)`` points per axis (``g ~ U(grain)`` voxels,
    the correlation length), linearly up-sampled and rescaled to unit variance at every voxel
    (the interpolation variance ``w^2 + (1 - w)^2`` is known); ``S = |z| / mean|z|`` (``rayleigh``) or
    ``S = mean_l |z_l|^2 / mean(...)`` over ``looks`` independent fields (``gamma``, shape
    ``looks``); ``y = x * (1 + s (S - 1))`` with ``s ~ U(strength)``, so ``E[y] = x`` and ``s = 1``
    is fully developed speckle: ``S`` is exactly Rayleigh (coefficient of variation
    ``sqrt(4 / pi - 1) = 0.52``) or gamma (``1 / sqrt(looks)``) at every voxel, tested.

    Args:
        prob: probability of adding speckle to a sample.
        strength: ``(low, high)`` blend between no speckle (0) and fully developed speckle (1).
        grain: ``(low, high)`` correlation length in voxels (>= 1).
        distribution: ``rayleigh`` (envelope-detected images) or ``gamma`` (intensity images).
        looks: number of averaged looks for ``gamma`` (shape of the gamma law).
    """

    host_parameters = ("strength", "grain", "offsets", "angle")

    def __init__(
        self,
        prob: float = 0.8,
        strength: tuple[float, float] = (0.25, 0.8),
        grain: tuple[float, float] = (1.0, 2.5),
        distribution: Literal["rayleigh", "gamma"] = "rayleigh",
        looks: int = 1,
    ) -> None:
        super().__init__(prob)
        self.strength = check_range(type(self).__name__, "strength", strength, minimum=0.0)
        self.grain = check_range(type(self).__name__, "grain", grain, minimum=1.0)
        if distribution not in ("rayleigh", "gamma"):
            raise ConfigError(f"Speckle: distribution={distribution!r} is not rayleigh or gamma")
        self.distribution = distribution
        if int(looks) < 1:
            raise ConfigError(f"Speckle: looks={looks} must be >= 1")
        self.looks = int(looks) if distribution == "gamma" else 1

    def sample(self, generator, shape):
        strength = draw_uniform(generator, *self.strength)
        grain = draw_uniform(generator, *self.grain)
        coarse = (shape[0],) + _coarse_shape(tuple(shape[1:]), float(grain))
        fields = draw_field_parameters(generator, math.prod(coarse), count=2 * self.looks)
        return {"strength": strength, "grain": grain, **fields}

    def speckle_field(self, shape: tuple[int, ...], grain: float, offsets: torch.Tensor, angle: torch.Tensor, device) -> torch.Tensor:
        """The mean-one multiplicative field ``S`` of one sample, ``shape = (C, *spatial)``."""
        spatial = tuple(shape[1:])
        coarse = (shape[0],) + _coarse_shape(spatial, grain)
        power = torch.zeros(tuple(shape), device=device)
        matrices = [
            None if m == n else linear_interpolation_matrix(m, n, align_corners=True, device=device)
            for m, n in zip(coarse[1:], spatial)
        ]
        for look in range(self.looks):
            for k in range(2):  # real and imaginary parts
                field = standard_normal_field(coarse, offsets[2 * look + k], float(angle[2 * look + k]), device)
                for axis, matrix in enumerate(matrices):
                    if matrix is not None:
                        field = apply_along_axis(field, matrix, axis + 1)
                power.addcmul_(field, field)
        # back to unit variance per component: a voxel interpolated with weights u has variance
        # sum(u^2) per axis (1 on grid points, 1/2 half-way), known exactly from the matrices
        for axis, matrix in enumerate(matrices):
            if matrix is not None:
                view = [1] * len(spatial)
                view[axis] = spatial[axis]
                power.div_(matrix.square().sum(dim=1).reshape(view))
        power.div_(self.looks)
        value = power.sqrt_() if self.distribution == "rayleigh" else power
        mean = value.reshape(shape[0], -1).mean(dim=1).reshape((shape[0],) + (1,) * len(spatial))
        return value.div_(mean)

    def apply(self, x, strength, grain, offsets, angle):
        """``x * (1 + strength[b] * (S_b - 1))`` per sample."""
        out = []
        for b in range(x.shape[0]):
            field = self.speckle_field(tuple(x.shape[1:]), float(grain[b]), offsets[b], angle[b], x.device)
            s = float(strength[b])
            out.append(x[b] * field.mul_(s).add_(1.0 - s).to(x.dtype))  # x * (1 + s (S - 1))
        return torch.stack(out)
