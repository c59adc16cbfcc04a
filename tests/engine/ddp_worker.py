"""Run by test_distributed.py under ``python -m torch.distributed.run`` (and in-process for 1 process).

Usage: ddp_worker.py RUN_DIR — trains two set-ups into RUN_DIR/exact and RUN_DIR/float32:
``exact``: float64 model, NT-Xent over ``gather_with_grad``, synchronised head BN (the math must
agree with one process to rounding); ``float32``: medssl.losses.NTXentLoss in float32.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from engine_toys import ToyMethod, ToyViews  # noqa: E402
from medssl.config import OptimizerConfig, PretrainConfig  # noqa: E402
from medssl.engine.distributed import barrier, cleanup, init_distributed  # noqa: E402
from medssl.engine.sync_batchnorm import DistributedBatchNorm  # noqa: E402
from medssl.engine.trainer import Trainer  # noqa: E402

CONFIG = PretrainConfig(
    steps=4, batch_size=8, log_every=1, checkpoint_every=2, tensorboard=False, device="cpu",
    optimizer=OptimizerConfig(name="lars", lr=0.5, weight_decay=1e-4, warmup_steps=1),
)
SETUPS = {"exact": ("ntxent_exact", torch.float64), "float32": ("ntxent", torch.float32)}


def run(run_dir: Path) -> None:
    torch.set_num_threads(1)
    ctx = init_distributed("cpu")
    try:
        for name, (loss, dtype) in SETUPS.items():
            torch.manual_seed(0)
            method = ToyMethod(loss=loss, batchnorm=True, dropout=0.0).to(dtype)
            trainer = Trainer(method, ToyViews(n=12, dtype=dtype), CONFIG, run_dir / name, seed=7, ctx=ctx)
            if ctx.is_distributed:
                assert isinstance(trainer.method.head[1], DistributedBatchNorm), "head BN not synchronised"
            trainer.fit()
            if ctx.is_main:
                torch.save(trainer.method.state_dict(), run_dir / name / f"final_{ctx.world_size}.pt")
        barrier(ctx)  # as run_pretraining does: no rank leaves the group while another still works
    finally:
        cleanup(ctx)


if __name__ == "__main__":
    os.environ.setdefault("MEDSSL_PROGRESS", "0")
    run(Path(sys.argv[1]))
