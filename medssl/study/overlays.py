"""Pictures of the predictions: image slices with the ground truth and each arm's prediction overlaid.

A mean Dice says how much; a clinician first asks *where*: which structure is missed, which is
leaking. For a few test cases (the best, the median and the worst by the study's metric), the
report shows one slice of the image, the ground truth and every arm's prediction side by side
(``overlays/<rank>_<case>.png``, embedded in ``report.html``).

How it is made, without storing whole predicted volumes:

* during the study, the cell of each arm at the **largest budget** and the **first seed** (of each
  fold) keeps its network; :func:`overlay_slices` predicts the test cases again
  (:func:`medssl.eval.evaluate.predict_case`, the prediction that is scored) and keeps one axial slice per case, the one with the most ground-truth
  foreground, so every arm shows the same slice. :func:`save_slices` writes them beside the cell
  (``cells/<arm>/<cell>.slices.npz``: image, ground truth, prediction, spacing);
* :func:`write_overlays` ranks the test cases by the metric averaged over the arms in those cells,
  picks best, median and worst, and draws each with matplotlib (Agg): columns image, ground
  truth, one per arm; classes in fixed colours; radiological orientation (the patient's right on
  the viewer's left, anterior up) with the voxel aspect of the slice.

Example::

    slices = overlay_slices(model, data.subset(test_ids), config.finetune)
    save_slices(run_dir / "cells" / "scratch" / "b8_s0_f0.slices.npz", slices)
    figures = write_overlays(run_dir, results, "dice")     # [(caption, png path), ...]
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch

from medssl.utils.atomic import atomic_path

log = logging.getLogger(__name__)

SLICES_SUFFIX = ".slices.npz"

_CLASS_COLOURS = ["#e41a1c", "#377eb8", "#4daf4a", "#ff7f00", "#984ea3", "#ffff33", "#a65628", "#f781bf"]


def overlay_cell(plan: Any, budgets: Sequence[float], seeds: Sequence[int]) -> bool:
    """Whether a cell keeps overlay slices: the largest budget, the first seed (every fold, every arm)."""
    return float(plan.budget) == float(max(budgets)) and int(plan.seed) == int(seeds[0])


def _slice_index(reference: np.ndarray) -> int:
    """The axial (last-axis) slice with the most foreground in the reference; the middle one if empty."""
    area = (reference > 0).reshape(-1, reference.shape[-1]).sum(axis=0)
    return int(area.argmax()) if area.max() > 0 else reference.shape[-1] // 2


@torch.no_grad()
def overlay_slices(model: Any, cases: Sequence[Any], cfg: Any) -> dict[str, dict[str, np.ndarray]]:
    """One axial slice per case: ``image`` (float16, [0, 1]), ``reference`` and ``prediction``
    (uint8 classes), ``index`` and ``spacing`` (of the slice's two axes)."""
    from medssl.eval.cases import remap_mask
    from medssl.eval.evaluate import predict_case

    slices = {}
    for case in cases:
        image = case.image_tensor()
        prediction = predict_case(model, case, cfg).cpu().numpy()
        reference = remap_mask(case.mask_tensor(), cfg.mask_labels)[0].numpy()
        z = _slice_index(reference)
        slices[case.case_id] = {
            "image": image[0, ..., z].numpy().astype(np.float16),
            "reference": reference[..., z].astype(np.uint8),
            "prediction": prediction[..., z].astype(np.uint8),
            "index": np.array(z),
            "spacing": np.asarray(case.spacing[:2], dtype=np.float32),
        }
    return slices


def save_slices(path: str | Path, slices: dict[str, dict[str, np.ndarray]]) -> Path:
    """Write :func:`overlay_slices` to one compressed ``.npz`` (atomically)."""
    arrays = {f"{case}/{key}": value for case, entry in slices.items() for key, value in entry.items()}
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)
    return Path(path)


def load_slices(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """Read back what :func:`save_slices` wrote."""
    slices: dict[str, dict[str, np.ndarray]] = {}
    with np.load(path) as data:
        for name in data.files:
            case, key = name.rsplit("/", 1)
            slices.setdefault(case, {})[key] = data[name]
    return slices


def pick_cases(scores: pd.Series, higher_is_better: bool = True) -> list[tuple[str, str]]:
    """``[("best", case), ("median", case), ("worst", case)]`` of per-case scores (distinct cases).

    Example:
        >>> pick_cases(pd.Series({"a": 0.9, "b": 0.5, "c": 0.1, "d": 0.7}))
        [('best', 'a'), ('median', 'b'), ('worst', 'c')]
    """
    ordered = scores.dropna().sort_values(ascending=not higher_is_better, kind="stable")
    if ordered.empty:
        return []
    picks = [("best", 0), ("median", len(ordered) // 2), ("worst", len(ordered) - 1)]
    chosen, seen = [], set()
    for rank, position in picks:
        case = str(ordered.index[position])
        if case not in seen:
            chosen.append((rank, case))
            seen.add(case)
    return chosen


def _radiological(plane: np.ndarray) -> np.ndarray:
    """A RAS ``(X, Y)`` slice for display: anterior up, the patient's right on the viewer's left."""
    return np.asarray(plane, dtype=np.float32).T[::-1, ::-1]


def plot_overlay(entry: dict[str, np.ndarray], predictions: dict[str, np.ndarray], scores: dict[str, float],
                 title: str, path: str | Path, class_label: Callable[[int], str] = lambda k: f"class {k}") -> Path:
    """One row: the image, the ground truth, then each arm's prediction, classes in colour."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    panels = [("image", None), ("ground truth", entry["reference"])] + list(predictions.items())
    classes = sorted({int(v) for labels in [entry["reference"], *predictions.values()] for v in np.unique(labels)} - {0})
    n_colours = max(classes + [1])
    colours = ListedColormap([_CLASS_COLOURS[(k - 1) % len(_CLASS_COLOURS)] for k in range(1, n_colours + 1)])
    sx, sy = (float(s) for s in entry["spacing"])
    fig, axes = plt.subplots(1, len(panels), figsize=(2.4 * len(panels), 2.9), dpi=110, squeeze=False)
    image = _radiological(entry["image"])
    for ax, (name, labels) in zip(axes[0], panels):
        ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, aspect=sy / sx, interpolation="nearest")
        if labels is not None:
            shown = np.ma.masked_equal(_radiological(labels), 0)
            ax.imshow(shown, cmap=colours, vmin=0.5, vmax=n_colours + 0.5, alpha=0.5, aspect=sy / sx,
                      interpolation="nearest")
        label = name if name in ("image", "ground truth") or name not in scores else f"{name}\n{scores[name]:.3f}"
        ax.set_title(label, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    if classes:
        handles = [Patch(color=_CLASS_COLOURS[(k - 1) % len(_CLASS_COLOURS)], alpha=0.6, label=class_label(k))
                   for k in classes]
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.08 if classes else 0, 1, 0.95))
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)


def write_overlays(run_dir: str | Path, results: pd.DataFrame, metric: str = "dice", *,
                   class_label: Callable[[int], str] = lambda k: f"class {k}") -> list[tuple[str, Path]]:
    """Overlay PNGs of the best, median and worst test cases into ``run_dir/overlays``; returns
    ``[(caption, path)]`` (empty when no cell kept slices, e.g. a classification study)."""
    from medssl.study.summary import higher_is_better

    run_dir = Path(run_dir)
    files = sorted((run_dir / "cells").glob(f"*/*{SLICES_SUFFIX}"))
    if not files:
        return []
    by_arm: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    cells: dict[str, tuple[float, int]] = {}
    for file in files:
        arm = file.parent.name
        slices = load_slices(file)
        by_arm.setdefault(arm, {}).update(slices)
        name = file.name[: -len(SLICES_SUFFIX)]  # b<budget>_s<seed>_f<fold>
        budget, seed = name.split("_")[0][1:].replace("p", "."), int(name.split("_")[1][1:])
        cells[arm] = (float(budget), seed)
    arms = [a for a in dict.fromkeys(results["init"]) if a in by_arm]
    if not arms:
        return []
    budget, seed = cells[arms[0]]
    rows = results[(results["metric"] == metric) & (results["budget"] == budget) & (results["seed"] == seed)
                   & results["init"].isin(arms)]
    per_arm = rows.pivot_table(index="case_id", columns="init", values="value", aggfunc="mean")
    common = [c for c in per_arm.index if all(c in by_arm[a] for a in arms)]
    scores = per_arm.loc[common].mean(axis=1)
    out_dir = run_dir / "overlays"
    figures = []
    n_labeled = int(rows["n_labeled"].iloc[0]) if len(rows) else int(budget)
    for rank, case in pick_cases(scores, higher_is_better(metric)):
        entry = by_arm[arms[0]][case]
        predictions = {arm: by_arm[arm][case]["prediction"] for arm in arms}
        arm_scores = {arm: float(per_arm.loc[case, arm]) for arm in arms if np.isfinite(per_arm.loc[case, arm])}
        title = (f"{rank} test case {case} (mean {metric} over arms {scores[case]:.3f}); axial slice "
                 f"{int(entry['index'])}; {n_labeled} labeled cases, seed {seed}")
        path = plot_overlay(entry, predictions, arm_scores, title, out_dir / f"{rank}_{case}.png", class_label)
        figures.append((f"{rank.capitalize()} test case ({case}): image, ground truth and each arm's prediction "
                        f"({n_labeled} labeled cases, seed {seed}; {metric} under each arm)", path))
    log.info("overlays of %d test case(s) written to %s", len(figures), out_dir)
    return figures
