"""Size guards: how large a volume medssl agrees to read, checked from the header before any pixel.

A header can promise anything: a 68-byte ``.nii.gz`` that claims 30000^3 voxels, or a 17 MB gzip of
zeros that inflates to 16 GiB. Reading either would exhaust memory (or, in a scan, hang a worker),
so every reader compares what the header promises with two limits first:

* ``max_voxels``: voxels of the volume a load returns (``channels x X x Y x Z``); the float32
  array a load allocates is ``4 * max_voxels`` bytes at most. Default ``2**31`` (8 GiB as float32).
* ``max_bytes``: bytes of stored pixel data once decompressed (the NIfTI data block, a DICOM
  file's pixel data as decoded). Default ``2**33`` (8 GiB).

Both can be changed per call (``load_volume(..., limits=ReadLimits(max_voxels=...))``,
``build_manifest(..., limits=...)``) or for a whole process (and the scan's worker processes) with
the environment variables ``MEDSSL_MAX_VOXELS`` and ``MEDSSL_MAX_BYTES``.

Gap filled here: nibabel and pydicom allocate whatever the header asks for.

Example:
    >>> limits = ReadLimits(max_voxels=1000)
    >>> limits.problem(voxels=10 * 10 * 20, stored_bytes=8000, shape=(10, 10, 20))
    '10 x 10 x 20 = 2000 voxels exceed the limit of 1000 (max_voxels; set MEDSSL_MAX_VOXELS to read larger volumes)'
    >>> limits.problem(voxels=500, stored_bytes=1000) is None
    True
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

#: Defaults: 2^31 voxels (an 8 GiB float32 array) and 8 GiB of decompressed pixel data.
DEFAULT_MAX_VOXELS = 2**31
DEFAULT_MAX_BYTES = 2**33
VOXELS_ENV = "MEDSSL_MAX_VOXELS"
BYTES_ENV = "MEDSSL_MAX_BYTES"


def _from_env(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(float(text))
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a number of {'voxels' if 'VOXELS' in name else 'bytes'}") from None
    if value <= 0:
        raise ValueError(f"{name}={text!r} must be positive")
    return value


@dataclass(frozen=True)
class ReadLimits:
    """The largest volume a reader accepts (see the module docstring); ``None`` fields take the
    environment variable, else the default."""

    max_voxels: int | None = None
    max_bytes: int | None = None

    def resolved(self) -> "ReadLimits":
        """Both limits as numbers (arguments, else environment, else defaults)."""
        if self.max_voxels is not None and self.max_bytes is not None:
            return self
        return ReadLimits(
            self.max_voxels if self.max_voxels is not None else _from_env(VOXELS_ENV, DEFAULT_MAX_VOXELS),
            self.max_bytes if self.max_bytes is not None else _from_env(BYTES_ENV, DEFAULT_MAX_BYTES),
        )

    def problem(self, *, voxels: int, stored_bytes: int, shape: Sequence[int] | None = None) -> str | None:
        """Why a volume of ``voxels`` voxels and ``stored_bytes`` decompressed bytes is refused, or
        ``None`` when it is within both limits."""
        limits = self.resolved()
        if voxels <= limits.max_voxels and stored_bytes <= limits.max_bytes:  # type: ignore[operator]
            return None  # the common case, kept cheap: a scan asks once per file
        described = (" x ".join(str(int(s)) for s in shape) + " = ") if shape is not None else ""
        if voxels > limits.max_voxels:  # type: ignore[operator]
            return (f"{described}{voxels} voxels exceed the limit of {limits.max_voxels} "
                    f"(max_voxels; set {VOXELS_ENV} to read larger volumes)")
        if stored_bytes > limits.max_bytes:  # type: ignore[operator]
            shown = f"{described}{voxels} voxels: " if described else ""
            return (f"{shown}{stored_bytes} bytes of pixel data exceed the limit of {limits.max_bytes} "
                    f"(max_bytes; set {BYTES_ENV} to read larger volumes)")
        return None


def as_limits(limits: ReadLimits | None) -> ReadLimits:
    """``limits`` with environment and defaults filled in (``None``: all from the environment)."""
    return (limits or ReadLimits()).resolved()
