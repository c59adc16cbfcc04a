"""EpochSampler (deterministic, sharded, resumable) and the collapse monitors."""

import math

import numpy as np
import pytest
import torch

from medssl.engine.monitors import collapse_metrics, effective_rank, embedding_std
from medssl.engine.sampler import EpochSampler
from medssl.errors import ConfigError


def test_order_depends_on_seed_and_epoch_only():
    a, b = EpochSampler(10, 3, seed=1), EpochSampler(10, 3, seed=1)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)
    assert list(a) != list(EpochSampler(10, 3, seed=2))
    assert sorted(list(b)[:10]) == list(range(10))  # a permutation, padded cyclically to 12
    assert len(b) == 12 and b.batches_per_epoch == 4


def test_shards_reassemble_the_single_process_batches():
    single = list(EpochSampler(21, batch_size=8, seed=0))
    shards = [list(EpochSampler(21, batch_size=4, seed=0, num_replicas=2, rank=r)) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 12
    for k in range(3):  # the k-th global batch holds the same items in both set-ups
        together = shards[0][4 * k : 4 * k + 4] + shards[1][4 * k : 4 * k + 4]
        assert sorted(together) == sorted(single[8 * k : 8 * k + 8])


def test_small_dataset_still_fills_a_batch_and_resume_position():
    sampler = EpochSampler(3, batch_size=8, seed=0)
    assert len(list(sampler)) == 8 and set(sampler) == {0, 1, 2}
    s = EpochSampler(10, batch_size=2, seed=5, num_replicas=2, rank=1)
    s.set_epoch(3)
    full = list(s)
    s.set_position(3, 2)
    assert list(s) == full[4:] and len(s) == len(full) - 4
    restored = EpochSampler(10, batch_size=2, seed=5, num_replicas=2, rank=1)
    restored.load_state_dict(s.state_dict())
    assert list(restored) == full[4:]
    with pytest.raises(ConfigError):
        s.set_position(0, 99)
    with pytest.raises(ConfigError, match="empty"):
        EpochSampler(0, 2, seed=0)


def test_embedding_std_of_collapse_and_of_spread_embeddings():
    g = torch.Generator().manual_seed(0)
    assert embedding_std(torch.ones(32, 16)) == pytest.approx(0.0, abs=1e-7)
    spread = torch.randn(4096, 64, generator=g)
    assert embedding_std(spread) == pytest.approx(1 / math.sqrt(64), rel=0.03)
    # scale-invariant (embeddings are normalised first)
    assert embedding_std(10 * spread) == pytest.approx(embedding_std(spread), rel=1e-5)
    assert collapse_metrics(spread)["embed_std_ratio"] == pytest.approx(1.0, rel=0.03)


def test_effective_rank_counts_equal_directions():
    q, _ = torch.linalg.qr(torch.randn(64, 64, generator=torch.Generator().manual_seed(1)))
    for k in (1, 3, 8):
        z = q[:, :k] @ torch.eye(k, 16)  # k orthogonal directions of equal energy
        assert effective_rank(z) == pytest.approx(k, rel=1e-4)
    # unequal singular values: exp(entropy) of p = s / sum(s), computed independently
    s = np.array([3.0, 1.0, 0.5])
    p = s / s.sum()
    z = q[:, :3] @ torch.diag(torch.tensor(s, dtype=torch.float32)) @ torch.eye(3, 5)
    assert effective_rank(z) == pytest.approx(float(np.exp(-(p * np.log(p)).sum())), rel=1e-4)
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        effective_rank(torch.ones(2, 3, 4))


def test_epoch_padding_follows_the_optimiser_step_not_its_split():
    whole = EpochSampler(10, batch_size=8, seed=0)
    split = EpochSampler(10, batch_size=4, seed=0, accumulation=2)
    assert list(whole) == list(split) and len(whole) == 16
    assert split.batches_per_epoch == 4 and split.steps_per_epoch == 2
