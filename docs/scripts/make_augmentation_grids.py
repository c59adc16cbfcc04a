"""Write the picture grids of docs/augmentations.md: each preset, each transform, the pretext tasks.

Builds a synthetic CT torso and MR brain (``medssl.synthetic``), preprocesses them as the
pipeline does (``medssl.data.preprocess``: CT window [-1000, 1000] HU -> [0, 1], MR percentiles),
a synthetic radiograph (a projection of the CT) and a synthetic ultrasound sector, then samples
views through the presets (spatial part: ``medssl.transforms.spatial``; intensity part: the preset)
and writes PNG grids of mid slices to ``docs/images/augment_*.png``.

Usage (from the repository root, about 15 s on one core):

    .venv/bin/python docs/scripts/make_augmentation_grids.py [--out docs/images] [--seed 0]
    .venv/bin/python docs/scripts/make_augmentation_grids.py --benchmark   # the timing table
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from medssl.config import PreprocessConfig  # noqa: E402
from medssl.data.preprocess import preprocess_volume  # noqa: E402
from medssl.synthetic import make_ct_phantom, make_mr_phantom  # noqa: E402
from medssl.pretext import build_pretext  # noqa: E402
from medssl.transforms import build_intensity_transform, build_preset  # noqa: E402
from medssl.transforms.spatial import SpatialAugmentation, draw_view_geometry, sample_patch  # noqa: E402
from medssl.utils.atomic import atomic_path  # noqa: E402
from medssl.utils.seeding import make_rng, make_torch_generator  # noqa: E402

logger = logging.getLogger("make_augmentation_grids")

TILE_INCHES = 1.55
DPI = 72


# --- the images --------------------------------------------------------------------------------


def ct_image(seed: int) -> np.ndarray:
    volume, _ = make_ct_phantom(seed, shape=(160, 160, 100))
    prepared, _ = preprocess_volume(volume, PreprocessConfig(target_spacing=None, crop_foreground=True))
    return prepared.array


def mr_image(seed: int) -> np.ndarray:
    volume, _ = make_mr_phantom(seed, shape=(96, 96, 96))
    prepared, _ = preprocess_volume(volume, PreprocessConfig(target_spacing=None, crop_foreground=True))
    return prepared.array


def radiograph(ct: np.ndarray, size: int = 128) -> np.ndarray:
    """A digitally reconstructed radiograph: ``1 - exp(-k * sum(mu))`` along y (antero-posterior)."""
    hu = ct[0] * 2000.0 - 1000.0
    mu = np.clip(1.0 + hu / 1000.0, 0.0, None)  # attenuation relative to water
    path = mu.sum(axis=1)
    image = 1.0 - np.exp(-path / np.percentile(path, 95))
    image = (image - image.min()) / (image.max() - image.min())
    tensor = torch.from_numpy(image.astype(np.float32))[None, None]
    return F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False)[0].numpy()


def ultrasound_sector(size: int = 128) -> np.ndarray:
    """A B-mode-like sector: tissue with a bright capsule, an anechoic cyst and a vessel."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    radius = np.hypot(x - 0.5, y + 0.05)
    angle = np.arctan2(x - 0.5, y + 0.05)
    sector = (radius < 1.0) & (np.abs(angle) < 0.62)
    image = np.where(sector, 0.45 - 0.15 * radius, 0.0)
    capsule = np.abs(np.hypot((x - 0.5) / 0.28, (y - 0.55) / 0.2) - 1.0) < 0.08
    image = np.where(capsule & sector, 0.85, image)
    cyst = np.hypot((x - 0.42) / 0.09, (y - 0.55) / 0.07) < 1.0
    image = np.where(cyst, 0.05, image)
    vessel = np.abs(y - 0.3 - 0.1 * np.sin(6 * x)) < 0.025
    image = np.where(vessel & sector, 0.08, image)
    tensor = torch.from_numpy(image.astype(np.float32))[None, None]
    smooth = F.avg_pool2d(F.pad(tensor, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return smooth[0].numpy()


# --- views ---------------------------------------------------------------------------------------


def sample_views(image: np.ndarray, spatial: SpatialAugmentation, patch: tuple[int, ...], count: int, seed: int, key: str) -> torch.Tensor:
    """``count`` views of ``patch`` around the image centre: (count, C, *patch)."""
    if len(patch) == 2 and image.ndim == 3:
        image = image[..., None]  # a 2D image is a volume with Z == 1
    spatial_shape = image.shape[1 : 1 + len(patch)]
    centre = np.asarray(spatial_shape, dtype=np.float64) / 2.0 - 0.5
    views = []
    for index in range(count):
        rng = make_rng(seed, key, index)
        jitter = rng.uniform(-0.08, 0.08, len(patch)) * np.asarray(spatial_shape)
        geometry = draw_view_geometry(spatial, patch, centre + jitter, rng)
        views.append(sample_patch(image, geometry, padding_mode=spatial.padding_mode))
    return torch.stack(views)


def centre_crop(image: np.ndarray, patch: tuple[int, ...]) -> torch.Tensor:
    return sample_views(image, SpatialAugmentation.identity(), patch, 1, 0, "centre")


def slices(batch: torch.Tensor) -> list[list[np.ndarray]]:
    """Rows of display slices: axial and coronal mid slices in 3D, the image in 2D."""
    if batch.ndim == 4:
        return [[b[0].numpy().T for b in batch]]
    axial = [b[0, :, :, b.shape[-1] // 2].numpy().T for b in batch]
    coronal = [b[0, :, b.shape[-2] // 2, :].numpy().T for b in batch]
    return [axial, coronal]


def save_grid(rows: list[list[np.ndarray]], titles: list[str], path: Path, row_labels: list[str] | None = None) -> None:
    columns = max(len(r) for r in rows)
    figure, axes = plt.subplots(len(rows), columns, figsize=(TILE_INCHES * columns, TILE_INCHES * len(rows) + 0.3),
                                squeeze=False)
    for r, row in enumerate(rows):
        for c in range(columns):
            axis = axes[r][c]
            axis.set_xticks([])
            axis.set_yticks([])
            if c < len(row):
                axis.imshow(row[c], cmap="gray", vmin=0.0, vmax=1.0, origin="lower", interpolation="nearest")
            else:
                axis.axis("off")
            if r == 0 and c < len(titles):
                axis.set_title(titles[c], fontsize=7)
            if row_labels and c == 0:
                axis.set_ylabel(row_labels[r], fontsize=7)
    figure.tight_layout(pad=0.2)
    with atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, dpi=DPI, format="png")
        tmp.chmod(0o644)  # a docs asset: readable by everyone (the temporary file starts private)
    plt.close(figure)
    logger.info("wrote %s (%.0f KB)", path, path.stat().st_size / 1024)


# --- grids --------------------------------------------------------------------------------------


def preset_grid(name: str, image: np.ndarray, patch: tuple[int, ...], out: Path, seed: int, count: int = 7) -> None:
    preset = build_preset(name, spatial_dims=len(patch))
    views = sample_views(image, preset.spatial, patch, count, seed, name)
    augmented = preset.apply_intensity(views, make_torch_generator(seed, "grid", name))
    batch = torch.cat([centre_crop(image, patch), augmented])
    labels = ["axial", "coronal"] if len(patch) == 3 else None
    save_grid(slices(batch), ["plain crop"] + [f"view {i + 1}" for i in range(count)], out / f"augment_{name}.png", labels)


def transform_grid(tag: str, image: np.ndarray, patch: tuple[int, ...], transforms: list[tuple[str, dict]],
                   out: Path, seed: int) -> None:
    crop = centre_crop(image, patch)
    tiles, titles = [crop], ["original"]
    for index, (label, spec) in enumerate(transforms):
        args = dict(spec)
        transform = build_intensity_transform(args.pop("name"), prob=1.0, **args)
        tiles.append(transform(crop, make_torch_generator(seed, "transform", tag, index)).clamp(0.0, 1.0))
        titles.append(label)
    labels = ["axial", "coronal"] if len(patch) == 3 else None
    save_grid(slices(torch.cat(tiles)), titles, out / f"augment_{tag}_transforms.png", labels)


def _busiest_slice(volume: torch.Tensor, reference: torch.Tensor) -> int:
    """The axial slice where ``volume`` differs most from ``reference`` (the middle one if none)."""
    changed = (volume != reference).float().sum(dim=(0, 1, 2))
    return int(changed.argmax()) if float(changed.max()) > 0 else volume.shape[-1] // 2


def pretext_grid(image: np.ndarray, out: Path, seed: int) -> None:
    patch = centre_crop(image, (64, 64, 48))[0]
    tasks = [("genesis", {}), ("genesis", {}), ("inpainting", {}), ("corrupted_region", {}),
             ("intensity_restoration", {"modality": "ct"}), ("rotation", {"classes": "axial"})]
    inputs, targets, titles = [], [], []
    for index, (name, args) in enumerate(tasks):
        task = build_pretext(name, spatial_dims=3, **args)
        attempt = 0
        while True:  # show a draw where the task does something visible in an axial slice
            inp, target = task(patch, make_torch_generator(seed, "pretext", index, attempt))
            attempt += 1
            if target.ndim > 0 or int(target) != 0 or attempt > 20:
                break
        if target.ndim == 0:
            z = patch.shape[-1] // 2
            inputs.append(inp[0, :, :, z].numpy().T)
            targets.append(patch[0, :, :, z].numpy().T)
            titles.append(f"{name}: class {int(target)}")
            continue
        if task.spec.target_kind == "mask":
            z = int(target.sum(dim=(0, 1, 2)).argmax())  # where most voxels are corrupted
        elif name == "genesis":  # out-painting fills most slices with noise: show the least noisy one
            roughness = (inp[:, 1:] - inp[:, :-1]).abs().mean(dim=(0, 1, 2))
            z = int(roughness.argmin())
        else:
            z = _busiest_slice(inp, patch)
        inputs.append(inp[0, :, :, z].numpy().T)
        targets.append(target[0, :, :, z].numpy().T)
        titles.append(name)
    save_grid([inputs, targets], titles, out / "augment_pretext.png", ["input", "target"])


def contrast_randomization_grid(ct: np.ndarray, mr: np.ndarray, out: Path, seed: int) -> None:
    """Axial slices of the MR and the CT: inverted, through three random intensity curves, then
    three draws of the fine-tuning recipe ``contrast_randomization`` (mild noise/blur/gamma/scale,
    CT window, curve, inversion at their default probabilities)."""
    from medssl.transforms.finetune_intensity import FinetuneIntensity

    recipe = FinetuneIntensity("contrast_randomization", spatial_dims=2)
    rows, titles = [], ["original", "inverted", "curve 1", "curve 2", "curve 3", "recipe 1", "recipe 2", "recipe 3"]
    for tag, image, patch in (("MR", mr, (72, 72, 72)), ("CT", ct, (96, 96, 64))):
        crop = centre_crop(image, patch)[..., patch[2] // 2]  # (1, 1, X, Y): one axial slice
        tiles = [crop, build_intensity_transform("inversion", prob=1.0)(crop, make_torch_generator(seed, "inv"))]
        curve = build_intensity_transform("intensity_curve", prob=1.0, num_controls=(5, 7))
        tiles += [curve(crop, make_torch_generator(seed, "curve", index)) for index in range(3)]
        preset = recipe.for_modality(tag)
        tiles += [preset.apply_intensity(crop, make_torch_generator(seed, "recipe", tag, index)) for index in range(3)]
        rows.append([t[0, 0].numpy().T for t in tiles])
    save_grid(rows, titles, out / "augment_contrast_randomization.png", ["MR", "CT"])


def structure_contrast_grid(out: Path, seed: int) -> None:
    """One axial CT slice without contrast (the demo's window [-200, 300] HU), four draws of the
    structure-wise contrast (``finetune.structure_contrast: 1.0``, shift 0.3, liver and kidneys), and
    the same anatomy in the portal-venous phase: the change the augmentation imitates."""
    from medssl.transforms.structure_contrast import StructureContrast

    config = PreprocessConfig(target_spacing=None, crop_foreground=False, ct_window=(-200.0, 300.0))
    phases = {}
    for phase in ("plain", "venous"):
        volume, mask = make_ct_phantom(seed + 3, shape=(128, 128, 64), contrast=phase)
        prepared, _ = preprocess_volume(volume, config)
        phases[phase] = (torch.from_numpy(prepared.array), torch.from_numpy(mask.astype(np.int64)))
    image, mask = phases["plain"]
    z = int(torch.argmax((mask[0] == 2).sum(dim=(0, 1))))  # the slice with the most kidney
    plain, labels = image[..., z], mask[..., z]
    augment = StructureContrast((1, 2), prob=1.0, shift=0.3)
    tiles = [plain] + [augment(plain, labels, make_torch_generator(seed, "structure", i)) for i in range(4)]
    tiles.append(phases["venous"][0][..., z])
    titles = ["plain CT", "draw 1", "draw 2", "draw 3", "draw 4", "venous phase"]
    save_grid([[t[0].numpy().T for t in tiles]], titles, out / "augment_structure_contrast.png")


# --- micro-benchmark --------------------------------------------------------------------------------


def _time_ms(function, repeats: int) -> float:
    import time

    function()  # warm-up (noise bank, FFT plans, caches)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            function()
        best = min(best, (time.perf_counter() - start) / repeats)
    return best * 1000.0


def benchmark(side: int = 96, batch: int = 8, repeats: int = 5) -> str:
    """Markdown table: ms per view (one CPU thread) per transform at ``prob=1``, alone (B=1) and
    inside a batch of ``batch``, next to the MONAI counterpart's ms per view."""
    import monai.transforms as mt

    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    view = torch.rand((1, 1, side, side, side), generator=generator) * 0.8 + 0.1
    views = view.expand(batch, -1, -1, -1, -1).contiguous()
    sample = view[0]
    monai = {
        "window": mt.ScaleIntensityRange(-160, 240, 0.0, 1.0, clip=True),
        "hu_noise": mt.RandGaussianNoise(prob=1.0, std=0.015),
        "gaussian_noise": mt.RandGaussianNoise(prob=1.0, std=0.05),
        "rician_noise": mt.RandRicianNoise(prob=1.0, std=0.04),
        "gamma": mt.RandAdjustContrast(prob=1.0, gamma=(0.7, 1.5)),
        "contrast": None,
        "intensity_scale": mt.RandScaleIntensity(prob=1.0, factors=0.1),
        "blur": mt.RandGaussianSmooth(prob=1.0, sigma_x=(0.5, 1.5), sigma_y=(0.5, 1.5), sigma_z=(0.5, 1.5)),
        "resolution_loss": mt.RandSimulateLowResolution(prob=1.0, zoom_range=(0.33, 0.67)),
        "bias_field": mt.RandBiasField(prob=1.0, coeff_range=(-0.15, 0.15)),
        "gibbs": mt.RandGibbsNoise(prob=1.0, alpha=(0.3, 0.6)),
        "spikes": mt.RandKSpaceSpikeNoise(prob=1.0),
        "ghosting": None,
        "motion": None,
        "speckle": None,
        "inversion": None,
        "intensity_curve": mt.RandHistogramShift(prob=1.0, num_control_points=(4, 7)),
    }
    lines = [
        f"| transform | medssl, B=1 (ms/view) | medssl, B={batch} (ms/view) | MONAI counterpart (ms/view) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, reference in monai.items():
        transform = build_intensity_transform(name, prob=1.0)
        single = _time_ms(lambda: transform(view, generator), repeats)
        batched = _time_ms(lambda: transform(views, generator), max(1, repeats // 2)) / batch
        theirs = f"{_time_ms(lambda: reference(sample), repeats):.1f}" if reference is not None else "-"
        lines.append(f"| `{name}` ({type(transform).__name__}) | {single:.1f} | {batched:.1f} | {theirs} |")
        logger.info(lines[-1])
    for preset_name in ("ct", "mr"):
        preset = build_preset(preset_name)
        single = _time_ms(lambda: preset.apply_intensity(view, generator), repeats * 4)
        batched = _time_ms(lambda: preset.apply_intensity(views, generator), repeats) / batch
        lines.append(f"| preset `{preset_name}` (default probabilities) | {single:.1f} | {batched:.1f} | - |")
        logger.info(lines[-1])
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/images", type=Path)
    parser.add_argument("--seed", default=0, type=int)
    parser.add_argument("--benchmark", action="store_true", help="print the ms-per-view table instead")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.benchmark:
        print(benchmark())
        return
    torch.set_num_threads(1)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    ct, mr = ct_image(args.seed + 3), mr_image(args.seed + 1)
    xr, us = radiograph(ct), ultrasound_sector()
    logger.info("CT %s, MR %s, XR %s, US %s", ct.shape, mr.shape, xr.shape, us.shape)

    preset_grid("ct", ct, (96, 96, 64), out, args.seed)
    preset_grid("mr", mr, (72, 72, 72), out, args.seed)
    preset_grid("xr", xr, (112, 112), out, args.seed)
    preset_grid("us", us, (112, 112), out, args.seed)

    transform_grid("ct", ct, (96, 96, 64), [
        ("thick slices x3", {"name": "resolution_loss", "factor": (3.0, 3.0), "axes": (2,)}),
        ("blur s=1", {"name": "blur", "sigma": (1.0, 1.0)}),
        ("noise 30 HU", {"name": "hu_noise", "std_hu": (30.0, 30.0)}),
        ("soft tissue", {"name": "window", "windows": ["soft_tissue"], "level_jitter": (0, 0), "width_scale": (1, 1)}),
        ("lung", {"name": "window", "windows": ["lung"], "level_jitter": (0, 0), "width_scale": (1, 1)}),
        ("bone", {"name": "window", "windows": ["bone"], "level_jitter": (0, 0), "width_scale": (1, 1)}),
        ("liver", {"name": "window", "windows": ["liver"], "level_jitter": (0, 0), "width_scale": (1, 1)}),
    ], out, args.seed)
    transform_grid("mr", mr, (72, 72, 72), [
        ("bias field", {"name": "bias_field", "coeff_range": (-0.15, 0.15)}),
        ("motion", {"name": "motion", "max_translation": 3.0}),
        ("ghosting", {"name": "ghosting", "axes": (1,)}),
        ("Gibbs", {"name": "gibbs", "alpha": (0.55, 0.55)}),
        ("k-space spike", {"name": "spikes", "amplitude": (0.1, 0.1), "num_spikes": (1, 1)}),
        ("thick slices", {"name": "resolution_loss", "mode": "one_axis", "axes": (2,), "factor": (4.0, 4.0)}),
        ("Rician noise", {"name": "rician_noise", "std": (0.04, 0.04)}),
        ("gamma", {"name": "gamma", "gamma": (1.5, 1.5)}),
    ], out, args.seed)
    transform_grid("xr", xr, (112, 112), [
        ("blur", {"name": "blur", "sigma": (1.2, 1.2)}),
        ("noise", {"name": "gaussian_noise", "std": (0.03, 0.03)}),
        ("gamma 0.6", {"name": "gamma", "gamma": (0.6, 0.6)}),
        ("gamma 1.6", {"name": "gamma", "gamma": (1.6, 1.6)}),
        ("contrast 1.33", {"name": "contrast", "factor": (1.33, 1.33)}),
    ], out, args.seed)
    transform_grid("us", us, (112, 112), [
        ("speckle Rayleigh", {"name": "speckle", "strength": (0.6, 0.6), "grain": (1.5, 1.5)}),
        ("speckle gamma L=1", {"name": "speckle", "strength": (0.6, 0.6), "grain": (1.5, 1.5), "distribution": "gamma"}),
        ("coarse grain", {"name": "speckle", "strength": (0.6, 0.6), "grain": (3.0, 3.0)}),
        ("blur", {"name": "blur", "sigma": (1.0, 1.0)}),
        ("gamma", {"name": "gamma", "gamma": (0.7, 0.7)}),
    ], out, args.seed)
    pretext_grid(ct, out, args.seed)
    contrast_randomization_grid(ct, mr, out, args.seed)
    structure_contrast_grid(out, args.seed)


if __name__ == "__main__":
    main()
