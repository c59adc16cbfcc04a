"""A CT-like torso phantom (lower chest to pelvis) with liver, kidneys, spleen and focal lesions.

What it simulates: a contrast-enhanced or unenhanced abdominal CT as a hospital archive holds it, at
a coarse grid. The anatomy is a set of implicit solids (ellipsoids, elliptic cylinders, shells) in
world millimetres (RAS+: +x patient Right, +y Anterior, +z Superior), all evaluated on coordinates
warped by a smooth random displacement field, so organs vary in shape, size, position and rotation
from patient to patient; :func:`render_torso_ct` paints tissues in order (later overrides earlier),
assigns Hounsfield units per tissue (drawn per scan, with parenchymal texture), blurs with the
scanner's point-spread function and adds correlated quantum noise.

Anatomy model (``a``, ``b``: half width and half depth of the body, 140-180 mm and 95-130 mm):

* body: elliptic cross-section, flatter at the back, hips flaring below the pelvic inlet; skin-side
  subcutaneous fat (10-35 mm), a muscle wall (thicker at the back: paraspinal muscles), then the
  body cavity filled with visceral fat;
* diaphragm: two domes (the right one higher) at 50-110 mm above the grid centre; above it the lungs
  (with vessel-like branching texture), heart and mediastinum, ribs in a slanted periodic band;
* below it: liver (right lobe plus a left lobe, cut by the diaphragm), gallbladder, spleen (posterior
  left, rotated), stomach with an air cap (air rises anteriorly in a supine patient), kidneys with
  cortex, medulla and perirenal fat, aorta and inferior vena cava splitting into iliac vessels, bowel
  loops (soft-tissue walls, fluid and gas from a thresholded random texture), bladder, iliac wings;
* spine: vertebral bodies with a cortical shell and cancellous core, discs every ~32 mm, canal,
  neural arch and spinous process;
* lesions: 1-3 small hypodense blobs (random ellipsoids) inside the liver (80 %) or the spleen or a
  kidney (20 %, when the grid resolves a lesion there), 1.4-2.8 grid voxels in radius but at most
  half the host organ's smallest radius, 12-50 HU below the surrounding parenchyma.

Hounsfield table (mean for plain / portal-venous phase; per-scan standard deviation of the mean):

=================  ========  ========  =====
tissue             plain     venous    sd
=================  ========  ========  =====
air                -1000     -1000     0
lung               -850      -850      25
fat (subcut.)      -105      -100      8
fat (visceral)     -95       -90       8
muscle             45        55        5
liver              60        110       6
spleen             48        118       6
kidney cortex      32        170       5
kidney medulla     30        120       5
blood (vessels)    42        160       5
bowel wall         35        80        8
bowel gas          -950      -950      20
fluid (bile etc.)  8-20      10-25     4-8
cancellous bone    250       260       50
cortical bone      1000      1000      120
lesion             liver - 12..25    liver - 25..50
=================  ========  ========  =====

Liver and spleen overlap in intensity (more so after contrast), so a model must use position and
shape to tell them apart. Segmentation labels (:data:`CT_LABELS`): 0 background, 1 liver, 2 kidneys,
3 spleen, 4 lesion (a lesion overrides the organ that holds it).

Example:
    >>> import numpy as np
    >>> from medssl.synthetic.scan_geometry import ScanGeometry, ct_directions
    >>> rng = np.random.default_rng(0)
    >>> anatomy = draw_torso_anatomy(rng, lesion=True, grid_scale_mm=15.0)
    >>> geometry = ScanGeometry((24, 24, 16), (15.0, 15.0, 22.0), ct_directions("standard"))
    >>> ct = render_torso_ct(anatomy, geometry, rng, contrast="venous", noise_hu=12.0)
    >>> ct.hu.shape, sorted(set(np.unique(ct.labels)) - {0}) == [1, 2, 3, 4]
    ((24, 24, 16), True)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from medssl.synthetic.fields import (
    SmoothField,
    cylinder_radius,
    ellipsoid_radius,
    random_rotation,
    rotation_matrix,
    sample_on_grid,
    voxel_texture,
)
from medssl.synthetic.scan_geometry import ScanGeometry

CT_LABELS: dict[int, str] = {0: "background", 1: "liver", 2: "kidneys", 3: "spleen", 4: "lesion"}
CT_CONTRASTS = ("plain", "venous")

# name: (plain mean HU, venous mean HU, per-scan sd of the mean, texture amplitude HU)
CT_HU_TABLE: dict[str, tuple[float, float, float, float]] = {
    "air": (-1000.0, -1000.0, 0.0, 0.0),
    "fat_subcutaneous": (-105.0, -100.0, 8.0, 10.0),
    "fat_visceral": (-95.0, -90.0, 8.0, 12.0),
    "muscle": (45.0, 55.0, 5.0, 6.0),
    "bowel_wall": (35.0, 80.0, 8.0, 10.0),
    "bowel_fluid": (15.0, 20.0, 5.0, 5.0),
    "gas": (-950.0, -950.0, 20.0, 15.0),
    "stomach_content": (20.0, 25.0, 8.0, 6.0),
    "liver": (60.0, 110.0, 6.0, 6.0),
    "spleen": (48.0, 118.0, 6.0, 6.0),
    "kidney_cortex": (32.0, 170.0, 5.0, 8.0),
    "kidney_medulla": (30.0, 120.0, 5.0, 8.0),
    "blood": (42.0, 160.0, 5.0, 4.0),
    "gallbladder": (8.0, 10.0, 4.0, 3.0),
    "urine": (8.0, 10.0, 4.0, 3.0),
    "bone_cortical": (1000.0, 1000.0, 120.0, 60.0),
    "bone_cancellous": (250.0, 260.0, 50.0, 40.0),
    "disc": (80.0, 90.0, 10.0, 8.0),
    "spinal_canal": (15.0, 18.0, 5.0, 4.0),
    "lung": (-850.0, -850.0, 25.0, 25.0),
    "cartilage": (110.0, 120.0, 10.0, 6.0),
    "table": (120.0, 120.0, 10.0, 5.0),
    "pad": (-750.0, -750.0, 20.0, 10.0),
    "lesion": (0.0, 0.0, 0.0, 5.0),  # relative: its host organ's HU minus a drawn contrast
}
CT_TISSUES: tuple[str, ...] = tuple(CT_HU_TABLE)
TISSUE = {name: code for code, name in enumerate(CT_TISSUES)}

_TISSUE_TO_LABEL = np.zeros(len(CT_TISSUES), dtype=np.uint8)
_TISSUE_TO_LABEL[TISSUE["liver"]] = 1
_TISSUE_TO_LABEL[TISSUE["kidney_cortex"]] = 2
_TISSUE_TO_LABEL[TISSUE["kidney_medulla"]] = 2
_TISSUE_TO_LABEL[TISSUE["spleen"]] = 3
_TISSUE_TO_LABEL[TISSUE["lesion"]] = 4

# channels of the per-patient shape-noise field
_SHAPE_CHANNELS = ("body", "liver", "spleen", "kidney", "stomach", "heart")


@dataclass
class Solid:
    """An ellipsoid in the anatomical frame: centre (mm), radii (mm), rotation (3x3)."""

    center: np.ndarray
    radii: np.ndarray
    rotation: np.ndarray

    def radius(self, points: np.ndarray) -> np.ndarray:
        return ellipsoid_radius(points, self.center, self.radii, self.rotation)


@dataclass
class Lesion:
    """A focal lesion: the organ that holds it, its ellipsoid and its contrast to the organ (HU)."""

    organ: str
    solid: Solid
    contrast_hu: float


@dataclass
class TorsoAnatomy:
    """One patient's torso: body habitus, organ solids, lesions, and the fields that deform them.

    Drawn by :func:`draw_torso_anatomy`; a follow-up scan of the same patient is
    :func:`follow_up_anatomy`. All lengths in millimetres, in the anatomical frame.
    """

    half_width: float
    half_depth: float
    fat_lateral: float
    fat_anterior: float
    fat_posterior: float
    muscle: float
    diaphragm_z: float
    dome_height: float
    liver_right: Solid
    liver_left: Solid
    gallbladder: Solid
    spleen: Solid
    kidneys: tuple[Solid, Solid]
    stomach: Solid
    heart: Solid
    bladder: Solid
    iliac_wings: tuple[Solid, Solid]
    aorta_xy: tuple[float, float]
    ivc_xy: tuple[float, float]
    vessel_radius: float
    bifurcation_z: float
    spine_y: float
    vertebra_radius: float
    disc_period: float
    disc_phase: float
    rib_period: float
    rib_phase: float
    cortical_mm: float
    grid_scale_mm: float
    lesions: list[Lesion]
    deformations: list[tuple[SmoothField, float]]
    shape_noise: SmoothField
    shape_amplitude: dict[str, float] = field(default_factory=dict)

    def anatomical_points(self, geometry: ScanGeometry) -> np.ndarray:
        """Anatomical coordinates of the voxels of ``geometry``: ``p + sum_i a_i * d_i(p)``, (3, X, Y, Z)."""
        warped = geometry.world_points().astype(np.float32)
        for deformation, amplitude in self.deformations:
            warped += np.float32(amplitude) * sample_on_grid(deformation, geometry.affine, geometry.shape)
        return warped


def _solid(rng: np.random.Generator, center, radii, base_rotation=None, jitter_deg=(12.0, 12.0, 15.0),
           shift=(0.0, 0.0, 0.0), scale=(0.85, 1.2)) -> Solid:
    center = np.asarray(center, float) + rng.uniform(-1.0, 1.0, 3) * np.asarray(shift, float)
    radii = np.asarray(radii, float) * rng.uniform(scale[0], scale[1]) * rng.uniform(0.92, 1.08, 3)
    rotation = random_rotation(rng, jitter_deg)
    if base_rotation is not None:
        rotation = base_rotation @ rotation
    return Solid(center, radii, rotation)


def _draw_lesion(rng: np.random.Generator, host: Solid, organ: str, grid_scale_mm: float) -> Lesion:
    """A lesion centred in the lower half of ``host`` at normalised radius <= 0.5."""
    direction = rng.standard_normal(3)
    direction[2] = -abs(direction[2])  # lower half: clear of the diaphragm cut
    direction /= np.linalg.norm(direction)
    local = direction * rng.uniform(0.0, 0.5) * host.radii
    center = host.center + host.rotation @ local
    radius = min(rng.uniform(1.4, 2.8) * grid_scale_mm, 0.5 * float(host.radii.min()))
    radii = radius * rng.uniform(0.75, 1.25, 3)
    contrast = rng.uniform(25.0, 50.0)
    return Lesion(organ, Solid(center, radii, random_rotation(rng, (90.0, 90.0, 90.0))), contrast)


def draw_torso_anatomy(rng: np.random.Generator, *, lesion: bool, grid_scale_mm: float) -> TorsoAnatomy:
    """Draw one patient's torso anatomy.

    Args:
        rng: every random choice comes from it.
        lesion: whether the patient has 1-3 focal lesions.
        grid_scale_mm: the nominal in-plane voxel size of the scans it will be rendered on; thin
            structures (cortical bone, vessels) and lesions are at least about one voxel thick.
    """
    a = rng.uniform(140.0, 180.0)
    b = rng.uniform(95.0, 130.0)
    habitus = rng.uniform(0.0, 1.0)  # 0 lean, 1 obese
    fat_lateral = 10.0 + 25.0 * habitus + rng.uniform(-3, 3)
    fat_anterior = 8.0 + 27.0 * habitus + rng.uniform(-3, 3)
    fat_posterior = 6.0 + 12.0 * habitus
    muscle = rng.uniform(8.0, 15.0)
    diaphragm_z = rng.uniform(50.0, 110.0)
    dome = rng.uniform(15.0, 30.0)
    d = diaphragm_z
    # organs are placed in units of the body cavity's half-axes: lateral, anterior, posterior
    ca = a - fat_lateral - muscle
    cf = b - fat_anterior - muscle
    cp = 0.88 * b - fat_posterior - 2.5 * muscle

    def rot_z(degrees: float) -> np.ndarray:
        return rotation_matrix((0.0, 0.0, np.deg2rad(degrees)))

    liver_right = _solid(rng, [0.5 * ca, 0.1 * cf, d - 55.0], [0.45 * ca, 0.55 * (cf + cp), 72.0], shift=(10, 8, 12))
    liver_left = _solid(rng, [-0.1 * ca, 0.5 * cf, d - 30.0], [0.33 * ca, 0.3 * cf, 38.0], base_rotation=rot_z(-20.0),
                        shift=(10, 6, 8))
    gallbladder = _solid(rng, [0.35 * ca, 0.45 * cf, d - 105.0], [14.0, 18.0, 30.0], shift=(6, 6, 8), scale=(0.8, 1.2))
    spleen = _solid(rng, [-0.7 * ca, -0.4 * cp, d - 55.0], [0.17 * ca, 0.42 * cp, 52.0], base_rotation=rot_z(35.0),
                    shift=(8, 6, 15))
    kidneys = tuple(
        _solid(rng, [side * 0.48 * ca, -0.45 * cp, d - (125.0 if side > 0 else 110.0)], [27.0, 24.0, 52.0],
               base_rotation=rotation_matrix((0.0, np.deg2rad(-side * 12.0), np.deg2rad(side * 25.0))),
               shift=(8, 5, 15), scale=(0.85, 1.15))
        for side in (1.0, -1.0)
    )
    stomach = _solid(rng, [-0.38 * ca, 0.35 * cf, d - 45.0], [0.25 * ca, 0.3 * cf, 50.0], base_rotation=rot_z(30.0),
                     shift=(10, 8, 10))
    heart = _solid(rng, [-0.15 * ca, 0.3 * cf, d + 50.0], [0.38 * ca, 0.45 * cf, 55.0],
                   base_rotation=rotation_matrix((0.0, np.deg2rad(20.0), np.deg2rad(35.0))), shift=(8, 6, 8))
    pelvis_z = d - rng.uniform(260.0, 300.0)
    bladder = _solid(rng, [0.0, 0.3 * b, pelvis_z - 40.0], [45.0, 35.0, 35.0], shift=(5, 5, 10), scale=(0.7, 1.3))
    iliac_wings = tuple(
        _solid(rng, [side * 0.55 * a, -0.2 * b, pelvis_z + 20.0], [0.1 * a, 0.34 * b, 55.0],
               base_rotation=rotation_matrix((0.0, 0.0, np.deg2rad(side * 30.0))), shift=(5, 5, 8), scale=(0.9, 1.1))
        for side in (1.0, -1.0)
    )
    vertebra_radius = rng.uniform(15.0, 21.0)
    spine_y = -cp + 0.3 * vertebra_radius
    vessel_radius = max(rng.uniform(9.0, 13.0), 0.8 * grid_scale_mm)
    aorta_xy = (-0.3 * vertebra_radius - rng.uniform(0, 8), spine_y + vertebra_radius + vessel_radius + 2.0)
    ivc_xy = (vertebra_radius + vessel_radius * 0.8 + rng.uniform(0, 8), spine_y + vertebra_radius + vessel_radius)

    anatomy = TorsoAnatomy(
        half_width=a, half_depth=b, fat_lateral=fat_lateral, fat_anterior=fat_anterior,
        fat_posterior=fat_posterior, muscle=muscle, diaphragm_z=diaphragm_z, dome_height=dome,
        liver_right=liver_right, liver_left=liver_left, gallbladder=gallbladder, spleen=spleen,
        kidneys=kidneys, stomach=stomach, heart=heart, bladder=bladder, iliac_wings=iliac_wings,
        aorta_xy=aorta_xy, ivc_xy=ivc_xy, vessel_radius=vessel_radius,
        bifurcation_z=d - rng.uniform(190.0, 230.0), spine_y=spine_y, vertebra_radius=vertebra_radius,
        disc_period=rng.uniform(28.0, 36.0), disc_phase=rng.uniform(0.0, 36.0),
        rib_period=rng.uniform(24.0, 32.0), rib_phase=rng.uniform(0.0, 32.0),
        cortical_mm=max(3.0, 0.7 * grid_scale_mm), grid_scale_mm=grid_scale_mm, lesions=[],
        deformations=[(SmoothField(rng, 90.0, channels=3), rng.uniform(6.0, 14.0))],
        shape_noise=SmoothField(rng, 60.0, channels=len(_SHAPE_CHANNELS)),
        shape_amplitude={"body": 0.025, "liver": 0.12, "spleen": 0.12, "kidney": 0.07, "stomach": 0.1, "heart": 0.05},
    )
    return redraw_torso_lesions(anatomy, rng) if lesion else anatomy


def redraw_torso_lesions(anatomy: TorsoAnatomy, rng: np.random.Generator, size_factor: float = 1.0) -> TorsoAnatomy:
    """The same patient with 1-3 newly drawn lesions (radii scaled by ``size_factor``).

    Used to draw a patient's lesions, and again (larger) when a coarse grid missed all of them."""
    lesions = []
    for _ in range(int(rng.integers(1, 4))):
        roll = rng.uniform()
        host, organ = (anatomy.liver_right, "liver")
        if roll >= 0.8:
            if roll < 0.9:
                candidate = (anatomy.spleen, "spleen")
            else:
                candidate = (anatomy.kidneys[int(rng.integers(0, 2))], "kidney")
            if 0.5 * candidate[0].radii.min() >= 1.2 * anatomy.grid_scale_mm:  # visible without filling the organ
                host, organ = candidate
        lesion = _draw_lesion(rng, host, organ, anatomy.grid_scale_mm)
        lesion.solid.radii = lesion.solid.radii * size_factor
        lesions.append(lesion)
    return dataclasses.replace(anatomy, lesions=lesions)


def follow_up_anatomy(anatomy: TorsoAnatomy, rng: np.random.Generator) -> TorsoAnatomy:
    """The same patient months later: lesions grown or shrunk (x0.6-1.6), the diaphragm shifted by
    breathing (+-12 mm), a small extra deformation (3-5 mm, positioning); everything else kept."""
    lesions = [
        Lesion(les.organ, Solid(les.solid.center, les.solid.radii * rng.uniform(0.6, 1.6), les.solid.rotation),
               les.contrast_hu)
        for les in anatomy.lesions
    ]
    return dataclasses.replace(
        anatomy,
        diaphragm_z=anatomy.diaphragm_z + rng.uniform(-12.0, 12.0),
        lesions=lesions,
        deformations=list(anatomy.deformations) + [(SmoothField(rng, 70.0, channels=3), rng.uniform(3.0, 5.0))],
    )


@dataclass
class CTRender:
    """A rendered scan: ``hu`` (float32, integer-valued Hounsfield units), ``tissues`` (uint8 codes of
    :data:`CT_TISSUES`, before blur and noise) and ``labels`` (uint8, :data:`CT_LABELS`)."""

    hu: np.ndarray
    tissues: np.ndarray
    labels: np.ndarray
    tissue_hu: dict[str, float]


def _elliptic(x: np.ndarray, y: np.ndarray, half_x: float, half_ant: float, half_post: float) -> np.ndarray:
    """Normalised radius of an ellipse with different anterior and posterior half-axes."""
    half_y = np.where(y >= 0.0, half_ant, half_post)
    return np.sqrt((x / half_x) ** 2 + (y / half_y) ** 2)


def paint_torso_tissues(
    anatomy: TorsoAnatomy, geometry: ScanGeometry, texture_rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Tissue codes (:data:`CT_TISSUES`) of the voxels of ``geometry``, painted in anatomical order
    (later overrides earlier), and the lesion voxels per host organ."""
    an = anatomy
    spacing = tuple(float(v) for v in geometry.spacing)
    w = an.anatomical_points(geometry)
    x, y, z = w
    shape = x.shape
    noise = sample_on_grid(an.shape_noise, geometry.affine, geometry.shape)
    amp = an.shape_amplitude
    n = {name: amp[name] * noise[i] for i, name in enumerate(_SHAPE_CHANNELS)}
    tissue = np.full(shape, TISSUE["air"], dtype=np.uint8)

    # table and pad below the patient's back
    back = -0.88 * an.half_depth
    tissue[(y < back - 2.0) & (y > back - 12.0) & (np.abs(x) < 0.95 * an.half_width)] = TISSUE["pad"]
    tissue[(y <= back - 12.0) & (y > back - 22.0) & (np.abs(x) < 1.05 * an.half_width)] = TISSUE["table"]

    # body wall: subcutaneous fat, muscle, cavity; the hips flare below the pelvic inlet
    flare = 1.0 + 0.08 / (1.0 + np.exp((z - (an.bifurcation_z - 40.0)) / 30.0))
    a = an.half_width * flare
    b = an.half_depth
    r_body = _elliptic(x, y, a, b, 0.88 * b) + n["body"]
    r_fat = _elliptic(x, y, a - an.fat_lateral, b - an.fat_anterior, 0.88 * b - an.fat_posterior) + n["body"]
    cavity_a = a - an.fat_lateral - an.muscle
    r_cavity = _elliptic(x, y, cavity_a, b - an.fat_anterior - an.muscle,
                         0.88 * b - an.fat_posterior - 2.5 * an.muscle) + n["body"]
    body = r_body < 1.0
    cavity = r_cavity < 1.0
    tissue[body] = TISSUE["fat_subcutaneous"]
    tissue[r_fat < 1.0] = TISSUE["muscle"]
    tissue[cavity] = TISSUE["fat_visceral"]

    # diaphragm domes (right dome higher)
    lateral = (np.abs(x) - 0.45 * cavity_a) / (0.5 * cavity_a)
    dome = np.clip(1.0 - lateral**2 - (y / b) ** 2, 0.0, None)
    z_dia = an.diaphragm_z + an.dome_height * dome + 10.0 * (x > 0)
    thorax = cavity & (z > z_dia)
    abdomen = cavity & ~thorax

    # thorax: lungs with vessels, then mediastinum and heart
    tissue[thorax] = TISSUE["lung"]
    v1 = voxel_texture(texture_rng, shape, spacing, 1.2 * an.grid_scale_mm)
    v2 = voxel_texture(texture_rng, shape, spacing, 1.2 * an.grid_scale_mm)
    tissue[thorax & (np.abs(v1) < 0.18) & (np.abs(v2) < 0.6)] = TISSUE["blood"]
    tissue[thorax & (np.abs(x + 0.05 * cavity_a) < 0.17 * cavity_a) & (y > an.spine_y)] = TISSUE["fat_visceral"]
    heart = (an.heart.radius(w) + n["heart"] < 1.0) & cavity & (z > z_dia - 10.0)
    tissue[heart] = TISSUE["blood"]
    tissue[heart & (an.heart.radius(w) + n["heart"] > 0.8)] = TISSUE["muscle"]  # myocardium

    # abdomen: bowel texture first, then solid organs over it
    lower = abdomen & (z < an.diaphragm_z - 70.0)
    bowel = voxel_texture(texture_rng, shape, spacing, 0.9 * an.grid_scale_mm)
    tissue[lower & (bowel > -0.3)] = TISSUE["bowel_wall"]
    tissue[lower & (bowel > 0.9)] = TISSUE["bowel_fluid"]
    tissue[lower & (bowel > 1.6)] = TISSUE["gas"]
    below = abdomen
    r_stomach = an.stomach.radius(w) + n["stomach"]
    stomach = below & (r_stomach < 1.0)
    tissue[stomach] = TISSUE["stomach_content"]
    air_level = an.stomach.center[1] + 0.45 * an.stomach.radii[1]
    tissue[stomach & (y > air_level)] = TISSUE["gas"]
    tissue[stomach & (r_stomach > 0.85)] = TISSUE["bowel_wall"]
    # perirenal fat, then liver and spleen, then the kidneys (which indent them, as in life)
    kidney_r = [k.radius(w) + n["kidney"] for k in an.kidneys]
    for r in kidney_r:
        tissue[below & (r < 1.3)] = TISSUE["fat_visceral"]
    tissue[below & (an.spleen.radius(w) + n["spleen"] < 1.0)] = TISSUE["spleen"]
    liver = below & ((an.liver_right.radius(w) + n["liver"] < 1.0) | (an.liver_left.radius(w) + n["liver"] < 1.0))
    tissue[liver] = TISSUE["liver"]
    tissue[below & (an.gallbladder.radius(w) < 1.0)] = TISSUE["gallbladder"]
    for r in kidney_r:
        tissue[below & (r < 1.0)] = TISSUE["kidney_cortex"]
        tissue[below & (r < 0.62)] = TISSUE["kidney_medulla"]
    tissue[cavity & (an.bladder.radius(w) < 1.0)] = TISSUE["urine"]

    # great vessels: aorta and IVC, splitting into iliac vessels below the bifurcation
    above_bif = z > an.bifurcation_z
    spread = np.clip(an.bifurcation_z - z, 0.0, None) * 0.35
    vessel = np.zeros(shape, dtype=bool)
    for vx, vy in (an.aorta_xy, an.ivc_xy):
        vessel |= above_bif & (cylinder_radius(w, (vx, vy), (an.vessel_radius, an.vessel_radius)) < 1.0)
        for side in (1.0, -1.0):
            iliac = cylinder_radius(w, (vx + side * spread, vy), (0.7 * an.vessel_radius,) * 2) < 1.0
            vessel |= ~above_bif & iliac
    tissue[vessel & body] = TISSUE["blood"]

    # iliac wings: cortical shells with cancellous cores
    for wing in an.iliac_wings:
        r = wing.radius(w)
        tissue[body & (r < 1.0)] = TISSUE["bone_cortical"]
        tissue[body & (r < 1.0 - an.cortical_mm / wing.radii.min())] = TISSUE["bone_cancellous"]

    # ribs: a slanted periodic band just inside the muscle wall, sparing the sternum and spine
    rib_band = (r_cavity > 0.9) & (r_cavity < 1.02) & (z > an.diaphragm_z - 90.0)
    rib_phase = np.mod(z + 0.35 * y - an.rib_phase, an.rib_period) < max(10.0, 0.8 * an.grid_scale_mm)
    sternum = (np.abs(x) < 0.18 * a) & (y > 0.0)
    ribs = rib_band & rib_phase & (y > an.spine_y + an.vertebra_radius)
    tissue[ribs & ~sternum] = TISSUE["bone_cortical"]
    tissue[ribs & sternum] = TISSUE["cartilage"]

    # spine: vertebral body (shell + core), discs, canal, neural arch, spinous process
    rv = an.vertebra_radius
    r_vert = cylinder_radius(w, (0.0, an.spine_y), (rv, rv))
    disc = np.mod(z - an.disc_phase, an.disc_period) < 8.0
    tissue[body & (r_vert < 1.0)] = TISSUE["bone_cortical"]
    tissue[body & (r_vert < 1.0 - an.cortical_mm / rv)] = TISSUE["bone_cancellous"]
    tissue[body & (r_vert < 1.0) & disc] = TISSUE["disc"]
    canal_radius = 0.45 * rv
    canal_y = an.spine_y - rv - canal_radius - 1.0
    r_canal = cylinder_radius(w, (0.0, canal_y), (canal_radius, canal_radius))
    arch = canal_radius + max(an.cortical_mm, 4.0)
    tissue[body & (r_canal < arch / canal_radius)] = TISSUE["bone_cortical"]
    tissue[body & (r_canal < 1.0)] = TISSUE["spinal_canal"]
    spinous = (np.abs(x) < max(4.0, 0.4 * an.grid_scale_mm)) & (y < canal_y - canal_radius) & (y > canal_y - 3.5 * rv)
    tissue[body & spinous] = TISSUE["bone_cortical"]

    # lesions inside their host organ
    host_codes = {"liver": [TISSUE["liver"]], "spleen": [TISSUE["spleen"]],
                  "kidney": [TISSUE["kidney_cortex"], TISSUE["kidney_medulla"]]}
    lesion_maps: dict[str, np.ndarray] = {}
    for lesion in an.lesions:
        inside = (lesion.solid.radius(w) < 1.0) & np.isin(tissue, host_codes[lesion.organ])
        tissue[inside] = TISSUE["lesion"]
        lesion_maps[lesion.organ] = lesion_maps.get(lesion.organ, np.zeros(shape, bool)) | inside
    return tissue, lesion_maps


def render_torso_ct(
    anatomy: TorsoAnatomy,
    geometry: ScanGeometry,
    rng: np.random.Generator,
    *,
    contrast: str = "venous",
    noise_hu: float = 15.0,
) -> CTRender:
    """Render ``anatomy`` on ``geometry``: tissues, labels and Hounsfield units.

    ``HU = PSF * (mu_t + tau_t * T) + sigma * N`` where ``mu_t`` is the tissue's mean for the contrast
    phase (drawn per scan around :data:`CT_HU_TABLE`), ``T`` a unit texture (correlation ~0.7 voxel
    in-plane), ``PSF`` a Gaussian of 0.5 voxel in-plane and 0.4 voxel across slices (partial volume),
    and ``N`` unit noise correlated over ~0.5 voxel (reconstruction kernel) scaled to ``noise_hu``.
    Values are rounded to integers (what int16 storage with slope 1 keeps).
    """
    if contrast not in CT_CONTRASTS:
        raise ValueError(f"contrast must be one of {CT_CONTRASTS}, got {contrast!r}")
    column = 0 if contrast == "plain" else 1
    spacing = tuple(float(s) for s in geometry.spacing)
    tissue, lesion_maps = paint_torso_tissues(anatomy, geometry, rng)

    means = np.array([row[column] + rng.normal(0.0, row[2]) for row in CT_HU_TABLE.values()], dtype=np.float32)
    means[TISSUE["air"]] = -1000.0
    texture_amp = np.array([row[3] for row in CT_HU_TABLE.values()], dtype=np.float32)
    texture = voxel_texture(rng, geometry.shape, spacing, 0.7 * min(spacing))
    hu = means[tissue] + texture_amp[tissue] * texture

    hosts = {"liver": TISSUE["liver"], "spleen": TISSUE["spleen"], "kidney": TISSUE["kidney_cortex"]}
    scale = 0.5 if contrast == "plain" else 1.0  # lesions stand out less without contrast
    for organ, region in lesion_maps.items():
        lesion_contrast = np.mean([les.contrast_hu for les in anatomy.lesions if les.organ == organ])
        hu[region] = means[hosts[organ]] - scale * lesion_contrast + texture_amp[TISSUE["lesion"]] * texture[region]

    hu = ndimage.gaussian_filter(hu, sigma=(0.5, 0.5, 0.4), mode="nearest")
    hu += noise_hu * voxel_texture(rng, geometry.shape, spacing, 0.5 * min(spacing))
    hu = np.round(np.clip(hu, -1024.0, 3071.0)).astype(np.float32)
    tissue_hu = {name: float(means[code]) for name, code in TISSUE.items()}
    return CTRender(hu=hu, tissues=tissue, labels=_TISSUE_TO_LABEL[tissue], tissue_hu=tissue_hu)
