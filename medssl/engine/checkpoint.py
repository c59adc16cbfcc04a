"""Training checkpoints: everything needed to continue a run exactly, written atomically.

A checkpoint is a dict saved with ``torch.save`` through :func:`medssl.utils.atomic.atomic_torch_save`
(temporary file beside it, then ``os.replace``), so a run killed while saving leaves the previous
checkpoint intact. It holds:

* ``model``: the SSL method's ``state_dict()`` (encoder, heads, momentum teacher, queues, centres:
  everything the method registers as parameters or buffers);
* ``optimizer``, ``scheduler``, ``precision`` (the fp16 ``GradScaler``);
* ``rng``: torch (CPU and every CUDA device), NumPy and Python global generator states of every
  process (rank order);
* ``position``: optimiser steps done, epoch and micro-batch within the epoch of the next batch;
* ``config_hash`` and ``config`` (YAML): a resume with a different config is refused;
* ``data_fingerprint``, ``world_size``, ``format`` and ``version``.

Everything is stored as tensors and plain Python values, so it loads with
``torch.load(weights_only=True)``: a checkpoint cannot run code when it is opened.

Example:
    >>> import tempfile, pathlib, torch
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "last.pt"
    >>> save_checkpoint(path, {"model": {"w": torch.ones(2)}, "config_hash": "abc"})
    >>> load_checkpoint(path, expected_config_hash="abc")["model"]["w"].tolist()
    [1.0, 1.0]
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medssl.errors import CheckpointError
from medssl.utils.atomic import atomic_torch_save

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "medssl-pretrain-checkpoint"
CHECKPOINT_VERSION = 1

# Settings that do not change what is computed: a resume may change them freely.
_CONFIG_KEYS_IGNORED = {
    "run_dir",
    "finetune",
    "study",
    ("data", "num_workers"),
    ("data", "cache_dir"),
    ("pretrain", "checkpoint_every"),
    ("pretrain", "export_every"),
    ("pretrain", "log_every"),
    ("pretrain", "tensorboard"),
    ("pretrain", "device"),
    ("pretrain", "find_unused_parameters"),
}


def config_hash(config: Any) -> str:
    """A short hash of the parts of a config that change the computation.

    ``config`` is a pydantic model (``Config`` or a section) or a plain dict. Logging, checkpoint
    frequency, worker count, cache location and device choice are left out, so a run may be resumed
    with different values for them.
    """
    tree = config.model_dump(mode="json") if hasattr(config, "model_dump") else dict(config)
    for key in _CONFIG_KEYS_IGNORED:
        if isinstance(key, str):
            tree.pop(key, None)
        elif isinstance(tree.get(key[0]), dict):
            tree[key[0]].pop(key[1], None)
    text = json.dumps(tree, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def capture_rng_state() -> dict[str, Any]:
    """The global generator states of this process (torch CPU, every CUDA device, NumPy, Python)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    version, python_state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": [state for state in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": version, "state": list(python_state), "gauss_next": gauss_next},
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Set the global generators from :func:`capture_rng_state`'s output."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        cuda_states = state["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda_states)
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["state"]), python_state["gauss_next"]))


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` (plus format tags) atomically to ``path``."""
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}
    atomic_torch_save(payload, path, what="a checkpoint")
    logger.debug("checkpoint written: %s", path)


def load_checkpoint(
    path: str | os.PathLike,
    expected_config_hash: str | None = None,
    map_location: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: the file is missing, truncated or unreadable, is not a medssl pretraining
            checkpoint, or was written for a different config (``expected_config_hash``).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"cannot resume: no checkpoint at {path} (the run has not saved one yet; "
            "start it without --resume, or point --run-dir at the run to continue)"
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, bad pickle, foreign object...
        raise CheckpointError(
            f"cannot resume from {path}: the file is corrupt or truncated ({type(exc).__name__}: {exc}); "
            "delete it to restart the run from scratch"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"cannot resume from {path}: not a medssl pretraining checkpoint")
    if state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"cannot resume from {path}: checkpoint format version {state.get('version')} "
            f"(this medssl reads version {CHECKPOINT_VERSION})"
        )
    if expected_config_hash is not None and state.get("config_hash") != expected_config_hash:
        raise CheckpointError(
            f"cannot resume from {path}: it was written with a different configuration "
            f"(hash {state.get('config_hash')} vs {expected_config_hash} now); resume with the run's "
            f"config.yaml, or start a new run folder"
        )
    return state
