"""Sliding-window inference (2D and 3D), whole-volume inputs, probes on frozen features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medssl.eval.cases import LabeledCase, WholeVolumeDataset, remap_mask, whole_volume_input
from medssl.eval.inference import predict_labels, predict_segmentation
from medssl.eval.probes import extract_features, knn_probe, linear_probe


def _pointwise(spatial_dims):
    torch.manual_seed(0)
    conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
    return conv(1, 3, kernel_size=1)


def test_sliding_window_equals_full_forward_for_pointwise_network():
    net = _pointwise(3)
    image = torch.rand(1, 21, 17, 9)
    probs = predict_segmentation(net, image, roi_size=(8, 8, 8), spatial_dims=3, overlap=0.5)
    expected = torch.softmax(net(image[None]), dim=1)[0]
    assert probs.shape == (3, 21, 17, 9)
    torch.testing.assert_close(probs, expected, atol=1e-5, rtol=1e-5)


def test_2d_network_runs_slice_by_slice():
    net = _pointwise(2)
    image = torch.rand(1, 12, 10, 4)
    probs = predict_segmentation(net, image, roi_size=(8, 8, 1), spatial_dims=2)
    for z in range(4):
        expected = torch.softmax(net(image[None, :, :, :, z]), dim=1)[0]
        torch.testing.assert_close(probs[..., z], expected, atol=1e-5, rtol=1e-5)
    labels = predict_labels(net, image, roi_size=(8, 8), spatial_dims=2)
    assert labels.shape == (12, 10, 4) and labels.dtype == torch.int64


def test_volume_smaller_than_window_is_padded_and_cropped_back():
    net = _pointwise(3)
    probs = predict_segmentation(net, torch.rand(1, 5, 6, 7), roi_size=(16, 16, 16), spatial_dims=3)
    assert probs.shape == (3, 5, 6, 7)
    torch.testing.assert_close(probs.sum(0), torch.ones(5, 6, 7))


def test_remap_and_whole_volume_input():
    mask = torch.tensor([0, 1, 2, 3, 4]).reshape(1, 5, 1, 1)
    assert remap_mask(mask, [3, 1]).flatten().tolist() == [0, 2, 0, 1, 0]
    assert remap_mask(mask, None).flatten().tolist() == [0, 1, 2, 3, 4]
    image = torch.zeros(1, 40, 20, 10)
    image[:, :20] = 1.0  # left half bright
    x = whole_volume_input(image, (16, 16, 16))
    assert x.shape == (1, 16, 16, 16)
    # proportions kept: 40x20x10 -> 16x8x4 inside zero padding
    assert float(x[0, :, 8, 8].sum()) > 0 and float(x[0, :, 0, 0].sum()) == 0
    assert whole_volume_input(torch.rand(1, 30, 20, 1), (16, 16)).shape == (1, 16, 16)
    with pytest.raises(ValueError, match="2D"):
        whole_volume_input(torch.rand(1, 30, 20, 5), (16, 16))


def test_whole_volume_dataset_flips_depend_on_seed_epoch_index_only():
    cases = [LabeledCase(str(i), torch.rand(1, 12, 12, 12), label=i % 2) for i in range(4)]
    a = WholeVolumeDataset(cases, (8, 8, 8), seed=3, flip_prob=0.5)
    b = WholeVolumeDataset(cases, (8, 8, 8), seed=3, flip_prob=0.5)
    seen = set()
    for epoch in range(6):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        for i in (2, 0, 3):  # order does not matter
            torch.testing.assert_close(a[i]["image"], b[i]["image"])
        seen.add(bool(torch.equal(a[0]["image"], a.images[0])))
    assert seen == {True, False}  # flipped in some epochs, not in others
    with pytest.raises(ValueError, match="without a label"):
        WholeVolumeDataset([LabeledCase("x", torch.rand(1, 4, 4, 4))], (4, 4, 4), seed=0)


def test_linear_and_knn_probes_separate_clusters_and_keep_all_classes():
    rng = np.random.default_rng(0)
    centres = np.array([[3, 0, 0], [0, 3, 0], [0, 0, 3]], float)
    x = np.concatenate([rng.normal(c, 0.5, (10, 3)) for c in centres])
    y = np.repeat([0, 1, 2], 10)
    train, test = np.arange(0, 30, 2), np.arange(1, 30, 2)
    for probe in (linear_probe, knn_probe):
        probs = probe(x[train], y[train], x[test])
        assert probs.shape == (15, 3)
        np.testing.assert_allclose(probs.sum(1), 1.0)
        assert (probs.argmax(1) == y[test]).mean() >= 0.9
    # a tiny budget holding one class: every test case gets it, columns still cover all classes
    only = linear_probe(x[:3], y[:3], x[test], num_classes=3)
    assert only.shape == (15, 3) and (only[:, 0] == 1).all()
    assert knn_probe(x[:2], y[:2], x[test], k=5, num_classes=3).shape == (15, 3)


def test_probe_rejects_non_finite_features():
    with pytest.raises(ValueError, match="NaN"):
        linear_probe(np.array([[np.nan], [1.0]]), [0, 1], np.zeros((1, 1)))


def test_extract_features_batches_and_restores_mode():
    encoder = nn.Sequential(nn.Conv3d(1, 4, 3), nn.BatchNorm3d(4), nn.AdaptiveAvgPool3d(1), nn.Flatten())
    encoder.train()
    inputs = [torch.rand(1, 8, 8, 8) for _ in range(5)]
    features = extract_features(encoder, inputs, batch_size=2)
    assert features.shape == (5, 4)
    assert encoder.training
    encoder.eval()
    np.testing.assert_allclose(features, encoder(torch.stack(inputs)).detach().numpy(), atol=1e-5)


class _LeftEdge(nn.Module):
    """Not flip-equivariant: class 1 where the voxel's left neighbour along the first spatial axis is
    brighter (a one-sided difference), so a flip changes its answer."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(4.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shifted = torch.cat([x[:, :, :1], x[:, :, :-1]], dim=2)
        logit = (shifted - x)[:, :1] * self.scale
        return torch.cat([torch.zeros_like(logit), logit], dim=1)


@pytest.mark.parametrize("spatial_dims, passes", [(3, 8), (2, 4)])
def test_test_time_flips_average_every_flip_mapped_back(spatial_dims, passes):
    """The flipped predictions are flipped back before averaging: the mean of the 2^n passes (a 2D
    network flips only the axes in its slices' plane)."""
    from medssl.eval.inference import flip_combinations

    torch.manual_seed(0)
    image = torch.rand(1, 12, 10, 6)
    net = _LeftEdge()
    kwargs = dict(roi_size=(12, 10, 6), spatial_dims=spatial_dims, overlap=0.0)
    averaged = predict_segmentation(net, image, flip_axes=(0, 1, 2), **kwargs)
    batch = image[None] if spatial_dims == 3 else image.permute(3, 0, 1, 2)       # slices along Z
    with torch.no_grad():
        passes_done = [torch.softmax(net(batch), dim=1)]
        dims = (2, 3, 4) if spatial_dims == 3 else (2, 3)                       # Z is the slice axis in 2D
        passes_done += [torch.softmax(net(batch.flip(d)), dim=1).flip(d) for d in flip_combinations(dims)]
    expected = torch.stack(passes_done).mean(0)
    expected = expected[0] if spatial_dims == 3 else expected.permute(1, 2, 3, 0)
    assert len(passes_done) == passes
    torch.testing.assert_close(averaged, expected, atol=1e-5, rtol=1e-5)
    plain = predict_segmentation(net, image, **kwargs)
    assert not torch.allclose(plain, averaged, atol=1e-3)                         # the flips changed it


def test_test_time_flips_leave_a_pointwise_network_unchanged():
    net = _pointwise(3)
    image = torch.rand(1, 13, 11, 7)
    kwargs = dict(roi_size=(8, 8, 8), spatial_dims=3, overlap=0.5)
    torch.testing.assert_close(predict_segmentation(net, image, flip_axes=(0, 1, 2), **kwargs),
                               predict_segmentation(net, image, **kwargs), atol=1e-5, rtol=1e-5)


def test_test_time_flips_of_the_left_right_axis_only():
    """Mirroring only the axis training flipped: two passes, the plain and the left-right one."""
    torch.manual_seed(0)
    image = torch.rand(1, 12, 10, 6)
    net = _LeftEdge()
    got = predict_segmentation(net, image, roi_size=(12, 10, 6), spatial_dims=3, overlap=0.0, flip_axes=(0,))
    with torch.no_grad():
        plain = torch.softmax(net(image[None]), dim=1)
        mirrored = torch.softmax(net(image[None].flip(2)), dim=1).flip(2)
    torch.testing.assert_close(got, ((plain + mirrored) / 2)[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="volume axes"):
        predict_segmentation(net, image, roi_size=(12, 10, 6), spatial_dims=3, flip_axes=(3,))
