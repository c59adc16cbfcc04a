"""MAE (He et al., CVPR 2022) for the ViT and SimMIM (Xie et al., CVPR 2022) for the ViT and Swin.

Pinned here: MAE's encoder sees the visible tokens only (what hides under the mask cannot change
its latents) and its decoder puts every token back in place; SimMIM replaces every masked token by
the mask token (nothing of the masked content reaches its prediction) and scores the masked voxels
only; both losses fall on a toy problem; a resumed run equals an uninterrupted one; the pretrained
encoder loads completely into UNETR / SwinUNETR.
"""

from __future__ import annotations

import pytest
import torch

from medssl.config import OptimizerConfig, PretrainConfig
from medssl.engine.trainer import Trainer
from medssl.errors import ConfigError, DataError
from medssl.eval.networks import build_finetune_model
from medssl.losses.masked import upsample_mask
from medssl.methods import build_method
from medssl.methods.mae import visible_first
from medssl.models import build_encoder, export_encoder
from medssl.utils.seeding import make_torch_generator, seed_everything

from tests.methods.masked_toys import ImageItems, held_out_loss, ramp_batch, smooth_batch, train_losses

#: tiny encoders: a ViT of 4x4 tokens (2D) or 2x2x2 (3D), a Swin of 2x2 (x2) mask cells of 32
VIT = {"img_size": 32, "patch_size": 8, "hidden_size": 32, "mlp_dim": 64, "num_layers": 4, "num_heads": 4}
SWIN = {"feature_size": 12, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 2, 2), "window_size": 4}
SIZE = {"vit": {2: 32, 3: 16}, "swin": {2: 64, 3: 64}}


def method(name: str, encoder: str, spatial_dims: int = 2, seed: int = 0, **args):
    seed_everything(seed)
    encoder_args = dict(VIT if encoder == "vit" else SWIN)
    if encoder == "vit" and spatial_dims == 3:
        encoder_args.update(img_size=16)
    if name == "mae":
        args = {"decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2, **args}
    return build_method(name, build_encoder(encoder, spatial_dims=spatial_dims, **encoder_args), **args)


CASES = [("mae", "vit"), ("simmim", "vit"), ("simmim", "swin")]


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name,encoder", CASES)
def test_forward_backward_and_shapes(name, encoder, spatial_dims):
    m = method(name, encoder, spatial_dims)
    size = SIZE[encoder][spatial_dims]
    loss, logs = m({"views": [smooth_batch(2, size, spatial_dims, make_torch_generator(0, "f"))]})
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert logs["embeddings"].shape == (2, m.encoder.feature_dim)
    # every trainable weight gets a gradient (MONAI's unused cross-attention norms are frozen, so DDP
    # without find_unused_parameters does not wait for them)
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)
    assert all(not p.requires_grad for n, p in m.named_parameters() if "norm_cross_attn" in n)
    assert m.mask_token.grad is not None and m.mask_token.grad.abs().sum() > 0
    assert not any(module._forward_hooks for module in m.modules())  # hooks only while predicting


def test_mae_encodes_the_visible_tokens_only_and_puts_every_token_back():
    m = method("mae", "vit").eval()
    x = smooth_batch(2, 32, 2, make_torch_generator(0, "v"))
    torch.manual_seed(1)
    masked = m.draw_mask(x)
    assert masked.shape == (2, 16) and (masked.sum(dim=1) == 12).all()
    order = visible_first(masked)
    assert (~masked.gather(1, order[:, :4])).all() and masked.gather(1, order[:, 4:]).all()
    latent, _ = m.encode_visible(x, masked)
    assert latent.shape == (2, 4, 32)
    hidden = upsample_mask(masked.reshape(2, 1, 4, 4).float(), (32, 32))
    other = x + 3.0 * hidden * torch.randn_like(x)
    torch.testing.assert_close(m.encode_visible(other, masked)[0], latent, rtol=0, atol=0)
    # the decoder's token n is token n: with no blocks, a token's output is its own input
    m.decoder_blocks = torch.nn.ModuleList()
    prediction = m.decode(latent, order)
    visible_rows = m.decoder_prediction(m.decoder_norm(m.decoder_embed(latent) + m.decoder_position[0, order[:, :4]]))
    torch.testing.assert_close(prediction.gather(1, order[:, :4, None].expand(-1, -1, prediction.shape[2])),
                               visible_rows)


@pytest.mark.parametrize("encoder", ["vit", "swin"])
def test_simmim_masked_content_never_reaches_the_prediction(encoder):
    m = method("simmim", encoder).eval()
    size = SIZE[encoder][2]
    x = smooth_batch(2, size, 2, make_torch_generator(0, "s"))
    torch.manual_seed(2)
    masked = m.draw_mask(x)
    prediction, _ = m.predict(x, masked)
    hidden = upsample_mask(masked.unsqueeze(1).float(), (size, size))
    other = x + 3.0 * hidden * torch.randn_like(x)
    torch.testing.assert_close(m.predict(other, masked)[0], prediction, rtol=0, atol=0)
    assert not torch.equal(m.predict(x + 3.0 * (1 - hidden) * torch.randn_like(x), masked)[0], prediction)


@pytest.mark.parametrize("name,encoder", CASES)
def test_loss_falls_on_a_toy_problem(name, encoder):
    m = method(name, encoder)
    generator = make_torch_generator(0, "toy", name, encoder)
    size = SIZE[encoder][2]
    held_out = {"views": [ramp_batch(16, size, 2, make_torch_generator(1, "held-out"))]}
    before = held_out_loss(m, held_out)
    losses = train_losses(m, lambda step: {"views": [ramp_batch(8, size, 2, generator)]}, steps=20, lr=1e-3)
    after = held_out_loss(m, held_out)
    assert after < 0.8 * before, (before, after, losses)


@pytest.mark.parametrize("name,encoder", [("mae", "vit"), ("simmim", "swin")])
def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path, name, encoder):
    config = PretrainConfig(steps=4, batch_size=2, checkpoint_every=2, log_every=1, tensorboard=False,
                            optimizer=OptimizerConfig(name="adamw", lr=1e-3), device="cpu")
    size = SIZE[encoder][2]
    straight = Trainer(method(name, encoder), ImageItems(4, size, 2), config, tmp_path / "a", seed=1)
    straight.fit()
    Trainer(method(name, encoder), ImageItems(4, size, 2), config, tmp_path / "b", seed=1).fit(until_step=2)
    torch.manual_seed(99)
    resumed = Trainer(method(name, encoder, seed=5), ImageItems(4, size, 2), config, tmp_path / "b", seed=1)
    resumed.fit(resume=True)
    for key, value in straight.method.state_dict().items():
        assert torch.equal(value, resumed.method.state_dict()[key]), key


@pytest.mark.parametrize("name,encoder", [("mae", "vit"), ("simmim", "vit"), ("simmim", "swin")])
def test_the_encoder_loads_completely_into_its_segmentation_network(tmp_path, name, encoder):
    args = {"vit": {**VIT, "patch_size": 16, "num_layers": 12}, "swin": SWIN}[encoder]  # UNETR: 16, 12 layers
    seed_everything(0)
    m = build_method(name, build_encoder(encoder, spatial_dims=2, **args),
                     **({"decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2} if name == "mae" else {}))
    loss, _ = m({"views": [smooth_batch(2, SIZE[encoder][2], 2, make_torch_generator(0, "t"))]})
    loss.backward()
    torch.optim.SGD(m.parameters(), lr=0.1).step()
    path = export_encoder(m.encoder, tmp_path / "encoder.pt", {"method": name})
    model = build_finetune_model("segmentation", m.encoder.config, str(path), num_classes=2, seed=3)
    assert model.transfer.complete, model.transfer_summary()
    target = model.network.state_dict()
    assert all(torch.equal(target[k], v) for k, v in m.encoder.state_dict().items())


def test_bad_settings_are_clear_errors():
    resnet = build_encoder("resnet10_tiny", spatial_dims=2)
    with pytest.raises(ConfigError, match="visible tokens of a ViT"):
        build_method("mae", resnet)
    with pytest.raises(ConfigError, match="'vit' and 'swin'"):
        build_method("simmim", resnet)
    with pytest.raises(ConfigError, match="mask_cell"):
        method("simmim", "swin", mask_cell=12)
    with pytest.raises(DataError, match="img_size"):
        method("mae", "vit")({"views": [torch.rand(2, 1, 48, 48)]})
    with pytest.raises(DataError, match="deepest stride 32"):
        method("simmim", "swin")({"views": [torch.rand(2, 1, 48, 64)]})
