"""The shared machinery of medssl's random intensity transforms: draw per sample, apply batched.

Every intensity transform in :mod:`medssl.transforms` follows the contract of
``docs/architecture.md``: ``transform(x, generator) -> x`` where ``x`` is a batch
``(B, C, *spatial)`` (2 or 3 spatial axes) of images normalised to [0, 1], living on any device.

The gap this module fills: MONAI's ``Rand*`` transforms draw one parameter set per call from a
NumPy ``RandomState`` and work on one sample ``(C, *spatial)`` at a time, so a batch on the GPU
would need a Python loop of MONAI calls with host round trips. Here, as in TorchIO, a random
transform is split in two:

1. :meth:`RandomIntensityTransform.sample` draws the parameters of ONE sample from a CPU
   ``torch.Generator`` (a handful of scalars: a gamma, a noise level, a k-space location);
2. :meth:`RandomIntensityTransform.apply` is the deterministic transform for a batch of parameter
   sets, applied to the whole batch at once on ``x.device``.

``__call__`` draws, for each sample in turn, the apply flag (probability ``prob``) and then the
parameters (always the same number of draws, so one decision never shifts the stream of the next),
stacks them, moves the small parameter tensors to ``x.device`` and applies the transform to the
selected samples only. Consequences, all tested (the GPU one where CUDA is available):

* the same generator state gives the same parameters on CPU and GPU;
* a batched call equals a loop of single-sample calls sharing the generator;
* the worker path (``B = 1``) and the device path (``B = 64``) run the same code.

Example:
    >>> import torch
    >>> from medssl.transforms.intensity_contrast import Gamma
    >>> t = Gamma(prob=1.0, gamma=(0.5, 2.0))
    >>> x = torch.rand(4, 1, 8, 8, 8)
    >>> y = t(x, torch.Generator().manual_seed(0))
    >>> y.shape
    torch.Size([4, 1, 8, 8, 8])
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, Sequence

import torch

from medssl.errors import ConfigError

__all__ = [
    "RandomIntensityTransform",
    "check_batch",
    "check_generator",
    "check_probability",
    "check_range",
    "draw_uniform",
    "draw_log_uniform",
    "draw_int",
    "per_sample",
]


def check_probability(owner: str, name: str, value: float) -> float:
    """``value`` as a float in [0, 1], or a :class:`ConfigError` naming ``owner.name``."""
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{owner}: {name}={value} is not a probability in [0, 1]")
    return value


def check_range(
    owner: str,
    name: str,
    value: Sequence[float] | float,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    strict_minimum: bool = False,
) -> tuple[float, float]:
    """A ``(low, high)`` range with ``low <= high`` inside ``[minimum, maximum]``.

    A single number ``v`` means the degenerate range ``(v, v)``. Raises :class:`ConfigError`
    naming the transform and the argument otherwise.
    """
    if isinstance(value, (int, float)):
        value = (float(value), float(value))
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{owner}: {name}={value!r} must be a (low, high) pair of numbers") from None
    if low > high:
        raise ConfigError(f"{owner}: {name}=({low}, {high}) has low > high")
    if minimum is not None and (low < minimum or (strict_minimum and low <= minimum)):
        bound = ">" if strict_minimum else ">="
        raise ConfigError(f"{owner}: {name}=({low}, {high}) must be {bound} {minimum}")
    if maximum is not None and high > maximum:
        raise ConfigError(f"{owner}: {name}=({low}, {high}) must be <= {maximum}")
    return low, high


def check_batch(x: torch.Tensor, owner: str) -> int:
    """Check ``x`` is a floating batch ``(B, C, X, Y[, Z])``; return the number of spatial axes."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{owner}: expected a torch.Tensor, got {type(x).__name__}")
    if x.ndim not in (4, 5):
        raise ValueError(
            f"{owner}: expected a batch (B, C, X, Y) or (B, C, X, Y, Z), got shape {tuple(x.shape)}; "
            "add the batch axis with x[None] for a single sample"
        )
    if not x.is_floating_point():
        raise TypeError(f"{owner}: expected a floating-point image, got dtype {x.dtype}")
    return x.ndim - 2


def check_generator(generator: torch.Generator | None, owner: str) -> None:
    """Parameters are drawn on the CPU (then moved): refuse a missing or device generator."""
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise ValueError(
            f"{owner}: pass a CPU torch.Generator (medssl.utils.seeding.make_torch_generator); "
            "parameters are drawn on the CPU and moved to the device"
        )


def draw_uniform(generator: torch.Generator, low: float, high: float, size: Sequence[int] = ()) -> torch.Tensor:
    """Uniform draws in ``[low, high)`` on the CPU (float64 for exactness, small tensors only)."""
    u = torch.rand(tuple(size), generator=generator, dtype=torch.float64)
    return low + (high - low) * u


def draw_log_uniform(generator: torch.Generator, low: float, high: float, size: Sequence[int] = ()) -> torch.Tensor:
    """Log-uniform draws in ``[low, high)``: symmetric around 1 for factors such as ``(0.8, 1.25)``."""
    return torch.exp(draw_uniform(generator, math.log(low), math.log(high), size))


def draw_int(generator: torch.Generator, low: int, high: int, size: Sequence[int] = ()) -> torch.Tensor:
    """Integers uniform in ``[low, high]`` (both ends included)."""
    return torch.randint(int(low), int(high) + 1, tuple(size), generator=generator, dtype=torch.int64)


def per_sample(value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample parameter ``(B,)`` to ``(B, 1, ..., 1)`` broadcastable against ``x``."""
    return value.reshape((value.shape[0],) + (1,) * (x.ndim - 1))


class RandomIntensityTransform(ABC):
    """Base class: per-sample parameters from a CPU generator, one batched deterministic apply.

    Subclasses define :meth:`sample` (the parameters of one sample, as a dict of CPU tensors with
    a fixed number of draws) and :meth:`apply` (the deterministic transform for a batch of
    parameter sets, each tensor with a leading batch axis, already on ``x.device``).

    Args:
        prob: probability of transforming each sample (MONAI's ``prob``).
    """

    #: parameters that stay on the CPU with their dtype (offsets into a noise bank, loop bounds:
    #: read as Python numbers by :meth:`apply`, so reading them never synchronises the device);
    #: every other parameter is moved to ``x.device`` as float32 (or as it is when integral)
    host_parameters: tuple[str, ...] = ()

    def __init__(self, prob: float) -> None:
        self.prob = check_probability(type(self).__name__, "prob", prob)

    @abstractmethod
    def sample(self, generator: torch.Generator, shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        """Draw the parameters of one sample of ``shape = (C, *spatial)`` (CPU tensors, no batch axis)."""

    @abstractmethod
    def apply(self, x: torch.Tensor, **params: torch.Tensor) -> torch.Tensor:
        """Transform the batch ``x`` with one parameter set per sample (leading batch axis)."""

    def draw_one(self, generator: torch.Generator, shape: tuple[int, ...]) -> tuple[bool, dict[str, torch.Tensor]]:
        """Draw one sample's apply flag, then its parameters (always drawn, whatever the flag)."""
        flag = bool(torch.rand((), generator=generator) < self.prob) if self.prob < 1.0 else True
        return flag, self.sample(generator, shape)

    def draw(self, generator: torch.Generator, batch_size: int, shape: tuple[int, ...]):
        """Draw ``(apply_flags (B,) bool, params dict of (B, ...) CPU tensors)`` sample by sample."""
        drawn = [self.draw_one(generator, shape) for _ in range(batch_size)]
        return self.stack_draws(drawn)

    @staticmethod
    def stack_draws(drawn: list[tuple[bool, dict[str, torch.Tensor]]]):
        """``[(flag, params), ...]`` per sample -> ``(flags (B,), params of (B, ...))``."""
        flags = torch.tensor([flag for flag, _ in drawn], dtype=torch.bool)
        rows = [params for _, params in drawn]
        params = {key: torch.stack([row[key] for row in rows]) for key in rows[0]} if rows else {}
        return flags, params

    def apply_drawn(self, x: torch.Tensor, flags: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Apply already drawn per-sample parameters to the samples whose flag is set."""
        if not bool(flags.any()):
            return x
        selected = flags.nonzero().flatten()
        everything = len(selected) == x.shape[0]
        moved = {}
        for key, value in params.items():
            value = value if everything else value[selected]
            if key in self.host_parameters:
                moved[key] = value
                continue
            if value.is_floating_point():
                value = value.to(torch.float32)
            moved[key] = value.to(x.device, non_blocking=True)
        if everything:
            return self.apply(x, **moved).to(x.dtype)
        out = x.clone()
        index = selected.to(x.device)
        out[index] = self.apply(x[index], **moved).to(x.dtype)
        return out

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        check_batch(x, type(self).__name__)
        check_generator(generator, type(self).__name__)
        if self.prob == 0.0:  # switched off: draws nothing, so the stream is as if it were absent
            return x
        flags, params = self.draw(generator, x.shape[0], tuple(x.shape[1:]))
        return self.apply_drawn(x, flags, params)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"

    def describe(self) -> dict[str, Any]:
        """The transform's name and arguments (for logs and the run folder)."""
        return {"name": type(self).__name__, **{k: v for k, v in vars(self).items() if not k.startswith("_")}}
