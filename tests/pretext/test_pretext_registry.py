"""Every pretext task: builds by name in 2D and 3D, its output matches its spec, it is deterministic
under a seed and varies across seeds; bad names and options give clear errors."""

from __future__ import annotations

import pytest
import torch

from medssl.errors import ConfigError
from medssl.pretext import PRETEXT_TASKS, PretextSpec, build_pretext, list_pretexts

PATCH = {3: (1, 24, 24, 24), 2: (2, 36, 36)}


def _patch(dims: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(PATCH[dims], generator=torch.Generator().manual_seed(seed))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_registry_lists_the_issue_tasks():
    assert list_pretexts() == sorted(PRETEXT_TASKS)
    for name in ("rotation", "jigsaw", "relative_position", "slice_order", "genesis", "corrupted_region",
                 "intensity_restoration"):
        assert name in list_pretexts()


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", list_pretexts())
def test_output_matches_spec(name, dims):
    task = build_pretext(name, spatial_dims=dims)
    spec = task.spec
    assert isinstance(spec, PretextSpec) and spec.name == name and spec.spatial_dims == dims
    patch = _patch(dims)
    inp, target = task(patch, _gen(1))
    assert inp.is_floating_point() and torch.isfinite(inp).all()
    if spec.num_patches > 1:
        assert inp.ndim == dims + 2 and inp.shape[0] == spec.num_patches and inp.shape[1] == patch.shape[0]
    else:
        assert inp.ndim == dims + 1 and inp.shape[0] == patch.shape[0]
    if spec.target_kind == "class":
        assert target.dtype == torch.int64 and target.ndim == 0
        assert 0 <= int(target) < spec.num_classes and spec.loss == "cross_entropy"
    elif spec.target_kind == "image":
        assert target.shape == inp.shape and target.is_floating_point() and spec.loss in ("mse", "l1")
        assert spec.num_classes == 0
    else:
        assert target.shape == inp.shape and spec.loss == "bce"
        assert set(torch.unique(target).tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("name", list_pretexts())
def test_deterministic_under_a_seed_and_varies_across_seeds(name):
    task = build_pretext(name, spatial_dims=3)
    patch = _patch(3, seed=2)
    a, b = task(patch, _gen(7)), task(patch, _gen(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    outputs = {(task(patch, _gen(seed))[0].sum().item(), task(patch, _gen(seed))[1].float().sum().item()) for seed in range(6)}
    assert len(outputs) > 1, f"{name}: six seeds gave one output"


@pytest.mark.parametrize("name", list_pretexts())
def test_the_patch_is_not_modified(name):
    task = build_pretext(name, spatial_dims=3)
    patch = _patch(3, seed=3)
    before = patch.clone()
    task(patch, _gen(0))
    assert torch.equal(patch, before)


def test_class_targets_cover_every_class():
    task = build_pretext("rotation", spatial_dims=3)
    labels = {int(task(_patch(3), _gen(seed))[1]) for seed in range(200)}
    assert labels == set(range(task.spec.num_classes))


def test_wrong_dimensionality_and_generator_are_refused():
    task = build_pretext("rotation", spatial_dims=3)
    with pytest.raises(ValueError, match="spatial_dims=2"):
        task(torch.rand(1, 8, 8), _gen(0))
    with pytest.raises(ValueError, match="drop the batch axis"):
        task(torch.rand(2, 1, 8, 8, 8), _gen(0))
    with pytest.raises(ValueError, match="CPU torch.Generator"):
        task(torch.rand(1, 8, 8, 8), None)


@pytest.mark.parametrize(
    "name, args, match",
    [
        ("sudoku", {}, "unknown pretext task"),
        ("rotation", {"angles": 4}, "does not take angles"),
        ("rotation", {"classes": "planar"}, "2D patches"),
        ("jigsaw", {"grid": (2, 2)}, "needs 3 entries"),
        ("jigsaw", {"spatial_dims": 2, "grid": (2, 2), "num_permutations": 25}, "only 24"),
        ("slice_order", {"num_slabs": 1}, ">= 2"),
        ("genesis", {"paint_prob": 1.5}, "probability"),
        ("corrupted_region", {"corruptions": ["blur"]}, "must be among"),
        ("intensity_restoration", {"modality": "pet"}, "ct or generic"),
        ("inpainting", {"name": "x"}, "does not take name"),
    ],
)
def test_bad_options_raise_config_errors(name, args, match):
    with pytest.raises(ConfigError, match=match):
        build_pretext(name, **args)


def test_spec_validation():
    with pytest.raises(ConfigError, match="does not fit"):
        PretextSpec("x", "class", num_classes=4, loss="mse")
    with pytest.raises(ConfigError, match="num_classes >= 2"):
        PretextSpec("x", "class", num_classes=1)
    with pytest.raises(ConfigError, match="num_classes must be 0"):
        PretextSpec("x", "image", num_classes=3, loss="mse")
