"""The pretraining engine: training loop, checkpoints, optimisers, schedules, torchrun DDP.

| module | what it holds |
| --- | --- |
| :mod:`~medssl.engine.pretrain` | :func:`run_pretraining` (config -> run folder -> :class:`PretrainResult`) |
| :mod:`~medssl.engine.trainer` | :class:`Trainer`: accumulation, autocast, clipping, NaN stop, exact resume |
| :mod:`~medssl.engine.checkpoint` | atomic checkpoints, RNG states, config hash |
| :mod:`~medssl.engine.optim`, :mod:`~medssl.engine.lars`, :mod:`~medssl.engine.schedules` | SGD / AdamW / LARS, warm-up + cosine |
| :mod:`~medssl.engine.sampler` | :class:`EpochSampler`: deterministic, sharded, resumable |
| :mod:`~medssl.engine.distributed`, :mod:`~medssl.engine.sync_batchnorm` | torchrun set-up, DDP, global batch norm on CPU and GPU |
| :mod:`~medssl.engine.precision` | bf16 / fp16 autocast and loss scaling |
| :mod:`~medssl.engine.monitors` | collapse monitors: embedding std, effective rank |
| :mod:`~medssl.engine.metrics_log`, :mod:`~medssl.engine.environment` | metrics.csv + TensorBoard, environment.json |

See docs/distributed.md for launching on several GPUs or machines and resuming.
"""

from medssl.engine.checkpoint import config_hash, load_checkpoint, save_checkpoint
from medssl.engine.distributed import DistributedContext, init_distributed
from medssl.engine.lars import LARS
from medssl.engine.monitors import collapse_metrics, effective_rank, embedding_std
from medssl.engine.optim import build_optimizer
from medssl.engine.precision import PrecisionPolicy
from medssl.engine.pretrain import PretrainResult, run_pretraining
from medssl.engine.sampler import EpochSampler
from medssl.engine.schedules import WarmupCosineFactor, build_scheduler
from medssl.engine.sync_batchnorm import DistributedBatchNorm
from medssl.engine.trainer import Trainer, TrainOutcome

__all__ = [
    "DistributedBatchNorm",
    "DistributedContext",
    "EpochSampler",
    "LARS",
    "PrecisionPolicy",
    "PretrainResult",
    "TrainOutcome",
    "Trainer",
    "WarmupCosineFactor",
    "build_optimizer",
    "build_scheduler",
    "collapse_metrics",
    "config_hash",
    "effective_rank",
    "embedding_std",
    "init_distributed",
    "load_checkpoint",
    "run_pretraining",
    "save_checkpoint",
]
