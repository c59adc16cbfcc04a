"""Benchmark: what the unlabeled volumes buy during fine-tuning, against iterations and labeled cases.

Issue 16's goal (b) asks for +0.10 Dice from the unlabeled data at the smallest label budget; where
that is out of reach the question becomes *which way* the gain moves. This script runs the
label-efficiency study's two arms on the demo's 2D slice track of the built-in CT cohort (the same
cohort, split, labeled subsets, patches and steps for both arms; ``configs/demo.yaml`` at the
benchmark's scale, ``label_efficiency.FULL_SCALE``):

- ``scratch``: labels only;
- ``scratch+<semi>``: the same plus consistency training on the unlabeled volumes (default
  ``mean_teacher``; the cohort's archive and the training pool outside the labeled subset, never a
  test patient),

along two axes:

1. **iterations**: fine-tuning steps ``--steps`` (default 300, 600, 1200, 2400) at ``--budget``
   labeled cases (default 2); each length is its own run (its own learning-rate schedule), not a
   snapshot of a longer one;
2. **labeled cases**: budgets ``--budgets`` (default 1, 2, 4, 8) at ``--curve-steps`` (600).

For every point it reports the mean Dice of both arms over ``--seeds``, the paired difference
(semi-supervised - scratch) with its 95% bootstrap interval over test cases and seeds, and, per
class, the teacher's pseudo-label accuracy against the annotation where the unlabeled patch has one
(the training pool's cases; voxels at or above ``finetune.semi.threshold`` confidence) and the
fraction of voxels that confident (``history.pseudo_label_accuracy`` / ``_coverage`` of the cells).
Outputs in ``--out``: ``curve.csv`` (one row per point), ``curve.md`` (the tables), ``curve.png``
(Dice and the paired difference against steps and against labeled cases) and one study folder per
fine-tuning length (``steps_<N>/``; a re-run reuses finished cells).

Usage::

    python benchmarks/unlabeled_curve.py --out runs/unlabeled_curve            # ~2.5 h on 2 cores
    python benchmarks/unlabeled_curve.py --steps 300 600 --budgets 2 4 --seeds 0 1
    python benchmarks/unlabeled_curve.py --quick --out /tmp/curve             # smoke run (~1 min)

``--cohort-seed`` draws the cohort (0: the held-out cohort the reports use; 1: the development
cohort); a folder that already holds ``cohort/``, ``cache/`` and ``manifest.csv`` (for example a
``label_efficiency.py`` run) is reused.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from label_efficiency import FULL_SCALE  # noqa: E402

#: ``--quick``: tiny sizes for a smoke run (the demo's --quick cohort, a few steps).
QUICK = ("finetune.batch_size=4", "study.bootstrap=200")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/unlabeled_curve"))
    parser.add_argument("--cohort-seed", type=int, default=0, help="config seed: cohort, split, subsets, weights")
    parser.add_argument("--semi", default="mean_teacher", help="the semi-supervised arm's method")
    parser.add_argument("--steps", type=int, nargs="+", default=[300, 600, 1200, 2400])
    parser.add_argument("--budget", type=float, default=2, help="labeled cases of the iterations axis")
    parser.add_argument("--budgets", type=float, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--curve-steps", type=int, default=600, help="fine-tuning steps of the labeled-cases axis")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=2, help="cells computed at a time (one torch thread each)")
    parser.add_argument("--quick", action="store_true", help="the demo's --quick cohort and tiny steps: a smoke run")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    return parser.parse_args(argv)


def base_config(args: argparse.Namespace):
    """configs/demo.yaml at the benchmark's scale (or the demo's --quick sizes), the cohort seed and
    the user's overrides."""
    from medssl.demo import load_demo_config

    scale = list(QUICK) if args.quick else list(FULL_SCALE)
    return load_demo_config(args.quick, [*scale, f"seed={args.cohort_seed}", *args.overrides])


def prepare_cohort(config, out: Path) -> Path:
    """The cohort, its preprocessing cache and the archive's manifest in ``out`` (reused when there);
    returns the manifest's path."""
    from medssl.data.manifest import write_manifest
    from medssl.demo import _write_cohort

    _write_cohort(config, out / "cohort")
    manifest = out / "manifest.csv"
    if not manifest.is_file():
        write_manifest(out / "cohort" / "archive", manifest, progress=False)
    return manifest


def study_points(args: argparse.Namespace) -> dict[int, list[float]]:
    """Fine-tuning length -> the budgets run at that length (both axes, merged)."""
    points: dict[int, set[float]] = {steps: {args.budget} for steps in args.steps}
    points.setdefault(args.curve_steps, set()).update(args.budgets)
    return {steps: sorted(budgets) for steps, budgets in sorted(points.items())}


def run_point_studies(args: argparse.Namespace, out: Path) -> "pd.DataFrame":
    """One study per fine-tuning length; the long results of all of them (column ``steps`` added)."""
    import pandas as pd

    from medssl.study.label_efficiency import run_study_from_config

    frames = []
    for steps, budgets in study_points(args).items():
        config = base_config(args)
        manifest = prepare_cohort(config, out)
        config.data.cache_dir = str(out / "cache")
        config.study.labels = str(out / "cohort" / "labels.csv")
        config.study.inits = {"scratch": None}
        config.study.semi = ["none", args.semi]
        config.study.unlabeled = str(manifest)
        config.study.budgets = budgets
        config.study.seeds = list(args.seeds)
        config.study.workers = args.workers
        config.finetune.steps = steps
        if args.quick:
            config.finetune.steps = max(4, steps // 100)
            config.finetune.semi.start_step = 1
            config.finetune.semi.rampup_steps = 1
        folder = out / f"steps_{steps}"
        started = time.perf_counter()
        run_study_from_config(config, folder)
        print(f"{steps} steps, budgets {budgets}: {time.perf_counter() - started:.0f} s", flush=True)
        results = pd.read_csv(folder / "results.csv", dtype={"case_id": str})
        frames.append(results.assign(steps=steps, bootstrap=config.study.bootstrap))
    return pd.concat(frames, ignore_index=True)


def pseudo_label_columns(folder: Path, arm: str, budget: float) -> dict[str, float]:
    """Per class, the semi-supervised arm's pseudo-label accuracy and coverage averaged over its cells
    at ``budget`` (NaN where no cell could check one), and the mean seconds of both arms' cells."""
    import numpy as np

    values: dict[str, list[float]] = {}
    for path in sorted((folder / "cells").glob("*/*.json")):
        record = json.loads(path.read_text())
        if float(record.get("budget", -1)) != float(budget):
            continue
        values.setdefault(f"seconds_{record['arm']}", []).append(float(record["seconds"]))
        if record["arm"] != arm:
            continue
        history = record.get("history", {})
        for kind in ("accuracy", "coverage"):
            for c, value in enumerate(history.get(f"pseudo_label_{kind}") or []):
                values.setdefault(f"pl_{kind}_{c}", []).append(np.nan if value is None else float(value))
    return {key: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan") for key, v in values.items()}


def curve_table(results: "pd.DataFrame", out: Path, semi_arm: str) -> "pd.DataFrame":
    """One row per (steps, labeled): both arms' mean Dice, the paired difference and its interval,
    the pseudo-label diagnostics."""
    import pandas as pd

    from medssl.study.summary import summarize

    rows = []
    for steps, part in results.groupby("steps"):
        n_resamples = int(part["bootstrap"].iloc[0])
        summary = summarize(part.drop(columns=["steps", "bootstrap"]), "dice", n_resamples=n_resamples, seed=0)
        for n_labeled, group in summary.groupby("n_labeled"):
            scratch = group[group["init"] == "scratch"].iloc[0]
            semi = group[group["init"] == semi_arm].iloc[0]
            budget = float(semi["budget"])
            per_class = part[(part["init"].isin(["scratch", semi_arm])) & (part["budget"] == budget)
                             & part["metric"].str.fullmatch(r"dice_\d+")]
            class_means = per_class.groupby(["init", "metric"])["value"].mean()
            row = {
                "steps": int(steps), "labeled": int(n_labeled), "n_seeds": int(semi["n_seeds"]),
                "n_test": int(semi["n_cases"]), "scratch": scratch["mean"], "semi": semi["mean"],
                "diff": semi["diff"], "diff_low": semi["diff_low"], "diff_high": semi["diff_high"],
            }
            for (init, metric), value in class_means.items():
                row[f"{'scratch' if init == 'scratch' else 'semi'}_{metric}"] = value
            row.update(pseudo_label_columns(out / f"steps_{steps}", semi_arm, budget))
            rows.append(row)
    return pd.DataFrame(rows)


def format_markdown(table: "pd.DataFrame", args: argparse.Namespace, semi_arm: str) -> str:
    """The two axes as markdown tables."""
    classes = sorted({c.split("_")[-1] for c in table.columns if c.startswith("pl_accuracy_")}, key=int)

    def block(rows, title: str) -> list[str]:
        head = ["steps", "labeled", "scratch", semi_arm, "difference [95% paired CI]"]
        head += [f"pseudo-label acc. / cov. class {c}" for c in classes]
        lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        for _, r in rows.iterrows():
            cells = [str(int(r["steps"])), str(int(r["labeled"])), f"{r['scratch']:.3f}", f"{r['semi']:.3f}",
                     f"{r['diff']:+.3f} [{r['diff_low']:+.3f}, {r['diff_high']:+.3f}]"]
            cells += [f"{r.get(f'pl_accuracy_{c}', float('nan')):.2f} / {r.get(f'pl_coverage_{c}', float('nan')):.2f}"
                      for c in classes]
            lines.append("| " + " | ".join(cells) + " |")
        return lines + [""]

    steps_axis = table[table["labeled"] == int(args.budget)].sort_values("steps")
    labels_axis = table[table["steps"] == args.curve_steps].sort_values("labeled")
    lines = [f"# What the unlabeled volumes buy: {semi_arm} against scratch (cohort seed {args.cohort_seed}, "
             f"seeds {list(args.seeds)})", ""]
    lines += block(steps_axis, f"Against fine-tuning steps, {int(args.budget)} labeled cases")
    lines += block(labels_axis, f"Against labeled cases, {args.curve_steps} steps")
    lines.append("Pseudo-label accuracy: the teacher's confident voxels on unlabeled patches that have an "
                 "annotation, per class; coverage: the fraction of each pseudo-class's voxels that confident.")
    return "\n".join(lines) + "\n"


def plot_curve(table: "pd.DataFrame", args: argparse.Namespace, semi_arm: str, path: Path) -> None:
    """Dice of both arms (top) and the paired difference with its interval (bottom), against steps
    (left) and against labeled cases (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes_data = [
        (table[table["labeled"] == int(args.budget)].sort_values("steps"), "steps",
         f"fine-tuning steps ({int(args.budget)} labeled)"),
        (table[table["steps"] == args.curve_steps].sort_values("labeled"), "labeled",
         f"labeled cases ({args.curve_steps} steps)"),
    ]
    figure, axes = plt.subplots(2, 2, figsize=(9, 6), sharex="col")
    for column, (rows, x, label) in enumerate(axes_data):
        top, bottom = axes[0][column], axes[1][column]
        top.plot(rows[x], rows["scratch"], "o-", label="scratch")
        top.plot(rows[x], rows["semi"], "s-", label=semi_arm)
        top.set_ylabel("mean Dice")
        top.legend(fontsize=8)
        bottom.axhline(0, color="grey", lw=0.8)
        bottom.errorbar(rows[x], rows["diff"], yerr=[rows["diff"] - rows["diff_low"], rows["diff_high"] - rows["diff"]],
                        fmt="o-", capsize=3)
        bottom.set_ylabel("difference (95% paired CI)")
        bottom.set_xlabel(label)
        if x == "steps":
            bottom.set_xscale("log", base=2)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from medssl.utils.logging import configure_logging

    configure_logging("INFO")
    torch.set_num_threads(1)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results = run_point_studies(args, out)
    semi_arm = f"scratch+{args.semi}"
    table = curve_table(results, out, semi_arm)
    table.to_csv(out / "curve.csv", index=False)
    text = format_markdown(table, args, semi_arm)
    (out / "curve.md").write_text(text)
    plot_curve(table, args, semi_arm, out / "curve.png")
    print("\n" + text)
    print(f"total {time.perf_counter() - started:.0f} s; {out / 'curve.md'}, {out / 'curve.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
