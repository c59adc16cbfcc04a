"""Study plots (matplotlib, Agg backend): the metric against labeled cases, and per-case spread.

* :func:`plot_label_efficiency`: one line per initialisation, x = labeled cases (log2 axis when the
  budgets double), y = the metric's mean over seeds, a shaded band for the bootstrap interval, and
  each seed's run as a faint dot so the seed spread stays visible.
* :func:`plot_per_case`: box plots of the per-case metric (averaged over seeds) for each budget,
  one box per initialisation; the reader sees which cases fail, not only the mean.
* :func:`plot_per_run`: box plots over seeds of a set-level metric (AUC...), which has no per-case value.
* :func:`plot_training_fit`: each run's soft Dice per class on its own training batches against the
  step (:mod:`medssl.study.training_fit`), one panel per arm and class, one line per run coloured
  by its labeled cases: a flat line below the 0.5 mark is a class that never fit.

Every function writes a PNG atomically and returns its path.

Example:
    >>> import pandas as pd, tempfile, pathlib
    >>> summary = pd.DataFrame(dict(init=["scratch", "scratch"], n_labeled=[2, 4], mean=[0.5, 0.6],
    ...                             ci_low=[0.4, 0.5], ci_high=[0.6, 0.7]))
    >>> out = plot_label_efficiency(summary, pd.DataFrame(), "dice", pathlib.Path(tempfile.mkdtemp()) / "d.png")
    >>> out.suffix
    '.png'
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medssl.utils.atomic import atomic_path

METRIC_LABELS = {
    "dice": "Dice",
    "hd95": "HD95 (mm)",
    "surface_dice": "Surface Dice",
    "auc": "AUC",
    "balanced_accuracy": "Balanced accuracy",
    "f1": "F1 (macro)",
    "accuracy": "Accuracy",
}


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def _figure(width: float = 6.0, height: float = 4.0, rows: int = 1, columns: int = 1):
    """``plt``, the figure and its axes (one, or a ``rows x columns`` array when either exceeds 1)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(rows, columns, figsize=(width, height), dpi=110, squeeze=rows * columns == 1)
    return plt, fig, ax


def _save(plt, fig, path: str | Path) -> Path:
    path = Path(path)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def _colours(inits: list[str]) -> dict[str, tuple]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    ordered = ["scratch"] + [i for i in inits if i != "scratch"] if "scratch" in inits else inits
    return {init: cmap(k % 10) if init != "scratch" else (0.35, 0.35, 0.35, 1.0) for k, init in enumerate(ordered)}


def _doubling(values: np.ndarray) -> bool:
    values = np.sort(np.unique(values[values > 0]))
    return len(values) >= 3 and values[-1] / values[0] >= 4


def plot_label_efficiency(
    summary: pd.DataFrame, per_run: pd.DataFrame, metric: str, path: str | Path, *, title: str | None = None
) -> Path:
    """Metric against labeled cases: mean line, bootstrap band, seed dots; one colour per init."""
    plt, fig, ax = _figure()
    inits = list(dict.fromkeys(summary["init"]))
    colours = _colours(inits)
    offsets = np.linspace(-0.04, 0.04, max(1, len(inits)))
    log_x = _doubling(summary["n_labeled"].to_numpy(dtype=float))
    for k, init in enumerate(inits):
        rows = summary[summary["init"] == init].sort_values("n_labeled")
        x = rows["n_labeled"].to_numpy(dtype=float)
        shift = (2 ** offsets[k]) if log_x else 1 + offsets[k]
        ax.plot(x, rows["mean"], marker="o", color=colours[init], label=init, linewidth=2)
        ax.fill_between(x, rows["ci_low"], rows["ci_high"], color=colours[init], alpha=0.18, linewidth=0)
        if len(per_run) and "value" in per_run:
            runs = per_run[per_run["init"] == init]
            ax.scatter(runs["n_labeled"].to_numpy(dtype=float) * shift, runs["value"], s=12,
                       color=colours[init], alpha=0.5, linewidth=0)
    if log_x:
        ax.set_xscale("log", base=2)
        ticks = sorted(summary["n_labeled"].unique())
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(int(t)) for t in ticks])
    ax.set_xlabel("labeled cases")
    ax.set_ylabel(metric_label(metric))
    ax.set_title(title or f"{metric_label(metric)} against labeled cases (mean over seeds, 95% bootstrap CI)",
                 fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


def plot_per_case(results: pd.DataFrame, metric: str, path: str | Path) -> Path:
    """Box plots of the per-case metric (mean over seeds) per budget, one box per initialisation."""
    values = (
        results[results["metric"] == metric]
        .groupby(["init", "n_labeled", "case_id"], sort=False)["value"].mean().reset_index()
    )
    return _boxes(values, metric, path, "per test case (mean over seeds)")


def plot_per_run(per_run: pd.DataFrame, metric: str, path: str | Path) -> Path:
    """Box plots over seeds of a set-level metric, per budget, one box per initialisation."""
    return _boxes(per_run, metric, path, "per run (one per seed)")


def _boxes(values: pd.DataFrame, metric: str, path: str | Path, what: str) -> Path:
    inits = list(dict.fromkeys(values["init"]))
    budgets = sorted(values["n_labeled"].unique())
    plt, fig, ax = _figure(max(6.0, 1.2 * len(budgets) * max(1, len(inits)) ** 0.5 + 2), 4.0)
    colours = _colours(inits)
    width = 0.8 / max(1, len(inits))
    for k, init in enumerate(inits):
        data, positions = [], []
        for b, budget in enumerate(budgets):
            v = values[(values["init"] == init) & (values["n_labeled"] == budget)]["value"].dropna().to_numpy()
            if len(v):
                data.append(v)
                positions.append(b + (k - (len(inits) - 1) / 2) * width)
        if not data:
            continue
        boxes = ax.boxplot(data, positions=positions, widths=width * 0.9, patch_artist=True, manage_ticks=False)
        for patch in boxes["boxes"]:
            patch.set_facecolor(colours[init])
            patch.set_alpha(0.5)
        for median in boxes["medians"]:
            median.set_color("black")
        ax.plot([], [], color=colours[init], linewidth=6, alpha=0.5, label=init)
    ax.set_xticks(range(len(budgets)))
    ax.set_xticklabels([str(int(b)) if float(b).is_integer() else str(b) for b in budgets])
    ax.set_xlabel("labeled cases")
    ax.set_ylabel(metric_label(metric))
    ax.set_title(f"{metric_label(metric)} {what}", fontsize=9)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


def plot_training_fit(curves: pd.DataFrame, path: str | Path, class_label=lambda k: f"class {k}", *,
                      threshold: float = 0.5) -> Path:
    """Training soft Dice against the step (``curves``: :func:`medssl.study.training_fit.training_fit_curves`),
    a panel per arm (rows) and foreground class (columns), a line per run coloured by its labeled
    cases, and the ``threshold`` below which the report names a run."""
    import matplotlib

    arms = list(dict.fromkeys(curves["arm"]))
    classes = sorted(curves["class"].unique())
    budgets = sorted(curves["labeled cases"].unique())
    cmap = matplotlib.colormaps["viridis"]
    colour = {b: cmap(0.85 * k / max(1, len(budgets) - 1)) for k, b in enumerate(budgets)}
    plt, fig, axes = _figure(3.2 * len(classes) + 0.6, 2.4 * len(arms) + 0.6, len(arms), len(classes))
    axes = np.asarray(axes).reshape(len(arms), len(classes))
    for r, arm in enumerate(arms):
        for c, k in enumerate(classes):
            ax = axes[r, c]
            mine = curves[(curves["arm"] == arm) & (curves["class"] == k)]
            for (n_labeled, _seed, _fold), run in mine.groupby(["labeled cases", "seed", "fold"], sort=True):
                ax.plot(run["step"], run["soft dice"], color=colour[n_labeled], linewidth=1.2, alpha=0.8)
            ax.axhline(threshold, color="grey", linestyle="--", linewidth=0.8)
            ax.set_ylim(0, 1)
            ax.set_title(f"{arm}: {class_label(int(k))}", fontsize=8)
            ax.grid(True, alpha=0.3)
            if r == len(arms) - 1:
                ax.set_xlabel("training step")
            if c == 0:
                ax.set_ylabel("training soft Dice")
    for b in budgets:
        axes[0, 0].plot([], [], color=colour[b], label=f"{int(b)} labeled")
    axes[0, 0].legend(fontsize=7, loc="lower right")
    return _save(plt, fig, path)
