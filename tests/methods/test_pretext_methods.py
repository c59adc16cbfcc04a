"""Pretext tasks as methods: heads and losses built from the task's PretextSpec."""

from __future__ import annotations

import pytest
import torch

from medssl.errors import ConfigError, DataError
from medssl.methods import PRETEXT_TASKS, PretextMethod, build_method
from medssl.models import build_encoder
from medssl.pretext import build_pretext, list_pretexts
from medssl.utils.seeding import make_torch_generator, seed_everything


def _encoder(spatial_dims=2):
    seed_everything(0)
    return build_encoder("resnet10_tiny", spatial_dims=spatial_dims)


def _batch(task, count, size, spatial_dims, generator):
    images = torch.nn.functional.interpolate(
        torch.rand(count, 1, *(4,) * spatial_dims, generator=generator), size=(size,) * spatial_dims,
        mode="bilinear" if spatial_dims == 2 else "trilinear", align_corners=False)
    pairs = [task(image, generator) for image in images]
    return {"input": torch.stack([p[0] for p in pairs]), "target": torch.stack([p[1] for p in pairs])}


def test_every_pretext_task_has_a_method():
    assert set(PRETEXT_TASKS) == set(list_pretexts())


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", PRETEXT_TASKS)
def test_method_trains_on_the_task_output(name, spatial_dims):
    encoder = _encoder(spatial_dims)
    method = build_method(name, encoder)
    assert method.batch_kind == "pretext" and method.pretext_task is not None
    assert method.spec.name == name == method.pretext_task.spec.name
    generator = make_torch_generator(0, name)
    batch = _batch(method.pretext_task, 2, 32 if spatial_dims == 2 else 24, spatial_dims, generator)
    loss, logs = method(batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert logs["embeddings"].shape == (2, encoder.feature_dim)
    loss.backward()
    assert all(p.grad is not None for p in encoder.parameters())


@pytest.mark.parametrize("name", ["rotation", "jigsaw", "genesis", "corrupted_region"])
def test_loss_falls_on_a_toy_problem(name):
    method = build_method(name, _encoder(2), hidden_dim=32, decoder_width=8)
    task = method.pretext_task
    generator = make_torch_generator(0, "toy", name)
    batch = _batch(task, 16, 32, 2, generator)
    optimiser = torch.optim.Adam(method.parameters(), lr=3e-3)
    losses = []
    for _ in range(10):
        loss, _ = method(batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-3:]) / 3 < 0.9 * sum(losses[:3]) / 3, losses


def test_spec_dicts_build_the_matching_heads():
    encoder = _encoder(2)
    single = PretextMethod(encoder, spec={"name": "r", "target_kind": "class", "num_classes": 4})
    assert single.head[0].in_features == encoder.feature_dim and single.head[-1].out_features == 4
    multi = PretextMethod(_encoder(2), spec={"name": "j", "target_kind": "class", "num_classes": 5, "num_patches": 3})
    assert multi.head[0].in_features == 3 * encoder.feature_dim
    logits_input = torch.randn(2, 3, 1, 16, 16)
    loss, logs = multi({"input": logits_input, "target": torch.tensor([1, 4])})
    assert 0.0 <= float(logs["accuracy"]) <= 1.0
    # patch order matters: the head sees the embeddings in order
    with torch.no_grad():
        multi.eval()
        features = multi.encoder(logits_input.flatten(0, 1)).reshape(2, -1)
        swapped = multi.encoder(logits_input[:, [1, 0, 2]].flatten(0, 1)).reshape(2, -1)
        assert not torch.allclose(multi.head(features), multi.head(swapped))
    image = PretextMethod(_encoder(2), spec={"name": "g", "target_kind": "image", "loss": "l1"})
    x = torch.rand(2, 1, 16, 16)
    loss, _ = image({"input": x, "target": x})
    assert image.spec.loss == "l1" and loss > 0
    mask = PretextMethod(_encoder(2), spec={"name": "c", "target_kind": "mask"})
    assert mask.spec.loss == "bce"
    loss, _ = mask({"input": x, "target": (x > 0.5).float()})
    assert torch.isfinite(loss)


def test_image_loss_is_zero_when_the_decoder_reproduces_the_target():
    method = PretextMethod(_encoder(2), spec={"name": "g", "target_kind": "image", "loss": "mse"})
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        target = method.head(method.encoder.forward_features(x), output_size=x.shape[2:])
    loss, _ = method({"input": x, "target": target})
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-10)


def test_pretext_errors_are_clear():
    with pytest.raises(ConfigError, match="task"):
        PretextMethod(_encoder(2))
    with pytest.raises(ConfigError, match="does not fit"):
        PretextMethod(_encoder(2), spec={"name": "x", "target_kind": "mask", "loss": "mse"})
    with pytest.raises(ConfigError, match="3D"):
        PretextMethod(_encoder(3), task="rotation", task_args={"spatial_dims": 2})
    method = build_method("pretext", _encoder(2), task="rotation")
    assert method.spec.num_classes == build_pretext("rotation", spatial_dims=2).spec.num_classes
    with pytest.raises(DataError, match="input"):
        method({"views": [torch.randn(2, 1, 16, 16)] * 2})
    with pytest.raises(DataError, match="spatial"):
        method({"input": torch.randn(2, 1, 16, 16, 16), "target": torch.zeros(2, dtype=torch.long)})
    jigsaw = build_method("jigsaw", _encoder(2))
    with pytest.raises(DataError, match="9"):
        jigsaw({"input": torch.randn(2, 1, 16, 16), "target": torch.zeros(2, dtype=torch.long)})
