"""MR k-space artefacts, batched on the device with ``torch.fft``: Gibbs ringing, spikes, ghosting, motion.

An MR image is the inverse Fourier transform of the acquired k-space; its typical artefacts are
k-space defects, so they are simulated there: ``rfftn`` of the batch, a per-sample change of the
spectrum, ``irfftn`` back (motion, whose spectrum change is not Hermitian, uses the complex
``fftn`` and the magnitude image, as MR reconstruction does). Frequencies are integers ``f`` per
axis (``torch.fft.fftfreq(n) * n``, in ``[-n/2, n/2)``).

Gap filled: MONAI's ``GibbsNoise`` / ``KSpaceSpikeNoise`` (and TorchIO's ``RandomGhosting`` /
``RandomMotion``) take one sample and one parameter set, with full complex FFTs and ``fftshift``
copies. Here one real FFT pair serves a batch with per-sample parameters; for the same parameter
:func:`gibbs_ringing` equals MONAI's ``GibbsNoise(alpha)`` and :func:`kspace_spike_log_intensity`
equals ``KSpaceSpikeNoise(loc, k_intensity)`` (tested).

Example:
    >>> import torch
    >>> x = torch.rand(2, 1, 16, 16, 16)
    >>> y = GibbsRinging(prob=1.0, alpha=(0.3, 0.6))(x, torch.Generator().manual_seed(0))
    >>> y.shape == x.shape
    True
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import torch

from medssl.errors import ConfigError
from medssl.transforms.intensity_base import (
    RandomIntensityTransform,
    check_range,
    draw_int,
    draw_uniform,
)

__all__ = [
    "GibbsRinging",
    "Ghosting",
    "KSpaceSpikes",
    "Motion",
    "add_kspace_components",
    "gibbs_ringing",
    "kspace_spike_log_intensity",
]


def _frequencies(n: int, device=None, half: bool = False) -> torch.Tensor:
    """Integer frequencies of an FFT axis of length ``n`` (``rfft`` bins when ``half``)."""
    if half:  # rfft bins 0..n//2; on an even axis the last one is the Nyquist bin, frequency -n/2
        f = torch.arange(n // 2 + 1, device=device, dtype=torch.float32)
        if n % 2 == 0:
            f[-1] = -(n // 2)
        return f
    return torch.fft.fftfreq(n, d=1.0 / n, device=device).round()


def _wrap_negative(f: torch.Tensor, n: int) -> torch.Tensor:
    """``-f`` as a frequency in ``[-n/2, n/2)`` (the Nyquist bin of an even axis is its own negative)."""
    neg = -f
    return torch.where(neg >= (n + 1) // 2, neg - n, neg)


def _axis_view(values: torch.Tensor, axis: int, dims: int, batch: bool = False) -> torch.Tensor:
    shape = [1] * dims
    shape[axis] = -1
    return values.reshape(([values.shape[0]] if batch else []) + shape)


@lru_cache(maxsize=16)
def _gibbs_distances(spatial: tuple[int, ...], device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Distances of each ``rfftn`` bin ``f`` and of its mirror ``-f`` from MONAI's mask centre.

    float64 and summed axis by axis as MONAI does (``sqrt(sum((q - (n - 1) / 2)^2))`` over the
    ``fftshift``-ed index ``q = f + n // 2``), so boundary bins (frequent: ``r^2`` is often a
    half-integer) fall on the same side.
    """
    dims = len(spatial)
    d2_pos = torch.zeros((), dtype=torch.float64, device=device)
    d2_neg = torch.zeros((), dtype=torch.float64, device=device)
    for axis, n in enumerate(spatial):
        f = _frequencies(n, device, half=axis == dims - 1).to(torch.float64)
        shift = (n // 2) - (n - 1) / 2.0  # MONAI's centre offset: 0.5 on even axes, 0 on odd
        d2_pos = d2_pos + _axis_view((f + shift) ** 2, axis, dims)
        d2_neg = d2_neg + _axis_view((_wrap_negative(f, n) + shift) ** 2, axis, dims)
    return d2_pos.sqrt(), d2_neg.sqrt()


def gibbs_ringing(x: torch.Tensor, alpha: torch.Tensor | list[float]) -> torch.Tensor:
    """Truncate k-space to a ball of radius ``(1 - alpha) * max(shape) * sqrt(2) / 2`` per sample.

    Identical to MONAI's ``GibbsNoise(alpha)`` (which masks the ``fftshift``-ed spectrum around
    index ``(n - 1) / 2``, half a bin off the DC term on even axes, then keeps the real part): that
    is a real FFT with the Hermitian-symmetrised mask ``(M(f) + M(-f)) / 2``, used here. ``alpha``
    is ``(B,)`` in [0, 1] (read on the CPU); 0 keeps the image.
    """
    spatial = tuple(x.shape[2:])
    dims = len(spatial)
    dist_pos, dist_neg = _gibbs_distances(spatial, str(x.device))
    masks = []
    for a in torch.as_tensor(alpha).reshape(-1).tolist():
        radius = (1 - a) * max(spatial) * math.sqrt(2) / 2.0  # MONAI's expression, in float64
        masks.append(0.5 * ((dist_pos <= radius).to(torch.float32) + (dist_neg <= radius).to(torch.float32)))
    mask = torch.stack(masks).unsqueeze(1)
    dims_fft = tuple(range(-dims, 0))
    spectrum = torch.fft.rfftn(x.to(torch.float32), dim=dims_fft)
    spectrum.mul_(mask)
    return torch.fft.irfftn(spectrum, s=spatial, dim=dims_fft).to(x.dtype)


def _half_index(frequency: Sequence[int], spatial: Sequence[int]) -> tuple[int, ...] | None:
    """Index of ``frequency`` in an ``rfftn`` array, or None when only its conjugate is stored."""
    last = int(frequency[-1]) % spatial[-1]
    if last > spatial[-1] // 2:
        return None
    return tuple(int(f) % n for f, n in zip(frequency[:-1], spatial[:-1])) + (last,)


def add_kspace_components(spectrum: torch.Tensor, spatial: Sequence[int], frequency: Sequence[int], value: complex) -> None:
    """Add ``value`` at ``frequency`` of the full spectrum of a real image, in its ``rfftn`` half, in place.

    The real image then changes by ``Re(value * exp(2 pi i f . r / n)) / N``, exactly what adding
    ``value`` to a full complex spectrum and keeping the real part of the inverse does (MONAI's
    convention): the Hermitian pair ``value / 2`` at ``f`` and ``conj(value) / 2`` at ``-f``. In the
    half spectrum an interior bin stands for itself and its mirror, so it receives one member of
    the pair; the planes ``f_last in {0, n/2}`` hold both members explicitly. ``spectrum`` is
    ``(C, *k)``.
    """
    spatial = tuple(int(n) for n in spatial)
    frequency = tuple(int(f) for f in frequency)
    negative = tuple(-f for f in frequency)
    n_last = spatial[-1]
    last = frequency[-1] % n_last
    interior = 0 < last < (n_last + 1) // 2 or 0 < (-frequency[-1]) % n_last < (n_last + 1) // 2
    if interior and not (n_last % 2 == 0 and last == n_last // 2):
        index = _half_index(frequency, spatial)
        if index is not None:
            spectrum[(slice(None),) + index] += value / 2.0
        else:
            spectrum[(slice(None),) + _half_index(negative, spatial)] += value.conjugate() / 2.0
        return
    spectrum[(slice(None),) + _half_index(frequency, spatial)] += value / 2.0
    spectrum[(slice(None),) + _half_index(negative, spatial)] += value.conjugate() / 2.0


def _apply_spikes(x: torch.Tensor, frequencies: torch.Tensor, values: list[list[complex]]) -> torch.Tensor:
    spatial = tuple(x.shape[2:])
    dims_fft = tuple(range(-len(spatial), 0))
    spectrum = torch.fft.rfftn(x.to(torch.float32), dim=dims_fft)
    for b, row in enumerate(values):
        for s, value in enumerate(row):
            if value != 0:
                add_kspace_components(spectrum[b], spatial, frequencies[b, s].tolist(), value)
    return torch.fft.irfftn(spectrum, s=spatial, dim=dims_fft).to(x.dtype)


def kspace_spike_log_intensity(x: torch.Tensor, location: Sequence[int], log_intensity: float) -> torch.Tensor:
    """MONAI ``KSpaceSpikeNoise(loc, k_intensity)`` for one sample ``x (C, *S)``: the same result.

    ``location`` indexes the ``fftshift``-ed spectrum (frequency ``location - n // 2``); the spike
    sets ``log|K|`` there to ``log_intensity`` and keeps the phase. Provided for parity and tests;
    :class:`KSpaceSpikes` parameterises spikes by their visible amplitude instead.
    """
    spatial = tuple(x.shape[1:])
    frequency = [int(q) - n // 2 for q, n in zip(location, spatial)]
    dims_fft = tuple(range(-len(spatial), 0))
    spectrum = torch.fft.rfftn(x.to(torch.float32), dim=dims_fft)
    for c in range(x.shape[0]):
        index = _half_index(frequency, spatial)
        current = spectrum[(c,) + index] if index is not None else spectrum[(c,) + _half_index([-f for f in frequency], spatial)].conj()
        current = complex(current)
        phase = math.atan2(current.imag, current.real)
        delta = (math.exp(log_intensity) - abs(current)) * complex(math.cos(phase), math.sin(phase))
        add_kspace_components(spectrum[c : c + 1], spatial, frequency, delta)
    return torch.fft.irfftn(spectrum, s=spatial, dim=dims_fft).to(x.dtype)


class GibbsRinging(RandomIntensityTransform):
    """Gibbs ringing (truncation artefact) by cutting k-space outside a random radius.

    Simulates: the finite acquisition matrix of MR, which truncates k-space and makes ripples
    parallel to sharp edges (skull, CSF/cord, cartilage), most visible at low resolution. Why an SSL
    invariance: ringing depends on matrix size and filters, not on anatomy.

    Formula: ``y = F^-1(F(x) * M_alpha)`` with ``M_alpha`` the ball of radius
    ``(1 - alpha) * max(n) * sqrt(2) / 2`` (MONAI ``GibbsNoise``, see :func:`gibbs_ringing`) and
    ``alpha ~ U(alpha)`` per sample. MONAI's ``RandGibbsNoise`` is the counterpart; this version adds
    one real FFT pair for a whole batch with per-sample ``alpha`` on its device.

    Args:
        prob: probability of ringing a sample.
        alpha: ``(low, high)`` in [0, 1]; 0 keeps everything (the ball reaches the corners),
            about 0.3 starts cutting the corners of k-space, 0.6 keeps a ball of 0.28 n.
    """

    host_parameters = ("alpha",)

    def __init__(self, prob: float = 0.3, alpha: tuple[float, float] = (0.3, 0.6)) -> None:
        super().__init__(prob)
        self.alpha = check_range(type(self).__name__, "alpha", alpha, minimum=0.0, maximum=1.0)

    def sample(self, generator, shape):
        return {"alpha": draw_uniform(generator, *self.alpha)}

    def apply(self, x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """Truncate the spectrum of sample ``b`` with ``alpha[b]`` (see :func:`gibbs_ringing`)."""
        return gibbs_ringing(x, alpha)


class KSpaceSpikes(RandomIntensityTransform):
    """Spikes in k-space (herringbone / corduroy artefact).

    Simulates: a few corrupted k-space samples from electrostatic discharge, loose connections or
    gradient-coil vibration; each spike overlays a stripe pattern (a plane wave) over the whole
    image. Why an SSL invariance: it is a hardware defect that carries no anatomy.

    Formula: for each of ``k`` spikes (``k`` uniform in ``num_spikes``) at a frequency ``f``
    uniform over k-space, with amplitude ``a ~ U(amplitude)`` and phase ``phi ~ U[0, 2 pi)``,
    ``y = x + a * cos(2 pi f . r / n + phi)``: the spike adds ``a N e^{i phi}`` at ``f`` of the
    complex spectrum (``N`` voxels) and the real part is kept. MONAI's ``RandKSpaceSpikeNoise`` is
    the counterpart (it sets the log-magnitude at one location, an image- and size-dependent unit;
    :func:`kspace_spike_log_intensity` reproduces it exactly); here the stripe amplitude is in
    image units and a batch shares one real FFT pair.

    Args:
        prob: probability of spiking a sample.
        num_spikes: ``(low, high)`` number of spikes, integers >= 1.
        amplitude: ``(low, high)`` stripe amplitude in image units ([0, 1] scale).
    """

    host_parameters = ("frequencies", "amplitude", "phase")

    def __init__(self, prob: float = 0.2, num_spikes: tuple[int, int] = (1, 2), amplitude: tuple[float, float] = (0.03, 0.12)) -> None:
        super().__init__(prob)
        low, high = check_range(type(self).__name__, "num_spikes", num_spikes, minimum=1.0)
        self.num_spikes = (int(low), int(high))
        self.amplitude = check_range(type(self).__name__, "amplitude", amplitude, minimum=0.0)

    def sample(self, generator, shape):
        spatial = shape[1:]
        count = int(draw_int(generator, *self.num_spikes))
        maximum = self.num_spikes[1]
        frequencies = torch.stack(
            [draw_int(generator, -(n // 2), (n - 1) // 2, (maximum,)) for n in spatial], dim=1
        )
        amplitude = draw_uniform(generator, *self.amplitude, (maximum,))
        amplitude[count:] = 0.0
        phase = draw_uniform(generator, 0.0, 2.0 * math.pi, (maximum,))
        return {"frequencies": frequencies, "amplitude": amplitude, "phase": phase}

    def apply(self, x: torch.Tensor, frequencies: torch.Tensor, amplitude: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        """Add the stripe patterns ``amplitude[b, s] * cos(2 pi f[b, s] . r / n + phase[b, s])``."""
        voxels = math.prod(x.shape[2:])
        values = [
            [complex(voxels * float(a) * math.cos(float(p)), voxels * float(a) * math.sin(float(p))) for a, p in zip(row_a, row_p)]
            for row_a, row_p in zip(amplitude, phase)
        ]
        return _apply_spikes(x, frequencies, values)


class Ghosting(RandomIntensityTransform):
    """Ghosting: periodic replicas of the anatomy along the phase-encoding axis.

    Simulates: periodic motion (breathing, heartbeat, pulsatile flow) during the acquisition,
    which modulates every ``k``-th k-space line differently and makes ``k`` shifted ghost copies
    along the phase-encoding direction (TorchIO ``RandomGhosting``). Why an SSL invariance: ghosts
    are an acquisition defect; the anatomy under them is unchanged.

    Formula: along the phase-encoding axis ``a`` (drawn from ``axes``), lines with ``f_a = 0 mod k``
    are scaled by ``1 - s``; ``y = |F^-1(...)|`` (a magnitude image). ``k`` uniform in
    ``num_ghosts``, ``s ~ U(intensity)``. Scaling that comb of lines subtracts ``s / k`` times the
    sum of the ``k`` copies of the image shifted by multiples of ``n_a / k``: the object dims to
    ``1 - s / k`` and ``k - 1`` ghosts of intensity ``s / k`` appear (exactly when ``k`` divides
    ``n_a``). With ``restore > 0`` the central lines ``|f_a| <= restore * n_a / 2`` are kept, as
    TorchIO does; that also keeps the DC line, which adds a band of ``s`` times the mean along
    ``a``. The modulation is symmetric in ``f``, so one real FFT pair suffices.

    Args:
        prob: probability of ghosting a sample.
        num_ghosts: ``(low, high)`` ghost period in lines, integers >= 2.
        intensity: ``(low, high)`` modulation depth in [0, 1].
        axes: candidate phase-encoding axes (spatial indices).
        restore: half-width of the central band of k-space left untouched, as a fraction of
            Nyquist (0: every comb line is modulated).
    """

    host_parameters = ("axis", "period")

    def __init__(
        self,
        prob: float = 0.2,
        num_ghosts: tuple[int, int] = (2, 5),
        intensity: tuple[float, float] = (0.3, 0.8),
        axes: Sequence[int] = (0, 1),
        restore: float = 0.0,
    ) -> None:
        super().__init__(prob)
        low, high = check_range(type(self).__name__, "num_ghosts", num_ghosts, minimum=2.0)
        self.num_ghosts = (int(low), int(high))
        self.intensity = check_range(type(self).__name__, "intensity", intensity, minimum=0.0, maximum=1.0)
        self.axes = tuple(int(a) for a in axes)
        if not self.axes or any(a < 0 or a > 2 for a in self.axes):
            raise ConfigError(f"Ghosting: axes={axes!r} must be spatial axes among 0, 1, 2")
        if not 0.0 <= restore < 1.0:
            raise ConfigError(f"Ghosting: restore={restore} must be in [0, 1)")
        self.restore = float(restore)

    def sample(self, generator, shape):
        axes = [a for a in self.axes if a < len(shape) - 1]
        if not axes:
            raise ConfigError(f"Ghosting: none of axes={self.axes} exists in a {len(shape) - 1}D image")
        axis = axes[int(draw_int(generator, 0, len(axes) - 1))]
        period = draw_int(generator, *self.num_ghosts)
        return {"axis": torch.tensor(axis), "period": period, "depth": draw_uniform(generator, *self.intensity)}

    def apply(self, x: torch.Tensor, axis: torch.Tensor, period: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """Scale every ``period[b]``-th line along ``axis[b]`` by ``1 - depth[b]``; magnitude image."""
        spatial = tuple(x.shape[2:])
        dims = len(spatial)
        dims_fft = tuple(range(-dims, 0))
        spectrum = torch.fft.rfftn(x.to(torch.float32), dim=dims_fft)
        for b in range(x.shape[0]):
            a, k = int(axis[b]), int(period[b])
            n = spatial[a]
            f = _frequencies(n, x.device, half=a == dims - 1)
            lines = torch.remainder(f, k) == 0
            if self.restore > 0:
                lines &= f.abs() > self.restore * n / 2.0
            scale = 1.0 - depth[b] * lines.to(torch.float32)
            spectrum[b].mul_(_axis_view(scale, a, dims).unsqueeze(0))
        return torch.fft.irfftn(spectrum, s=spatial, dim=dims_fft).abs().to(x.dtype)


class Motion(RandomIntensityTransform):
    """Rigid motion during the acquisition, as k-space phase modulation (translations).

    Simulates: the patient moving between k-space lines. Lines acquired after a movement see a
    translated object; by the Fourier shift theorem that multiplies those lines by
    ``exp(-2 pi i f . d / n)``. Mixing lines from several positions gives the blurring, edge
    doubling and ghosting of motion-corrupted MR (TorchIO ``RandomMotion`` composes whole resampled
    volumes; rotations are left out here to keep one FFT pair per batch). Why an SSL invariance:
    motion is the most common reason to repeat an MR scan; anatomy is unchanged.

    Formula: along the phase-encoding axis ``a`` lines are acquired in order ``f_a = -n/2 ... n/2 - 1``
    over the time ``[0, 1)``; at ``m`` random times ``t_1 < ... < t_m`` (``m`` uniform in
    ``num_movements``, times uniform in ``times``) the object jumps to a new translation ``d_j``
    (uniform in ``[-max_translation, max_translation]`` voxels per axis, ``d_0 = 0``);
    ``y = |F^-1(F(x) * exp(-2 pi i sum_d f_d d_{j(f_a), d} / n_d))|``.

    Args:
        prob: probability of corrupting a sample.
        num_movements: ``(low, high)`` number of movements, integers >= 1.
        max_translation: largest translation per axis, in voxels.
        times: ``(low, high)`` range of the movement times, as fractions of the acquisition.
        axes: candidate phase-encoding axes.
    """

    host_parameters = ("axis",)

    def __init__(
        self,
        prob: float = 0.2,
        num_movements: tuple[int, int] = (1, 2),
        max_translation: float = 3.0,
        times: tuple[float, float] = (0.1, 0.9),
        axes: Sequence[int] = (0, 1),
    ) -> None:
        super().__init__(prob)
        low, high = check_range(type(self).__name__, "num_movements", num_movements, minimum=1.0)
        self.num_movements = (int(low), int(high))
        if max_translation < 0:
            raise ConfigError(f"Motion: max_translation={max_translation} must be >= 0 voxels")
        self.max_translation = float(max_translation)
        self.times = check_range(type(self).__name__, "times", times, minimum=0.0, maximum=1.0)
        self.axes = tuple(int(a) for a in axes)
        if not self.axes or any(a < 0 or a > 2 for a in self.axes):
            raise ConfigError(f"Motion: axes={axes!r} must be spatial axes among 0, 1, 2")

    def sample(self, generator, shape):
        dims = len(shape) - 1
        axes = [a for a in self.axes if a < dims]
        if not axes:
            raise ConfigError(f"Motion: none of axes={self.axes} exists in a {dims}D image")
        axis = axes[int(draw_int(generator, 0, len(axes) - 1))]
        count = int(draw_int(generator, *self.num_movements))
        maximum = self.num_movements[1]
        times, _ = torch.sort(draw_uniform(generator, *self.times, (maximum,)))
        times[count:] = 2.0  # unused movements happen after the end of the acquisition
        times, _ = torch.sort(times)
        translations = draw_uniform(generator, -self.max_translation, self.max_translation, (maximum, dims))
        return {"axis": torch.tensor(axis), "times": times, "translations": translations}

    def phase_modulation(self, spatial: tuple[int, ...], axis: int, times: torch.Tensor, translations: torch.Tensor, device) -> torch.Tensor:
        """The complex k-space multiplier ``exp(-2 pi i f . d_{j(f_a)} / n)`` of one sample."""
        dims = len(spatial)
        n_a = spatial[axis]
        f_a = _frequencies(n_a, device)
        line_time = (f_a + n_a // 2) / n_a  # sequential order from -n/2 to n/2 - 1
        segment = (line_time.unsqueeze(1) >= times.to(device).unsqueeze(0)).sum(dim=1)  # 0 = before any move
        shifts = torch.cat([torch.zeros(1, dims, device=device), translations.to(device)])[segment]  # (n_a, dims)
        phase = torch.zeros((), device=device)
        for d, n in enumerate(spatial):
            f = _frequencies(n, device)
            if d == axis:
                term = _axis_view(f * shifts[:, d] / n, d, dims)
            else:  # depends on the line (via its segment) and on f_d
                outer = shifts[:, d].unsqueeze(1) * f.unsqueeze(0) / n  # (n_a, n_d)
                shape = [1] * dims
                shape[axis], shape[d] = n_a, n
                term = outer.reshape(shape) if axis < d else outer.T.reshape(shape)
            phase = phase + term
        return torch.polar(torch.ones_like(phase), -2.0 * math.pi * phase)

    def apply(self, x: torch.Tensor, axis: torch.Tensor, times: torch.Tensor, translations: torch.Tensor) -> torch.Tensor:
        """Modulate the lines of sample ``b`` acquired after each movement; magnitude image."""
        spatial = tuple(x.shape[2:])
        dims_fft = tuple(range(-len(spatial), 0))
        spectrum = torch.fft.fftn(x.to(torch.float32), dim=dims_fft)
        for b in range(x.shape[0]):
            spectrum[b].mul_(self.phase_modulation(spatial, int(axis[b]), times[b], translations[b], x.device).unsqueeze(0))
        return torch.fft.ifftn(spectrum, dim=dims_fft).abs().to(x.dtype)
