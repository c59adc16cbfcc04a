"""Structure-wise contrast: each annotated structure of a training patch moves by its own offset.

Contrast enhancement brightens each organ by its own amount (kidneys by ~140 HU, muscle by ~10);
the augmentation shows the network organs whose brightness relative to their neighbours changes,
using only the annotation the training patch already has. These tests pin what moves (the listed
structures, each by one offset), what does not (background, unlisted labels, unlabeled items), the
soft edge, the clip, and that a 2.5D patch's neighbour slices move by their own annotation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from medssl.config import FinetuneConfig, PreprocessConfig
from medssl.data.cache import PreprocessedCache
from medssl.data.datasets import LabeledPatchDataset
from medssl.errors import ConfigError
from medssl.eval.experiment import finetune_structure_contrast
from medssl.io.nifti import save_volume
from medssl.io.volume import Volume
from medssl.transforms.structure_contrast import StructureContrast, draw_offsets, structure_contrast


def _two_organs() -> tuple[torch.Tensor, torch.Tensor]:
    """A grey patch (0.5) with a liver (1), a kidney (2) and a spleen (3, not part of the task)."""
    image = torch.full((1, 24, 24), 0.5)
    mask = torch.zeros(1, 24, 24, dtype=torch.long)
    mask[0, 2:10, 2:10] = 1
    mask[0, 14:20, 14:20] = 2
    mask[0, 2:8, 16:22] = 3
    return image, mask


def test_without_blur_each_listed_structure_moves_by_one_offset_and_nothing_else_moves():
    image, mask = _two_organs()
    out = structure_contrast(image, mask, [1, 2], torch.Generator().manual_seed(3), prob=1.0, shift=0.3, sigma=0.0)
    change = out - image
    liver, kidney = change[mask == 1], change[mask == 2]
    assert torch.allclose(liver, liver[0].expand_as(liver)) and torch.allclose(kidney, kidney[0].expand_as(kidney))
    assert 0 < abs(float(liver[0])) <= 0.3 and 0 < abs(float(kidney[0])) <= 0.3
    assert float(liver[0]) != pytest.approx(float(kidney[0]))  # each structure its own offset
    assert torch.equal(change[mask == 0], torch.zeros_like(change[mask == 0]))  # background
    assert torch.equal(change[mask == 3], torch.zeros_like(change[mask == 3]))  # a label not listed
    assert torch.equal(image, torch.full((1, 24, 24), 0.5))  # the input is not changed


def test_the_offsets_follow_the_generator_and_cover_both_directions():
    image, mask = _two_organs()
    first = structure_contrast(image, mask, [1, 2], torch.Generator().manual_seed(5), prob=1.0, shift=0.3)
    again = structure_contrast(image, mask, [1, 2], torch.Generator().manual_seed(5), prob=1.0, shift=0.3)
    assert torch.equal(first, again)
    generator = torch.Generator().manual_seed(0)
    draws = [draw_offsets([1, 2], generator, prob=1.0, shift=0.3) for _ in range(400)]
    kidney = np.array([d[2] for d in draws])
    assert kidney.min() < -0.2 and kidney.max() > 0.2 and np.abs(kidney).max() <= 0.3
    liver = np.array([d[1] for d in draws])
    assert abs(np.corrcoef(liver, kidney)[0, 1]) < 0.2  # independent per structure


def test_probability_gates_each_structure_and_zero_is_the_identity():
    image, mask = _two_organs()
    assert torch.equal(structure_contrast(image, mask, [1, 2], torch.Generator(), prob=0.0, shift=0.3), image)
    generator = torch.Generator().manual_seed(1)
    moved = [len(draw_offsets([1, 2], generator, prob=0.25, shift=0.3)) for _ in range(800)]
    assert np.mean(moved) == pytest.approx(0.5, abs=0.08)  # 2 structures x 0.25


def test_the_blurred_indicator_gives_a_soft_edge_but_the_full_offset_inside():
    image = torch.full((1, 32, 32), 0.5)
    mask = torch.zeros(1, 32, 32, dtype=torch.long)
    mask[0, 8:24, 8:24] = 1
    out = structure_contrast(image, mask, [1], torch.Generator().manual_seed(0), prob=1.0, shift=0.3, sigma=1.5)
    change = (out - image)[0]
    offset = float(change[16, 16])
    assert 0 < abs(offset) <= 0.3
    edge_inside, edge_outside = float(change[8, 16]), float(change[7, 16])
    assert 0.3 * abs(offset) < abs(edge_inside) < abs(offset)  # no step exactly on the annotation's border
    assert 0.0 < abs(edge_outside) < abs(edge_inside)
    assert float(change[0, 0]) == pytest.approx(0.0, abs=1e-6)


def test_the_result_is_clipped_to_the_normalised_range():
    image = torch.full((1, 8, 8), 0.95)
    mask = torch.ones(1, 8, 8, dtype=torch.long)
    brighter = next(s for s in range(100)
                    if draw_offsets([1], torch.Generator().manual_seed(s), prob=1.0, shift=0.3)[1] > 0.1)
    out = structure_contrast(image, mask, [1], torch.Generator().manual_seed(brighter), prob=1.0, shift=0.3)
    assert float(out.max()) == 1.0
    free = structure_contrast(image, mask, [1], torch.Generator().manual_seed(brighter), prob=1.0, shift=0.3,
                              value_range=None)
    assert float(free.max()) > 1.0


def test_a_mask_per_channel_moves_each_channel_by_its_own_annotation():
    image = torch.full((3, 8, 8), 0.5)
    mask = torch.zeros(3, 8, 8, dtype=torch.long)
    mask[0], mask[2] = 1, 2  # neighbour slices: liver above, kidney below; the centre slice has neither
    out = structure_contrast(image, mask, [1, 2], torch.Generator().manual_seed(2), prob=1.0, shift=0.3, sigma=0.0)
    change = out - image
    offsets = draw_offsets([1, 2], torch.Generator().manual_seed(2), prob=1.0, shift=0.3)
    assert torch.allclose(change[0], torch.full((8, 8), offsets[1]))
    assert torch.equal(change[1], torch.zeros(8, 8))
    assert torch.allclose(change[2], torch.full((8, 8), offsets[2]))


def test_bad_settings_and_shapes_are_refused():
    image, mask = _two_organs()
    with pytest.raises(ValueError, match="mask"):
        structure_contrast(image, mask[:, :10], [1], torch.Generator(), prob=1.0, shift=0.3)
    with pytest.raises(ConfigError, match="probability"):
        structure_contrast(image, mask, [1], torch.Generator(), prob=1.5, shift=0.3)
    with pytest.raises(ConfigError, match="shift"):
        StructureContrast((1,), prob=0.5, shift=-0.1)
    with pytest.raises(ConfigError, match=">= 1"):
        StructureContrast((0, 1), prob=0.5, shift=0.3)
    with pytest.raises(ValueError):
        FinetuneConfig(structure_contrast=1.2)


def test_the_config_builds_it_over_the_task_structures_for_segmentation_only():
    assert finetune_structure_contrast(FinetuneConfig(num_classes=3)) is None  # off by default
    built = finetune_structure_contrast(FinetuneConfig(num_classes=3, mask_labels=[1, 2], structure_contrast=0.5,
                                                       structure_contrast_shift=0.2))
    assert built == StructureContrast((1, 2), 0.5, 0.2)
    assert finetune_structure_contrast(FinetuneConfig(num_classes=4, structure_contrast=0.5)).structures == (1, 2, 3)
    assert finetune_structure_contrast(FinetuneConfig(task="classification", structure_contrast=0.5)) is None


def _slice_coded_case(root, shape=(10, 10, 8)) -> dict:
    """A CT volume at 0 HU whose mask is the slice index along the thick z axis, plus one."""
    index = np.arange(shape[2]).reshape(1, 1, -1)
    ct = np.zeros(shape, np.float32)[None]
    mask = np.broadcast_to(index + 1, shape)[None].astype(np.float32)
    affine = np.diag([1.0, 1.0, 4.0, 1.0])
    save_volume(Volume(ct, affine, "CT"), root / "ct.nii.gz")
    save_volume(Volume(mask, affine, "SEG"), root / "mask.nii.gz")
    return {"path": "ct.nii.gz", "mask_path": "mask.nii.gz", "modality": "CT"}


def _dataset(tmp_path, **kwargs) -> LabeledPatchDataset:
    row = _slice_coded_case(tmp_path)
    cache = PreprocessedCache(tmp_path / "cache", PreprocessConfig(target_spacing=None, crop_foreground=False,
                                                                  cache_dtype="float32"))
    return LabeledPatchDataset(cache, pd.DataFrame([row]), (6, 5), seed=0, root=tmp_path, samples_per_volume=8,
                               pos=1.0, neg=0.0, slice_context=1, **kwargs)


def test_2_5d_training_patches_move_each_neighbour_slice_by_its_own_annotation(tmp_path):
    augment = StructureContrast(tuple(range(1, 9)), prob=1.0, shift=0.3)
    plain, moved = _dataset(tmp_path), _dataset(tmp_path, structure_contrast=augment)
    for i in range(len(plain)):
        before, after = plain[i], moved[i]
        assert torch.equal(before["mask"], after["mask"])  # the annotation itself never changes
        change = after["image"] - before["image"]
        assert all(torch.allclose(c, c[0, 0].expand_as(c), atol=1e-6) for c in change)  # one slice, one offset
        centre = int(before["mask"].unique())
        assert float(change[1].abs().max()) > 0
        if centre in (1, 8):  # the edge slice repeated as its own neighbour: the same annotation, the same offset
            repeated = 0 if centre == 1 else 2
            assert torch.allclose(change[repeated], change[1], atol=1e-6)
        else:  # three slices, three annotations: three independent offsets
            assert not torch.allclose(change[0], change[2], atol=1e-4)


def test_unlabeled_items_are_never_moved(tmp_path):
    augment = StructureContrast(tuple(range(1, 9)), prob=1.0, shift=0.3)
    plain = _dataset(tmp_path, unlabeled=True)
    moved = _dataset(tmp_path, unlabeled=True, structure_contrast=augment)
    assert moved.structure_contrast is None
    assert all(torch.equal(plain[i]["image"], moved[i]["image"]) for i in range(len(plain)))
