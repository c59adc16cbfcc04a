"""Each loss against hand-computed values and an independent numpy reading of its paper."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import losses_numpy_reference as ref
from medssl.errors import ConfigError
from medssl.losses import (
    BarlowTwinsLoss,
    BYOLLoss,
    DINOLoss,
    InfoNCEQueueLoss,
    NNCLRLoss,
    NTXentLoss,
    SimSiamLoss,
    SwAVLoss,
    VICRegLoss,
    sinkhorn_knopp,
)


def _randn(rng: np.random.Generator, *shape: int) -> torch.Tensor:
    return torch.from_numpy(rng.standard_normal(shape).astype(np.float32))


def test_ntxent_hand_computed_orthogonal_pairs():
    # Two samples, views identical, the samples orthogonal, tau = 1: for every anchor the positive
    # has similarity 1 and the two negatives 0, so l = -log(e / (e + 2)) for all 4 anchors.
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    value = NTXentLoss(temperature=1.0)(z, z.clone())
    assert value.item() == pytest.approx(math.log(1 + 2 / math.e), abs=1e-6)


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_ntxent_matches_numpy_reference(temperature):
    rng = np.random.default_rng(0)
    z1, z2 = _randn(rng, 6, 5), _randn(rng, 6, 5)
    expected = ref.ntxent(z1.numpy(), z2.numpy(), temperature)
    assert NTXentLoss(temperature)(z1, z2).item() == pytest.approx(expected, rel=1e-5)


def test_infonce_queue_matches_numpy_and_enqueues_keys():
    rng = np.random.default_rng(1)
    loss = InfoNCEQueueLoss(dim=4, queue_size=8, temperature=0.2, seed=3)
    queue_before = loss.queue.embeddings.clone()
    q, k = _randn(rng, 3, 4), _randn(rng, 3, 4)
    expected = ref.infonce_queue(q.numpy(), k.numpy(), queue_before.numpy(), 0.2)
    assert loss(q, k).item() == pytest.approx(expected, rel=1e-5)
    # the three keys (normalised) replaced the three oldest rows; the pointer moved on
    assert torch.allclose(loss.queue.embeddings[:3], torch.nn.functional.normalize(k, dim=1))
    assert torch.equal(loss.queue.embeddings[3:], queue_before[3:])
    assert int(loss.queue.pointer) == 3


def test_infonce_initial_queue_is_unit_and_seeded():
    a = InfoNCEQueueLoss(dim=8, queue_size=16, seed=5)
    b = InfoNCEQueueLoss(dim=8, queue_size=16, seed=5)
    c = InfoNCEQueueLoss(dim=8, queue_size=16, seed=6)
    assert torch.equal(a.queue.embeddings, b.queue.embeddings)
    assert not torch.equal(a.queue.embeddings, c.queue.embeddings)
    assert torch.allclose(a.queue.embeddings.norm(dim=1), torch.ones(16), atol=1e-6)


def test_byol_and_simsiam_match_numpy_reference():
    rng = np.random.default_rng(2)
    p1, p2, z1, z2 = (_randn(rng, 5, 7) for _ in range(4))
    args = [t.numpy() for t in (p1, p2, z1, z2)]
    assert BYOLLoss()(p1, p2, z1, z2).item() == pytest.approx(ref.byol(*args), rel=1e-5)
    assert SimSiamLoss()(p1, p2, z1, z2).item() == pytest.approx(ref.simsiam(*args), rel=1e-5)


def test_byol_hand_computed_orthogonal_prediction():
    # p orthogonal to its target: 2 - 2*0 = 2 per direction, the directions summed -> 4
    p = torch.tensor([[1.0, 0.0]])
    z = torch.tensor([[0.0, 3.0]])
    assert BYOLLoss()(p, p, z, z).item() == pytest.approx(4.0)
    assert SimSiamLoss()(p, p, z, z).item() == pytest.approx(0.0, abs=1e-7)


def test_barlow_matches_numpy_reference():
    rng = np.random.default_rng(3)
    z1, z2 = _randn(rng, 10, 6), _randn(rng, 10, 6)
    expected = ref.barlow(z1.numpy(), z2.numpy(), 5e-3)
    assert BarlowTwinsLoss()(z1, z2).item() == pytest.approx(expected, rel=1e-5)
    assert BarlowTwinsLoss(lambda_offdiag=0.1)(z1, z2).item() == pytest.approx(
        ref.barlow(z1.numpy(), z2.numpy(), 0.1), rel=1e-5)


def test_barlow_hand_computed_anticorrelated_views():
    # view 2 = -view 1 with decorrelated +-1 features: C = -I, so sum (1 - (-1))^2 = 4 per feature
    z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    assert BarlowTwinsLoss(eps=1e-12)(z, -z).item() == pytest.approx(8.0, rel=1e-6)


def test_vicreg_terms_and_weights_match_numpy_reference():
    rng = np.random.default_rng(4)
    z1, z2 = _randn(rng, 9, 5) * 0.5, _randn(rng, 9, 5) * 0.5
    expected = ref.vicreg_terms(z1.numpy(), z2.numpy())
    loss = VICRegLoss()
    terms = loss.terms(z1, z2)
    for key in ("invariance", "variance", "covariance"):
        assert terms[key].item() == pytest.approx(expected[key], rel=1e-5)
    total = 25 * expected["invariance"] + 25 * expected["variance"] + expected["covariance"]
    assert loss(z1, z2).item() == pytest.approx(total, rel=1e-5)


def test_vicreg_hand_computed_collapse():
    # every sample the same embedding: std = sqrt(0 + 1e-4) = 0.01, hinge 0.99 per feature and view
    z = torch.ones(4, 3)
    terms = VICRegLoss().terms(z, z)
    assert terms["variance"].item() == pytest.approx(2 * 0.99, rel=1e-6)
    assert terms["invariance"].item() == 0.0
    assert terms["covariance"].item() == 0.0


def test_dino_matches_numpy_reference_with_centre_and_multicrop():
    rng = np.random.default_rng(5)
    loss = DINOLoss(out_dim=6, teacher_temp=0.07, warmup_teacher_temp=0.04, warmup_teacher_temp_steps=4)
    loss.center.copy_(_randn(rng, 1, 6) * 0.1)
    loss.set_step(2)  # halfway through the warm-up: 0.055
    student = [_randn(rng, 3, 6) for _ in range(4)]  # 2 global + 2 local
    teacher = [_randn(rng, 3, 6) for _ in range(2)]
    centre_before = loss.center.clone()
    expected = ref.dino([s.numpy() for s in student], [t.numpy() for t in teacher],
                        centre_before.numpy().astype(np.float64), 0.055, 0.1)
    assert loss(student, teacher).item() == pytest.approx(expected, rel=1e-5)
    batch_mean = torch.cat(teacher).mean(dim=0, keepdim=True)
    assert torch.allclose(loss.center, 0.9 * centre_before + 0.1 * batch_mean, atol=1e-6)


def test_dino_teacher_temperature_schedule():
    loss = DINOLoss(out_dim=4, teacher_temp=0.07, warmup_teacher_temp=0.04, warmup_teacher_temp_steps=30)
    assert loss.teacher_temperature(0) == pytest.approx(0.04)
    assert loss.teacher_temperature(15) == pytest.approx(0.055)
    assert loss.teacher_temperature(30) == pytest.approx(0.07)
    assert loss.teacher_temperature(1000) == pytest.approx(0.07)


def test_dino_concatenated_inputs_equal_lists_and_eval_keeps_centre():
    rng = np.random.default_rng(6)
    student, teacher = _randn(rng, 8, 5), _randn(rng, 4, 5)
    loss = DINOLoss(out_dim=5).eval()
    as_lists = loss(list(student.chunk(4)), list(teacher.chunk(2)))
    concatenated = loss(student, teacher, num_student_views=4, num_teacher_views=2)
    assert torch.allclose(as_lists, concatenated)
    assert torch.count_nonzero(loss.center) == 0


def test_nnclr_matches_numpy_reference_with_a_filled_support_set():
    rng = np.random.default_rng(7)
    loss = NNCLRLoss(dim=4, support_set_size=6, temperature=0.1)
    support = torch.nn.functional.normalize(_randn(rng, 6, 4), dim=1)
    loss.support_set.enqueue(support)
    z1, z2, p1, p2 = (_randn(rng, 3, 4) for _ in range(4))
    expected = ref.nnclr(*(t.numpy() for t in (z1, z2, p1, p2)), support.numpy().astype(np.float64), 0.1)
    assert loss(z1, z2, p1, p2).item() == pytest.approx(expected, rel=1e-5)


def test_nnclr_neighbours_are_support_rows_and_first_step_uses_itself():
    loss = NNCLRLoss(dim=2, support_set_size=4)
    z = torch.tensor([[2.0, 0.1]])
    assert torch.allclose(loss.nearest_neighbours(z), torch.nn.functional.normalize(z, dim=1))
    loss.support_set.enqueue(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    assert torch.equal(loss.nearest_neighbours(z), torch.tensor([[1.0, 0.0]]))


def test_sinkhorn_matches_numpy_and_is_equipartitioned():
    rng = np.random.default_rng(8)
    scores = torch.nn.functional.normalize(_randn(rng, 12, 4), dim=1) * 0.9
    q = sinkhorn_knopp(scores, iterations=3, epsilon=0.05)
    assert np.allclose(q.double().numpy(), ref.sinkhorn(scores.numpy(), 3, 0.05), rtol=1e-4, atol=1e-6)
    assert torch.allclose(q.sum(dim=1), torch.ones(12), atol=1e-5)  # each sample: a distribution
    # with enough iterations the prototypes share the batch equally (12 / 4 = 3 each)
    balanced = sinkhorn_knopp(scores, iterations=200, epsilon=0.05)
    assert torch.allclose(balanced.sum(dim=0), torch.full((4,), 3.0), atol=1e-3)


def test_swav_matches_numpy_reference_with_multicrop():
    rng = np.random.default_rng(9)
    scores = [torch.nn.functional.normalize(_randn(rng, 6, 5), dim=1) for _ in range(3)]
    expected = ref.swav([s.numpy() for s in scores], 0.1, 3, 0.05)
    assert SwAVLoss()(scores).item() == pytest.approx(expected, rel=1e-5)


def test_swav_extra_scores_join_sinkhorn_only():
    rng = np.random.default_rng(10)
    scores = [torch.nn.functional.normalize(_randn(rng, 4, 3), dim=1) for _ in range(2)]
    queue_scores = [torch.nn.functional.normalize(_randn(rng, 8, 3), dim=1) for _ in range(2)]
    value = SwAVLoss()(scores, extra_scores=queue_scores)
    total = 0.0
    for a, b in ((0, 1), (1, 0)):
        q = ref.sinkhorn(np.concatenate([queue_scores[a].numpy(), scores[a].numpy()]), 3, 0.05)[-4:]
        log_p = np.log(ref.softmax(scores[b].numpy().astype(np.float64) / 0.1))
        total -= np.mean(np.sum(q * log_p, axis=1))
    assert value.item() == pytest.approx(total / 2, rel=1e-5)


@pytest.mark.parametrize("build", [
    lambda: NTXentLoss(temperature=0.0),
    lambda: BarlowTwinsLoss(lambda_offdiag=-1.0),
    lambda: VICRegLoss(variance_weight=-1.0),
    lambda: DINOLoss(out_dim=4, center_momentum=1.5),
    lambda: SwAVLoss(sinkhorn_iterations=0),
    lambda: InfoNCEQueueLoss(queue_size=0),
])
def test_bad_hyperparameters_raise_config_errors(build):
    with pytest.raises(ConfigError):
        build()


def test_mismatched_views_raise_clear_errors():
    with pytest.raises(ValueError, match="same shape"):
        NTXentLoss()(torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match="at least 2"):
        BarlowTwinsLoss()(torch.randn(1, 3), torch.randn(1, 3))
