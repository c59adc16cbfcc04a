"""Tiny, trivially learnable labeled cases and a patch dataset for fine-tuning tests (no files)."""

from __future__ import annotations

import numpy as np
import torch

from medssl.eval.cases import LabeledCase
from medssl.utils.seeding import make_rng, make_torch_generator


def disk_cases(n: int, *, seed: int, shape=(40, 40, 1), with_object=None) -> list[LabeledCase]:
    """Bright disks/balls (class 1) on a darker noisy background; radius and centre vary per case.

    ``with_object``: per-case booleans (default all True); cases without an object have label 0.
    """
    rng = make_rng(seed, "disk-cases")
    cases = []
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"))
    for i in range(n):
        present = True if with_object is None else bool(with_object[i])
        radius = rng.uniform(0.12, 0.22) * min(s for s in shape if s > 1)
        centre = [rng.uniform(radius + 1, s - radius - 1) if s > 1 else 0 for s in shape]
        dist = np.sqrt(sum((g - c) ** 2 for g, c, s in zip(grid, centre, shape) if s > 1))
        mask = (dist <= radius).astype(np.uint8) if present else np.zeros(shape, np.uint8)
        image = 0.25 + 0.45 * mask + rng.normal(0, 0.08, size=shape)
        cases.append(LabeledCase(f"case{i:02d}", image[None].astype(np.float32), mask[None], label=int(present),
                                 spacing=(1.0, 1.0, 2.0)))
    return cases


class RandomPatches(torch.utils.data.Dataset):
    """Random crops of ``patch`` from each case, half centred on foreground; per (seed, epoch, index)."""

    def __init__(self, cases, patch, *, seed, samples_per_case=4):
        self.cases, self.patch, self.seed, self.k = cases, tuple(patch), seed, samples_per_case
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.cases) * self.k

    def __getitem__(self, index):
        case = self.cases[index // self.k]
        g = make_torch_generator(self.seed, "patches", self.epoch, index)
        image, mask = torch.as_tensor(case.image), torch.as_tensor(case.mask).long()
        shape = image.shape[1:]
        if torch.rand(1, generator=g) < 0.5 and mask.any():
            fg = mask[0].nonzero()
            centre = fg[torch.randint(len(fg), (1,), generator=g)][0].tolist()
        else:
            centre = [int(torch.randint(s, (1,), generator=g)) for s in shape]
        starts = [min(max(c - p // 2, 0), max(s - p, 0)) for c, p, s in zip(centre, self.patch, shape)]
        region = tuple(slice(a, a + p) for a, p in zip(starts, self.patch))
        return {"image": image[(slice(None), *region)], "mask": mask[(slice(None), *region)]}
