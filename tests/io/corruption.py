"""Seeded corruptions of real files, as archives damage them: cut short, bytes flipped, spans zeroed
or duplicated (a sector read twice). Used by the fuzz tests of the io layer and the manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np

KINDS = ("truncate", "flip", "zero", "duplicate")


def corrupt(data: bytes, kind: str, rng: np.random.Generator) -> bytes:
    """One corrupted copy of ``data``. Corruptions favour the header (the first 2 KB), where one
    damaged byte changes how the rest of the file is read."""
    size = len(data)
    head = min(size, 2048)

    def where() -> int:
        return int(rng.integers(0, head if rng.random() < 0.7 else size))

    buffer = bytearray(data)
    if kind == "truncate":
        return bytes(buffer[: int(rng.integers(1, size))])
    if kind == "flip":
        for _ in range(int(rng.integers(1, 9))):
            buffer[where()] ^= 1 << int(rng.integers(0, 8))
        return bytes(buffer)
    if kind == "zero":
        start = where()
        length = int(rng.integers(1, 65))
        buffer[start : start + length] = bytes(len(buffer[start : start + length]))
        return bytes(buffer)
    if kind == "duplicate":
        start = where()
        span = bytes(buffer[start : start + int(rng.integers(1, 129))])
        at = where()
        return bytes(buffer[:at]) + span + bytes(buffer[at:])
    raise ValueError(f"unknown corruption {kind!r}")


def corrupted_copies(sources: list[Path], folder: Path, per_kind: int, seed: int) -> list[Path]:
    """``per_kind`` copies of each source for each kind of :data:`KINDS`, written to ``folder``
    (names keep the source's suffix, so NIfTI copies are still read as NIfTI)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for source in sources:
        data = Path(source).read_bytes()
        suffix = ".nii.gz" if source.name.endswith(".nii.gz") else source.suffix
        stem = source.name[: -len(suffix)] if suffix else source.name
        for kind in KINDS:
            for k in range(per_kind):
                target = folder / f"{stem}_{kind}{k}{suffix}"
                target.write_bytes(corrupt(data, kind, rng))
                written.append(target)
    return written
