"""MR bias field: a smooth multiplicative intensity inhomogeneity, batched with per-sample coefficients.

Gap filled: MONAI's ``RandBiasField`` (adapted from NiftyNet) and TorchIO's ``RandomBiasField``
build the field in NumPy for one sample at a time; here the field for a whole batch is one
``einsum`` of per-sample coefficients with per-axis Legendre polynomials, on the batch's device.
For a 3D image and the same coefficients the result is MONAI's (tested).

Example:
    >>> import torch
    >>> t = BiasField(prob=1.0, degree=2, coeff_range=(-0.2, 0.2))
    >>> x = torch.full((2, 1, 12, 12, 12), 0.5)
    >>> y = t(x, torch.Generator().manual_seed(0))
    >>> bool((y > 0).all()) and not torch.allclose(y, x)
    True
"""

from __future__ import annotations

from functools import lru_cache

import torch

from medssl.errors import ConfigError
from medssl.transforms.intensity_base import RandomIntensityTransform, check_range, draw_uniform

__all__ = ["BiasField", "bias_field_terms", "legendre_basis"]


@lru_cache(maxsize=8)
def bias_field_terms(spatial_dims: int, degree: int) -> tuple[tuple[int, ...], ...]:
    """The polynomial terms ``(i, j[, k])`` of total degree <= ``degree``, in MONAI's 3D order.

    3D: ``i`` outer, ``j``, ``k`` inner, as MONAI's ``RandBiasField``. 2D: ``i`` outer, ``j`` inner
    with ``i + j <= degree`` (MONAI 2D fills the lower triangle ``j <= i`` of the coefficient
    matrix instead, which is not a total-degree set; we keep one rule for both).
    """
    if spatial_dims == 3:
        return tuple(
            (i, j, k)
            for i in range(degree + 1)
            for j in range(degree + 1 - i)
            for k in range(degree + 1 - i - j)
        )
    if spatial_dims == 2:
        return tuple((i, j) for i in range(degree + 1) for j in range(degree + 1 - i))
    raise ConfigError(f"BiasField: only 2D and 3D images are supported, got {spatial_dims} spatial axes")


def legendre_basis(size: int, degree: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """``(degree + 1, size)``: Legendre polynomials ``P_0..P_degree`` on ``linspace(-1, 1, size)``.

    Bonnet's recursion ``(n + 1) P_{n+1} = (2n + 1) t P_n - n P_{n-1}``.
    """
    t = torch.linspace(-1.0, 1.0, size, device=device, dtype=dtype)
    rows = [torch.ones_like(t), t]
    for n in range(1, degree):
        rows.append(((2 * n + 1) * t * rows[n] - n * rows[n - 1]) / (n + 1))
    return torch.stack(rows[: degree + 1])


class BiasField(RandomIntensityTransform):
    """Smooth multiplicative bias field (intensity inhomogeneity), a low-order polynomial in log space.

    Simulates: the B1 (transmit/receive coil) inhomogeneity of MR: the same tissue is brighter near
    a surface coil and darker far from it, slowly varying across the field of view; N4 correction
    removes most but not all of it. Why an SSL invariance: it changes absolute intensities smoothly
    and leaves every local contrast and shape, so an encoder should not use it (Van Leemput 1999;
    TorchIO ``RandomBiasField``; MONAI ``RandBiasField``).

    Formula: ``y = x * exp(sum_t c_t P_i(u) P_j(v) P_k(w))`` over the terms ``t = (i, j, k)`` of
    total degree <= ``degree``, ``P_n`` Legendre polynomials on ``[-1, 1]`` along each axis, and
    coefficients ``c_t ~ U(coeff_range)`` per sample (the constant term included, as MONAI).

    Args:
        prob: probability of applying a field to a sample.
        degree: polynomial degree (>= 1); 3 gives 20 terms in 3D.
        coeff_range: ``(low, high)`` range of each coefficient.
    """

    def __init__(self, prob: float = 0.5, degree: int = 3, coeff_range: tuple[float, float] = (-0.15, 0.15)) -> None:
        super().__init__(prob)
        if int(degree) < 1:
            raise ConfigError(f"BiasField: degree={degree} must be >= 1")
        self.degree = int(degree)
        self.coeff_range = check_range(type(self).__name__, "coeff_range", coeff_range)

    def sample(self, generator, shape):
        count = len(bias_field_terms(len(shape) - 1, self.degree))
        return {"coefficients": draw_uniform(generator, *self.coeff_range, (count,))}

    def log_field(self, coefficients: torch.Tensor, spatial_shape: tuple[int, ...], device=None) -> torch.Tensor:
        """``(B, *spatial)`` log bias field for per-sample ``coefficients`` ``(B, n_terms)``."""
        dims = len(spatial_shape)
        terms = bias_field_terms(dims, self.degree)
        if coefficients.shape[-1] != len(terms):
            raise ValueError(f"BiasField: expected {len(terms)} coefficients per sample, got {coefficients.shape[-1]}")
        coefficients = coefficients.to(device=device, dtype=torch.float32)
        grid = torch.zeros((coefficients.shape[0],) + (self.degree + 1,) * dims, device=device, dtype=torch.float32)
        index = torch.tensor(terms, device=device).T
        grid[(slice(None),) + tuple(index)] = coefficients
        bases = [legendre_basis(n, self.degree, device=device) for n in spatial_shape]
        if dims == 3:
            return torch.einsum("bijk,ix,jy,kz->bxyz", grid, *bases)
        return torch.einsum("bij,ix,jy->bxy", grid, *bases)

    def apply(self, x: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
        """Multiply every channel of sample ``b`` by ``exp(field(coefficients[b]))``."""
        field = self.log_field(coefficients, tuple(x.shape[2:]), device=x.device)
        return x * torch.exp(field).unsqueeze(1).to(x.dtype)

