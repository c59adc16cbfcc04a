"""Seeded randomness: every generator derives from one run seed and a few keys.

The same seed and keys give the same stream on every machine and in every worker process, so a
sample's augmentation depends on ``(seed, epoch, index)`` and not on which worker drew it.

Example:
    >>> a = make_rng(0, "augment", 3)
    >>> b = make_rng(0, "augment", 3)
    >>> float(a.random()) == float(b.random())
    True
    >>> derive_seed(0, "augment", 3) != derive_seed(0, "augment", 4)
    True
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
from typing import Iterator

import numpy as np


def derive_seed(seed: int, *keys: object) -> int:
    """A 63-bit seed from ``seed`` and ``keys`` (stable across Python runs, unlike ``hash``)."""
    text = "/".join([str(int(seed))] + [str(k) for k in keys])
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def make_rng(seed: int, *keys: object) -> np.random.Generator:
    """A NumPy generator for ``(seed, *keys)``."""
    return np.random.default_rng(derive_seed(seed, *keys))


def make_torch_generator(seed: int, *keys: object, device: str | None = None):
    """A ``torch.Generator`` for ``(seed, *keys)`` (on ``device`` when given)."""
    import torch

    generator = torch.Generator(device=device) if device else torch.Generator()
    generator.manual_seed(derive_seed(seed, *keys))
    return generator


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch global generators (for code we do not control, such as
    weight initialisation inside MONAI networks)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


@contextlib.contextmanager
def preserved_global_random_state() -> Iterator[None]:
    """Within the block the global generators (Python, NumPy, torch) may be reseeded, for code that
    seeds them itself (building a second network with :func:`seed_everything`); after it they
    continue exactly where they were, so what runs after the block draws the same numbers as
    without it.

    >>> import torch
    >>> _ = torch.manual_seed(0); expected = torch.rand(1)
    >>> _ = torch.manual_seed(0)
    >>> with preserved_global_random_state():
    ...     seed_everything(123); _ = torch.rand(5)
    >>> bool(torch.rand(1) == expected)
    True
    """
    import torch

    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_initialized() else []):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
