"""The 2D slice track's geometry: slice axis from spacing, 2.5D channels, exact stacking back.

A 2D network on a 3D volume sees one slice (plus neighbours as channels, 2.5D) along the slice axis;
its per-slice predictions must land back on exactly the voxels they came from, for every axis, so
2D and 3D arms are scored on the same grid. Training patches come from one slice through a centre
drawn in 3D, with the same neighbours as at inference.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from medssl.config import PreprocessConfig
from medssl.data.cache import PreprocessedCache
from medssl.data.datasets import LabeledPatchDataset
from medssl.data.slices import (
    context_channels,
    resolve_slice_axis,
    slice_with_context,
    slices_to_volume,
    volume_to_slices,
)
from medssl.errors import ConfigError
from medssl.eval.inference import predict_labels
from medssl.io.nifti import save_volume
from medssl.io.volume import Volume


@pytest.mark.parametrize(("spacing", "axis"), [
    ((0.8, 0.8, 5.0), 2),  # axial MR: thick z
    ((4.0, 1.0, 1.0), 0),  # sagittal acquisition
    ((1.0, 3.0, 1.0), 1),  # coronal acquisition
    ((1.5, 1.5, 1.5), 2),  # isotropic: a tie of three, the last axis
    ((3.0, 3.0, 1.0), 1),  # a tie of two: the later one
    ((3.0, 3.0001, 1.0), 1),  # equal within rounding of the resampler
])
def test_auto_axis_is_the_thickest_with_ties_to_the_last(spacing, axis):
    assert resolve_slice_axis("auto", spacing, (1, 20, 20, 20)) == axis


def test_explicit_axes_2d_images_and_bad_settings():
    assert [resolve_slice_axis(a, (1.0, 1.0, 5.0)) for a in (0, 1, 2)] == [0, 1, 2]
    assert resolve_slice_axis(0, (5.0, 1.0, 1.0), (1, 32, 32, 1)) == 2  # a 2D image is its own slice
    for bad in (3, -1, "x", 1.5, None):
        with pytest.raises(ConfigError, match="slice_axis"):
            resolve_slice_axis(bad, (1.0, 1.0, 1.0))
    with pytest.raises(ConfigError, match="slice_context"):
        volume_to_slices(torch.zeros(1, 2, 2, 2), 2, -1)


def test_2_5d_channels_are_offset_major_with_edge_slices_repeated():
    # two channels; voxel value = 10 * slice index along y + channel
    depth = 5
    volume = torch.zeros(2, 3, depth, 4)
    for s in range(depth):
        volume[0, :, s] = 10 * s
        volume[1, :, s] = 10 * s + 1
    batch = volume_to_slices(volume, axis=1, context=2)
    assert tuple(batch.shape) == (depth, context_channels(2, 2), 3, 4)
    first = batch[0, :, 0, 0].tolist()  # offsets -2, -1 repeat slice 0; channel inner
    assert first == [0, 1, 0, 1, 0, 1, 10, 11, 20, 21]
    last = batch[depth - 1, :, 0, 0].tolist()
    assert last == [20, 21, 30, 31, 40, 41, 40, 41, 40, 41]
    middle = batch[2, :, 0, 0].tolist()
    assert middle == [0, 1, 10, 11, 20, 21, 30, 31, 40, 41]
    for s in range(depth):  # the training path (numpy, memory maps) reads the same channels
        one = slice_with_context(volume.numpy(), 1, s, 2)
        assert one.shape == (10, 3, 4, 1)
        assert np.array_equal(one[..., 0], batch[s].numpy())


class CentreChannelOneHot(nn.Module):
    """A stand-in network: large logits for the class stored (as an integer) in the centre channel."""

    def __init__(self, num_classes: int, centre_channel: int):
        super().__init__()
        self.num_classes, self.centre_channel = num_classes, centre_channel
        self.unused = nn.Parameter(torch.zeros(1))  # gives the network a device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        labels = x[:, self.centre_channel].round().long().clamp(0, self.num_classes - 1)
        return 20.0 * nn.functional.one_hot(labels, self.num_classes).permute(0, 3, 1, 2).float()


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("context", [0, 2])
def test_slice_by_slice_prediction_stacks_back_into_the_exact_volume(axis, context):
    labels = torch.from_numpy(np.random.default_rng(axis).integers(0, 4, size=(1, 9, 11, 7)))
    network = CentreChannelOneHot(4, centre_channel=context)  # offset 0 of a one-channel image
    # windows of 8x8 over in-plane sizes of 7..11: overlap, blending and padding are all exercised
    prediction = predict_labels(network, labels.float(), roi_size=(8, 8), spatial_dims=2, sw_batch_size=3,
                                slice_axis=axis, slice_context=context)
    assert prediction.shape == labels.shape[1:]
    assert torch.equal(prediction, labels[0])


def test_slices_to_volume_inverts_volume_to_slices():
    volume = torch.rand(3, 5, 6, 7)
    for axis in (0, 1, 2):
        assert torch.equal(slices_to_volume(volume_to_slices(volume, axis), axis), volume)


def _slice_coded_case(root, axis: int):
    """A CT whose value codes the slice index along ``axis`` (50 HU per slice), thick spacing on
    ``axis`` (so ``auto`` picks it), and a mask coding the slice index too (value = index + 1)."""
    shape = (12, 10, 8)
    index = np.arange(shape[axis]).reshape([-1 if a == axis else 1 for a in range(3)])
    ct = np.broadcast_to(50.0 * index, shape)[None].astype(np.float32)
    mask = np.broadcast_to(index + 1, shape)[None].astype(np.float32)
    spacing = [1.0, 1.0, 1.0]
    spacing[axis] = 4.0
    affine = np.diag(spacing + [1.0])
    save_volume(Volume(ct, affine, "CT"), root / f"ct{axis}.nii.gz")
    save_volume(Volume(mask, affine, "SEG"), root / f"mask{axis}.nii.gz")
    return {"path": f"ct{axis}.nii.gz", "mask_path": f"mask{axis}.nii.gz", "modality": "CT"}


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_training_patches_come_from_one_slice_along_the_auto_axis_with_neighbours(tmp_path, axis):
    row = _slice_coded_case(tmp_path, axis)
    cache = PreprocessedCache(tmp_path / "cache", PreprocessConfig(target_spacing=None, crop_foreground=False,
                                                                  cache_dtype="float32"))
    dataset = LabeledPatchDataset(cache, pd.DataFrame([row]), (6, 5), seed=0, root=tmp_path, samples_per_volume=12,
                                  pos=1.0, neg=0.0, slice_axis="auto", slice_context=1)
    count = (12, 10, 8)[axis]
    hu = lambda s: (50.0 * min(max(s, 0), count - 1) + 1000.0) / 2000.0  # CT window (-1000, 1000) -> [0, 1]
    seen = set()
    for i in range(len(dataset)):
        item = dataset[i]
        assert tuple(item["image"].shape) == (3, 6, 5) and tuple(item["mask"].shape) == (1, 6, 5)
        values = item["mask"].unique()
        assert len(values) == 1, "a 2D patch must lie in one slice"
        s = int(values) - 1
        seen.add(s)
        for channel, offset in enumerate((-1, 0, 1)):
            assert torch.allclose(item["image"][channel], torch.full((6, 5), hu(s + offset)), atol=1e-6)
    assert len(seen) > 3  # centres spread over the slices


def test_explicit_axis_overrides_spacing(tmp_path):
    row = _slice_coded_case(tmp_path, 2)  # thick z, but slice along x: the mask then varies in plane (along z)
    cache = PreprocessedCache(tmp_path / "cache", PreprocessConfig(target_spacing=None, crop_foreground=False))
    dataset = LabeledPatchDataset(cache, pd.DataFrame([row]), (6, 5), seed=0, root=tmp_path, slice_axis=0,
                                  samples_per_volume=4)
    item = dataset[0]
    assert tuple(item["image"].shape) == (1, 6, 5)
    assert torch.equal(item["mask"][0], item["mask"][0, :1].expand(6, 5))  # constant along y, in plane
    assert len(item["mask"][0, 0].unique()) == 5  # five consecutive z slices across the patch
    with pytest.raises(ConfigError, match="slice_axis"):
        LabeledPatchDataset(cache, pd.DataFrame([row]), (6, 5), seed=0, root=tmp_path, slice_axis=4)


def test_unlabeled_2d_patches_of_3d_volumes_come_from_one_slice_too(tmp_path):
    """Consistency training's unlabeled patches (``unlabeled=True``: centres uniform over the volume)
    are sliced the same way; the annotation only rides along as ``truth``."""
    row = _slice_coded_case(tmp_path, 1)
    cache = PreprocessedCache(tmp_path / "cache", PreprocessConfig(target_spacing=None, crop_foreground=False,
                                                                  cache_dtype="float32"))
    dataset = LabeledPatchDataset(cache, pd.DataFrame([row]), (6, 5), seed=0, root=tmp_path, samples_per_volume=10,
                                  unlabeled=True, slice_context=1)
    seen = set()
    for i in range(len(dataset)):
        item = dataset[i]
        assert "mask" not in item and tuple(item["image"].shape) == (3, 6, 5)
        values = item["truth"].unique()
        assert len(values) == 1
        seen.add(int(values))
    assert len(seen) > 3
