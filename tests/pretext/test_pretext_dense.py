"""Image- and mask-target pretext tasks: the target is the original (restoration tasks) or exactly
the corrupted voxels, and every corruption does what its docstring says."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medssl.pretext import build_pretext
from medssl.pretext.corrupted_region import CorruptedRegionPrediction, region_mask
from medssl.pretext.genesis import ModelsGenesis, bezier_lookup, local_pixel_shuffle, nonlinear_intensity
from medssl.pretext.intensity_restoration import IntensityRestoration, apply_window
from medssl.transforms.intensity_ct import TISSUE_WINDOWS, HounsfieldScale


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _patch(shape, seed=0):
    return torch.rand(shape, generator=_gen(seed))


# --- Models Genesis --------------------------------------------------------------------------


@pytest.mark.parametrize("inverted", [False, True])
def test_bezier_curve_is_monotone_and_spans_the_range(inverted):
    xs, ys = bezier_lookup(torch.tensor([[0.2, 0.8], [0.7, 0.1]], dtype=torch.float64), inverted)
    assert float(xs[0]) == 0.0 and float(xs[-1]) == 1.0
    assert (xs.diff() >= 0).all()
    assert (ys.diff() <= 0).all() if inverted else (ys.diff() >= 0).all()


def test_nonlinear_intensity_matches_np_interp():
    xs, ys = bezier_lookup(torch.tensor([[0.1, 0.9], [0.4, 0.3]], dtype=torch.float64), inverted=False)
    x = _patch((1, 16, 16, 16))
    expected = np.interp(x.numpy().ravel(), xs.numpy(), ys.numpy()).reshape(x.shape)
    np.testing.assert_allclose(nonlinear_intensity(x, xs, ys).numpy(), expected, atol=2e-4)


def test_local_pixel_shuffle_permutes_within_blocks_only():
    x = torch.arange(2 * 12 * 12 * 8, dtype=torch.float32).reshape(2, 12, 12, 8)
    block, offset = (3, 4, 2), (1, 0, 1)
    cells = (11 // 3) * (12 // 4) * (7 // 2)
    chosen = torch.ones(cells, dtype=torch.bool)
    chosen[::2] = False
    keys = torch.rand((5, 24), generator=_gen(0))
    y = local_pixel_shuffle(x, block, offset, chosen, keys)
    assert not torch.equal(y, x)
    assert torch.equal(torch.sort(y.flatten())[0], torch.sort(x.flatten())[0])
    assert torch.equal(y[:, 0], x[:, 0]) and torch.equal(y[:, 10:], x[:, 10:])  # outside the grid
    index = 0
    for i in range(3):
        for j in range(3):
            for k in range(3):
                region = (slice(None), slice(1 + 3 * i, 4 + 3 * i), slice(4 * j, 4 * j + 4), slice(1 + 2 * k, 3 + 2 * k))
                a, b = x[region].reshape(2, -1), y[region].reshape(2, -1)
                assert torch.equal(torch.sort(a, dim=1)[0], torch.sort(b, dim=1)[0])  # same values per block
                assert torch.equal(a, b) != bool(chosen[index])
                # the same permutation for every channel
                order = torch.argsort(b[0])
                assert torch.equal(b[1][order] - b[0][order], a[1] - a[0])
                index += 1


def test_genesis_target_is_the_original_and_inpainting_only_touches_boxes():
    x = _patch((1, 24, 24, 24))
    task = build_pretext("inpainting", spatial_dims=3)
    for seed in range(5):
        corrupted, target = task(x, _gen(seed))
        assert torch.equal(target, x)
        changed = corrupted != x
        assert changed.any() and float(changed.float().mean()) < 0.5
        assert float(corrupted.min()) >= 0.0 and float(corrupted.max()) <= 1.0


def test_genesis_outpainting_keeps_windows_of_the_original():
    task = ModelsGenesis(spatial_dims=2, nonlinear_prob=0.0, shuffle_prob=0.0, paint_prob=1.0, inpaint_rate=0.0)
    x = _patch((1, 42, 42))
    corrupted, target = task(x, _gen(3))
    kept = corrupted == x
    assert 0.15 < float(kept.float().mean()) < 0.95  # windows of 3/7..4/7 of each side survive


def test_genesis_remap_only_changes_intensities_monotonically_or_inverted():
    task = ModelsGenesis(spatial_dims=3, nonlinear_prob=1.0, shuffle_prob=0.0, paint_prob=0.0)
    x = _patch((1, 10, 10, 10))
    seen = set()
    for seed in range(8):
        y, _ = task(x, _gen(seed))
        order_x, order_y = torch.argsort(x.flatten()), y.flatten()
        steps = order_y[order_x].diff()
        increasing, decreasing = bool((steps >= -1e-6).all()), bool((steps <= 1e-6).all())
        assert increasing or decreasing
        seen.add(increasing)
    assert seen == {True, False}  # both curve kinds occur


# --- corrupted regions -----------------------------------------------------------------------


@pytest.mark.parametrize("dims", [2, 3])
def test_corrupted_mask_is_exactly_the_changed_voxels(dims):
    task = CorruptedRegionPrediction(spatial_dims=dims)
    x = _patch((2,) + (20,) * dims)
    for seed in range(10):
        corrupted, mask = task(x, _gen(seed))
        assert torch.equal(mask.bool(), corrupted != x)
        assert mask.any()


def test_noise_and_shift_corruptions_change_every_voxel_of_their_region():
    for kind in ("noise", "shift"):
        for shape in ("box", "ellipsoid"):
            task = CorruptedRegionPrediction(spatial_dims=3, num_regions=(1, 1), corruptions=[kind], shapes=[shape])
            x = _patch((1, 20, 20, 20), seed=1)
            g = _gen(4)
            corrupted, mask = task(x, g)
            # replay the region draws: shape, kind, sizes, centre (see make_pair)
            g = _gen(4)
            torch.randint(1, 2, (), generator=g)
            torch.randint(1, (), generator=g)
            torch.randint(1, (), generator=g)
            sizes = (0.1 + 0.25 * torch.rand((3,), generator=g, dtype=torch.float64)) * 20
            radius = (sizes / 2).clamp_min(0.5)
            centre = radius + torch.rand((3,), generator=g, dtype=torch.float64) * (20 - 2 * radius)
            region = region_mask((20, 20, 20), centre.tolist(), radius.tolist(), shape)
            assert torch.equal(mask[0].bool(), region), f"{kind}/{shape}: mask differs from the region"


def test_shift_corruption_moves_by_the_drawn_delta_inside_range():
    task = CorruptedRegionPrediction(spatial_dims=2, num_regions=(3, 3), corruptions=["shift"], shift=(0.2, 0.2))
    x = _patch((1, 30, 30))
    corrupted, mask = task(x, _gen(0))
    delta = (corrupted - x)[mask.bool()].abs()
    torch.testing.assert_close(delta, torch.full_like(delta, 0.2), atol=1e-6, rtol=0)
    assert float(corrupted.max()) <= 1.0 and float(corrupted.min()) >= 0.0


# --- intensity restoration ------------------------------------------------------------------


def test_generic_restoration_windows_the_target():
    task = IntensityRestoration(spatial_dims=3)
    x = _patch((1, 16, 16, 16))
    windowed, target = task(x, _gen(2))
    assert torch.equal(target, x)
    level, width = task.draw_window(x, _gen(2))
    assert 0.05 <= width <= 0.3
    torch.testing.assert_close(windowed, apply_window(x, level, width))
    assert float((windowed == 0).float().mean()) > 0.05 and float((windowed == 1).float().mean()) > 0.05


def test_generic_level_falls_on_the_foreground():
    x = torch.zeros(1, 16, 16, 16)
    x[:, 4:12, 4:12, 4:12] = torch.linspace(0.4, 0.8, 8).reshape(8, 1, 1)
    task = IntensityRestoration(spatial_dims=3, level_quantile=(0.0, 1.0))
    levels = [task.draw_window(x, _gen(s))[0] for s in range(20)]
    assert min(levels) >= 0.4 - 1e-6 and max(levels) <= 0.8 + 1e-6


def test_ct_restoration_uses_hounsfield_windows():
    scale = HounsfieldScale(-1000.0, 1000.0)
    task = IntensityRestoration(spatial_dims=3, modality="ct", windows=["brain"], level_jitter=(0.0, 0.0),
                                width_scale=(1.0, 1.0))
    level, width = task.draw_window(torch.rand(1, 4, 4, 4), _gen(0))
    assert level == pytest.approx(scale.from_hu(TISSUE_WINDOWS["brain"][0]))
    assert width == pytest.approx(80.0 / 2000.0)
