"""An MR-like head phantom: scalp, skull, CSF, folded cortex, white matter, ventricles and lesions.

What it simulates: a structural brain MR (T1-weighted, T2-weighted or FLAIR) as a research archive
holds it after DICOM-to-NIfTI conversion, at a coarse grid, with the artefacts a model must be robust
to: a smooth multiplicative bias field (receive-coil inhomogeneity) and Rician noise (the magnitude of
complex Gaussian noise, Gudbjartsson & Patz 1995, MRM 34:910).

Anatomy model (world millimetres, RAS+, origin at the head's centre; all solids evaluated on
coordinates warped by a smooth random displacement field, so shapes vary between subjects):

* head: an ellipsoid (half-axes 70-82 x 88-100 x 82-95 mm) with scalp, skull and a CSF layer
  inside it, each at least about one grid voxel thick;
* cerebrum: the ellipsoid inside the CSF layer; with ``f`` a random smooth field of feature size
  ~1.5 grid voxels (:class:`~medssl.synthetic.fields.SmoothField`) and ``delta`` the depth below
  the brain surface, sulcal CSF fills ``delta < s * clip(f - 0.2, 0, 1)`` and white matter starts
  at ``delta > t_gm + s * clip(f + 0.2, 0, 1)``, so the grey-matter ribbon (thickness ``t_gm``)
  follows folded, gyrus-like boundaries;
* lateral ventricles (two bent ellipsoids, size x0.7-1.6: atrophy varies), third ventricle, deep
  grey nuclei (thalami, caudate), cerebellum (grey cortex around a white core) and brainstem;
* lesions: 1-4 periventricular white-matter blobs (multiple-sclerosis-like), 1.2-2.2 voxels in
  radius, clipped to white matter.

Relative intensities (white matter of T1w = 1; each drawn per scan with a 5 % spread, then the whole
image scaled by 600-1200 as a scanner's arbitrary units):

=========== ======= ======= =======
tissue      T1w     T2w     FLAIR
=========== ======= ======= =======
scalp       0.95    0.55    0.60
skull       0.08    0.06    0.05
CSF         0.22    1.00    0.12
grey matter 0.62    0.65    0.75
deep grey   0.70    0.60    0.70
white m.    1.00    0.45    0.55
lesion      0.55    0.85    1.10
=========== ======= ======= =======

``signal = | B(p) * PSF * mu_t + sigma * (n1 + i n2) |`` with ``B = exp(beta * b(p))``, ``b`` a
smooth unit field (feature size ~80 mm) plus a linear gradient, ``beta`` in 0.1-0.3, and ``sigma``
2-4 % of the white-matter intensity. Segmentation labels (:data:`MR_LABELS`): 0 background
(including scalp and skull), 1 CSF (ventricles and subarachnoid), 2 grey matter, 3 white matter,
4 lesion.

Example:
    >>> import numpy as np
    >>> from medssl.synthetic.scan_geometry import ScanGeometry, axcode_directions
    >>> rng = np.random.default_rng(0)
    >>> anatomy = draw_brain_anatomy(rng, lesion=True, grid_scale_mm=9.0)
    >>> geometry = ScanGeometry((24, 24, 24), (9.0, 9.0, 9.0), axcode_directions("LAS"))
    >>> mr = render_brain_mr(anatomy, geometry, rng, sequence="T1w")
    >>> mr.intensity.shape, int(mr.labels.max())
    ((24, 24, 24), 4)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medssl.synthetic.fields import SmoothField, ellipsoid_radius, random_rotation, sample_on_grid
from medssl.synthetic.scan_geometry import ScanGeometry

MR_LABELS: dict[int, str] = {0: "background", 1: "csf", 2: "grey_matter", 3: "white_matter", 4: "lesion"}
MR_SEQUENCES = ("T1w", "T2w", "FLAIR")
MR_TISSUES = ("air", "scalp", "skull", "csf", "ventricle", "grey_matter", "deep_grey", "white_matter", "lesion")
MR_TISSUE = {name: code for code, name in enumerate(MR_TISSUES)}

# tissue: (T1w, T2w, FLAIR) relative intensity
MR_INTENSITY_TABLE: dict[str, tuple[float, float, float]] = {
    "air": (0.0, 0.0, 0.0),
    "scalp": (0.95, 0.55, 0.60),
    "skull": (0.08, 0.06, 0.05),
    "csf": (0.22, 1.00, 0.12),
    "ventricle": (0.22, 1.00, 0.12),
    "grey_matter": (0.62, 0.65, 0.75),
    "deep_grey": (0.70, 0.60, 0.70),
    "white_matter": (1.00, 0.45, 0.55),
    "lesion": (0.55, 0.85, 1.10),
}

_TISSUE_TO_LABEL = np.zeros(len(MR_TISSUES), dtype=np.uint8)
_TISSUE_TO_LABEL[[MR_TISSUE["csf"], MR_TISSUE["ventricle"]]] = 1
_TISSUE_TO_LABEL[[MR_TISSUE["grey_matter"], MR_TISSUE["deep_grey"]]] = 2
_TISSUE_TO_LABEL[MR_TISSUE["white_matter"]] = 3
_TISSUE_TO_LABEL[MR_TISSUE["lesion"]] = 4


@dataclass
class BrainAnatomy:
    """One subject's head; drawn by :func:`draw_brain_anatomy`, lengths in millimetres."""

    head_radii: np.ndarray
    scalp_mm: float
    skull_mm: float
    csf_mm: float
    grey_mm: float
    sulcus_depth_mm: float
    ventricle_scale: float
    ventricle_offsets: np.ndarray
    cerebellum_center: np.ndarray
    cerebellum_radii: np.ndarray
    lesions: list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # (centre, radii, rotation)
    deformations: list[tuple[SmoothField, float]]
    folding: SmoothField
    grid_scale_mm: float

    def anatomical_points(self, geometry: ScanGeometry) -> np.ndarray:
        """Anatomical coordinates of the voxels of ``geometry`` (3, X, Y, Z)."""
        warped = geometry.world_points().astype(np.float32)
        for deformation, amplitude in self.deformations:
            warped += np.float32(amplitude) * sample_on_grid(deformation, geometry.affine, geometry.shape)
        return warped


def draw_brain_anatomy(rng: np.random.Generator, *, lesion: bool, grid_scale_mm: float) -> BrainAnatomy:
    """Draw one subject's head. ``grid_scale_mm`` is the nominal voxel size of its scans: layers and
    the cortical ribbon are at least about one voxel thick, folds about three voxels apart."""
    h = grid_scale_mm
    head = np.array([rng.uniform(70, 82), rng.uniform(88, 100), rng.uniform(82, 95)])
    anatomy = BrainAnatomy(
        head_radii=head,
        scalp_mm=max(5.0, 0.9 * h) * rng.uniform(0.9, 1.2),
        skull_mm=max(6.0, 1.0 * h) * rng.uniform(0.9, 1.2),
        csf_mm=max(2.5, 0.5 * h) * rng.uniform(0.9, 1.4),
        grey_mm=max(3.0, 1.4 * h) * rng.uniform(0.9, 1.15),
        sulcus_depth_mm=max(12.0, 3.5 * h) * rng.uniform(0.8, 1.2),
        ventricle_scale=rng.uniform(0.7, 1.6),
        ventricle_offsets=rng.uniform(-3.0, 3.0, 3),
        cerebellum_center=np.array([0.0, -0.55 * head[1], -0.5 * head[2]]) + rng.uniform(-4, 4, 3),
        cerebellum_radii=np.array([0.62 * head[0], 0.32 * head[1], 0.3 * head[2]]) * rng.uniform(0.9, 1.1),
        lesions=[],
        deformations=[(SmoothField(rng, 60.0, half_extent_mm=200.0, channels=3), rng.uniform(3.0, 7.0))],
        folding=SmoothField(rng, 1.5 * h, half_extent_mm=130.0),
        grid_scale_mm=h,
    )
    return redraw_brain_lesions(anatomy, rng) if lesion else anatomy


def redraw_brain_lesions(anatomy: BrainAnatomy, rng: np.random.Generator, size_factor: float = 1.0) -> BrainAnatomy:
    """The same subject with 1-4 newly drawn periventricular white-matter lesions (radii scaled by
    ``size_factor``); used again, larger, when a coarse grid missed all of them."""
    h = anatomy.grid_scale_mm
    lesions = []
    for _ in range(int(rng.integers(1, 5))):
        side = rng.choice([-1.0, 1.0])
        # periventricular white matter: beside the body of a lateral ventricle
        center = np.array([side * rng.uniform(14.0, 26.0), rng.uniform(-25.0, 25.0), rng.uniform(8.0, 30.0)])
        radii = rng.uniform(1.2, 2.2) * h * rng.uniform(0.75, 1.3, 3) * size_factor
        lesions.append((center, radii, random_rotation(rng, (90.0, 90.0, 90.0))))
    return dataclasses.replace(anatomy, lesions=lesions)


def follow_up_brain(anatomy: BrainAnatomy, rng: np.random.Generator) -> BrainAnatomy:
    """The same subject later: lesions resized (x0.7-1.4), ventricles slightly larger (atrophy),
    a small repositioning deformation; the folding and the rest are kept."""
    lesions = [(c, r * rng.uniform(0.7, 1.4), rot) for c, r, rot in anatomy.lesions]
    return dataclasses.replace(
        anatomy,
        lesions=lesions,
        ventricle_scale=anatomy.ventricle_scale * rng.uniform(1.0, 1.1),
        deformations=list(anatomy.deformations) + [(SmoothField(rng, 60.0, half_extent_mm=200.0, channels=3), 2.0)],
    )


@dataclass
class MRRender:
    """A rendered scan: ``intensity`` (float32, >= 0), ``tissues`` (uint8 codes of
    :data:`MR_TISSUES`) and ``labels`` (uint8, :data:`MR_LABELS`)."""

    intensity: np.ndarray
    tissues: np.ndarray
    labels: np.ndarray
    tissue_intensity: dict[str, float]


def paint_brain_tissues(anatomy: BrainAnatomy, geometry: ScanGeometry) -> np.ndarray:
    """Tissue codes (:data:`MR_TISSUES`) of the voxels of ``geometry``."""
    an = anatomy
    w = an.anatomical_points(geometry)
    x, y, z = w
    tissue = np.zeros(x.shape, dtype=np.uint8)
    zero = np.zeros(3)
    r_head = ellipsoid_radius(w, zero, an.head_radii)
    mean_radius = float(np.mean(an.head_radii))
    depth_head = (1.0 - r_head) * mean_radius  # approximate depth below the skin, mm
    tissue[r_head < 1.0] = MR_TISSUE["scalp"]
    tissue[depth_head > an.scalp_mm] = MR_TISSUE["skull"]
    inner = depth_head > an.scalp_mm + an.skull_mm
    tissue[inner] = MR_TISSUE["csf"]

    brain_radii = an.head_radii - (an.scalp_mm + an.skull_mm + an.csf_mm)
    r_brain = ellipsoid_radius(w, zero, brain_radii)
    delta = (1.0 - r_brain) * float(np.mean(brain_radii))  # depth below the brain surface, mm
    fold = sample_on_grid(an.folding, geometry.affine, geometry.shape, max_step_fraction=0.0)
    sulcal_csf = delta < an.sulcus_depth_mm * np.clip(fold - 0.2, 0.0, 1.0)
    wm_start = an.grey_mm + an.sulcus_depth_mm * np.clip(fold + 0.2, 0.0, 1.0)
    cerebrum = (delta > 0.0) & ~sulcal_csf & inner
    tissue[cerebrum] = MR_TISSUE["grey_matter"]
    tissue[cerebrum & (delta > wm_start)] = MR_TISSUE["white_matter"]

    # cerebellum (below the tentorium) and brainstem
    r_cb = ellipsoid_radius(w, an.cerebellum_center, an.cerebellum_radii)
    cb = (r_cb + 0.08 * fold < 1.0) & inner
    tissue[cb] = MR_TISSUE["grey_matter"]
    tissue[cb & (r_cb + 0.15 * fold < 0.55)] = MR_TISSUE["white_matter"]
    stem_center = np.array([0.0, -0.15 * an.head_radii[1], -0.55 * an.head_radii[2]])
    stem = ellipsoid_radius(w, stem_center, np.array([13.0, 13.0, 0.5 * an.head_radii[2]])) < 1.0
    tissue[stem & inner] = MR_TISSUE["white_matter"]

    # deep grey nuclei, then ventricles
    for side in (-1.0, 1.0):
        thalamus = ellipsoid_radius(w, np.array([side * 12.0, -8.0, 2.0]), np.array([9.0, 14.0, 9.0])) < 1.0
        caudate = ellipsoid_radius(w, np.array([side * 13.0, 14.0, 10.0]), np.array([6.0, 12.0, 8.0])) < 1.0
        tissue[(thalamus | caudate) & cerebrum] = MR_TISSUE["deep_grey"]
    vs = an.ventricle_scale
    for side in (-1.0, 1.0):
        offset = an.ventricle_offsets
        bend = -0.004 * (y - offset[1]) ** 2  # the ventricles arch over the thalami
        centre = np.array([side * (4.0 + 3.0 * vs), 2.0, 14.0]) + offset
        local = np.stack([x - centre[0], y - centre[1], z - centre[2] - bend])
        radii = np.array([4.0 + 3.0 * vs, 24.0 + 4.0 * vs, 6.0 + 3.0 * vs])
        lateral_ventricle = np.sqrt(np.sum((local / radii[:, None, None, None]) ** 2, axis=0)) < 1.0
        tissue[lateral_ventricle & inner] = MR_TISSUE["ventricle"]
    third = ellipsoid_radius(w, an.ventricle_offsets + [0.0, -2.0, 2.0], np.array([1.5 + vs, 12.0, 7.0])) < 1.0
    tissue[third & inner] = MR_TISSUE["ventricle"]

    for centre, radii, rotation in an.lesions:
        inside = ellipsoid_radius(w, centre, radii, rotation) < 1.0
        tissue[inside & (tissue == MR_TISSUE["white_matter"])] = MR_TISSUE["lesion"]
    return tissue


def render_brain_mr(
    anatomy: BrainAnatomy,
    geometry: ScanGeometry,
    rng: np.random.Generator,
    *,
    sequence: str = "T1w",
    bias_strength: float | None = None,
    noise_fraction: float | None = None,
) -> MRRender:
    """Render ``anatomy`` on ``geometry`` as a ``sequence`` (``T1w``, ``T2w`` or ``FLAIR``) image.

    ``bias_strength`` (``beta``) and ``noise_fraction`` (``sigma`` relative to white matter) are
    drawn from 0.1-0.3 and 0.02-0.04 when not given. See the module docstring for the model.
    """
    if sequence not in MR_SEQUENCES:
        raise ValueError(f"sequence must be one of {MR_SEQUENCES}, got {sequence!r}")
    column = MR_SEQUENCES.index(sequence)
    tissue = paint_brain_tissues(anatomy, geometry)
    scale = rng.uniform(600.0, 1200.0)
    means = np.array([row[column] * rng.uniform(0.95, 1.05) for row in MR_INTENSITY_TABLE.values()], np.float32)
    signal = (means * scale)[tissue]
    signal = ndimage.gaussian_filter(signal, sigma=0.5, mode="nearest")

    beta = rng.uniform(0.1, 0.3) if bias_strength is None else bias_strength
    bias_field = SmoothField(rng, 80.0, half_extent_mm=200.0)
    points = geometry.world_points()
    slope = rng.normal(0.0, 1.0, 3) / 150.0
    gradient = slope[0] * points[0] + slope[1] * points[1] + slope[2] * points[2]
    bias = np.exp(beta * (sample_on_grid(bias_field, geometry.affine, geometry.shape) + gradient)).astype(np.float32)
    signal *= bias

    reference = scale * means[MR_TISSUE["white_matter"]] if sequence == "T1w" else scale * float(means.max())
    sigma = (rng.uniform(0.02, 0.04) if noise_fraction is None else noise_fraction) * reference
    real = signal + sigma * rng.standard_normal(signal.shape).astype(np.float32)
    imaginary = sigma * rng.standard_normal(signal.shape).astype(np.float32)
    intensity = np.sqrt(real**2 + imaginary**2).astype(np.float32)
    tissue_intensity = {name: float(means[code] * scale) for name, code in MR_TISSUE.items()}
    return MRRender(intensity=intensity, tissues=tissue, labels=_TISSUE_TO_LABEL[tissue],
                    tissue_intensity=tissue_intensity)
