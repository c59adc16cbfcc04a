"""DataLoaders that keep the model fed: one builder, one way to get the epoch into worker processes.

:func:`make_dataloader` is the project's one ``DataLoader`` builder (the pretraining engine, the
fine-tuning loops and the benchmarks use it): workers limited to ``worker_threads`` torch threads
each (:func:`worker_init_fn`), persistent workers, pinned memory when CUDA is present.

**The epoch in worker processes.** Items depend on ``(seed, epoch, index)``; a worker holds its own
copy of the dataset, so a ``set_epoch`` call in the main process does not reach it. When the dataset
has ``set_epoch`` and ``epoch``, the loader's sampler tags every index with the epoch
(:class:`EpochTaggedSampler`, ``(epoch, index)``, read when the epoch's iteration starts, in the main
process) and the dataset is wrapped in :class:`EpochAwareDataset`, which calls ``set_epoch`` on the
copy that builds the item. So: call ``dataset.set_epoch(epoch)`` (or, in the engine, advance the
sampler's epoch) before ``iter(loader)``; the items of that iteration are those of that epoch,
however many workers there are, persistent or not, and whatever they prefetched.

Example:
    >>> import torch
    >>> class Items(torch.utils.data.Dataset):
    ...     epoch = 0
    ...     def set_epoch(self, epoch): self.epoch = epoch
    ...     def __len__(self): return 4
    ...     def __getitem__(self, i): return torch.tensor(10 * self.epoch + i)
    >>> items = Items()
    >>> loader = make_dataloader(items, batch_size=2)
    >>> items.set_epoch(1)
    >>> [b.tolist() for b in loader]
    [[10, 11], [12, 13]]
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from medssl.errors import ConfigError

__all__ = ["CachedItemsDataset", "EpochAwareDataset", "EpochTaggedSampler", "limited_threads", "make_dataloader",
           "worker_init_fn"]


@contextlib.contextmanager
def limited_threads(threads: int | None) -> Iterator[None]:
    """Run the block with at most ``threads`` torch threads (None: unchanged), then restore.

    Items are built from many small tensor operations (a 96^3 patch is under a million voxels);
    torch's intra-op threads gain little on them and lose a lot when the cores are busy with the
    model or other processes (OpenMP threads spin at each barrier): measured on a loaded 2-core
    machine, one view took 6 ms with one thread and 25 ms with two. Loader workers already run one
    thread; this gives items built in the main process (``num_workers=0``) the same setting.
    """
    if threads is None or torch.get_num_threads() <= threads:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class EpochTaggedSampler(Sampler):
    """Yields ``(epoch, index)`` (or lists of them, for a batch sampler) for each index of ``sampler``,
    with the epoch ``epoch_of()`` returns when the iteration starts."""

    def __init__(self, sampler: Iterable[Any], epoch_of: Callable[[], int]) -> None:
        self.sampler = sampler
        self.epoch_of = epoch_of

    def __iter__(self) -> Iterator[Any]:
        epoch = int(self.epoch_of())
        for item in self.sampler:
            yield [(epoch, index) for index in item] if isinstance(item, (list, tuple)) else (epoch, item)

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]


class EpochAwareDataset(Dataset):
    """Calls the wrapped dataset's ``set_epoch`` (in whichever process fetches) before an item of
    another epoch; keys are the ``(epoch, index)`` pairs of :class:`EpochTaggedSampler`."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self._epoch: int | None = None

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        if epoch != self._epoch:
            self.dataset.set_epoch(epoch)  # type: ignore[attr-defined]
        self._epoch = epoch
        return self.dataset[index]


class CachedItemsDataset(Dataset):
    """Base of the datasets built from cached volumes: ``samples_per_volume`` items per request
    (item ``i`` reads request ``i // k``), an ``epoch`` set by :meth:`set_epoch`, and items built by
    the subclass's ``_item(index)`` under :func:`limited_threads` (``self.threads``)."""

    requests: Sequence[Any]
    samples_per_volume: int = 1
    threads: int | None = 1
    _epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        """Items of ``epoch`` from now on (in this process; :func:`make_dataloader` passes it to workers)."""
        self._epoch = int(epoch)

    @property
    def epoch(self) -> int:
        return self._epoch

    def __len__(self) -> int:
        return len(self.requests) * self.samples_per_volume

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        with limited_threads(self.threads):
            return self._item(index)

    def _item(self, index: int) -> Any:
        raise NotImplementedError


def _limit_threads(threads: int, worker_id: int) -> None:
    torch.set_num_threads(max(1, int(threads)))
    os.environ["OMP_NUM_THREADS"] = str(max(1, int(threads)))


def worker_init_fn(threads: int = 1) -> Callable[[int], None]:
    """A picklable ``worker_init_fn`` that limits each loader worker to ``threads`` torch threads, so
    ``N`` workers and the training process do not oversubscribe the cores (torch's default is one
    thread per core in every process)."""
    return functools.partial(_limit_threads, threads)


def make_dataloader(
    dataset: Dataset,
    batch_size: int | None,
    num_workers: int = 0,
    sampler: Sampler | None = None,
    *,
    batch_sampler: Iterable[list[int]] | None = None,
    shuffle: bool = False,
    drop_last: bool = False,
    worker_threads: int | None = 1,
    worker_init: Callable[[int], None] | None = None,
    pin_memory: bool | None = None,
    prefetch_factor: int = 2,
    persistent_workers: bool = True,
    collate_fn: Callable | None = None,
    multiprocessing_context: str | None = None,
    generator: torch.Generator | None = None,
    epoch_of: Callable[[], int] | None = None,
) -> DataLoader:
    """A ``DataLoader`` with persistent workers limited to ``worker_threads`` threads each (None: no
    limit; ``worker_init`` replaces the limiter) and pinned memory when CUDA is available.

    Determinism comes from the dataset (items depend on ``(seed, epoch, index)``) and the sampler
    (e.g. :class:`medssl.engine.sampler.EpochSampler`), not from the workers. The epoch reaches the
    workers through the indices of a dataset with ``set_epoch`` (see the module docstring):
    ``epoch_of`` defaults to the dataset's ``epoch``; a dataset without ``set_epoch`` is loaded as
    it is. ``batch_sampler`` (lists of indices) replaces ``batch_size``, ``sampler``, ``shuffle``
    and ``drop_last``.
    """
    if batch_sampler is None and (batch_size is None or batch_size < 1):
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if num_workers < 0:
        raise ConfigError(f"num_workers must be >= 0, got {num_workers}")
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        if worker_init is None and worker_threads is not None:
            worker_init = worker_init_fn(worker_threads)
        kwargs.update(worker_init_fn=worker_init, persistent_workers=persistent_workers,
                      prefetch_factor=prefetch_factor)
        if multiprocessing_context:
            kwargs["multiprocessing_context"] = multiprocessing_context
    if collate_fn is not None:
        kwargs["collate_fn"] = collate_fn
    if callable(getattr(dataset, "set_epoch", None)):
        if epoch_of is None:
            if not hasattr(dataset, "epoch"):
                raise ConfigError(f"{type(dataset).__name__} has set_epoch but no epoch attribute; pass epoch_of")
            epoch_of = functools.partial(getattr, dataset, "epoch")
        if batch_sampler is not None:
            batch_sampler = EpochTaggedSampler(batch_sampler, epoch_of)
        else:
            if sampler is None:
                sampler = (torch.utils.data.RandomSampler(dataset, generator=generator) if shuffle
                           else torch.utils.data.SequentialSampler(dataset))
            sampler = EpochTaggedSampler(sampler, epoch_of)
        dataset = EpochAwareDataset(dataset)
    if batch_sampler is not None:
        return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=num_workers, pin_memory=pin_memory,
                          generator=generator, **kwargs)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle if sampler is None else False,
                      sampler=sampler, num_workers=num_workers, drop_last=drop_last, pin_memory=pin_memory,
                      generator=generator, **kwargs)
