"""What a run folder records about where it ran: versions, git commit, devices, data fingerprint.

``environment.json`` lets a reader of a run folder (or a reviewer of a paper) see which code,
libraries and hardware produced the weights, and whether two runs saw the same data. The data
fingerprint hashes each volume's path (relative to the data root) and byte size (files of a
series folder summed), so it survives copying the archive elsewhere (no timestamps) yet changes
when a volume is added, removed or rewritten to a different size.

Example:
    >>> info = environment_info(data_fingerprint="abc", extra={"world_size": 1})
    >>> sorted(k for k in ("python", "torch", "monai", "medssl", "device") if k in info)
    ['device', 'medssl', 'monai', 'python', 'torch']
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

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


def _size_of(path: Path) -> tuple[int, int]:
    if path.is_file():
        return path.stat().st_size, 1
    if path.is_dir():
        total = count = 0
        for child in sorted(path.rglob("*")):
            if child.is_file():
                total += child.stat().st_size
                count += 1
        return total, count
    return -1, 0


def data_fingerprint(paths: Iterable[str | os.PathLike], root: str | os.PathLike | None = None) -> str:
    """SHA-256 (16 hex digits) over the sorted ``(path relative to root, bytes, files)`` of each volume."""
    root_path = Path(root) if root else None
    records = []
    for raw in paths:
        path = Path(raw)
        full = path if path.is_absolute() or root_path is None else root_path / path
        label = str(path)
        if root_path is not None and path.is_absolute():
            try:
                label = str(path.relative_to(root_path))
            except ValueError:
                label = str(path)
        size, count = _size_of(full)
        records.append(f"{label}\t{size}\t{count}")
    digest = hashlib.sha256("\n".join(sorted(records)).encode("utf-8")).hexdigest()
    return digest[:16]
