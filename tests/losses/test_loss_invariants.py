"""Invariants the losses must keep: batch permutation, scale, known minima, where gradients flow."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medssl.losses import (
    BarlowTwinsLoss,
    BYOLLoss,
    DINOLoss,
    EmbeddingQueue,
    InfoNCEQueueLoss,
    NNCLRLoss,
    NTXentLoss,
    SimSiamLoss,
    SwAVLoss,
    VICRegLoss,
)


@pytest.fixture()
def pair():
    generator = torch.Generator().manual_seed(0)
    z1 = torch.randn(8, 6, generator=generator)
    z2 = z1 + 0.3 * torch.randn(8, 6, generator=generator)
    return z1, z2


@pytest.mark.parametrize("loss", [NTXentLoss(), BarlowTwinsLoss(), VICRegLoss()], ids=["ntxent", "barlow", "vicreg"])
def test_same_permutation_of_both_views_changes_nothing(loss, pair):
    z1, z2 = pair
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(loss(z1, z2), loss(z1[perm], z2[perm]), rtol=1e-5, atol=1e-6)


def test_permuting_only_one_view_breaks_the_pairs(pair):
    z1, z2 = pair
    perm = torch.roll(torch.arange(8), 1)
    assert NTXentLoss()(z1, z2[perm]) > NTXentLoss()(z1, z2) + 0.5
    assert BarlowTwinsLoss()(z1, z2[perm]) > BarlowTwinsLoss()(z1, z2) + 0.5


def test_scaling_does_not_matter_where_embeddings_are_normalised(pair):
    z1, z2 = pair
    assert torch.allclose(NTXentLoss()(z1, z2), NTXentLoss()(3.0 * z1, 0.5 * z2), atol=1e-5)
    assert torch.allclose(BYOLLoss()(z1, z2, z2, z1), BYOLLoss()(4 * z1, z2, 2 * z2, z1), atol=1e-5)
    assert torch.allclose(SimSiamLoss()(z1, z2, z2, z1), SimSiamLoss()(4 * z1, z2, 2 * z2, z1), atol=1e-6)
    # Barlow standardises each view over the batch: per-feature scale and shift vanish (up to eps)
    scale, shift = torch.linspace(0.5, 4.0, 6), torch.linspace(-2, 2, 6)
    assert torch.allclose(BarlowTwinsLoss()(z1, z2), BarlowTwinsLoss()(z1 * scale + shift, z2), rtol=1e-4)


def test_vicreg_is_not_scale_invariant(pair):
    # the variance hinge is on the absolute std: shrinking the embedding must cost
    z1, z2 = pair
    assert VICRegLoss()(0.1 * z1, 0.1 * z2) > VICRegLoss()(z1, z2)


def test_perfect_alignment_gives_the_known_minimum():
    decorrelated = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    assert BarlowTwinsLoss(eps=1e-12)(decorrelated, decorrelated).item() == pytest.approx(0.0, abs=1e-10)
    assert VICRegLoss()(decorrelated, decorrelated).item() == pytest.approx(0.0, abs=1e-10)
    p = torch.randn(5, 4)
    assert BYOLLoss()(p, p, p, p).item() == pytest.approx(0.0, abs=1e-6)
    assert SimSiamLoss()(p, p, p, p).item() == pytest.approx(-1.0, abs=1e-6)
    # NT-Xent: aligned views of orthogonal samples at a small temperature approach 0
    eye = torch.eye(4)
    assert NTXentLoss(temperature=0.01)(eye, eye).item() < 1e-6


def test_ntxent_lower_for_aligned_than_for_random_views(pair):
    z1, z2 = pair
    assert NTXentLoss()(z1, z1) < NTXentLoss()(z1, z2) < NTXentLoss()(z1, torch.randn(8, 6))


def test_stop_gradient_on_targets_byol_simsiam():
    for loss in (BYOLLoss(), SimSiamLoss()):
        p1, p2, z1, z2 = (torch.randn(4, 3, requires_grad=True) for _ in range(4))
        loss(p1, p2, z1, z2).backward()
        assert z1.grad is None and z2.grad is None
        assert p1.grad.abs().sum() > 0 and p2.grad.abs().sum() > 0


def test_gradients_reach_both_views_in_symmetric_losses(pair):
    for loss in (NTXentLoss(), BarlowTwinsLoss(), VICRegLoss()):
        z1, z2 = (z.clone().requires_grad_(True) for z in pair)
        loss(z1, z2).backward()
        assert z1.grad.abs().sum() > 0 and z2.grad.abs().sum() > 0


def test_moco_keys_and_queue_get_no_gradient():
    loss = InfoNCEQueueLoss(dim=4, queue_size=8)
    q, k = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4, requires_grad=True)
    loss(q, k).backward()
    assert q.grad.abs().sum() > 0 and k.grad is None
    assert not loss.queue.embeddings.requires_grad


def test_moco_eval_mode_and_update_flag_leave_the_queue_alone():
    loss = InfoNCEQueueLoss(dim=4, queue_size=8)
    before = loss.queue.embeddings.clone()
    loss(torch.randn(3, 4), torch.randn(3, 4), update_queue=False)
    loss.eval()
    loss(torch.randn(3, 4), torch.randn(3, 4))
    assert torch.equal(before, loss.queue.embeddings) and int(loss.queue.pointer) == 0


def test_nnclr_gradient_reaches_predictions_only():
    loss = NNCLRLoss(dim=4, support_set_size=8)
    loss.support_set.enqueue(F.normalize(torch.randn(8, 4), dim=1))
    z1, z2, p1, p2 = (torch.randn(3, 4, requires_grad=True) for _ in range(4))
    loss(z1, z2, p1, p2).backward()
    assert z1.grad is None and z2.grad is None
    assert p1.grad.abs().sum() > 0 and p2.grad.abs().sum() > 0


def test_dino_teacher_gets_no_gradient_and_every_student_crop_does():
    loss = DINOLoss(out_dim=5)
    student = [torch.randn(3, 5, requires_grad=True) for _ in range(3)]
    teacher = [torch.randn(3, 5, requires_grad=True) for _ in range(2)]
    loss(student, teacher).backward()
    assert all(t.grad is None for t in teacher)
    assert all(s.grad.abs().sum() > 0 for s in student)


def test_dino_sharper_teacher_with_lower_temperature():
    # a teacher that agrees with the student: lower loss at the teacher's sharpening temperature
    loss = DINOLoss(out_dim=4, teacher_temp=0.04)
    logits = torch.tensor([[4.0, 0.0, 0.0, 0.0]])
    agree = loss.eval()([logits, logits], [logits, logits])
    disagree = loss.eval()([logits, logits], [logits.roll(1, dims=1), logits.roll(1, dims=1)])
    assert agree < disagree


def test_swav_assignment_gets_no_gradient_but_all_crops_predict():
    scores = [torch.randn(6, 4, requires_grad=True) for _ in range(3)]
    SwAVLoss()(scores).backward()
    assert all(s.grad.abs().sum() > 0 for s in scores)  # every crop predicts another's assignment


def test_losses_run_in_float32_under_bf16_autocast(pair):
    z1, z2 = (z.bfloat16() for z in pair)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        value = NTXentLoss()(z1, z2)
        barlow = BarlowTwinsLoss()(z1, z2)
    assert value.dtype == torch.float32 and barlow.dtype == torch.float32
    assert torch.allclose(value, NTXentLoss()(z1.float(), z2.float()), atol=1e-5)


def test_queue_wraps_and_state_dict_round_trip():
    queue = EmbeddingQueue(size=5, dim=2)
    queue.enqueue(torch.arange(8.0).view(4, 2))
    queue.enqueue(torch.full((3, 2), 9.0))  # rows 4, 0, 1 overwritten
    assert int(queue.pointer) == 2 and int(queue.num_filled) == 5
    assert queue.embeddings[:2].eq(9).all() and queue.embeddings[4].eq(9).all()
    assert torch.equal(queue.embeddings[2], torch.tensor([4.0, 5.0]))
    copy = EmbeddingQueue(size=5, dim=2)
    copy.load_state_dict(queue.state_dict())
    assert torch.equal(copy.embeddings, queue.embeddings) and int(copy.pointer) == 2
    big = EmbeddingQueue(size=3, dim=1)
    big.enqueue(torch.arange(7.0).view(7, 1))  # more rows than the queue: the newest 3 survive
    assert big.embeddings.flatten().tolist() == [4.0, 5.0, 6.0] and int(big.num_filled) == 3


def test_loss_state_lives_in_state_dict():
    assert {"queue.embeddings", "queue.pointer", "queue.num_filled"} <= set(InfoNCEQueueLoss(4, 8).state_dict())
    assert {"center", "step"} <= set(DINOLoss(4).state_dict())
    assert "support_set.embeddings" in NNCLRLoss(4, 8).state_dict()
