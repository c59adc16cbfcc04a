"""Contrast randomisation: random inversion and random smooth non-monotone intensity curves.

The domain-randomisation idea of SynthSeg (Billot et al., "SynthSeg: Segmentation of brain MRI scans
of any contrast and resolution without retraining", Medical Image Analysis 2023; reference code
github.com/BBillot/SynthSeg): a segmentation network that has seen each tissue at many unrelated
grey levels cannot rely on one contrast and so carries to contrasts (T1, T2, FLAIR, CT windows) it
was not trained on. SynthSeg draws every label's intensity at random from a label map; here, with
real images and few labels, the same effect comes from remapping the image's grey levels per image:

* :class:`RandomInversion`: ``y = 1 - x`` on the [0, 1]-normalised image (T1 <-> T2-like
  contrast of fat, fluid and grey/white matter);
* :class:`RandomIntensityCurve`: ``y = f(x)`` with ``f`` a random smooth curve through ``k``
  random control values in [0, 1] (a cubic B-spline: a convex combination of the controls, so
  ``f`` maps [0, 1] into [0, 1], twice continuously differentiable, and in general non-monotone,
  so tissues swap their order of brightness while edges between them stay edges).

Both follow the transforms contract (:mod:`medssl.transforms.intensity_base`): batched tensors
``(B, C, *spatial)`` in [0, 1], ``transform(x, generator)``, per-sample parameters drawn on the CPU;
every channel of a sample gets the same mapping (the neighbouring slices of a 2.5D input stay
consistent). MONAI has neither (``RandHistogramShift`` moves control points of a monotone curve;
TorchIO has no inversion or non-monotone curve).

Example:
    >>> import torch
    >>> x = torch.rand(2, 1, 8, 8)
    >>> bool(torch.equal(RandomInversion(prob=1.0)(x, torch.Generator().manual_seed(0)), 1 - x))
    True
    >>> y = RandomIntensityCurve(prob=1.0, num_controls=(4, 6))(x, torch.Generator().manual_seed(0))
    >>> bool(y.min() >= 0) and bool(y.max() <= 1)
    True
"""

from __future__ import annotations

import torch

from medssl.errors import ConfigError
from medssl.transforms.intensity_base import RandomIntensityTransform, check_range, draw_int

__all__ = ["RandomInversion", "RandomIntensityCurve", "bspline_curve"]

CURVE_RESOLUTION = 1025
"""Points of the look-up table a curve is evaluated on (linear interpolation between them)."""


class RandomInversion(RandomIntensityTransform):
    """Intensity inversion ``y = 1 - x`` of a [0, 1]-normalised image.

    Simulates: the opposite contrast weighting of the same anatomy (T1- against T2-weighted MR:
    fluid dark or bright, fat bright or dark). Why: a network trained on one contrast should find
    an organ by its shape and edges, not by being brighter than its neighbour.

    Args:
        prob: probability of inverting a sample.
    """

    def __init__(self, prob: float = 0.25) -> None:
        super().__init__(prob)

    def sample(self, generator, shape):
        return {}

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``1 - x`` for every sample of the batch."""
        return 1.0 - x


def _cubic_bspline_weights(t: torch.Tensor) -> torch.Tensor:
    """Uniform cubic B-spline weights ``(P, 4)`` of the four controls around fractional ``t`` in [0, 1)."""
    t2, t3 = t * t, t * t * t
    return torch.stack([
        (1 - t) ** 3 / 6.0,
        (3 * t3 - 6 * t2 + 4) / 6.0,
        (-3 * t3 + 3 * t2 + 3 * t + 1) / 6.0,
        t3 / 6.0,
    ], dim=-1)


def bspline_curve(controls: torch.Tensor, resolution: int = CURVE_RESOLUTION) -> torch.Tensor:
    """A smooth curve on [0, 1] from ``k >= 4`` control values: ``(resolution,)`` samples of the
    uniform cubic B-spline whose domain [0, 1] spans the ``k - 3`` spline segments.

    Every value is a convex combination of four neighbouring controls (the weights are >= 0 and
    sum to 1), so the curve stays within the controls' range; it is C2 continuous.

    Example:
        >>> curve = bspline_curve(torch.tensor([0.5, 0.5, 0.5, 0.5, 0.5]))
        >>> bool(torch.allclose(curve, torch.full_like(curve, 0.5)))
        True
    """
    controls = controls.to(torch.float64).reshape(-1)
    count = controls.numel()
    if count < 4:
        raise ConfigError(f"a cubic intensity curve needs at least 4 control values, got {count}")
    position = torch.linspace(0.0, float(count - 3), resolution, dtype=torch.float64)
    segment = position.floor().clamp(max=count - 4).long()
    weights = _cubic_bspline_weights(position - segment)
    neighbours = controls[segment[:, None] + torch.arange(4)]
    return (weights * neighbours).sum(dim=1)


class RandomIntensityCurve(RandomIntensityTransform):
    """A random smooth, generally non-monotone, intensity curve ``y = f(x)`` on [0, 1].

    Simulates: an unseen MR contrast or CT window, in which tissues take other grey levels and even
    another order of brightness (the domain randomisation of SynthSeg, Billot et al. 2023). Why:
    with few labeled cases of one contrast, the network otherwise learns "liver = this grey".

    Formula: ``k`` (drawn in ``num_controls``, at least 4) control values ``c_j`` uniform in [0, 1]
    (``k_max`` always drawn so the stream does not depend on ``k``); ``f`` is their uniform cubic
    B-spline over [0, 1] (:func:`bspline_curve`), stretched to span [0, 1] (``(f - min f) / (max f
    - min f)``, so the image keeps its full contrast; a curve flatter than 1e-3 is left as it is),
    tabulated at :data:`CURVE_RESOLUTION` points and applied by linear interpolation; inputs are
    clipped to [0, 1] first. More controls give wigglier curves (up to ``k - 3`` bumps).

    Args:
        prob: probability of remapping a sample.
        num_controls: ``(low, high)`` range of the number of control values (integers, >= 4).
    """

    def __init__(self, prob: float = 0.5, num_controls: tuple[int, int] = (4, 7)) -> None:
        super().__init__(prob)
        low, high = check_range(type(self).__name__, "num_controls", num_controls, minimum=4.0)
        if low != int(low) or high != int(high):
            raise ConfigError(f"{type(self).__name__}: num_controls={num_controls!r} must be whole numbers")
        self.num_controls = (int(low), int(high))

    def sample(self, generator, shape):
        count = int(draw_int(generator, *self.num_controls))
        controls = torch.rand(self.num_controls[1], generator=generator, dtype=torch.float64)
        curve = bspline_curve(controls[:count])
        low, high = curve.min(), curve.max()
        if high - low > 1e-3:
            curve = (curve - low) / (high - low)
        return {"curve": curve}

    def apply(self, x: torch.Tensor, curve: torch.Tensor) -> torch.Tensor:
        """Look each voxel up in its sample's tabulated curve ``curve (B, L)`` (linear interpolation)."""
        batch, resolution = curve.shape
        flat = x.reshape(batch, -1).clamp(0.0, 1.0) * (resolution - 1)
        below = flat.floor().clamp(max=resolution - 2)
        fraction = flat - below
        below = below.long()
        table = curve.to(x.dtype)
        low = torch.gather(table, 1, below)
        high = torch.gather(table, 1, below + 1)
        return torch.lerp(low, high, fraction).reshape(x.shape)
