"""The run manifest of a study: what is needed to understand and repeat it, in ``manifest.json``.

It records the resolved configuration, the versions of Python and of the packages that change
numbers (torch, MONAI, NumPy, scikit-learn...), the git commit of the medssl source (and whether the
tree had local changes), the data fingerprint (which cases, which labels, which file contents), the
seeds, the split (test case ids), the initialisations with the fingerprint of each encoder file, and
when the run started and finished. Case ids are the study's own (pseudonymous) identifiers.

Example:
    >>> env = collect_environment()
    >>> sorted(k for k in ("python", "torch", "git_commit") if k in env)
    ['git_commit', 'python', 'torch']
    >>> len(fingerprint_text("a", "b"))
    16
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from medssl.eval.data import data_fingerprint  # noqa: F401  (re-exported: the study's data fingerprint)
from medssl.utils.atomic import atomic_write_text


def fingerprint_text(*parts: object) -> str:
    """A short stable hash (16 hex digits) of the parts' text."""
    digest = hashlib.blake2b(digest_size=8)
    for part in parts:
        digest.update(str(part).encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()


def fingerprint_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Content hash of a file (16 hex digits); ``"missing"`` when it does not exist."""
    path = Path(path)
    if not path.is_file():
        return "missing"
    digest = hashlib.blake2b(digest_size=8)
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def collect_environment() -> dict:
    """Versions, platform, git commit (``+dirty`` with local changes) and devices: the pretraining
    engine's :func:`medssl.engine.environment.environment_info`, so both kinds of run folder agree."""
    from medssl.engine.environment import environment_info

    return environment_info()


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_manifest(path: str | os.PathLike, manifest: dict[str, Any]) -> Path:
    """Write ``manifest`` as indented JSON, atomically."""
    path = Path(path)
    atomic_write_text(path, json.dumps(manifest, indent=2, sort_keys=False, default=str) + "\n")
    return path
