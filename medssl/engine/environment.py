"""What a run folder records about where it ran: versions, git commit, devices, data fingerprint.

``environment.json`` lets a reader of a run folder (or a reviewer of a paper) see which code,
libraries and hardware produced the weights, and whether two runs saw the same data (its
``data_fingerprint``: :func:`medssl.utils.provenance.volume_files_fingerprint`, each volume's path
relative to the data root and byte size, so it survives copying the archive elsewhere).

Example:
    >>> info = environment_info(data_fingerprint="abc", extra={"world_size": 1})
    >>> sorted(k for k in ("python", "torch", "monai", "medssl", "device") if k in info)
    ['device', 'medssl', 'monai', 'python', 'torch']
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from medssl.utils.atomic import atomic_write_text

_PACKAGES = ("medssl", "torch", "monai", "numpy", "pandas", "nibabel", "pydicom", "scikit-learn", "pydantic")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def git_commit(folder: str | os.PathLike | None = None) -> str | None:
    """The commit of the git checkout holding ``folder`` (default: the medssl source), with
    ``+dirty`` when it has local changes; None outside a checkout or without git."""
    folder = Path(folder) if folder else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "") if commit else None


def device_info() -> dict[str, Any]:
    info: dict[str, Any] = {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                            "torch_threads": torch.get_num_threads(), "cuda": torch.version.cuda}
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def environment_info(data_fingerprint: str | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Versions, platform, git commit, device and the data fingerprint, as a JSON-ready dict."""
    info: dict[str, Any] = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        **{name: _version(name) for name in _PACKAGES},
        "git_commit": git_commit(),
        "device": device_info(),
        "data_fingerprint": data_fingerprint,
    }
    info.update(extra or {})
    return info


def write_environment(path: str | os.PathLike, info: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")
