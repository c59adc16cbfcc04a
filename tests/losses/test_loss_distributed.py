"""Two gloo processes holding half a batch each compute the loss of the whole batch.

Every rank gathers with gradient, so each rank's loss equals the single-process loss of the global
batch and each rank's embedding gradient, divided by the world size (what DDP's averaging does to
the parameter gradients), equals the single-process gradient of its half.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from medssl.losses import BarlowTwinsLoss, DINOLoss, InfoNCEQueueLoss, NNCLRLoss, NTXentLoss, VICRegLoss, sinkhorn_knopp
from medssl.utils.distributed import gather_with_grad, get_rank, get_world_size

WORLD = 2
BATCH = 8


def _data():
    generator = torch.Generator().manual_seed(0)
    z1 = torch.randn(BATCH, 6, generator=generator)
    z2 = z1 + 0.5 * torch.randn(BATCH, 6, generator=generator)
    return z1, z2


def _losses():
    return {
        "ntxent": lambda: NTXentLoss(temperature=0.2),
        "barlow": lambda: BarlowTwinsLoss(lambda_offdiag=0.05),
        "vicreg": lambda: VICRegLoss(),
        "moco": lambda: InfoNCEQueueLoss(dim=6, queue_size=16, seed=1),
        "nnclr": lambda: NNCLRLoss(dim=6, support_set_size=16),
    }


def _evaluate(rows: slice) -> dict[str, object]:
    """Loss values, embedding gradients and state, on the rows ``rows`` of the batch."""
    z1_all, z2_all = _data()
    results: dict[str, object] = {}
    for name, build in _losses().items():
        loss = build()
        z1 = z1_all[rows].clone().requires_grad_(True)
        z2 = z2_all[rows].clone().requires_grad_(True)
        if name == "nnclr":  # a second step so the support set is used
            loss(z1.detach(), z2.detach())
            value = loss(z1.detach() + 0.1, z2.detach(), z1, z2)
        else:
            value = loss(z1, z2)
        value.backward()
        grad2 = z2.grad if z2.grad is not None else torch.zeros_like(z2)
        results[name] = (value.detach(), z1.grad.clone(), grad2.clone(), {k: v.clone() for k, v in loss.state_dict().items()})
    teacher = z1_all[rows] * 3
    dino = DINOLoss(out_dim=6)
    dino([z1_all[rows], z2_all[rows]], [teacher, teacher + 1])
    results["dino_center"] = dino.center.clone()
    results["sinkhorn"] = sinkhorn_knopp(z1_all[rows] / 4, iterations=3, epsilon=0.05)
    gathered = gather_with_grad(z1_all[rows].clone().requires_grad_(True))
    results["gather"] = gathered.detach()
    results["world"] = (get_rank(), get_world_size())
    return results


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        half = BATCH // WORLD
        results = _evaluate(slice(rank * half, (rank + 1) * half))
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("ddp_losses")
    mp.spawn(_worker, args=(_free_port(), str(out_dir)), nprocs=WORLD, join=True)
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.mark.parametrize("name", list(_losses()))
def test_two_ranks_compute_the_global_batch_loss_and_gradient(two_ranks, name):
    single = _evaluate(slice(0, BATCH))
    value, grad1, grad2, state = single[name]
    half = BATCH // WORLD
    for rank, results in enumerate(two_ranks):
        rank_value, rank_grad1, rank_grad2, rank_state = results[name]
        torch.testing.assert_close(rank_value, value, rtol=1e-5, atol=1e-6)
        rows = slice(rank * half, (rank + 1) * half)
        torch.testing.assert_close(rank_grad1 / WORLD, grad1[rows], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(rank_grad2 / WORLD, grad2[rows], rtol=1e-4, atol=1e-6)
        for key, tensor in state.items():  # queues filled with the global batch, in the same order
            torch.testing.assert_close(rank_state[key], tensor, rtol=1e-5, atol=1e-6, msg=key)


def test_two_ranks_share_dino_centre_sinkhorn_and_gather(two_ranks):
    single = _evaluate(slice(0, BATCH))
    half = BATCH // WORLD
    for rank, results in enumerate(two_ranks):
        assert results["world"] == (rank, WORLD)
        torch.testing.assert_close(results["dino_center"], single["dino_center"], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(results["sinkhorn"], single["sinkhorn"][rank * half:(rank + 1) * half],
                                   rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(results["gather"], single["gather"])
