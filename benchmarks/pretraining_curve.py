"""Benchmark: how much pretraining before it pays? Gain over scratch against pretraining steps.

Issue 14 asks where the break-even lies on the built-in cohort: the published gains of masked image
modelling needed 10^4-10^5 pretraining iterations on GPUs, a 2-core machine affords thousands of
steps on the 2D slice track. This script

1. writes the built-in CT cohort (or reuses ``--out``'s) and its manifest, fixes the study's test
   patients and leaves all their volumes out of pretraining (as ``label_efficiency.py`` does);
2. pretrains ``--method`` (default ``spark``, its arguments and view count from
   ``configs/pretrain/<method>.yaml``) on the demo's 2D slice track for ``--steps`` steps, exporting
   the encoder (and the decoder of a whole-network method) every ``--export-every`` steps
   (``pretrain.export_every``);
3. fine-tunes every exported encoder and scratch at ``--budget`` labeled cases over ``--seeds`` in
   one label-efficiency study (same labeled cases, patches, steps and augmentation for every arm;
   only the initial weights differ), at the benchmark's scale (``label_efficiency.FULL_SCALE``);
4. prints and writes (``curve.csv``, ``curve.md``, ``curve.png``) the mean Dice of each
   intermediate encoder, its paired difference to scratch with the 95% bootstrap interval over test
   cases and seeds, and the pretraining compute it took (seconds of the run up to that step, from
   ``metrics.csv``'s throughput; CPU-hours = seconds x torch threads / 3600).

Usage::

    python benchmarks/pretraining_curve.py --out runs/pretraining_curve              # spark, 2000 steps
    python benchmarks/pretraining_curve.py --method simclr --steps 1000 --export-every 250
    python benchmarks/pretraining_curve.py --quick --out /tmp/pc                       # smoke run

A re-run resumes the pretraining (``checkpoints/last.pt``) and reuses finished study cells; a longer
``--steps`` on the same folder continues the run (the learning-rate schedule then differs from a
run planned that long: the curve says so in ``curve.md``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from label_efficiency import FULL_SCALE  # noqa: E402
from unlabeled_curve import QUICK, prepare_cohort  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "pretrain"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/pretraining_curve"))
    parser.add_argument("--cohort-seed", type=int, default=0, help="config seed: cohort, split, subsets, weights")
    parser.add_argument("--method", default="spark")
    parser.add_argument("--steps", type=int, default=2000, help="pretraining steps")
    parser.add_argument("--export-every", type=int, default=250)
    parser.add_argument("--budget", type=float, default=2, help="labeled cases of the fine-tuning study")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=2, help="study cells computed at a time (one thread each)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the pretraining")
    parser.add_argument("--quick", action="store_true", help="the demo's --quick cohort, a few steps: a smoke run")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    return parser.parse_args(argv)


def curve_config(args: argparse.Namespace):
    """configs/demo.yaml at the benchmark's scale, with the method's own arguments and view count
    (from its shipped config) on the demo's 2D augmentation."""
    from medssl.config import load_config
    from medssl.demo import load_demo_config

    scale = list(QUICK) if args.quick else list(FULL_SCALE)
    config = load_demo_config(args.quick, [*scale, f"seed={args.cohort_seed}", *args.overrides])
    config.pretrain.method = args.method
    shipped = CONFIGS / f"{args.method}.yaml"
    if shipped.is_file():
        own = load_config(shipped).pretrain
        config.pretrain.method_args = dict(own.method_args)
        config.pretrain.augmentation.num_views = own.augmentation.num_views
    config.pretrain.steps = args.steps
    config.pretrain.checkpoint_every = args.export_every
    config.pretrain.export_every = args.export_every
    return config


def pretrain(config, out: Path) -> Path:
    """Pretrain (resuming a stopped run) with the test patients left out; the run folder."""
    from medssl.data.manifest import load_manifest, manifest_root
    from medssl.demo import _test_patients, pretraining_entries
    from medssl.engine.pretrain import run_pretraining

    manifest = load_manifest(out / "manifest.csv", require_locations=True)
    test_images, _ = _test_patients(config, out / "cache")
    entries = pretraining_entries(manifest, manifest_root(manifest) or out / "cohort" / "archive", test_images,
                                  config.data.modalities)
    run_dir = out / "pretrain" / config.pretrain.method
    finished = (run_dir / "encoder.pt").is_file() and _last_step(run_dir) >= config.pretrain.steps
    if not finished:
        run_pretraining(config, run_dir, resume=(run_dir / "checkpoints" / "last.pt").is_file(), entries=entries)
    return run_dir


def _last_step(run_dir: Path) -> int:
    import pandas as pd

    metrics = run_dir / "metrics.csv"
    return int(pd.read_csv(metrics)["step"].max()) if metrics.is_file() else 0


def encoders_by_step(run_dir: Path, steps: int) -> dict[int, Path]:
    """Pretraining step -> exported encoder: the intermediate exports and the final one."""
    found = {int(p.parent.name.split("_")[1]): p for p in (run_dir / "encoders").glob("step_*/encoder.pt")}
    found[steps] = run_dir / "encoder.pt"
    return dict(sorted(found.items()))


def pretraining_seconds(run_dir: Path, batch_size: int) -> dict[int, float]:
    """Logged step -> wall seconds of pretraining up to it, from ``metrics.csv``'s throughput
    (``samples_per_s`` over each logging interval)."""
    import pandas as pd

    metrics = pd.read_csv(run_dir / "metrics.csv").sort_values("step")
    interval = metrics["step"].diff().fillna(metrics["step"])
    seconds = (interval * batch_size / metrics["samples_per_s"]).cumsum()
    return dict(zip(metrics["step"].astype(int), seconds.astype(float)))


def run_curve_study(config, args: argparse.Namespace, out: Path, encoders: dict[int, Path]) -> "pd.DataFrame":
    """Scratch and every exported encoder in one study at the budget; its long results."""
    import pandas as pd

    from medssl.study.label_efficiency import run_study_from_config

    study = config.model_copy(deep=True)
    study.data.cache_dir = str(out / "cache")
    study.study.labels = str(out / "cohort" / "labels.csv")
    study.study.inits = {"scratch": None, **{f"{args.method}_{step}": str(path) for step, path in encoders.items()}}
    study.study.semi = None
    study.finetune.semi.method = "none"
    study.study.budgets = [args.budget]
    study.study.seeds = list(args.seeds)
    study.study.workers = args.workers
    if args.quick:
        study.finetune.steps = 6
    run_study_from_config(study, out / "study")
    return pd.read_csv(out / "study" / "results.csv", dtype={"case_id": str})


def curve_table(results, args: argparse.Namespace, seconds: dict[int, float], threads: int,
                bootstrap: int) -> "pd.DataFrame":
    """One row per pretraining length: mean Dice, paired difference to scratch, compute."""
    import numpy as np
    import pandas as pd

    from medssl.study.summary import summarize

    summary = summarize(results, "dice", n_resamples=bootstrap, seed=0)
    scratch = summary[summary["init"] == "scratch"].iloc[0]
    rows = [{"pretrain_steps": 0, "seconds": 0.0, "cpu_hours": 0.0, "mean": scratch["mean"], "diff": 0.0,
             "diff_low": 0.0, "diff_high": 0.0, "n_seeds": int(scratch["n_seeds"]), "n_test": int(scratch["n_cases"])}]
    logged = np.array(sorted(seconds))
    for _, row in summary[summary["init"] != "scratch"].iterrows():
        step = int(str(row["init"]).rsplit("_", 1)[1])
        nearest = int(logged[np.argmin(np.abs(logged - step))]) if len(logged) else step
        spent = seconds.get(nearest, float("nan"))
        rows.append({"pretrain_steps": step, "seconds": spent, "cpu_hours": spent * threads / 3600,
                     "mean": row["mean"], "diff": row["diff"], "diff_low": row["diff_low"],
                     "diff_high": row["diff_high"], "n_seeds": int(row["n_seeds"]), "n_test": int(row["n_cases"])})
    return pd.DataFrame(rows).sort_values("pretrain_steps").reset_index(drop=True)


def format_markdown(table, args: argparse.Namespace, threads: int) -> str:
    lines = [f"# Gain over scratch against pretraining length: {args.method}, 2D slice track "
             f"(cohort seed {args.cohort_seed}, {int(args.budget)} labeled cases, seeds {list(args.seeds)})", "",
             "| pretraining steps | CPU-hours | mean Dice | difference to scratch [95% paired CI] |",
             "| --- | --- | --- | --- |"]
    for _, r in table.iterrows():
        diff = "(scratch)" if r["pretrain_steps"] == 0 else f"{r['diff']:+.3f} [{r['diff_low']:+.3f}, {r['diff_high']:+.3f}]"
        lines.append(f"| {int(r['pretrain_steps'])} | {r['cpu_hours']:.2f} | {r['mean']:.3f} | {diff} |")
    paying = table[(table["pretrain_steps"] > 0) & (table["diff_low"] > 0)]
    lines += ["", f"CPU-hours: pretraining wall seconds up to the step x {threads} torch thread(s) / 3600 "
              "(intermediate encoders are snapshots of one run with its full-length learning-rate schedule).",
              "Break-even (paired interval above zero): " + (
                  f"from {int(paying['pretrain_steps'].min())} steps" if len(paying) else "not reached at any length measured")]
    return "\n".join(lines) + "\n"


def plot_curve(table, args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table[table["pretrain_steps"] > 0]
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharey=True)
    for axis, x, label in ((axes[0], "pretrain_steps", "pretraining steps"), (axes[1], "cpu_hours", "CPU-hours")):
        axis.axhline(0, color="grey", lw=0.8)
        axis.errorbar(rows[x], rows["diff"], yerr=[rows["diff"] - rows["diff_low"], rows["diff_high"] - rows["diff"]],
                      fmt="o-", capsize=3)
        axis.set_xlabel(label)
    axes[0].set_ylabel(f"Dice gain over scratch ({int(args.budget)} labeled)")
    figure.suptitle(f"{args.method}: gain over scratch (95% paired CI)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from medssl.utils.logging import configure_logging

    configure_logging("INFO")
    torch.set_num_threads(args.threads)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    config = curve_config(args)
    if args.quick:  # the --quick patches are too small for the masking grid of a stride-32 encoder
        config.pretrain.batch_size = 4
        config.pretrain.augmentation.patch_size = [64, 64]
    prepare_cohort(config, out)
    config.data.cache_dir = str(out / "cache")
    config.study.labels = str(out / "cohort" / "labels.csv")
    started = time.perf_counter()
    run_dir = pretrain(config, out)
    print(f"pretraining: {time.perf_counter() - started:.0f} s", flush=True)
    encoders = encoders_by_step(run_dir, args.steps)
    torch.set_num_threads(1)
    results = run_curve_study(config, args, out, encoders)
    seconds = pretraining_seconds(run_dir, config.pretrain.batch_size)
    table = curve_table(results, args, seconds, args.threads, config.study.bootstrap)
    table.to_csv(out / "curve.csv", index=False)
    text = format_markdown(table, args, args.threads)
    (out / "curve.md").write_text(text)
    plot_curve(table, args, out / "curve.png")
    print("\n" + text)
    print(f"total {time.perf_counter() - started:.0f} s; {out / 'curve.md'}, {out / 'curve.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
