"""The joint-embedding methods: forward/backward in 2D and 3D, state, schedules, falling loss."""

from __future__ import annotations

import copy

import pytest
import torch

from methods_toy_problem import JOINT_EMBEDDING, SMALL_ARGS, smooth_images, tiny_encoder, train_losses, two_views
from medssl.errors import ConfigError, DataError
from medssl.methods import SSLMethod, build_method, list_methods, method_arguments
from medssl.utils.seeding import make_torch_generator


def _multi_crop(name: str) -> int:
    return 2 if name in ("dino", "swav") else 0


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", JOINT_EMBEDDING)
def test_forward_backward_and_interface(name, spatial_dims):
    encoder = tiny_encoder(spatial_dims)
    method = build_method(name, encoder, **SMALL_ARGS[name])
    assert isinstance(method, SSLMethod) and method.encoder is encoder
    assert method.batch_kind == "views" and method.num_views == 2 and method.local_views == method.num_local_views
    generator = make_torch_generator(0, name)
    images = smooth_images(4, 16, spatial_dims, generator)
    loss, logs = method(two_views(images, generator, local_size=8, local_views=_multi_crop(name)))
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert logs["loss"].requires_grad is False and float(logs["loss"]) == pytest.approx(float(loss.detach()))
    assert logs["embeddings"].ndim == 2 and logs["embeddings"].shape[0] == 4
    assert not logs["embeddings"].requires_grad
    for key, value in logs.items():
        assert isinstance(value, float) or (isinstance(value, torch.Tensor) and (value.ndim == 0 or key == "embeddings"))
    loss.backward()
    grads = [p.grad for p in encoder.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    method.on_train_step_end(1, 10)


@pytest.mark.parametrize("name", JOINT_EMBEDDING)
def test_loss_falls_on_a_toy_two_view_problem(name):
    torch.manual_seed(0)
    args = dict(SMALL_ARGS[name])
    if name == "moco":
        # MoCo's loss first rises while real keys replace the random initial queue, and a 0.999
        # key encoder does not move in 12 steps: fill the queue first and let the keys follow.
        args["momentum"] = 0.9
    method = build_method(name, tiny_encoder(), **args)
    if name == "moco":
        generator = make_torch_generator(1, "fill-queue")
        with torch.no_grad():
            for _ in range(4):
                method(two_views(smooth_images(16, 16, 2, generator), generator))
    losses = train_losses(method, steps=12, local_views=_multi_crop(name))
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < first - 0.05 * max(1.0, abs(first)), f"{name}: {losses}"


def _ema_check(method, online_modules, target_modules, base):
    before = [[p.detach().clone() for p in t.parameters()] for t in target_modules]
    with torch.no_grad():
        for module in online_modules:
            for p in module.parameters():
                p.add_(0.5)
    method.on_train_step_end(step=3, max_steps=12)
    # cosine schedule: tau = 1 - (1 - base) * (cos(pi * 3 / 12) + 1) / 2
    tau = 1 - (1 - base) * (torch.cos(torch.tensor(torch.pi * 3 / 12)).item() + 1) / 2
    assert float(method.current_momentum) == pytest.approx(tau, rel=1e-6)
    for old_list, online, target in zip(before, online_modules, target_modules):
        for old, p_online, p_target in zip(old_list, online.parameters(), target.parameters()):
            torch.testing.assert_close(p_target, tau * old + (1 - tau) * p_online, rtol=1e-5, atol=1e-6)
            assert not p_target.requires_grad


def test_byol_ema_update_math_and_target_without_gradient():
    method = build_method("byol", tiny_encoder(), **SMALL_ARGS["byol"], base_momentum=0.9)
    _ema_check(method, [method.encoder, method.projector], [method.target["encoder"], method.target["projector"]], 0.9)
    assert not any(p is q for p in method.target.parameters() for q in method.encoder.parameters())


def test_dino_ema_schedule_temperature_and_centre():
    method = build_method("dino", tiny_encoder(), **SMALL_ARGS["dino"], base_momentum=0.8,
                          warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_steps=6)
    _ema_check(method, [method.encoder, method.head], [method.teacher["encoder"], method.teacher["head"]], 0.8)
    assert method.loss.teacher_temperature() == pytest.approx(0.055)  # step 3 of a 6-step warm-up
    generator = make_torch_generator(0, "dino")
    method(two_views(smooth_images(4, 16, 2, generator), generator, local_size=8, local_views=2))
    assert torch.count_nonzero(method.loss.center) > 0


def test_moco_constant_momentum_and_queue_update():
    method = build_method("moco", tiny_encoder(), **SMALL_ARGS["moco"])
    generator = make_torch_generator(0, "moco")
    batch = two_views(smooth_images(4, 16, 2, generator), generator)
    loss, _ = method(batch)
    keys = torch.nn.functional.normalize(method._keys(batch["views"][1]), dim=1)
    torch.testing.assert_close(method.loss.queue.embeddings[:4], keys, rtol=1e-5, atol=1e-6)
    assert int(method.loss.queue.pointer) == 4
    method.on_train_step_end(5, 10)
    assert float(method.current_momentum) == pytest.approx(0.999)
    symmetric = build_method("moco", tiny_encoder(), **SMALL_ARGS["moco"], symmetric=True)
    symmetric(batch)
    assert int(symmetric.loss.queue.pointer) == 8  # both key sets, once


def test_swav_queue_and_prototype_freezing():
    method = build_method("swav", tiny_encoder(), **{**SMALL_ARGS["swav"], "freeze_prototypes_steps": 2,
                                                     "queue_size": 8})
    generator = make_torch_generator(0, "swav")
    loss, _ = method(two_views(smooth_images(4, 16, 2, generator), generator))
    loss.backward()
    assert torch.count_nonzero(method.prototypes.layer.weight.grad) == 0  # frozen at step 0
    assert int(method.queues[0].num_filled) == 4 and int(method.queues[1].num_filled) == 4
    assert torch.allclose(method.prototypes.layer.weight.norm(dim=1), torch.ones(8))
    method.zero_grad()
    method.on_train_step_end(2, 10)
    loss, _ = method(two_views(smooth_images(4, 16, 2, generator), generator))
    loss.backward()
    assert method.prototypes.layer.weight.grad.abs().sum() > 0


def test_dino_freezes_its_last_layer_for_the_first_steps():
    method = build_method("dino", tiny_encoder(), **SMALL_ARGS["dino"], freeze_last_layer_steps=1)
    generator = make_torch_generator(0, "dino-freeze")
    loss, _ = method(two_views(smooth_images(4, 16, 2, generator), generator))
    loss.backward()
    direction = method.head.last_layer.parametrizations.weight.original1
    assert torch.count_nonzero(direction.grad) == 0
    method.zero_grad()
    method.on_train_step_end(1, 10)
    loss, _ = method(two_views(smooth_images(4, 16, 2, generator), generator))
    loss.backward()
    assert direction.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["moco", "nnclr", "dino", "swav", "byol"])
def test_state_dict_round_trip_keeps_queues_centres_and_teachers(name):
    args = {**SMALL_ARGS[name], **({"queue_size": 8} if name == "swav" else {})}
    method = build_method(name, tiny_encoder(seed=1), **args)
    generator = make_torch_generator(0, "state")
    for step in range(1, 3):
        loss, _ = method(two_views(smooth_images(4, 16, 2, generator), generator))
        method.on_train_step_end(step, 10)
    state = copy.deepcopy(method.state_dict())
    stateful = [k for k in state if any(s in k for s in ("queue", "support_set", "center", "step", "momentum"))]
    assert stateful, f"{name} keeps no state in buffers"
    fresh = build_method(name, tiny_encoder(seed=2), **args)
    fresh.load_state_dict(state)
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, state[key]), key
    if name == "moco":
        assert int(fresh.loss.queue.pointer) == 8


def test_parameter_groups_exclude_biases_norms_and_frozen_teachers():
    method = build_method("byol", tiny_encoder(), **SMALL_ARGS["byol"])
    decay, no_decay = method.parameter_groups(weight_decay=0.05)
    assert decay["weight_decay"] == 0.05 and decay["lars_exclude"] is False
    assert no_decay["weight_decay"] == 0.0 and no_decay["lars_exclude"] is True
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    trainable = {id(p) for p in method.parameters() if p.requires_grad}
    grouped = [id(p) for g in (decay, no_decay) for p in g["params"]]
    assert sorted(grouped) == sorted(trainable) and len(grouped) == len(set(grouped))
    assert not {id(p) for p in method.target.parameters()} & set(grouped)
    bn = method.projector[1]
    assert any(p is bn.weight for p in no_decay["params"]) and any(p is bn.bias for p in no_decay["params"])


def test_registry_names_arguments_and_errors():
    assert set(JOINT_EMBEDDING) <= set(list_methods())
    assert {"pretext", "rotation", "jigsaw", "genesis", "corrupted_region"} <= set(list_methods())
    assert method_arguments("simclr")["temperature"] == 0.1
    assert method_arguments("barlow_twins")["lambda_offdiag"] == 5e-3
    with pytest.raises(ConfigError, match="available"):
        build_method("simclr2", tiny_encoder())
    with pytest.raises(ConfigError, match="temprature"):
        build_method("simclr", tiny_encoder(), temprature=0.2)
    method = build_method("simclr", tiny_encoder(), projection_dim=8)
    assert method.method_args == {"name": "simclr", "projection_dim": 8}
    with pytest.raises(DataError, match="views"):
        method({"input": torch.randn(2, 1, 16, 16)})
    with pytest.raises(DataError, match="at least 2 views"):
        method({"views": [torch.randn(2, 1, 16, 16)]})


def test_simclr_concatenated_views_equal_separate_in_eval_mode():
    method = build_method("simclr", tiny_encoder(), **SMALL_ARGS["simclr"]).eval()
    generator = make_torch_generator(0, "concat")
    views = two_views(smooth_images(4, 16, 2, generator), generator)["views"]
    together = method.encode_views(views, concatenate=True)
    apart = method.encode_views(views, concatenate=False)
    for a, b in zip(together, apart):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
