"""Consistency training on unlabeled patches (``finetune.semi``): the pieces, then whole runs."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn

from medssl.config import SemiSupervisedConfig, load_config
from medssl.errors import ConfigError
from medssl.eval.semi_supervised import (
    ConsistencyObjective,
    EMATeacher,
    PseudoLabelStats,
    apply_cutmix,
    class_thresholds,
    cross_pseudo_supervision,
    cutmix_boxes,
    masked_kl,
    masked_softmax_mse,
    perturbed_features,
    pseudo_label_loss,
    pseudo_labels,
    sharpen,
    sigmoid_rampup,
    softmax_mse,
)

from tests.study.cohort import write_disk_cohort


def _logits(seed: int = 0, shape=(2, 3, 6, 6)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 3


# ---- losses are zero exactly when the predictions agree ----------------------------------------


def test_consistency_losses_vanish_for_identical_predictions():
    z = _logits()
    p = torch.softmax(z, dim=1)
    labels, mask = pseudo_labels(p, class_thresholds(0.0, 3))
    assert float(softmax_mse(z, p)) == pytest.approx(0.0, abs=1e-7)
    assert float(masked_kl(z, p, mask, num_classes=3)) == pytest.approx(0.0, abs=1e-6)
    assert float(softmax_mse(z, torch.softmax(_logits(1), dim=1))) > 1e-3
    assert float(masked_kl(z, torch.softmax(_logits(1), dim=1), mask, num_classes=3)) > 1e-3


def test_confident_only_mean_teacher_leaves_unsure_voxels_to_the_labels():
    z, teacher = _logits(), torch.softmax(_logits(1), dim=1)
    everything = torch.ones(2, 6, 6, dtype=torch.bool)
    plain = masked_softmax_mse(z, teacher, everything, num_classes=3, class_balanced=False)
    assert float(plain) == pytest.approx(float(softmax_mse(z, teacher)), rel=1e-6)  # all confident: mean teacher
    assert float(masked_softmax_mse(z, teacher, ~everything, num_classes=3)) == 0.0
    some = torch.zeros_like(everything)
    some[0, :2] = True  # only these voxels may pull the student
    loss = masked_softmax_mse(z.requires_grad_(), teacher, some, num_classes=3)
    loss.backward()
    assert float(loss) > 0
    moved = z.grad.abs().sum(dim=1)
    assert bool((moved[some] > 0).all()) and float(moved[~some].sum()) == 0.0
    config = SemiSupervisedConfig(method="mean_teacher", confident_only=True)
    assert config.confident_only and not SemiSupervisedConfig().confident_only


def test_pseudo_label_loss_ignores_unconfident_voxels():
    z = _logits()
    labels = torch.randint(0, 3, (2, 6, 6), generator=torch.Generator().manual_seed(2))
    nothing = torch.zeros_like(labels, dtype=torch.bool)
    assert float(pseudo_label_loss(z, labels, nothing, num_classes=3)) == 0.0
    everything = ~nothing
    plain = pseudo_label_loss(z, labels, everything, num_classes=3, class_balanced=False)
    assert float(plain) == pytest.approx(float(nn.functional.cross_entropy(z, labels)), rel=1e-6)


def test_class_balanced_loss_gives_a_small_class_the_weight_of_a_large_one():
    # 35 background voxels predicted perfectly, 1 kidney voxel predicted wrongly
    labels = torch.zeros(1, 6, 6, dtype=torch.long)
    labels[0, 0, 0] = 2
    z = torch.zeros(1, 3, 6, 6)
    z[:, 0] = 30.0  # every voxel says background, with certainty
    mask = torch.ones_like(labels, dtype=torch.bool)
    plain = float(pseudo_label_loss(z, labels, mask, num_classes=3, class_balanced=False))
    balanced = float(pseudo_label_loss(z, labels, mask, num_classes=3, class_balanced=True))
    kidney_ce = float(nn.functional.cross_entropy(z[:, :, 0, 0], labels[:, 0, 0]))
    assert plain == pytest.approx(kidney_ce / 36, rel=1e-4)
    assert balanced == pytest.approx(kidney_ce / 2, rel=1e-3)  # mean over the two classes present


def test_per_class_thresholds_keep_a_small_class_that_a_global_threshold_silences():
    p = torch.tensor([[0.97, 0.02, 0.01], [0.10, 0.10, 0.80]]).T.reshape(1, 3, 2, 1)
    _, global_mask = pseudo_labels(p, class_thresholds(0.95, 3))
    _, per_class = pseudo_labels(p, class_thresholds({0: 0.95, 2: 0.7}, 3))
    assert global_mask.flatten().tolist() == [True, False]
    assert per_class.flatten().tolist() == [True, True]
    with pytest.raises(ConfigError, match="class"):
        class_thresholds({5: 0.9}, 3)


def test_sharpen_and_rampup():
    p = torch.tensor([[0.7, 0.3]])
    assert torch.allclose(sharpen(p, 1.0), p)
    assert float(sharpen(p, 0.5)[0, 0]) > 0.7
    assert sigmoid_rampup(0, 10, 100) == 0.0 and sigmoid_rampup(110, 10, 100) == 1.0
    values = [sigmoid_rampup(s, 10, 100) for s in range(10, 111, 10)]
    assert values == sorted(values)


# ---- CutMix keeps images and pseudo-labels aligned ---------------------------------------------


def test_cutmix_mixes_images_and_labels_with_the_same_box():
    g = torch.Generator().manual_seed(0)
    boxes = cutmix_boxes(4, (8, 8, 8), g, prob=1.0)
    assert boxes.shape == (4, 8, 8, 8) and all(0 < int(b.sum()) < 512 for b in boxes)
    labels = torch.arange(4).reshape(4, 1, 1, 1).expand(4, 8, 8, 8).clone()
    images = labels[:, None].float() * 10
    mixed_images, mixed_labels = apply_cutmix(images, boxes), apply_cutmix(labels, boxes)
    assert torch.equal(mixed_images[:, 0], mixed_labels.float() * 10)
    assert torch.equal(mixed_labels[1][boxes[1]], torch.zeros(int(boxes[1].sum()), dtype=torch.long))  # from sample 0
    assert not cutmix_boxes(4, (8, 8), torch.Generator().manual_seed(0), prob=0.0).any()


# ---- the EMA teacher ---------------------------------------------------------------------------


def test_ema_teacher_update_follows_the_formula():
    student = nn.Linear(3, 2)
    teacher = EMATeacher(student, decay=0.9)
    before = teacher.network.weight.detach().clone()
    with torch.no_grad():
        student.weight.add_(1.0)
    a = teacher.update(student, step=1000)
    assert a == 0.9
    assert torch.allclose(teacher.network.weight, 0.9 * before + 0.1 * student.weight)
    assert not any(p.requires_grad for p in teacher.network.parameters())
    assert teacher.update(student, step=0) == pytest.approx(0.1)  # early steps follow the student


def test_feature_perturbation_drops_encoder_channels_only_inside_the_block():
    net = nn.Sequential()
    net.add_module("encoder", nn.Conv2d(1, 8, 1))
    net.add_module("head", nn.Conv2d(8, 1, 1))
    x = torch.rand(2, 1, 4, 4)
    plain = net(x)
    with perturbed_features(net, ["encoder"], 0.5, torch.Generator().manual_seed(0)):
        perturbed = net(x)
    assert not torch.allclose(plain, perturbed)
    assert torch.allclose(net(x), plain)  # the hook is gone
    with pytest.raises(ConfigError, match="encoder modules"):
        with perturbed_features(net, ["decoder"], 0.5, torch.Generator()):
            pass


def test_pseudo_label_statistics_against_the_truth():
    stats = PseudoLabelStats(3)
    labels = torch.tensor([[0, 0, 2, 2]])
    mask = torch.tensor([[True, False, True, True]])
    truth = torch.tensor([[0, 0, 2, 1]])
    stats.add(labels, mask, torch.full_like(truth, -1))  # a volume without annotation: counted, not checked
    stats.add(labels, mask, truth)
    out = stats.as_dict()
    assert out["pseudo_label_coverage"] == [0.5, None, 1.0]
    assert out["pseudo_label_accuracy"] == [1.0, None, 0.5]


def test_strong_views_share_the_weak_views_geometry():
    cfg = SemiSupervisedConfig(method="fixmatch", cutmix_prob=0.0)
    objective = ConsistencyObjective(cfg, 3, strong=lambda x, g: 1.0 - x)
    weak = torch.rand(2, 1, 8, 8, 8)
    (view,), (box,) = objective.strong_inputs(weak, torch.Generator().manual_seed(0))
    assert torch.allclose(view, 1.0 - weak) and not box.any()  # same voxels, other intensities
    unimatch = ConsistencyObjective(SemiSupervisedConfig(method="unimatch"), 3, strong=lambda x, g: x)
    assert len(unimatch.strong_inputs(weak, torch.Generator())[0]) == 2


def test_cross_pseudo_supervision_trains_each_network_on_the_others_labels_only():
    """CPS: network a's term is the masked cross-entropy to b's pseudo-labels; a's own labels never
    reach it, and no gradient crosses from one network's term to the other's logits."""
    z_a, z_b = _logits(1).requires_grad_(), _logits(2).requires_grad_()
    thresholds = class_thresholds(0.6, 3)
    targets_a = pseudo_labels(torch.softmax(z_a.detach(), 1), thresholds)
    targets_b = pseudo_labels(torch.softmax(z_b.detach(), 1), thresholds)
    term_a, term_b = cross_pseudo_supervision(z_a, z_b, targets_a, targets_b, num_classes=3)
    assert torch.allclose(term_a, pseudo_label_loss(z_a, *targets_b, num_classes=3))
    assert torch.allclose(term_b, pseudo_label_loss(z_b, *targets_a, num_classes=3))
    assert torch.autograd.grad(term_a, z_b, allow_unused=True)[0] is None
    assert torch.autograd.grad(term_b, z_a, allow_unused=True)[0] is None
    other_a = (torch.zeros_like(targets_a[0]), targets_a[1])  # a changes its mind: only b's term moves
    again_a, again_b = cross_pseudo_supervision(z_a, z_b, other_a, targets_b, num_classes=3)
    assert torch.equal(again_a, term_a) and not torch.equal(again_b, term_b)


def test_the_cps_peer_is_the_same_network_from_another_seed_and_leaves_the_global_generators_alone():
    from medssl.eval.finetune import build_peer
    from medssl.eval.networks import build_finetune_model

    cfg = load_config(None, ["finetune.num_classes=3"]).finetune
    model = build_finetune_model("segmentation", {"name": "resnet10_tiny", "spatial_dims": 2}, None, num_classes=3,
                                 seed=0)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    peer = build_peer(model, cfg, seed=0)
    assert torch.equal(torch.rand(3), expected)
    mine, theirs = model.network.state_dict(), peer.network.state_dict()
    assert mine.keys() == theirs.keys() and all(mine[k].shape == theirs[k].shape for k in mine)
    assert any(not torch.equal(mine[k], theirs[k]) for k in mine if k.endswith("weight"))
    again = build_peer(model, cfg, seed=0).network.state_dict()
    assert all(torch.equal(theirs[k], again[k]) for k in theirs)  # reproducible


def test_the_cps_peer_of_a_pretrained_init_shares_its_pretrained_encoder(tmp_path):
    from medssl.eval.finetune import build_peer
    from medssl.eval.networks import build_finetune_model
    from medssl.models import build_encoder, export_encoder

    encoder = build_encoder("resnet10_tiny", spatial_dims=2)
    path = export_encoder(encoder, tmp_path / "encoder.pt", {"method": "simclr"})
    cfg = load_config(None, ["finetune.num_classes=3"]).finetune
    model = build_finetune_model("segmentation", None, str(path), num_classes=3, seed=0)
    peer = build_peer(model, cfg, seed=0)
    mine, theirs = model.network.state_dict(), peer.network.state_dict()
    encoder_names = set(model.encoder_parameter_names)
    assert encoder_names and all(torch.equal(mine[k], theirs[k]) for k in encoder_names)
    assert any(not torch.equal(mine[k], theirs[k]) for k in mine if k not in encoder_names and k.endswith("weight"))


# ---- whole runs --------------------------------------------------------------------------------


def _config(labels, *extra):
    return load_config(None, [
        f"study.labels={labels}", "data.preprocess.target_spacing=null", "data.preprocess.crop_foreground=false",
        "pretrain.encoder.name=resnet10_tiny", "pretrain.encoder.spatial_dims=2", "finetune.patch_size=[32,32]",
        "finetune.steps=4", "finetune.batch_size=2", "finetune.device=cpu", "finetune.mask_labels=[1,2]",
        "finetune.num_classes=3", "finetune.eval_metrics=[dice]", *extra,
    ])


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from medssl.eval.data import load_labeled_data

    folder = tmp_path_factory.mktemp("semi")
    labels = write_disk_cohort(folder / "cohort", 10)
    config = _config(labels)
    return labels, load_labeled_data(config, folder / "cache")


def _run(cohort, *extra, unlabeled=("case04", "case05", "case06", "case07")):
    from medssl.eval.experiment import train_and_evaluate

    labels, data = cohort
    config = _config(labels, *extra)
    return train_and_evaluate(config, data, None, train_ids=["case00", "case01"], test_ids=["case08", "case09"],
                              unlabeled_ids=list(unlabeled), seed=3, keep_model=True)


@pytest.mark.parametrize("method", ["mean_teacher", "uda", "fixmatch", "unimatch", "cps"])
def test_every_method_trains_on_labeled_and_unlabeled_patches(cohort, method):
    outcome = _run(cohort, f"finetune.semi.method={method}", "finetune.semi.threshold=0.0")
    history = outcome.record["history"]
    assert outcome.record["semi"] == method and outcome.record["n_unlabeled"] == 4
    assert history["semi_steps"] == 4 and len(outcome.per_case) == 2
    labels_only = _run(cohort)
    assert history["forward_items"] > labels_only.record["history"]["forward_items"]
    # the unlabeled cases' own masks measure the teacher's labels (a diagnostic; mean teacher trains on soft ones)
    assert any(a is not None for a in history["pseudo_label_accuracy"])


@pytest.mark.parametrize("method", ["fixmatch", "cps"])
def test_a_semi_supervised_arm_before_its_start_step_is_the_labels_only_arm(cohort, method):
    """Also for CPS, whose peer trains on the labels from the first step: it never touches the student."""
    labels_only = _run(cohort)
    delayed = _run(cohort, f"finetune.semi.method={method}", "finetune.semi.start_step=100")
    assert delayed.record["history"]["semi_steps"] == 0
    a, b = labels_only.model.network.state_dict(), delayed.model.network.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("method", ["mean_teacher", "cps"])
def test_strong_views_never_reach_the_test_time_normalisation(cohort, method):
    """bn_statistics: labeled. With a vanishing consistency weight the semi-supervised path still
    forwards the strong views every step, yet the network (weights and batch-norm running
    statistics) is exactly the labels-only one; one forward over labeled and strong views together
    (mixed) changes it."""
    labels_only = _run(cohort).model.network.state_dict()
    tiny = (f"finetune.semi.method={method}", "finetune.semi.weight=1e-30")
    separate = _run(cohort, *tiny)
    assert separate.record["history"]["semi_steps"] == 4
    assert all(torch.equal(labels_only[k], v) for k, v in separate.model.network.state_dict().items())
    mixed = _run(cohort, *tiny, "finetune.semi.bn_statistics=mixed").model.network.state_dict()
    moved = [k for k in labels_only if k.endswith("running_var") and not torch.equal(labels_only[k], mixed[k])]
    assert moved


def test_frozen_running_statistics_restores_momentum_and_counts():
    from medssl.eval.semi_supervised import frozen_running_statistics

    network = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, momentum=0.3), nn.BatchNorm2d(2, momentum=None)).train()
    network(torch.randn(4, 1, 8, 8))
    before = {k: v.clone() for k, v in network.state_dict().items()}
    with frozen_running_statistics(network):
        out = network(torch.randn(4, 1, 8, 8) * 3 + 2)
    assert all(torch.equal(before[k], v) for k, v in network.state_dict().items())
    assert network[1].momentum == 0.3 and network[2].momentum is None
    assert out[:, 0].mean().abs() < 1e-5  # still normalised by the batch's own statistics


def test_the_unlabeled_annotation_never_trains_the_network(cohort, tmp_path):
    """Swapping the unlabeled cases' masks for garbage changes the diagnostics, never the weights."""
    from medssl.eval.data import load_labeled_data

    from tests.study.cohort import with_garbage_masks

    labels, data = cohort
    other = with_garbage_masks(labels, [4, 5, 6, 7], tmp_path)
    config = _config(other, "finetune.semi.method=fixmatch", "finetune.semi.threshold=0.0")
    garbage_data = load_labeled_data(config, tmp_path / "cache")
    from medssl.eval.experiment import train_and_evaluate

    kwargs = dict(train_ids=["case00", "case01"], test_ids=["case08", "case09"],
                  unlabeled_ids=["case04", "case05", "case06", "case07"], seed=3, keep_model=True)
    clean = train_and_evaluate(_config(labels, "finetune.semi.method=fixmatch", "finetune.semi.threshold=0.0"),
                               data, None, **kwargs)
    dirty = train_and_evaluate(config, garbage_data, None, **kwargs)
    a, b = clean.model.network.state_dict(), dirty.model.network.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert clean.record["history"]["pseudo_label_accuracy"] != dirty.record["history"]["pseudo_label_accuracy"]


def test_semi_supervised_runs_need_unlabeled_cases_and_never_test_cases(cohort):
    from medssl.errors import DataError

    with pytest.raises(DataError, match="unlabeled"):
        _run(cohort, "finetune.semi.method=fixmatch", unlabeled=())
    with pytest.raises(ConfigError, match="test"):
        _run(cohort, "finetune.semi.method=fixmatch", unlabeled=("case04", "case08"))


@pytest.mark.parametrize("method", ["fixmatch", "unimatch", "cps"])
def test_classification_uses_unlabeled_cases_per_case(cohort, method):
    """Per-case pseudo-labels for case-level classes (no CutMix); the pool's labels are diagnostics."""
    from medssl.eval.experiment import train_and_evaluate

    labels, data = cohort
    config = _config(labels, "finetune.task=classification", "finetune.num_classes=2", "finetune.mask_labels=null",
                     "finetune.input_size=[32,32]", f"finetune.semi.method={method}", "finetune.semi.threshold=0.0")
    outcome = train_and_evaluate(config, data, None, train_ids=["case00", "case01"], test_ids=["case08", "case09"],
                                 unlabeled_ids=["case04", "case05", "case06", "case07"], seed=3)
    history = outcome.record["history"]
    assert outcome.record["n_unlabeled"] == 4 and history["semi_steps"] == 4
    assert sum(c or 0 for c in history["pseudo_label_coverage"]) > 0
    assert any(a is not None for a in history["pseudo_label_accuracy"])
    assert set(outcome.per_case["case_id"]) == {"case08", "case09"}


def test_the_strong_intensity_setting_is_the_semi_supervised_strong_view():
    """finetune.intensity_augmentation=strong gives labels-only arms the transforms the strong view uses."""
    from medssl.eval.semi_supervised import build_strong_view
    from medssl.transforms.finetune_intensity import FinetuneIntensity

    recipe = FinetuneIntensity("strong", ct_window=(-200.0, 300.0), spatial_dims=2).for_modality("CT")
    strong = build_strong_view("ct", spatial_dims=2, ct_window=(-200.0, 300.0))
    x = torch.rand(3, 1, 16, 16)
    a = recipe.apply_intensity(x, torch.Generator().manual_seed(4))
    b = strong(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, x)


def test_cps_trains_the_student_on_the_peers_labels_and_refuses_fp16(cohort):
    labels_only = _run(cohort).model.network.state_dict()
    cps = _run(cohort, "finetune.semi.method=cps", "finetune.semi.threshold=0.0")
    assert cps.record["history"]["semi_steps"] == 4
    assert cps.record["history"]["forward_items"] == 4 * 2 * (2 + 2 * 2)  # 2 networks x (labeled + weak + strong)
    student = cps.model.network.state_dict()
    assert any(not torch.equal(labels_only[k], student[k]) for k in student if k.endswith("weight"))
    with pytest.raises(ConfigError, match="fp16"):
        _run(cohort, "finetune.semi.method=cps", "finetune.precision=fp16")
