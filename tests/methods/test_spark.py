"""SparK (Tian et al., ICLR 2023): sparse masked modelling of the whole segmentation network.

Pinned here: the loss counts the masked cells only, against per-cell normalised targets; masked
cells stay empty at every stage of the encoder, so nothing of their content reaches the network's
output (the sparse-convolution guarantee); each scale's mask token fills the holes before
decoding; the loss falls on a toy problem in 2D; a resumed run equals an uninterrupted one; the
decoder transfers to fine-tuning.
"""

from __future__ import annotations

import pytest
import torch

from medssl.config import OptimizerConfig, PretrainConfig
from medssl.engine.trainer import Trainer
from medssl.errors import ConfigError, DataError
from medssl.eval.networks import build_finetune_model
from medssl.losses.masked import masked_patch_loss, normalised_patches, patchify, random_patch_mask, unpatchify
from medssl.methods import SparK, build_method
from medssl.models import build_encoder, export_encoder
from medssl.utils.seeding import make_torch_generator, seed_everything

from tests.methods.masked_toys import ImageItems, ramp_batch, smooth_batch, train_losses


def spark(spatial_dims: int = 2, seed: int = 0, **args) -> SparK:
    seed_everything(seed)
    return build_method("spark", build_encoder("resnet10_tiny", spatial_dims=spatial_dims), **args)


def test_patches_round_trip_and_masks_have_the_exact_ratio():
    x = torch.randn(2, 3, 8, 4, 12)
    patches = patchify(x, (4, 2, 4))
    assert patches.shape == (2, 2 * 2 * 3, 4 * 2 * 4 * 3)
    torch.testing.assert_close(patches[1, 0].reshape(4, 2, 4, 3).permute(3, 0, 1, 2), x[1, :, :4, :2, :4])
    assert torch.equal(unpatchify(patches, (4, 2, 4), (2, 2, 3), channels=3), x)
    mask = random_patch_mask(64, 10, 0.6, generator=torch.Generator().manual_seed(0))
    assert (mask.sum(dim=1) == 6).all()
    assert 0.4 < mask.float().mean(dim=0).min() and mask.float().mean(dim=0).max() < 0.8  # every patch masked alike


def test_the_loss_counts_masked_patches_only_against_normalised_targets():
    generator = torch.Generator().manual_seed(0)
    target = torch.rand(2, 4, 16, generator=generator) * 5 + 3
    mask = torch.tensor([[True, False, False, True], [False, True, False, False]])
    perfect = normalised_patches(target)
    assert float(masked_patch_loss(perfect, target, mask)) < 1e-10
    wrong_where_seen = perfect.clone()
    wrong_where_seen[~mask] += 10.0
    assert float(masked_patch_loss(wrong_where_seen, target, mask)) < 1e-10
    wrong_where_hidden = perfect.clone()
    wrong_where_hidden[mask] += 1.0
    torch.testing.assert_close(masked_patch_loss(wrong_where_hidden, target, mask), torch.tensor(1.0))
    torch.testing.assert_close(masked_patch_loss(target, target, mask, kind="l1", normalise_target=False),
                               torch.tensor(0.0))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_masked_cells_stay_empty_and_never_reach_the_output(spatial_dims):
    method = spark(spatial_dims)
    size = 64 if spatial_dims == 2 else 64
    x = smooth_batch(2, size, spatial_dims, make_torch_generator(0, "x"))
    torch.manual_seed(3)
    masked = method.draw_mask(x)
    keep = (~masked).unsqueeze(1).float()
    seen: list[list[torch.Tensor]] = []
    handle = method.encoder.encoder.register_forward_hook(lambda m, i, out: seen.append([f.detach() for f in out]))
    output = method.reconstruct(x, masked)
    handle.remove()
    for feature in seen[0]:  # every stage: nothing where the cell is masked
        hidden = torch.nn.functional.interpolate(1 - keep, size=feature.shape[2:], mode="nearest")
        assert float((feature * hidden).abs().max()) == 0.0
        assert float((feature * (1 - hidden)).abs().max()) > 0.0
    other = x + 5.0 * torch.nn.functional.interpolate(1 - keep, size=x.shape[2:], mode="nearest") * torch.randn_like(x)
    torch.testing.assert_close(method.reconstruct(other, masked), output, rtol=0, atol=0)


def test_mask_tokens_fill_the_holes_and_get_gradients():
    method = spark(2)
    loss, logs = method({"views": [smooth_batch(2, 64, 2, make_torch_generator(0, "t"))]})
    loss.backward()
    assert logs["embeddings"].shape == (2, method.encoder.feature_dim)
    assert float(logs["masked_fraction"]) == 0.5  # round(0.6 * 4) of 2 x 2 cells
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in method.mask_tokens)
    assert all(p.grad is not None for p in method.encoder.parameters())
    assert not method.encoder.encoder._forward_hooks and not any(m._forward_hooks for m in method.modules())


def test_loss_falls_on_a_toy_problem():
    method = spark(2, mask_ratio=0.6)
    generator = make_torch_generator(0, "toy")
    losses = train_losses(method, lambda step: {"views": [ramp_batch(8, 64, 2, generator)]}, steps=32, lr=1e-3)
    assert sum(losses[-4:]) / 4 < 0.8 * sum(losses[:4]) / 4, losses


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path):
    config = PretrainConfig(steps=4, batch_size=2, checkpoint_every=2, log_every=1, tensorboard=False,
                            optimizer=OptimizerConfig(name="adamw", lr=1e-3), device="cpu")
    straight = Trainer(spark(2, seed=0), ImageItems(4, 64, 2), config, tmp_path / "a", seed=1)
    straight.fit()
    stopped = Trainer(spark(2, seed=0), ImageItems(4, 64, 2), config, tmp_path / "b", seed=1)
    stopped.fit(until_step=2)
    torch.manual_seed(99)  # a new process: other global random state, other initial weights
    resumed = Trainer(spark(2, seed=5), ImageItems(4, 64, 2), config, tmp_path / "b", seed=1)
    resumed.fit(resume=True)
    for name, value in straight.method.state_dict().items():
        assert torch.equal(value, resumed.method.state_dict()[name]), name


def test_the_decoder_transfers_to_fine_tuning(tmp_path):
    encoder_config = {"name": "resnet10_tiny", "spatial_dims": 3, "in_channels": 1}
    method = spark(3)
    loss, _ = method({"views": [smooth_batch(2, 64, 3, make_torch_generator(0, "d"))]})
    loss.backward()
    state, info = method.decoder_export()
    assert info["pretext"] == "spark" and info["out_channels"] == 1
    assert not any(k.startswith("encoder.") for k in state)
    path = export_encoder(method.encoder, tmp_path / "encoder.pt", {"method": "spark"}, decoder=(state, info))
    model = build_finetune_model("segmentation", encoder_config, str(path), num_classes=3, seed=7)
    report = model.decoder_transfer
    assert report.loaded and not report.missing and not report.unexpected
    assert report.mismatched, "the 1-channel reconstruction layer cannot fit a 3-class head"
    target = model.network.state_dict()
    assert all(torch.equal(target[k], state[k]) for k in report.loaded)


def test_bad_settings_are_clear_errors():
    with pytest.raises(ConfigError, match="ResNet encoders"):
        build_method("spark", build_encoder("segresnet", spatial_dims=2))
    with pytest.raises(ConfigError, match="mask_ratio"):
        spark(2, mask_ratio=1.0)
    method = spark(2)
    with pytest.raises(DataError, match="multiple of the encoder's total stride 32"):
        method({"views": [torch.rand(2, 1, 48, 64)]})
    with pytest.raises(ConfigError, match="at least 2 patches"):
        method({"views": [torch.rand(2, 1, 32, 32)]})
