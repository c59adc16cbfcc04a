"""Class-balanced patch centres (``LabeledPatchDataset(centre_labels=...)``, ``finetune.class_balanced``).

A volume with a large organ (label 1, 512 voxels) and a small one (label 2, 8 voxels): with plain
positive centres the small organ is the centre of about 8/520 patches; balanced over ``[1, 2]`` it is
the centre of about half of them. A label absent from a case is skipped, never a crash.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medssl.config import FinetuneConfig, PreprocessConfig
from medssl.data.cache import PreprocessedCache
from medssl.data.labeled_patches import LabeledPatchDataset
from medssl.errors import ConfigError
from medssl.eval.experiment import balanced_centre_labels
from medssl.io.nifti import save_volume
from medssl.io.volume import Volume

PATCH = (4, 4, 4)


@pytest.fixture(scope="module")
def two_organs(tmp_path_factory) -> tuple[Path, pd.DataFrame, PreprocessedCache]:
    root = tmp_path_factory.mktemp("organs")
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    rng = np.random.default_rng(0)
    rows = []
    for case, small in (("a", True), ("b", False)):
        ct = rng.normal(40.0, 10.0, (1, 24, 24, 20)).astype(np.float32)
        mask = np.zeros((1, 24, 24, 20), np.float32)
        mask[0, 2:10, 2:10, 2:10] = 1  # 512 voxels
        if small:
            mask[0, 18:20, 18:20, 14:16] = 2  # 8 voxels
        save_volume(Volume(ct, affine, "CT"), root / f"ct_{case}.nii.gz")
        save_volume(Volume(mask, affine, "SEG"), root / f"mask_{case}.nii.gz")
        rows.append({"path": f"ct_{case}.nii.gz", "mask_path": f"mask_{case}.nii.gz", "modality": "CT"})
    cache = PreprocessedCache(root / "cache", PreprocessConfig(target_spacing=None, crop_foreground=False))
    return root, pd.DataFrame(rows), cache


def centre_values(dataset: LabeledPatchDataset) -> np.ndarray:
    """The mask value at the centre voxel of every item of one epoch."""
    return np.array([int(dataset[i]["mask"][0, PATCH[0] // 2, PATCH[1] // 2, PATCH[2] // 2])
                     for i in range(len(dataset))])


def test_balanced_centres_sample_the_small_organ_as_often_as_the_large_one(two_organs):
    root, entries, cache = two_organs
    one_case = entries.iloc[:1]
    plain = LabeledPatchDataset(cache, one_case, PATCH, seed=0, pos=1, neg=0, samples_per_volume=200, root=root)
    balanced = LabeledPatchDataset(cache, one_case, PATCH, seed=0, pos=1, neg=0, samples_per_volume=200, root=root,
                                   centre_labels=[1, 2])
    plain_small = float(np.mean(centre_values(plain) == 2))
    balanced_values = centre_values(balanced)
    assert plain_small < 0.06
    assert 0.38 < float(np.mean(balanced_values == 2)) < 0.62
    assert set(np.unique(balanced_values)) == {1, 2}  # every positive centre is on one of the labels


def test_a_label_missing_from_a_case_is_skipped(two_organs):
    root, entries, cache = two_organs
    no_small = entries.iloc[1:]
    dataset = LabeledPatchDataset(cache, no_small, PATCH, seed=0, pos=1, neg=0, samples_per_volume=40, root=root,
                                  centre_labels=[1, 2])
    assert set(np.unique(centre_values(dataset))) == {1}
    only_absent = LabeledPatchDataset(cache, no_small, PATCH, seed=0, pos=1, neg=0, samples_per_volume=10, root=root,
                                      centre_labels=[2])
    assert len(centre_values(only_absent)) == 10  # falls back to background centres, no crash


def test_default_sampling_is_unchanged_and_bad_labels_are_refused(two_organs):
    root, entries, cache = two_organs
    kwargs = dict(seed=3, pos=2, neg=1, samples_per_volume=12, root=root)
    a = LabeledPatchDataset(cache, entries, PATCH, **kwargs)
    b = LabeledPatchDataset(cache, entries, PATCH, centre_labels=None, **kwargs)
    assert all(np.array_equal(a[i]["mask"], b[i]["mask"]) for i in range(len(a)))
    for bad in ([], [0, 1]):
        with pytest.raises(ConfigError, match="centre_labels"):
            LabeledPatchDataset(cache, entries, PATCH, centre_labels=bad, **kwargs)


def test_finetune_config_chooses_the_balanced_labels():
    assert balanced_centre_labels(FinetuneConfig(mask_labels=[1, 2], num_classes=3)) is None
    assert balanced_centre_labels(FinetuneConfig(mask_labels=[4, 1], num_classes=3, class_balanced=True)) == [4, 1]
    assert balanced_centre_labels(FinetuneConfig(num_classes=3, class_balanced=True)) == [1, 2]
