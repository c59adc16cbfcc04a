"""How many intra-op threads torch uses in this process: the cores it may run on, shared by the
processes torchrun started on this machine.

torch's default (OpenMP's) takes every core it sees for each process, and knows nothing of the
other processes torchrun started beside it: 4 processes on a 16-core machine start 16 threads each,
which fight over the same cores (OpenMP threads spin at each barrier, so oversubscription costs far
more than it seems). The count used here
is the number of cores in the process's affinity mask (``os.sched_getaffinity``: what ``taskset``,
cgroups cpusets and SLURM's ``--cpus-per-task`` allow) divided by the number of processes on this
machine (``LOCAL_WORLD_SIZE``, set by torchrun), at least 1. ``OMP_NUM_THREADS``, when set, wins:
it is the user's (or the launcher's) explicit choice. torchrun sets ``OMP_NUM_THREADS=1`` in each
process when ``--nproc_per_node`` > 1 and the variable is unset, so on a multi-process CPU job set
it yourself (docs/distributed.md).

Example:
    >>> intra_op_threads({"LOCAL_WORLD_SIZE": "2"}, cores=16)
    8
    >>> intra_op_threads({"OMP_NUM_THREADS": "3", "LOCAL_WORLD_SIZE": "2"}, cores=16) is None
    True
"""

from __future__ import annotations

import logging
import os
from typing import Mapping

logger = logging.getLogger(__name__)


def available_cores() -> int:
    """Cores this process may run on (its affinity mask), else the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def intra_op_threads(environ: Mapping[str, str] | None = None, cores: int | None = None) -> int | None:
    """torch intra-op threads for this process, or None when ``OMP_NUM_THREADS`` decides (module docstring).

    ``cores // LOCAL_WORLD_SIZE``, at least 1, where ``cores`` defaults to :func:`available_cores`; a
    ``LOCAL_WORLD_SIZE`` that is not a positive integer counts as 1.
    """
    environ = os.environ if environ is None else environ
    if str(environ.get("OMP_NUM_THREADS", "")).strip():
        return None
    cores = available_cores() if cores is None else int(cores)
    try:
        local_processes = max(1, int(environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    except ValueError:
        local_processes = 1
    return max(1, cores // local_processes)


def configure_intra_op_threads(environ: Mapping[str, str] | None = None) -> int:
    """Apply :func:`intra_op_threads` to torch (``torch.set_num_threads``), log the choice, return the count."""
    import torch

    environ = os.environ if environ is None else environ
    count = intra_op_threads(environ)
    if count is None:
        logger.info("torch intra-op threads: %d (OMP_NUM_THREADS=%s)", torch.get_num_threads(),
                    environ.get("OMP_NUM_THREADS"))
        return torch.get_num_threads()
    torch.set_num_threads(count)
    logger.info("torch intra-op threads: %d (%d cores available / %s local process(es); set OMP_NUM_THREADS "
                "to choose)", count, available_cores(), environ.get("LOCAL_WORLD_SIZE", "1"))
    return count
