"""Data throughput: medssl's cached, fused pipeline against three MONAI pipelines, side by side.

What it measures (issue 8, part 6), all in ONE run so that ratios are comparable on a shared,
noisy machine:

1. **Two-view CT views per second** at 96^3 and 64^3 (``--quick``: 48^3 and 32^3), with 0 and 2
   loader workers, for
   * ``medssl``: :class:`~medssl.data.cache.PreprocessedCache` (float16 ``.npy`` memory maps) +
     :func:`~medssl.data.datasets.build_pretrain_dataset` with the ``ct`` preset (one fused
     resampling per view, the preset's intensity transforms in the worker);
   * ``monai_plain``: ``monai.data.Dataset``, everything from disk every epoch;
   * ``monai_cache``: ``CacheDataset``, the deterministic part held in RAM;
   * ``monai_persistent``: ``PersistentDataset``, the deterministic part pickled on disk.
   The MONAI pipelines run ``LoadImaged, EnsureChannelFirstd, Orientationd, Spacingd(1.5 mm),
   ScaleIntensityRanged(-1000..1000 HU -> 0..1), CropForegroundd(> 0.05, margin 4),
   SpatialPadd(patch), RandSpatialCropSamplesd(2 views)`` then per view the transforms matching medssl's ``ct``
   preset: ``RandFlipd`` (x, p 0.5), ``RandAffined`` (p 0.75 = 1 - (1 - 0.5)^2 for the preset's
   independent rotation and scaling; +-5/5/15 degrees, scale 0.85..1.2), ``Rand3DElasticd`` (p 0.1),
   ``RandSimulateLowResolutiond`` (p 0.15), ``RandGaussianSmoothd`` (p 0.2, sigma 0.4..1),
   ``RandGaussianNoised`` (p 0.5, up to 30 HU), ``RandScaleIntensityd`` + ``RandShiftIntensityd``
   (p 0.8, the random tissue window) and a clip to [0, 1].
2. **Peak memory** (PSS of the process and its workers, sampled every 50 ms, so shared pages are
   counted once) at 12 and 48 volumes (``--quick``: 4 and 12): each configuration runs in its own
   subprocess.
3. **End-to-end pretraining steps per second**: SimCLR (``medssl.methods``) on ``resnet10_tiny``,
   the same batch, fed by medssl against ``monai_plain`` and ``monai_persistent``.
4. **Batched intensity path**: the ``ct`` preset's intensity transforms on a whole batch at once
   (the device-side path; on the CPU here, on the GPU when there is one) against one view at a time.
5. **Profile** (``--profile``): cProfile of medssl's item and per-stage timings, and the time of
   each MONAI random transform per view.

The cohort: CT-like torsos (air, fat, soft tissue, liver, lungs, spine; 15 HU noise) of
256x256x160 voxels at 0.8x0.8x2.5 mm (``--quick``: 128x128x64 at 1.6x1.6x5 mm), stored as
uncompressed NIfTI (``.nii``) int16 with ``scl_slope = 1``, ``scl_inter = -1024``, written to a
temporary folder (removed afterwards unless ``--keep``).

Usage::

    .venv/bin/python benchmarks/data_throughput.py --quick          # a few minutes
    .venv/bin/python benchmarks/data_throughput.py                  # the full run (30+ minutes)
    .venv/bin/python benchmarks/data_throughput.py --only views --sizes 96 --workers 0
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

PIPELINES = ("medssl", "monai_plain", "monai_cache", "monai_persistent")
HU_OFFSET = 1024.0


# ------------------------------------------------------------------------------------ cohort


def make_ct_torso(shape: tuple[int, int, int], spacing: tuple[float, float, float], seed: int) -> np.ndarray:
    """A CT-like torso in Hounsfield units (float32): air, fat, muscle, liver, lungs, spine, noise."""
    rng = np.random.default_rng(seed)
    x = (np.arange(shape[0], dtype=np.float32) - shape[0] / 2) * spacing[0]
    y = (np.arange(shape[1], dtype=np.float32) - shape[1] / 2) * spacing[1]
    z = (np.arange(shape[2], dtype=np.float32) - shape[2] / 2) * spacing[2]
    X, Y = x[:, None, None], y[None, :, None]
    Z = z[None, None, :]
    extent_x, extent_y = shape[0] * spacing[0], shape[1] * spacing[1]
    body_a = extent_x * rng.uniform(0.36, 0.44)
    body_b = extent_y * rng.uniform(0.26, 0.32)
    body = (X / body_a) ** 2 + (Y / body_b) ** 2
    hu = np.full(shape, -1000.0, np.float32)
    inside = np.broadcast_to(body < 1.0, shape)
    hu[inside] = -100.0  # subcutaneous fat
    hu[np.broadcast_to(body < 0.8, shape)] = 45.0  # muscle and organs
    z_extent = shape[2] * spacing[2]
    lung_z = Z > -z_extent * rng.uniform(0.05, 0.15)
    for side in (-1, 1):
        cx = side * body_a * rng.uniform(0.40, 0.50)
        lung = ((X - cx) / (body_a * 0.32)) ** 2 + ((Y + body_b * 0.05) / (body_b * 0.6)) ** 2 < 1.0
        hu[np.broadcast_to(lung & lung_z, shape)] = -850.0
    liver = (((X + body_a * 0.3) / (body_a * 0.45)) ** 2 + (Y / (body_b * 0.6)) ** 2
             + ((Z + z_extent * 0.2) / (z_extent * 0.18)) ** 2) < 1.0
    hu[np.broadcast_to(liver, shape)] = 60.0
    spine = (X / 18.0) ** 2 + ((Y - body_b * 0.65) / 18.0) ** 2 < 1.0
    hu[np.broadcast_to(spine, shape)] = 700.0
    hu += rng.normal(0.0, 15.0, shape).astype(np.float32)
    return hu


def write_cohort(folder: Path, count: int, shape, spacing) -> list[Path]:
    """``count`` torsos as int16 NIfTI with a rescale (stored = HU + 1024)."""
    import nibabel as nib

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"ct{i:03d}.nii"
        if not path.exists():
            hu = make_ct_torso(shape, spacing, seed=i)
            stored = np.clip(np.rint(hu + HU_OFFSET), -32768, 32767).astype(np.int16)
            image = nib.Nifti1Image(stored, np.diag([*spacing, 1.0]))
            image.header.set_slope_inter(1.0, -HU_OFFSET)
            nib.save(image, str(path))
        paths.append(path)
    return paths


# ------------------------------------------------------------------------------------ memory


def _descendants(pid: int) -> list[int]:
    out, stack = [], [pid]
    while stack:
        current = stack.pop()
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    children = [int(c) for c in handle.read().split()]
                out.extend(children)
                stack.extend(children)
        except OSError:
            continue
    return out


def _pss_kb(pid: int) -> tuple[int, int]:
    """``(Pss, Pss_Anon)`` in kB: all proportional memory, and its anonymous (private heap) part,
    which leaves out file pages (page cache mapped from memory maps, shared and reclaimable)."""
    pss = anon = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
                elif line.startswith("Pss_Anon:"):
                    anon = int(line.split()[1])
    except OSError:
        pass
    return pss, anon


def tree_cpu_seconds() -> float:
    """User + system CPU seconds of this process and its live descendants (loader workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in [os.getpid(), *_descendants(os.getpid())]:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            continue
    return total / ticks


class PeakMemory:
    """Samples the PSS of this process and its descendants (loader workers) every ``interval`` s."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak_kb = 0
        self.peak_anon_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            samples = [_pss_kb(pid) for pid in [me, *_descendants(me)]]
            self.peak_kb = max(self.peak_kb, sum(p for p, _ in samples))
            self.peak_anon_kb = max(self.peak_anon_kb, sum(a for _, a in samples))
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return self.peak_kb / 1024.0

    @property
    def peak_anon_mb(self) -> float:
        return self.peak_anon_kb / 1024.0


# ------------------------------------------------------------------------------------ pipelines


def monai_transforms(patch: int, seed: int, elastic: bool = True):
    """The MONAI pipeline: deterministic part, then per-view random transforms matching ``ct``
    (without ``Rand3DElasticd`` when ``elastic`` is False)."""
    from monai.transforms import (
        Compose,
        CropForegroundd,
        EnsureChannelFirstd,
        EnsureTyped,
        LoadImaged,
        Orientationd,
        Rand3DElasticd,
        RandAffined,
        RandFlipd,
        RandGaussianNoised,
        RandGaussianSmoothd,
        RandScaleIntensityd,
        RandShiftIntensityd,
        RandSimulateLowResolutiond,
        RandSpatialCropSamplesd,
        ScaleIntensityRanged,
        Spacingd,
        SpatialPadd,
    )

    deg = math.pi / 180.0
    transforms = Compose([
        LoadImaged(keys="image", image_only=True),
        EnsureChannelFirstd(keys="image"),
        Orientationd(keys="image", axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
        Spacingd(keys="image", pixdim=(1.5, 1.5, 1.5), mode="bilinear"),
        ScaleIntensityRanged(keys="image", a_min=-1000, a_max=1000, b_min=0.0, b_max=1.0, clip=True),
        CropForegroundd(keys="image", source_key="image", select_fn=lambda x: x > 0.05, margin=4,
                        start_coord_key=None, end_coord_key=None),  # no numpy side keys: fresh and
        # cached PersistentDataset items must collate together
        SpatialPadd(keys="image", spatial_size=(patch,) * 3),  # a body narrower than the patch
        EnsureTyped(keys="image", track_meta=False),
        RandSpatialCropSamplesd(keys="image", roi_size=(patch,) * 3, num_samples=2, random_size=False),
        RandFlipd(keys="image", spatial_axis=0, prob=0.5),
        RandAffined(keys="image", prob=0.75, rotate_range=(5 * deg, 5 * deg, 15 * deg), scale_range=(-0.15, 0.2),
                    padding_mode="zeros"),
        *([Rand3DElasticd(keys="image", prob=0.1, sigma_range=(6, 8), magnitude_range=(20, 40),
                          padding_mode="zeros")] if elastic else []),
        RandSimulateLowResolutiond(keys="image", prob=0.15, zoom_range=(1 / 3, 2 / 3)),
        RandGaussianSmoothd(keys="image", prob=0.2, sigma_x=(0.4, 1.0), sigma_y=(0.4, 1.0), sigma_z=(0.4, 1.0)),
        RandGaussianNoised(keys="image", prob=0.5, std=30.0 / 2000.0),
        RandScaleIntensityd(keys="image", prob=0.8, factors=(-0.2, 0.25)),
        RandShiftIntensityd(keys="image", prob=0.8, offsets=0.15),
        ScaleIntensityRanged(keys="image", a_min=0.0, a_max=1.0, b_min=0.0, b_max=1.0, clip=True),
        EnsureTyped(keys="image", data_type="tensor", track_meta=False),  # some Rand* return numpy
    ])
    transforms.set_random_state(seed=seed)
    return transforms


def build_monai(kind: str, paths: list[Path], patch: int, cache_dir: Path, seed: int = 0, elastic: bool = True):
    from monai.data import CacheDataset, Dataset, PersistentDataset

    data = [{"image": str(p)} for p in paths]
    transforms = monai_transforms(patch, seed, elastic)
    if kind == "monai_plain":
        return Dataset(data, transforms)
    if kind == "monai_cache":
        return CacheDataset(data, transforms, num_workers=2, progress=False)
    if kind == "monai_persistent":
        # PersistentDataset keys its files by the data dict only, not the transforms: one folder
        # per patch size (SpatialPadd differs), or a stale cache from another size is read back
        return PersistentDataset(data, transforms, cache_dir=str(cache_dir / f"patch{patch}"))
    raise ValueError(kind)


def build_medssl(paths: list[Path], patch: int, cache_dir: Path, seed: int = 0, device_side: bool = False,
                 elastic: bool = True):
    import pandas as pd

    from medssl.config import AugmentationConfig, DataConfig, PreprocessConfig
    from medssl.data.cache import PreprocessedCache
    from medssl.data.datasets import build_pretrain_dataset

    pre = PreprocessConfig()  # 1.5 mm, -1000..1000 HU, foreground crop (> 0.05, margin 4), float16
    cache = PreprocessedCache(cache_dir, pre)
    entries = pd.DataFrame({"path": [str(p) for p in paths], "modality": "CT"})
    spatial = {} if elastic else {"elastic_prob": 0.0}
    return build_pretrain_dataset(DataConfig(preprocess=pre), AugmentationConfig(
        preset="ct", patch_size=(patch,) * 3, device_side=device_side, spatial=spatial), entries, seed=seed,
        cache=cache)


def endless(loader):
    """Batches epoch after epoch (a small cohort has few batches per epoch)."""
    while True:
        yield from loader


def count_views(batch: Any) -> int:
    if isinstance(batch, dict) and "views" in batch:
        return sum(int(v.shape[0]) for v in batch["views"])
    return int(batch["image"].shape[0])


def views_of(batch: Any):
    """The two views of a batch as ``(B, C, *S)`` tensors (MONAI's crops come interleaved)."""
    if "views" in batch:
        return batch["views"][:2]
    image = batch["image"]
    image = image.as_tensor() if hasattr(image, "as_tensor") else image
    return [image[0::2], image[1::2]]


def make_loader(dataset, kind: str, batch_size: int, workers: int):
    if kind == "medssl":
        from medssl.data.loaders import make_dataloader

        return make_dataloader(dataset, batch_size=batch_size, num_workers=workers, shuffle=True)
    from monai.data import DataLoader

    return DataLoader(dataset, batch_size=batch_size, num_workers=workers, shuffle=True,
                      persistent_workers=workers > 0)


# ------------------------------------------------------------------------------------ child runs


def run_views(cfg: dict[str, Any]) -> dict[str, Any]:
    """One configuration: prepare, then views per second over ``cfg['views']`` views."""
    import torch

    paths = [Path(p) for p in cfg["paths"]]
    started = time.perf_counter()
    with PeakMemory() as memory:
        elastic = cfg.get("elastic", True)
        if cfg["pipeline"] == "medssl":
            dataset = build_medssl(paths, cfg["patch"], Path(cfg["medssl_cache"]), elastic=elastic)
            dataset.samples_per_volume = max(1, math.ceil(cfg["views"] / (2 * len(paths))))
        else:
            dataset = build_monai(cfg["pipeline"], paths, cfg["patch"], Path(cfg["monai_cache"]), elastic=elastic)
            if cfg["pipeline"] == "monai_persistent":
                for index in range(len(dataset)):  # write (or check) its disk cache before timing
                    dataset[index]
        prepare_s = time.perf_counter() - started
        loader = make_loader(dataset, cfg["pipeline"], cfg["batch"], cfg["workers"])
        produced, batches = 0, 0
        stream = endless(loader)
        first = next(stream)  # worker start-up and the first fetches are not timed
        for _ in range(cfg["workers"]):
            next(stream)
        shape = tuple(views_of(first)[0].shape[1:])
        tic = time.perf_counter()
        cpu_tic = tree_cpu_seconds()
        while produced < cfg["views"]:
            produced += count_views(next(stream))
            batches += 1
        elapsed = time.perf_counter() - tic
        cpu_ms_per_view = 1000.0 * (tree_cpu_seconds() - cpu_tic) / produced
        del stream, loader
    return {"views_per_s": produced / elapsed, "cpu_ms_per_view": cpu_ms_per_view, "views": produced, "seconds": elapsed, "prepare_s": prepare_s,
            "peak_pss_mb": memory.peak_mb, "peak_anon_mb": memory.peak_anon_mb, "view_shape": list(shape), "torch_threads": torch.get_num_threads()}


def run_e2e(cfg: dict[str, Any]) -> dict[str, Any]:
    """SimCLR steps per second fed by one pipeline (same encoder, batch and optimiser)."""
    import torch

    from medssl.methods import build_method
    from medssl.models import build_encoder
    from medssl.utils.seeding import seed_everything

    paths = [Path(p) for p in cfg["paths"]]
    elastic = cfg.get("elastic", True)
    if cfg["pipeline"] == "medssl":
        dataset = build_medssl(paths, cfg["patch"], Path(cfg["medssl_cache"]), elastic=elastic)
        dataset.samples_per_volume = max(1, math.ceil(cfg["batch"] * (cfg["steps"] + 2) / len(paths)))
    else:
        dataset = build_monai(cfg["pipeline"], paths, cfg["patch"], Path(cfg["monai_cache"]), elastic=elastic)
    seed_everything(0)
    method = build_method("simclr", build_encoder("resnet10_tiny"), projection_hidden_dim=128, projection_dim=64)
    optimizer = torch.optim.AdamW(method.parameters(), lr=1e-3)
    loader = make_loader(dataset, cfg["pipeline"], cfg["batch"], cfg["workers"])

    stream = endless(loader)
    waited = 0.0
    steps = 0
    tic = None
    for step in range(cfg["steps"] + 2):
        if step == 2:  # two warm-up steps (worker start, allocator)
            tic, waited = time.perf_counter(), 0.0
        t0 = time.perf_counter()
        batch = next(stream)
        waited += time.perf_counter() - t0
        view1, view2 = views_of(batch)
        loss, _ = method({"views": [view1.float(), view2.float()]})
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += step >= 2
    elapsed = time.perf_counter() - tic
    return {"steps_per_s": steps / elapsed, "data_wait_fraction": waited / elapsed, "steps": steps}


def child_main(cfg: dict[str, Any]) -> None:
    import torch

    with contextlib.redirect_stdout(sys.stderr):  # libraries' prints stay off the result line
        result = run_e2e(cfg) if cfg["kind"] == "e2e" else run_views(cfg)
    result.update({k: cfg[k] for k in ("pipeline", "patch", "workers", "kind")})
    result["volumes"] = len(cfg["paths"])
    del torch
    print("RESULT " + json.dumps(result), flush=True)


def run_child(cfg: dict[str, Any], timeout: float) -> dict[str, Any]:
    env = dict(os.environ, MEDSSL_PROGRESS="0", PYTHONWARNINGS="ignore")
    try:
        proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(cfg)], capture_output=True, text=True,
                              timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f}s", **{k: cfg[k] for k in ("pipeline", "patch", "workers")}}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = "\n".join(proc.stderr.splitlines()[-15:])
    return {"error": f"exit {proc.returncode}: {tail}", **{k: cfg[k] for k in ("pipeline", "patch", "workers")}}


# ------------------------------------------------------------------------------------ in-process parts


def batched_intensity(patch: int, batch: int, repeats: int) -> dict[str, float]:
    """Views per second of the ``ct`` preset's intensity part, batched vs one view at a time (on the
    CPU with one thread and with torch's default threads; on the GPU when there is one)."""
    import torch

    from medssl.data.loaders import limited_threads

    out: dict[str, float] = {}
    with limited_threads(1):
        out.update({f"{k}_1thread": v for k, v in _batched_intensity(patch, batch, repeats, ["cpu"]).items()})
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    out.update({f"{k}_{torch.get_num_threads()}threads" if k.endswith("cpu") else k: v
                for k, v in _batched_intensity(patch, batch, repeats, devices).items()})
    return out


def _batched_intensity(patch: int, batch: int, repeats: int, devices: list[str]) -> dict[str, float]:
    import torch

    from medssl.transforms.presets import build_preset

    preset = build_preset("ct")
    out: dict[str, float] = {}
    for device in devices:
        x = torch.rand(batch, 1, patch, patch, patch, device=device)
        generator = torch.Generator().manual_seed(0)
        preset.apply_intensity(x, generator)  # warm-up (noise bank, kernels)
        if device == "cuda":
            torch.cuda.synchronize()
        tic = time.perf_counter()
        for _ in range(repeats):
            preset.apply_intensity(x, generator)
        if device == "cuda":
            torch.cuda.synchronize()
        out[f"batched_{device}"] = batch * repeats / (time.perf_counter() - tic)
        tic = time.perf_counter()
        for _ in range(repeats):
            for i in range(batch):
                preset.apply_intensity(x[i:i + 1], generator)
        if device == "cuda":
            torch.cuda.synchronize()
        out[f"per_view_{device}"] = batch * repeats / (time.perf_counter() - tic)
    return out


def profile_medssl(paths: list[Path], patch: int, cache_dir: Path, items: int, elastic: bool = True) -> str:
    """cProfile of medssl items, plus a per-stage breakdown (cache, views, intensity)."""
    import cProfile
    import io
    import pstats

    from medssl.data.loaders import limited_threads

    dataset = build_medssl(paths, patch, cache_dir, elastic=elastic)
    dataset.samples_per_volume = max(1, math.ceil(items / len(paths)))
    dataset[0]
    profiler = cProfile.Profile()
    profiler.enable()
    for i in range(items):
        dataset[i % len(dataset)]
    profiler.disable()
    stream = io.StringIO()
    pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(14)
    stages = {"cache.get": 0.0, "views (fused resampling)": 0.0}
    per_transform: dict[str, float] = {}
    with limited_threads(dataset.threads):
        _profile_stages(dataset, items, stages, per_transform)
    n_views = 2 * items
    lines = [f"medssl per view at {patch}^3 (torch threads {dataset.threads}, as items are built):"]
    for name, seconds in {**stages, **per_transform}.items():
        lines.append(f"  {name:<28s} {1000 * seconds / n_views:7.2f} ms")
    return "\n".join(lines) + "\n\ncProfile (tottime, top 14):\n" + "\n".join(stream.getvalue().splitlines()[4:30])


def _profile_stages(dataset, items: int, stages: dict[str, float], per_transform: dict[str, float]) -> None:
    from medssl.utils.seeding import make_rng, make_torch_generator

    for i in range(items):
        request = dataset.requests[i % len(dataset.requests)]
        t0 = time.perf_counter()
        case = dataset.cache.get(request.image, request.mask, request.series_uid, modality=request.modality)
        t1 = time.perf_counter()
        views = dataset.views(case.image, make_rng(0, "profile", i))
        t2 = time.perf_counter()
        stages["cache.get"] += t1 - t0
        stages["views (fused resampling)"] += t2 - t1
        generator = make_torch_generator(0, "profile", i)
        preset_transforms = dataset.intensity.__self__.intensity  # type: ignore[union-attr]
        for view in views:
            x = view[None]
            for transform in preset_transforms:
                t3 = time.perf_counter()
                x = transform(x, generator)
                per_transform[type(transform).__name__] = per_transform.get(type(transform).__name__, 0.0) + \
                    time.perf_counter() - t3


def profile_monai(paths: list[Path], patch: int, items: int, elastic: bool = True) -> str:
    """Time of each MONAI random transform per view (applied to cached, cropped views), with one
    torch thread as in a loader worker."""
    from monai.transforms import Compose

    from medssl.data.loaders import limited_threads

    with limited_threads(1):
        return _profile_monai(paths, patch, items, elastic, Compose)


def _profile_monai(paths, patch, items, elastic, Compose) -> str:
    import torch

    transforms = monai_transforms(patch, 0, elastic).transforms
    first_random = next(i for i, t in enumerate(transforms) if type(t).__name__.startswith("Rand"))
    deterministic = Compose(transforms[:first_random])
    cropper, per_view = transforms[first_random], transforms[first_random + 1:]
    timings = {type(t).__name__: 0.0 for t in [cropper, *per_view]}
    cached = [deterministic({"image": str(p)}) for p in paths[: max(1, min(len(paths), 3))]]
    n_views = 0
    for i in range(items):
        t0 = time.perf_counter()
        crops = cropper(cached[i % len(cached)])
        timings[type(cropper).__name__] += time.perf_counter() - t0
        for crop in crops:
            n_views += 1
            for transform in per_view:
                t1 = time.perf_counter()
                crop = transform(crop)
                timings[type(transform).__name__] += time.perf_counter() - t1
    lines = [f"MONAI per view at {patch}^3 (torch threads {torch.get_num_threads()}), cached input:"]
    lines += [f"  {name:<28s} {1000 * seconds / n_views:7.2f} ms" for name, seconds in timings.items()]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ report


def _fmt(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_views_table(results: list[dict[str, Any]]) -> None:
    print("\n== two-view CT views per second (higher is better) ==")
    print(f"{'patch':>6} {'workers':>7} " + " ".join(f"{p:>17}" for p in PIPELINES) + f" {'ratio*':>7}")
    keys = sorted({(r["patch"], r["workers"]) for r in results if r.get("kind") == "views"}, reverse=True)
    for patch, workers in keys:
        row = {r["pipeline"]: r for r in results if r.get("kind") == "views" and r["patch"] == patch
               and r["workers"] == workers and r.get("volumes") == results[0].get("volumes")}
        cells = [_fmt(row.get(p, {}).get("views_per_s")) for p in PIPELINES]
        best = max((row.get(p, {}).get("views_per_s") or 0.0) for p in ("monai_cache", "monai_persistent"))
        ratio = (row.get("medssl", {}).get("views_per_s") or 0.0) / best if best else None
        print(f"{patch:>6} {workers:>7} " + " ".join(f"{c:>17}" for c in cells) + f" {_fmt(ratio, 2):>7}")
    print("* ratio = medssl / the faster of monai_cache and monai_persistent, same patch and workers")
    print("\n== CPU milliseconds per view, main process + workers (lower is better; robust to a busy machine) ==")
    print(f"{'patch':>6} {'workers':>7} " + " ".join(f"{p:>17}" for p in PIPELINES) + f" {'ratio*':>7}")
    for patch, workers in keys:
        row = {r["pipeline"]: r for r in results if r.get("kind") == "views" and r["patch"] == patch
               and r["workers"] == workers and r.get("volumes") == results[0].get("volumes")}
        cells = [_fmt(row.get(p, {}).get("cpu_ms_per_view")) for p in PIPELINES]
        best = min((row.get(p, {}).get("cpu_ms_per_view") or math.inf) for p in ("monai_cache", "monai_persistent"))
        ours = row.get("medssl", {}).get("cpu_ms_per_view")
        ratio = best / ours if ours and best < math.inf else None
        print(f"{patch:>6} {workers:>7} " + " ".join(f"{c:>17}" for c in cells) + f" {_fmt(ratio, 2):>7}")
    print("* ratio = CPU per view of the cheaper of monai_cache and monai_persistent / medssl's")


def print_memory_table(results: list[dict[str, Any]]) -> None:
    memory = [r for r in results if r.get("kind") == "memory"]
    if not memory:
        return
    print("\n== peak memory of the process and its workers, MB: PSS (anonymous part) ==")
    volumes = sorted({r["volumes"] for r in memory})
    print(f"{'pipeline':>17} " + " ".join(f"{str(v) + ' volumes':>18}" for v in volumes) + "   views/s")
    for pipeline in PIPELINES:
        rows = {r["volumes"]: r for r in memory if r["pipeline"] == pipeline}
        if not rows:
            continue
        cells = [f"{_fmt(rows.get(v, {}).get('peak_pss_mb'), 0)} ({_fmt(rows.get(v, {}).get('peak_anon_mb'), 0)})"
                 for v in volumes]
        speeds = "/".join(_fmt(rows.get(v, {}).get("views_per_s")) for v in volumes)
        print(f"{pipeline:>17} " + " ".join(f"{c:>18}" for c in cells) + f"   {speeds}")
    print("anonymous = private heap (CacheDataset's arrays); the rest is shared, reclaimable page cache")


def print_e2e_table(results: list[dict[str, Any]]) -> None:
    e2e = [r for r in results if r.get("kind") == "e2e"]
    if not e2e:
        return
    print("\n== end-to-end SimCLR (resnet10_tiny) steps per second ==")
    for r in e2e:
        if "error" in r:
            print(f"  {r['pipeline']:>17} workers={r['workers']}: {r['error'][:200]}")
            continue
        print(f"  {r['pipeline']:>17} patch {r['patch']}^3 workers={r['workers']}: "
              f"{r['steps_per_s']:.3f} steps/s (waiting for data {100 * r['data_wait_fraction']:.0f}% of the time)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small volumes and patches: a few minutes")
    parser.add_argument("--only", nargs="*", default=["views", "memory", "e2e", "batched", "profile"],
                        choices=["views", "memory", "e2e", "batched", "profile"])
    parser.add_argument("--sizes", nargs="*", type=int, help="patch sizes (default 96 64; quick 48 32)")
    parser.add_argument("--workers", nargs="*", type=int, default=[0, 2])
    parser.add_argument("--pipelines", nargs="*", default=list(PIPELINES), choices=list(PIPELINES))
    parser.add_argument("--views", type=int, help="views per measurement (default 96; quick 32)")
    parser.add_argument("--batch", type=int, default=2, help="items (of two views) per batch")
    parser.add_argument("--no-elastic", action="store_true",
                        help="leave the elastic deformation out on both sides (medssl elastic_prob=0, no Rand3DElasticd)")
    parser.add_argument("--e2e-batch", type=int, default=4, help="items (of two views) per SimCLR step")
    parser.add_argument("--workdir", type=Path, help="where to write the cohort and caches (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--json", type=Path, help="also write all results to this JSON file")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per configuration")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(json.loads(args.child))
        return 0

    quick = args.quick
    shape, spacing = ((128, 128, 64), (1.6, 1.6, 5.0)) if quick else ((256, 256, 160), (0.8, 0.8, 2.5))
    sizes = args.sizes or ([48, 32] if quick else [96, 64])
    volume_counts = (4, 12) if quick else (12, 48)
    n_views = args.views or (48 if quick else 96)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="medssl-throughput-"))
    print(f"cohort: CT torsos {shape} at {spacing} mm, int16 NIfTI with rescale, in {workdir}")
    results: list[dict[str, Any]] = []
    try:
        tic = time.perf_counter()
        paths = write_cohort(workdir / "cohort", max(volume_counts), shape, spacing)
        print(f"wrote {len(paths)} volumes in {time.perf_counter() - tic:.0f}s")
        medssl_cache, monai_cache = workdir / "medssl_cache", workdir / "monai_cache"

        import pandas as pd

        from medssl.config import PreprocessConfig
        from medssl.data.cache import PreprocessedCache

        cache = PreprocessedCache(medssl_cache, PreprocessConfig())
        base = paths[: volume_counts[0]]
        tic = time.perf_counter()
        cache.warm(pd.DataFrame({"path": [str(p) for p in base], "modality": "CT"}))
        warm_s = time.perf_counter() - tic
        print(f"medssl cache of {len(base)} volumes built in {warm_s:.1f}s ({warm_s / len(base):.2f}s per volume, "
              f"{sum(f.stat().st_size for f in medssl_cache.rglob('*.npy')) / 2**20:.0f} MB on disk, float16)")

        def child(kind: str, pipeline: str, patch: int, workers: int, count: int, views: int, **extra):
            cfg = {"kind": kind, "pipeline": pipeline, "patch": patch, "workers": workers, "views": views,
                   "paths": [str(p) for p in paths[:count]], "batch": args.batch,
                   "medssl_cache": str(medssl_cache), "monai_cache": str(monai_cache),
                   "elastic": not args.no_elastic, **extra}
            tic = time.perf_counter()
            result = run_child(cfg, args.timeout)
            result["kind"] = kind
            result["volumes"] = count
            status = result.get("error") or (
                f"{result.get('views_per_s', result.get('steps_per_s', 0)):.2f}/s, "
                f"{result.get('cpu_ms_per_view', 0):.0f} CPU-ms/view, peak "
                f"{result.get('peak_pss_mb', 0):.0f} MB, prepare {result.get('prepare_s', 0):.1f}s")
            print(f"  [{kind}] {pipeline:<17} patch {patch} workers {workers} volumes {count}: {status} "
                  f"({time.perf_counter() - tic:.0f}s)", flush=True)
            results.append(result)

        if "views" in args.only:
            print("\nviews per second (each configuration in its own process):")
            for patch in sizes:
                for workers in args.workers:
                    for pipeline in args.pipelines:
                        views = n_views if pipeline != "monai_plain" else max(8, n_views // 8)
                        child("views", pipeline, patch, workers, volume_counts[0], views)
        if "memory" in args.only:
            print("\npeak memory as the cohort grows:")
            cache.warm(pd.DataFrame({"path": [str(p) for p in paths], "modality": "CT"}))
            for count in volume_counts:
                for pipeline in [p for p in args.pipelines if p != "monai_plain"]:
                    # one pass over the cohort, so every volume is touched
                    child("memory", pipeline, sizes[0], 0, count, 2 * count)
        if "e2e" in args.only:
            print("\nend-to-end pretraining:")
            patch = sizes[-1]
            for pipeline in [p for p in ("medssl", "monai_plain", "monai_persistent") if p in args.pipelines]:
                steps = 4 if pipeline == "monai_plain" else (8 if quick else 16)
                child("e2e", pipeline, patch, max(args.workers), volume_counts[0], 0, steps=steps,
                      batch=args.e2e_batch)
        print_views_table([r for r in results if r.get("kind") == "views"] or [{}])
        print_memory_table(results)
        print_e2e_table(results)
        if "batched" in args.only:
            patch = sizes[0]
            speeds = batched_intensity(patch, batch=8, repeats=2 if quick else 3)
            print(f"\n== ct intensity transforms, views per second at {patch}^3 ==")
            for key, value in speeds.items():
                print(f"  {key:<24} {value:8.1f}")
        if "profile" in args.only:
            patch = sizes[0]
            print("\n== where the time goes ==")
            print(profile_medssl(paths[: volume_counts[0]], patch, medssl_cache, items=6 if quick else 10,
                                 elastic=not args.no_elastic))
            print()
            print(profile_monai(paths[: volume_counts[0]], patch, items=4 if quick else 8, elastic=not args.no_elastic))
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
