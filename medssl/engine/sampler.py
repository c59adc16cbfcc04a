"""Deterministic, resumable, distributed-aware sampling of dataset indices, epoch by epoch.

Epoch ``e`` visits the dataset in the order of a permutation drawn from
``make_rng(seed, "epoch-sampler", e)``, so the order depends only on the run seed and the epoch
(not on the number of processes or workers). The permutation is extended cyclically to a whole
number of optimiser steps (``ceil(N / S) * S`` indices, ``S`` = batch per process x processes x
accumulation steps), so a dataset smaller than one batch still trains, every process gets the same
number of batches, an optimiser step never straddles two epochs, and the data of a step does not
depend on how the step is split into processes and micro-batches; process ``r`` of ``R`` takes positions ``r, r + R, r + 2R, ...`` as torch's
``DistributedSampler`` does, so the ``k``-th batch of all processes together holds exactly the
positions ``[k G, (k + 1) G)``, the same samples a single process with batch ``G`` would see.

What torch's ``DistributedSampler`` lacks, and this class adds: starting in the middle of an epoch
(``set_position``), for exact resumption after a checkpoint, and padding to whole global batches.

Example:
    >>> sampler = EpochSampler(10, batch_size=4, seed=0)
    >>> len(sampler), sampler.batches_per_epoch
    (12, 3)
    >>> first = list(sampler)
    >>> sampler.set_position(epoch=0, batch=2)
    >>> list(sampler) == first[8:]
    True
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
from torch.utils.data import Sampler

from medssl.errors import ConfigError
from medssl.utils.seeding import make_rng


class EpochSampler(Sampler[int]):
    """Indices of one epoch for one process; see the module docstring.

    Args:
        dataset_size: number of items in the dataset (``N``).
        batch_size: items per batch on THIS process (the micro-batch).
        seed: the run seed.
        num_replicas: number of processes (``R``); 1 when not distributed.
        rank: this process (``0 <= rank < R``).
        shuffle: draw a permutation per epoch (``False``: the identity order, for evaluation).
        accumulation: micro-batches per optimiser step (the epoch is padded to whole steps).
    """

    def __init__(
        self,
        dataset_size: int,
        batch_size: int,
        seed: int,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        accumulation: int = 1,
    ) -> None:
        if dataset_size <= 0:
            raise ConfigError("the dataset is empty: no volumes to sample (check data.root / data.manifest)")
        if batch_size <= 0:
            raise ConfigError(f"batch size per process must be positive (got {batch_size})")
        if accumulation <= 0:
            raise ConfigError(f"accumulation must be positive (got {accumulation})")
        if num_replicas <= 0 or not 0 <= rank < num_replicas:
            raise ConfigError(f"invalid rank {rank} of {num_replicas} processes")
        self.dataset_size = int(dataset_size)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.shuffle = shuffle
        self.epoch = 0
        self.start_batch = 0
        self.accumulation = int(accumulation)
        global_batch = self.batch_size * self.num_replicas
        step_size = global_batch * self.accumulation
        self.steps_per_epoch = math.ceil(self.dataset_size / step_size)
        self.batches_per_epoch = self.steps_per_epoch * self.accumulation
        self.total_size = self.steps_per_epoch * step_size

    def epoch_order(self, epoch: int) -> np.ndarray:
        """All ``total_size`` positions of ``epoch`` (every process together), as dataset indices."""
        if self.shuffle:
            order = make_rng(self.seed, "epoch-sampler", epoch).permutation(self.dataset_size)
        else:
            order = np.arange(self.dataset_size)
        if self.total_size > self.dataset_size:
            order = np.resize(order, self.total_size)  # cyclic repetition
        return order

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` from its first batch."""
        self.set_position(epoch, 0)

    def set_position(self, epoch: int, batch: int) -> None:
        """Start ``epoch`` at its ``batch``-th batch (for resuming inside an epoch)."""
        if epoch < 0 or not 0 <= batch <= self.batches_per_epoch:
            raise ConfigError(
                f"sampler position epoch={epoch} batch={batch} is outside 0..{self.batches_per_epoch} batches"
            )
        self.epoch = int(epoch)
        self.start_batch = int(batch)

    def __iter__(self) -> Iterator[int]:
        mine = self.epoch_order(self.epoch)[self.rank :: self.num_replicas]
        start = self.start_batch * self.batch_size
        return iter(int(i) for i in mine[start:])

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch_size

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "start_batch": self.start_batch, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.set_position(state["epoch"], state["start_batch"])
