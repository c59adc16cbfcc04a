"""Random smooth fields and simple solids: the building blocks of the synthetic phantoms.

Two kinds of random fields are used, both vectorised:

* :class:`SmoothField` is defined in *world* millimetres: white Gaussian noise on a coarse lattice
  (node spacing ``node_spacing_mm``) interpolated with cubic B-splines
  (``scipy.ndimage.map_coordinates``). Because it lives in world space and not on the voxel grid, the
  same patient scanned twice (another spacing, another orientation) gets the same anatomy; it drives
  organ deformations, the cortical folding of the MR brain and bias fields.
* :func:`voxel_texture` is white noise smoothed with a Gaussian of ``correlation_mm`` (converted to
  voxels per axis, so the texture is isotropic in millimetres on an anisotropic grid) and rescaled to
  unit standard deviation. It varies from scan to scan: parenchymal texture, bowel gas, scanner noise.

Gap filled: MONAI and TorchIO synthesise random *intensity* fields on an existing image grid
(``RandBiasField``, ``RandomBiasField``); neither gives a field defined in world coordinates that
can be evaluated on any grid, which is what keeps a synthetic patient's anatomy identical across
follow-up scans with different geometry.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> field = SmoothField(rng, node_spacing_mm=40.0, half_extent_mm=200.0)
    >>> points = np.zeros((3, 2, 2, 2))
    >>> field(points).shape
    (2, 2, 2)
    >>> float(np.ptp(field(points)))  # the same world point gives the same value
    0.0
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


_BSPLINE_NOISE_STD = 0.34


class SmoothField:
    """A random smooth scalar (or vector) field over world millimetres.

    ``value(p) = (1 / s) * sum_n c_n * B3((p - origin) / node_spacing - n)`` with i.i.d. ``N(0, 1)``
    coefficients ``c`` on the lattice and ``B3`` the tensor-product cubic B-spline (an approximating,
    not interpolating, spline: band-limited and free of overshoot). ``s = 0.34`` is the standard
    deviation of the unscaled sum (between 0.31 and 0.35 depending on the position within a lattice
    cell), so the field has about unit standard deviation and a correlation length of about
    ``node_spacing_mm``. Points outside ``[-half_extent_mm, half_extent_mm]^3`` see the border
    coefficients repeated.

    Args:
        rng: the generator that draws the lattice values.
        node_spacing_mm: distance between lattice nodes (the feature size of the field).
        half_extent_mm: the field covers the cube ``[-half_extent_mm, half_extent_mm]^3``.
        channels: number of independent components (3 for a displacement field).
    """

    def __init__(
        self,
        rng: np.random.Generator,
        node_spacing_mm: float,
        half_extent_mm: float = 400.0,
        channels: int = 1,
    ) -> None:
        if node_spacing_mm <= 0:
            raise ValueError(f"node_spacing_mm must be positive, got {node_spacing_mm}")
        self.node_spacing_mm = float(node_spacing_mm)
        self.half_extent_mm = float(half_extent_mm)
        self.channels = int(channels)
        nodes = int(np.ceil(2.0 * half_extent_mm / node_spacing_mm)) + 1
        self._coefficients = rng.standard_normal((self.channels, nodes, nodes, nodes)) / _BSPLINE_NOISE_STD

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """Evaluate at ``points`` of shape ``(3, *S)`` (world mm); returns ``(*S)`` or ``(channels, *S)``."""
        points = np.asarray(points, dtype=np.float64)
        index = (points + self.half_extent_mm) / self.node_spacing_mm
        flat = index.reshape(3, -1)
        out = np.empty((self.channels, flat.shape[1]), dtype=np.float32)
        for c in range(self.channels):
            out[c] = ndimage.map_coordinates(self._coefficients[c], flat, order=3, mode="nearest", prefilter=False)
        out = out.reshape((self.channels,) + points.shape[1:])
        return out[0] if self.channels == 1 else out


def sample_on_grid(
    field: SmoothField,
    affine: np.ndarray,
    shape: tuple[int, int, int],
    max_step_fraction: float = 0.3,
) -> np.ndarray:
    """Evaluate ``field`` at every voxel of the grid ``(affine, shape)``, fast.

    A smooth field barely changes within a fraction of its node spacing, so it is evaluated exactly
    on a coarser lattice of the same grid (every ``step`` voxels along each axis, with
    ``step * spacing <= max_step_fraction * node_spacing``) and interpolated linearly in between.
    At the default 0.3 the root-mean-square error is about 4 % of the field's standard deviation
    (at most about 20 % at sharp extrema); ``max_step_fraction=0`` evaluates every voxel exactly.
    Returns ``(*shape)`` or ``(channels, *shape)``.
    """
    affine = np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    steps = [max(1, int(max_step_fraction * field.node_spacing_mm // s)) for s in spacing]
    counts = [int(np.ceil((n - 1) / st)) + 1 for n, st in zip(shape, steps)]
    coarse_index = np.indices(counts, dtype=np.float64) * np.asarray(steps, float).reshape(3, 1, 1, 1)
    coarse_points = np.stack([
        affine[row, 3] + sum(affine[row, col] * coarse_index[col] for col in range(3)) for row in range(3)
    ])
    coarse = field(coarse_points)
    if all(st == 1 for st in steps):
        return coarse
    out = coarse if field.channels > 1 else coarse[None]
    for axis, (n, step, m) in enumerate(zip(shape, steps, counts), start=1):
        out = _upsample_linear(out, axis, n, step, m)
    return out if field.channels > 1 else out[0]


def _upsample_linear(values: np.ndarray, axis: int, n: int, step: int, m: int) -> np.ndarray:
    """Linear interpolation along ``axis`` from a lattice every ``step`` samples (``m`` of them) to
    ``n`` samples (a gather and a blend: no BLAS threads on a shared machine)."""
    position = np.arange(n) / step
    lower = np.minimum(np.floor(position).astype(np.intp), m - 1)
    upper = np.minimum(lower + 1, m - 1)
    shape = [1] * values.ndim
    shape[axis] = n
    frac = (position - lower).astype(np.float32).reshape(shape)
    low = np.take(values, lower, axis=axis)
    return low + (np.take(values, upper, axis=axis) - low) * frac


def voxel_texture(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    spacing: tuple[float, ...],
    correlation_mm: float,
) -> np.ndarray:
    """Unit-variance Gaussian noise with an isotropic correlation length of ``correlation_mm``.

    ``T = G_sigma * W / std(G_sigma * W)`` where ``W`` is white noise and ``G_sigma`` a Gaussian with
    ``sigma_i = correlation_mm / spacing_i`` voxels along axis ``i``.

    Example:
        >>> t = voxel_texture(np.random.default_rng(0), (16, 16, 8), (1.0, 1.0, 2.0), 2.0)
        >>> t.shape, round(float(t.std()), 3)
        ((16, 16, 8), 1.0)
    """
    white = rng.standard_normal(shape).astype(np.float32)
    sigma = [max(correlation_mm / s, 0.0) for s in spacing]
    smooth = ndimage.gaussian_filter(white, sigma=sigma, mode="wrap", truncate=3.0) if any(sigma) else white
    std = float(smooth.std())
    return smooth / std if std > 0 else smooth


def rotation_matrix(angles_rad: tuple[float, float, float]) -> np.ndarray:
    """Rotation ``Rz(c) @ Ry(b) @ Rx(a)`` for ``angles_rad = (a, b, c)`` about the x, y and z axes.

    Example:
        >>> np.round(rotation_matrix((0.0, 0.0, np.pi / 2)) @ [1.0, 0.0, 0.0], 6).tolist()
        [0.0, 1.0, 0.0]
    """
    a, b, c = angles_rad
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def random_rotation(rng: np.random.Generator, max_degrees: tuple[float, float, float]) -> np.ndarray:
    """A rotation with angles drawn uniformly in ``[-max, max]`` degrees about x, y and z."""
    angles = [np.deg2rad(rng.uniform(-m, m)) if m > 0 else 0.0 for m in max_degrees]
    return rotation_matrix(tuple(angles))  # type: ignore[arg-type]


def ellipsoid_radius(
    points: np.ndarray,
    center: np.ndarray,
    radii: np.ndarray,
    rotation: np.ndarray | None = None,
) -> np.ndarray:
    """Normalised ellipsoidal radius: ``< 1`` inside the ellipsoid, ``1`` on its surface.

    ``rho(p) = || diag(1 / radii) @ R^T @ (p - center) ||`` for points of shape ``(3, *S)``; ``R``
    rotates the ellipsoid's axes into the world (identity when ``rotation`` is None).

    Example:
        >>> pts = np.array([[0.0, 2.0], [0.0, 0.0], [0.0, 0.0]])
        >>> ellipsoid_radius(pts, np.zeros(3), np.array([2.0, 1.0, 1.0])).tolist()
        [0.0, 1.0]
    """
    c = np.asarray(center, dtype=np.float64)
    d = [points[i] - np.float32(c[i]) for i in range(3)]
    if rotation is not None:
        r = np.asarray(rotation, dtype=np.float64).tolist()  # Python floats keep float32 arrays float32
        d = [r[0][i] * d[0] + r[1][i] * d[1] + r[2][i] * d[2] for i in range(3)]
    radii = np.asarray(radii, dtype=np.float64)
    total = (d[0] * np.float32(1.0 / radii[0])) ** 2
    total += (d[1] * np.float32(1.0 / radii[1])) ** 2
    total += (d[2] * np.float32(1.0 / radii[2])) ** 2
    return np.sqrt(total)


def cylinder_radius(points: np.ndarray, center_xy: tuple[float, float], radii_xy: tuple[float, float]) -> np.ndarray:
    """Normalised radius of an elliptic cylinder along world z: ``< 1`` inside.

    ``rho = sqrt(((x - cx) / rx)^2 + ((y - cy) / ry)^2)``.
    """
    cx, cy, rx, ry = (v if np.ndim(v) else float(v) for v in (*center_xy, *radii_xy))
    return np.sqrt(((points[0] - cx) * (1.0 / rx)) ** 2 + ((points[1] - cy) * (1.0 / ry)) ** 2)
