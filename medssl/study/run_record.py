"""The run record of a study: what is needed to understand and repeat it, written as ``manifest.json``.

It records the resolved configuration, the versions of Python and of the packages that change
numbers (torch, MONAI, NumPy, scikit-learn...), the git commit of the medssl source (and whether the
tree had local changes), the data fingerprint (which cases, which labels, which file contents), the
seeds, the split (test case ids), the initialisations with the fingerprint of each encoder file, and
when the run started and finished. Case ids are the study's own (pseudonymous) identifiers. The
fingerprints come from :mod:`medssl.utils.provenance`.

Example:
    >>> env = collect_environment()
    >>> sorted(k for k in ("python", "torch", "git_commit") if k in env)
    ['git_commit', 'python', 'torch']
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from medssl.utils.atomic import atomic_write_text


def collect_environment() -> dict:
    """Versions, platform, git commit (``+dirty`` with local changes) and devices: the pretraining
    engine's :func:`medssl.engine.environment.environment_info`, so both kinds of run folder agree."""
    from medssl.engine.environment import environment_info

    return environment_info()


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_run_record(path: str | os.PathLike, record: dict[str, Any]) -> Path:
    """Write ``record`` as indented JSON, atomically."""
    path = Path(path)
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=False, default=str) + "\n")
    return path


def cell_records(run_dir: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """The record of each finished cell of a study (``run_dir/cells/<arm>/<cell>.json``), in path
    order; a file that cannot be read or parsed (a cell killed while writing) is skipped."""
    for path in sorted(Path(run_dir, "cells").glob("*/*.json")):
        try:
            yield json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
