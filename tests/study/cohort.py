"""A tiny labeled cohort on disk (NIfTI images + masks + labels.csv), made by the tests themselves."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from medssl.utils.seeding import make_rng


def write_disk_cohort(folder: Path, n_cases: int = 12, *, seed: int = 0, shape=(36, 36, 1)) -> Path:
    """``n_cases`` MR-like images of a bright disk (mask label 1) and, in half of them, a small dark
    spot inside it (mask label 2; case label 1). Every third patient has a second scan."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    rng = make_rng(seed, "disk-cohort")
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")).astype(float)
    affine = np.diag([1.2, 1.2, 3.0, 1.0])
    rows, patient = [], 0
    for i in range(n_cases):
        if i % 3 != 1:
            patient += 1
        radius = rng.uniform(0.2, 0.3) * shape[0]
        centre = [rng.uniform(radius + 2, s - radius - 2) if s > 1 else 0.0 for s in shape]
        dist = np.sqrt(sum((g - c) ** 2 for g, c, s in zip(grid, centre, shape) if s > 1))
        mask = (dist <= radius).astype(np.uint8)
        lesion = i % 2 == 0
        if lesion:
            spot = np.sqrt(sum((g - c) ** 2 for g, c, s in zip(grid, centre, shape) if s > 1)) <= radius * 0.35
            mask[spot] = 2
        image = 200.0 + 500.0 * (mask == 1) + 250.0 * (mask == 2) + rng.normal(0, 30, size=shape)
        case_id = f"case{i:02d}"
        nib.save(nib.Nifti1Image(image.astype(np.float32), affine), folder / "images" / f"{case_id}.nii.gz")
        nib.save(nib.Nifti1Image(mask, affine), folder / "masks" / f"{case_id}_seg.nii.gz")
        rows.append({"case_id": case_id, "patient_key": f"P{patient:03d}", "image": f"images/{case_id}.nii.gz",
                     "mask": f"masks/{case_id}_seg.nii.gz", "label": int(lesion), "modality": "MR"})
    labels = folder / "labels.csv"
    pd.DataFrame(rows).to_csv(labels, index=False)
    return labels


def with_garbage_masks(labels: Path, rows: list[int], folder: Path) -> Path:
    """A copy of the labels table ``labels`` whose ``rows`` have a garbage annotation (label 2
    everywhere), with absolute paths: for tests that the annotation of unlabeled cases never trains."""
    folder = Path(folder)
    table = pd.read_csv(labels)
    for i in rows:
        image = nib.load(labels.parent / table.loc[i, "mask"])
        garbage = folder / f"garbage{i}.nii.gz"
        nib.save(nib.Nifti1Image(np.full(image.shape, 2, np.uint8), image.affine), garbage)
        table.loc[i, "mask"] = str(garbage)
    other = folder / "labels.csv"
    table.assign(image=[str(labels.parent / p) for p in table["image"]],
                 mask=[m if m.startswith("/") else str(labels.parent / m) for m in table["mask"]]).to_csv(other, index=False)
    return other
