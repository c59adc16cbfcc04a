"""Datasets: shapes, determinism per (seed, epoch, index), worker independence, device-side path,
labeled patches with the positive/negative ratio, loaders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import Dataset

from medssl.config import AugmentationConfig, DataConfig, PreprocessConfig
from medssl.data.cache import PreprocessedCache
from medssl.data.datasets import PretrainDataset, build_pretrain_dataset
from medssl.data.labeled_patches import LabeledPatchDataset, load_labeled_case
from medssl.data.loaders import make_dataloader
from medssl.errors import ConfigError, DataError
from medssl.io.nifti import save_volume
from medssl.io.volume import Volume
from medssl.transforms.spatial import SpatialAugmentation
from medssl.utils.seeding import make_torch_generator

PRE = PreprocessConfig(target_spacing=(1.5, 1.5, 1.5), crop_margin=2)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    root = tmp_path_factory.mktemp("cohort")
    rows = []
    for i in range(3):
        rng = np.random.default_rng(i)
        ct = np.full((1, 28, 26, 20), -1000.0, np.float32)
        ct[0, 2:-2, 2:-2, 1:-1] = rng.normal(30.0, 40.0, (24, 22, 18))
        organ = np.zeros_like(ct)
        x0 = 8 + 2 * i
        organ[0, x0:x0 + 6, 9:15, 6:12] = 1.0
        ct[organ > 0] = 150.0 + rng.normal(0, 10, int(organ.sum()))
        affine = np.diag([1.5, 1.5, 1.5, 1.0])
        save_volume(Volume(ct, affine, "CT"), root / f"ct{i}.nii.gz")
        save_volume(Volume(organ, affine, "SEG"), root / f"mask{i}.nii.gz")
        rows.append({"path": f"ct{i}.nii.gz", "mask_path": f"mask{i}.nii.gz", "modality": "CT",
                     "status": "ok", "label": i % 2})
    rows.append({"path": "unreadable.nii.gz", "mask_path": "", "modality": "CT", "status": "error", "label": 0})
    return root, pd.DataFrame(rows)


@pytest.fixture(scope="module")
def cache(cohort) -> PreprocessedCache:
    root, _ = cohort
    return PreprocessedCache(root / "cache", PRE)


@pytest.fixture()
def one_thread():
    """Workers run one torch thread; the main process does too here, because the CT preset's
    Gaussian blur (a convolution) rounds differently with another thread count (1 ulp)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_dataset(cohort, cache, **aug) -> PretrainDataset:
    root, entries = cohort
    aug_cfg = AugmentationConfig(**{"preset": "ct", "patch_size": (12, 12, 12), **aug})
    return build_pretrain_dataset(DataConfig(root=str(root), preprocess=PRE, samples_per_volume=2), aug_cfg,
                                  entries, seed=7, cache=cache)


def assert_items_equal(a, b) -> None:
    assert a.keys() == b.keys()
    for key in a:
        left, right = (a[key], b[key]) if isinstance(a[key], list) else ([a[key]], [b[key]])
        assert len(left) == len(right)
        assert all(torch.equal(x, y) for x, y in zip(left, right))


def test_items_have_the_configured_views(cohort, cache):
    dataset = make_dataset(cohort, cache)
    assert len(dataset) == 3 * 2  # the failed row is left out; two samples per volume
    views = dataset[0]["views"]
    assert [tuple(v.shape) for v in views] == [(1, 12, 12, 12)] * 2
    assert all(v.dtype == torch.float32 and 0.0 <= v.min() and v.max() <= 1.0 for v in views)
    multi = make_dataset(cohort, cache, local_crops=3, local_patch_size=(6, 6, 6))
    shapes = [tuple(v.shape) for v in multi[1]["views"]]
    assert shapes == [(1, 12, 12, 12)] * 2 + [(1, 6, 6, 6)] * 3
    with pytest.raises(ConfigError, match="local_patch_size"):
        make_dataset(cohort, cache, local_crops=2)


def test_items_depend_only_on_seed_epoch_and_index(cohort, cache):
    dataset = make_dataset(cohort, cache)
    first = dataset[3]
    assert_items_equal(first, make_dataset(cohort, cache)[3])  # a fresh dataset, same item
    dataset[0], dataset[5]  # other items in between change nothing
    assert_items_equal(first, dataset[3])
    dataset.set_epoch(1)
    assert not torch.equal(dataset[3]["views"][0], first["views"][0])
    dataset.set_epoch(0)
    assert_items_equal(first, dataset[3])
    assert not torch.equal(dataset[2]["views"][0], first["views"][0])


def test_loader_output_is_independent_of_the_number_of_workers(cohort, cache, one_thread):
    dataset = make_dataset(cohort, cache)
    batches = {}
    for workers in (0, 2):
        loader = make_dataloader(dataset, batch_size=3, num_workers=workers)
        epochs = []
        for epoch in (0, 1):
            dataset.set_epoch(epoch)  # reaches the persistent workers through shared memory
            epochs.append([b["views"][0].clone() for b in loader])
        batches[workers] = epochs
    for epoch in (0, 1):
        assert all(torch.equal(a, b) for a, b in zip(batches[0][epoch], batches[2][epoch]))
    assert not torch.equal(batches[2][0][0], batches[2][1][0])
    dataset.set_epoch(1)
    assert torch.equal(batches[2][1][0][0], dataset[0]["views"][0])


def test_device_side_path_equals_the_in_worker_path(cohort, cache, one_thread):
    in_worker = make_dataset(cohort, cache)
    device_side = make_dataset(cohort, cache, device_side=True)
    for index in (0, 4):
        expected = in_worker[index]["views"]
        raw = device_side[index]["views"]
        assert not all(torch.equal(a, b) for a, b in zip(raw, expected))  # intensity left out
        batch = {"views": [v[None] for v in raw]}
        generator = make_torch_generator(7, "intensity", 0, index)  # the worker's generator
        augmented = device_side.batch_augment(batch, generator)["views"]
        assert all(torch.equal(a[0], b) for a, b in zip(augmented, expected))
    # batched: one call for the whole batch gives a batch of the same shape, in range
    loader = make_dataloader(device_side, batch_size=4)
    batch = next(iter(loader))
    out = device_side.batch_augment(batch, make_torch_generator(7, "batch", 0))
    assert out["views"][0].shape == (4, 1, 12, 12, 12) and 0.0 <= float(out["views"][1].min())
    assert in_worker.batch_augment(batch, make_torch_generator(7, "batch", 0)) is batch  # no-op in-worker


class RotationTask:
    """A tiny pretext task: rotate the patch by k * 90 degrees in the axial plane, predict k."""

    def __call__(self, patch, generator):
        k = int(torch.randint(4, (1,), generator=generator))
        return torch.rot90(patch, k, (1, 2)), torch.tensor(k)


def test_pretext_items_come_from_one_plain_crop(cohort, cache):
    root, entries = cohort
    dataset = build_pretrain_dataset(DataConfig(root=str(root), preprocess=PRE),
                                     AugmentationConfig(preset="ct", patch_size=(12, 12, 12)), entries,
                                     seed=1, cache=cache, pretext=RotationTask())
    item = dataset[1]
    assert set(item) == {"input", "target"} and item["input"].shape == (1, 12, 12, 12)
    case = cache.get(root / "ct1.nii.gz", modality="CT")
    crop = torch.rot90(item["input"], -int(item["target"]), (1, 2))
    # no intensity augmentation: the crop holds exactly the cached values somewhere in the volume
    image = torch.from_numpy(np.asarray(case.image, np.float32))
    windows = image.unfold(1, 12, 1).unfold(2, 12, 1).unfold(3, 12, 1)
    assert bool((windows == crop[:, None, None, None]).flatten(4).all(-1).any())


def test_pretext_by_name_builds_the_registered_task(cohort, cache):
    root, entries = cohort
    dataset = build_pretrain_dataset(DataConfig(root=str(root), preprocess=PRE),
                                     AugmentationConfig(preset="ct", patch_size=(12, 12, 12)), entries,
                                     seed=1, cache=cache, pretext="rotation")
    item = dataset[0]
    assert set(item) == {"input", "target"} and item["input"].shape[-3:] == (12, 12, 12)
    assert dataset.pretext_intensity == bool(getattr(dataset.pretext, "wants_intensity_augmentation", False))


def test_labeled_patches_respect_the_positive_ratio_and_stay_aligned(cohort, cache):
    root, entries = cohort
    usable = entries[entries["status"] == "ok"]
    spatial = SpatialAugmentation(flip_prob=(0.5, 0.5, 0.5), rotate_prob=1.0, scale_prob=1.0, elastic_prob=0.5)
    positive = LabeledPatchDataset(cache, usable, (8, 8, 8), seed=0, spatial=spatial, pos=1, neg=0,
                                   samples_per_volume=4, root=root, label_column="label")
    negative = LabeledPatchDataset(cache, usable, (8, 8, 8), seed=0, pos=0, neg=1, samples_per_volume=4, root=root)
    assert len(positive) == 12
    inside, outside = [], []
    for index in range(len(positive)):
        item = positive[index]
        assert item["image"].shape == (1, 8, 8, 8) and item["mask"].shape == (1, 8, 8, 8)
        assert item["mask"].dtype == torch.int64 and int(item["mask"].sum()) > 0
        assert int(item["label"]) == (index // 4) % 2
        labelled = item["mask"][0] > 0
        inside.append(item["image"][0][labelled])
        outside.append(item["image"][0][~labelled & (item["image"][0] > 0.3)])  # tissue, not air
        centre = negative[index]["mask"][0, 3:5, 3:5, 3:5]
        assert int(centre.sum()) < 8  # a background centre
    # aligned: the labelled voxels are the organ (150 HU -> 0.575), brighter than tissue (~30 HU -> 0.515)
    assert float(torch.cat(inside).mean()) > float(torch.cat(outside).mean()) + 0.03
    assert all(torch.equal(positive[i]["image"], positive[i]["image"]) for i in (0, 5))
    positive.set_epoch(3)
    assert not torch.equal(positive[0]["image"], LabeledPatchDataset(cache, usable, (8, 8, 8), seed=0, spatial=spatial,
                                                                     samples_per_volume=4, root=root)[0]["image"])


def test_load_labeled_case_and_missing_masks(cohort, cache):
    root, entries = cohort
    image, mask = load_labeled_case(cache, entries.iloc[0], root)
    assert image.dtype == torch.float32 and mask.dtype == torch.int64
    assert image.shape[0] == 1 and mask.shape == (1, *image.shape[1:]) and int(mask.max()) == 1
    with pytest.raises(DataError, match="mask"):
        load_labeled_case(cache, {"path": "ct0.nii.gz"}, root)
    with pytest.raises(DataError, match="no mask"):
        LabeledPatchDataset(cache, pd.DataFrame({"path": ["ct0.nii.gz"]}), (8, 8, 8), seed=0, root=root)


class ThreadCount(Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, index):
        return torch.tensor(torch.get_num_threads())


def test_workers_are_limited_to_their_threads():
    loader = make_dataloader(ThreadCount(), batch_size=2, num_workers=2, worker_threads=1)
    assert loader.persistent_workers and loader.pin_memory == torch.cuda.is_available()
    assert torch.cat(list(loader)).tolist() == [1, 1, 1, 1]
    with pytest.raises(ConfigError):
        make_dataloader(ThreadCount(), batch_size=0)


def test_empty_or_invalid_manifests_are_clear_errors(cohort, cache):
    root, entries = cohort
    with pytest.raises(DataError, match="no usable volume"):
        build_pretrain_dataset(DataConfig(root=str(root)), AugmentationConfig(preset="ct"),
                               entries[entries["status"] != "ok"], seed=0, cache=cache)
    with pytest.raises(DataError, match="'path'"):
        build_pretrain_dataset(DataConfig(root=str(root)), AugmentationConfig(preset="ct"),
                               pd.DataFrame({"file": ["x"]}), seed=0, cache=cache)
    with pytest.raises(DataError, match="modality"):
        build_pretrain_dataset(DataConfig(root=str(root), modalities=["MR"]), AugmentationConfig(preset="ct"),
                               entries, seed=0, cache=cache)
