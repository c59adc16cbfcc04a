"""Benchmark: does self-supervised pretraining beat training from scratch with very few labels?

It runs what ``medssl demo`` runs (``configs/demo.yaml``: the same cohort generator, pretraining
methods and arguments, fine-tuning recipe and study), at a larger scale, and times every stage:

1. writes the synthetic CT cohort (annotated cases plus unlabeled patients; ``demo.n_ct``,
   ``demo.n_unlabeled_ct``);
2. scans its archive into the de-identified manifest;
3. fixes the patient-level test set exactly as the study does and leaves every volume of a test
   patient out of pretraining;
4. pretrains each method of ``demo.methods`` (no label is used);
5. runs the label-efficiency study: scratch against each pretrained encoder at every budget over
   ``study.seeds`` (for a seed, every init trains on the same labeled cases, from the same random
   decoder, on the same patches; only the pretrained weights differ);
6. prints, per budget and init, the mean Dice over seeds (± sd over seeds) with its bootstrap
   interval over test cases and seeds, and the *paired* difference to scratch with its 95%
   interval; then the goal of issue 6 (at the smallest budget: +0.05 Dice or more, with the
   interval above zero) and the time of each stage.

Usage::

    python benchmarks/label_efficiency.py                  # 40 annotated cases, 5 seeds, 600 steps (~1 h on 2 cores)
    python benchmarks/label_efficiency.py --methods simclr local_contrastive study.budgets=[2]
    python benchmarks/label_efficiency.py --quick          # the demo's --quick sizes: a smoke run (~1 min)
    python benchmarks/label_efficiency.py --demo-scale     # exactly the demo's sizes (its ~10 minutes)
    python benchmarks/label_efficiency.py --seed 1 --out runs/bench_dev   # another cohort and split

``--seed`` is the config seed: it draws the cohort, the test split, the labeled subsets and every
initial weight. Recipes were chosen on seed 1 (``--seed 1``), and reported on seed 0, the demo's.
Extra ``KEY=VALUE`` arguments override the config (``finetune.steps=120``). Everything lands in
``--out`` (default ``runs/bench_label_efficiency``); a re-run reuses finished stages and study cells.
``benchmark.json`` records the settings, timings and the table. Nothing is tuned after the fact.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

#: The benchmark's scale on top of configs/demo.yaml: more annotated cases (a larger test set, so
#: tighter intervals), more unlabeled patients, more seeds, and fine-tuning long enough for labels
#: to matter. The demo's 150 steps are sized for its run time: at that length scratch scores the
#: same with 2, 4 or 8 labeled cases (0.464 / 0.473 / 0.471 Dice in the demo), so a comparison
#: there measures how fast an init starts learning the kidneys, not what the labels or the
#: pretraining are worth. At 600 steps scratch rises with labels (development cohort, seed 1:
#: 0.639 with 2 cases, 0.731 with 8). The length was chosen on scratch alone.
FULL_SCALE = (
    "demo.n_ct=40",
    "demo.n_unlabeled_ct=40",
    "demo.messy=false",
    "study.seeds=[0,1,2,3,4]",
    "study.bootstrap=2000",
    "finetune.steps=600",
)

#: The 3D track (``--track 3d``): the demo's study on 32^3 patches of the volumes instead of 64^2
#: slices, with the batch sizes a 3D step affords on 2 cores.
TRACK_3D = (
    "pretrain.encoder.spatial_dims=3",
    "pretrain.augmentation.patch_size=[32,32,32]",
    "pretrain.batch_size=16",
    "finetune.patch_size=[32,32,32]",
    "finetune.batch_size=4",
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "pretrain"


def own_augmentation(method: str) -> dict[str, object]:
    """Fields of ``pretrain.augmentation`` a method needs beside the demo's (for
    ``demo.method_augmentation``), read from its shipped config: a method whose views must be one
    crop (``shared_geometry``, e.g. ``local_contrastive``) brings that and its patch size."""
    from medssl.config import load_config

    path = CONFIGS / f"{method}.yaml"
    if not path.is_file():
        return {}
    augmentation = load_config(path).pretrain.augmentation
    return {"patch_size": list(augmentation.patch_size), "shared_geometry": True} if augmentation.shared_geometry else {}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench_label_efficiency"))
    scale = parser.add_mutually_exclusive_group()
    scale.add_argument("--quick", action="store_true", help="the demo's --quick sizes: a smoke test")
    scale.add_argument("--demo-scale", action="store_true", help="exactly the demo's sizes")
    parser.add_argument("--seed", type=int, default=0, help="config seed: cohort, split, subsets, weights")
    parser.add_argument("--track", choices=["2d", "3d"], default="2d",
                        help="2d: the demo's slice track (default); 3d: 32^3 patches (TRACK_3D)")
    parser.add_argument("--methods", nargs="+", default=None, help="override demo.methods")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: as the demo, <= 2)")
    parser.add_argument("--semi", default=None, metavar="METHOD",
                        help="the semi-supervised arms' method (init + METHOD; default: the demo's study.semi), "
                             "with the cohort's archive as unlabeled pool")
    parser.add_argument("--plain-monai", action="store_true",
                        help="also train the plain MONAI recipe (3D UNet, DiceCE, MONAI's usual augmentation) on "
                             "the same cells: goal (a)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    args = parser.parse_args(argv)
    if args.methods:  # `--methods a b key=value`: argparse hands the overrides to --methods
        args.overrides = list(args.overrides) + [m for m in args.methods if "=" in m]
        args.methods = [m for m in args.methods if "=" not in m]
    return args


def scale_overrides(args: argparse.Namespace) -> list[str]:
    """Overrides on top of configs/demo.yaml (the ``--quick`` ones are applied by the demo's loader)."""
    overrides = [] if (args.quick or args.demo_scale) else list(FULL_SCALE)
    if args.track == "3d":
        overrides += list(TRACK_3D)
    overrides.append(f"seed={args.seed}")
    if args.methods:
        overrides.append("demo.methods=[" + ",".join(args.methods) + "]")
        own = {m: own_augmentation(m) for m in args.methods}
        own = {m: fields for m, fields in own.items() if fields}
        if own:
            overrides.append(f"demo.method_augmentation={json.dumps(own)}")
    return overrides + list(args.overrides)


def difference_table(summary, metric: str):
    """Rows ``budget x init`` with the mean, the seed spread, the interval and the paired difference."""
    import pandas as pd

    rows = []
    table = summary[summary["metric"] == metric] if "metric" in summary.columns else summary
    table = table.assign(_order=(table["init"] != "scratch").astype(int)).sort_values(["n_labeled", "_order"],
                                                                                      kind="stable")
    for _, row in table.iterrows():
        rows.append({
            "labeled": int(row["n_labeled"]), "init": row["init"], "mean": row["mean"], "sd": row["sd"],
            "ci_low": row["ci_low"], "ci_high": row["ci_high"],
            "diff": row.get("diff"), "diff_low": row.get("diff_low"), "diff_high": row.get("diff_high"),
        })
    return pd.DataFrame(rows)


def plain_monai_cells(config, out: Path) -> "pd.DataFrame":
    """The plain MONAI recipe on every (budget, seed, fold) cell of the study's scratch arm: the same
    labeled cases, test cases and cell seed; rows like the study's results (init ``plain_monai``).
    Finished cells are reused from ``out/plain_monai``."""
    import pandas as pd

    from medssl.study.label_efficiency import CellPlan, to_long

    folder = out / "plain_monai"
    folder.mkdir(parents=True, exist_ok=True)
    frames, jobs = [], []
    for path in sorted((out / "study" / "cells" / "scratch").glob("*.json")):
        record = json.loads(path.read_text())
        done = folder / path.name.replace(".json", ".csv")
        if done.is_file():
            frames.append(pd.read_csv(done, dtype={"case_id": str}))
            continue
        cell = pd.read_csv(path.with_suffix(".csv"), dtype={"case_id": str})
        plan = CellPlan("plain_monai", float(record["budget"]), int(record["seed"]), int(record["fold"]),
                        tuple(record["train_ids"]), (), tuple(sorted(cell["case_id"].unique())))
        jobs.append((plan, int(record["cell_seed"]), done))
    if jobs:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        workers = max(1, min(len(jobs), config.study.workers))
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            runs = pool.map(_plain_monai_cell, [config.model_dump(mode="json")] * len(jobs), [j[0] for j in jobs],
                            [j[1] for j in jobs])
            for (plan, _, done), (per_case, run) in zip(jobs, runs):
                long = to_long(per_case, plan)
                done.with_suffix(".json").write_text(json.dumps(run) + "\n")
                long.to_csv(done, index=False)
                frames.append(long)
                print(f"plain MONAI, {plan.n_labeled} labeled, seed {plan.seed}: dice "
                      f"{long.loc[long['metric'] == 'dice', 'value'].mean():.3f} ({run['seconds']:.0f} s)", flush=True)
    return pd.concat(frames, ignore_index=True)


def _plain_monai_cell(config_json: dict, plan, seed: int):
    """One plain-MONAI cell in a worker process (one torch thread)."""
    import torch

    from medssl.config import Config
    from medssl.eval.data import load_labeled_data

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from plain_monai import train_plain_monai

    torch.set_num_threads(1)
    config = Config.model_validate(config_json)
    data = load_labeled_data(config, config.data.cache_dir)
    return train_plain_monai(data, plan.train_ids, plan.test_ids, config.finetune, seed=seed)


def format_table(table) -> str:
    lines = [f"{'labeled':>7}  {'init':<14} {'mean ± sd (seeds)':<17} {'95% CI':<16} {'SSL - scratch [95% paired CI]':<30}"]
    for _, r in table.iterrows():
        cell = f"{r['mean']:.3f} ± {r['sd']:.3f}"
        interval = f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
        diff = "" if r["init"] == "scratch" else f"{r['diff']:+.3f} [{r['diff_low']:+.3f}, {r['diff_high']:+.3f}]"
        lines.append(f"{r['labeled']:>7}  {r['init']:<14} {cell:<17} {interval:<16} {diff}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import pandas as pd
    import torch

    from medssl.data.manifest import manifest_root, write_manifest
    from medssl.demo import _pretrain, _test_patients, _write_cohort, load_demo_config, pretraining_entries
    from medssl.study.label_efficiency import run_study_from_config
    from medssl.study.summary import summarize
    from medssl.utils.logging import configure_logging

    configure_logging("INFO")
    torch.set_num_threads(args.threads or max(1, min(torch.get_num_threads(), 2)))
    config = load_demo_config(args.quick, scale_overrides(args))
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    cohort_dir, cache_dir = out / "cohort", out / "cache"
    config.data.cache_dir = str(cache_dir)
    config.study.labels = str(cohort_dir / "labels.csv")
    timings: dict[str, float] = {}
    started_all = time.perf_counter()

    started = time.perf_counter()
    _write_cohort(config, cohort_dir)
    timings["cohort"] = time.perf_counter() - started

    started = time.perf_counter()
    manifest = write_manifest(cohort_dir / "archive", out / "manifest.csv", progress=False)
    timings["manifest"] = time.perf_counter() - started

    started = time.perf_counter()
    test_images, _ = _test_patients(config, cache_dir)
    entries = pretraining_entries(manifest, manifest_root(manifest) or cohort_dir / "archive", test_images,
                                  config.data.modalities)
    timings["split_and_preprocess_labeled"] = time.perf_counter() - started

    encoders = {}
    for method in config.demo.methods:
        started = time.perf_counter()
        encoders[method] = _pretrain(config, method, entries, out / "pretrain" / method)
        timings[f"pretrain_{method}"] = time.perf_counter() - started

    started = time.perf_counter()
    config.study.inits = {"scratch": None, **{m: str(p) for m, p in encoders.items()}}
    if args.semi:
        config.study.semi = ["none", args.semi]
    if any(m != "none" for m in config.study.semi or []) and config.study.unlabeled is None:
        config.study.unlabeled = str(out / "manifest.csv")  # the archive, test patients left out
    run_study_from_config(config, out / "study")
    timings["study"] = time.perf_counter() - started
    results = pd.read_csv(out / "study" / "results.csv", dtype={"case_id": str})
    if args.plain_monai:
        started = time.perf_counter()
        results = pd.concat([results, plain_monai_cells(config, out)], ignore_index=True)
        timings["plain_monai"] = time.perf_counter() - started
    timings["total"] = time.perf_counter() - started_all

    metric = config.study.metric
    summary = summarize(results, metric, n_resamples=config.study.bootstrap, seed=config.seed)
    table = difference_table(summary, metric)
    n_test = results["case_id"].nunique()
    smallest = int(table["labeled"].min())
    print(f"\nbenchmark: label efficiency on the synthetic CT cohort (config seed {config.seed}; "
          f"{config.demo.n_ct} annotated cases, {n_test} test, {config.demo.n_unlabeled_ct} unlabeled patients), "
          f"seeds {list(config.study.seeds)}, {config.finetune.steps} fine-tuning steps")
    print(f"mean {metric} over seeds ± sd over seeds, 95% bootstrap CI over test cases and seeds, "
          "and the paired difference to scratch\n")
    print(format_table(table))
    goals = {}
    for _, row in table[(table["labeled"] == smallest) & ~table["init"].isin(["scratch", "plain_monai"])].iterrows():
        target = 0.10 if "+" in row["init"] else 0.05  # (b) unlabeled data during fine-tuning; issue 6 for pretraining
        goals[row["init"]] = bool(row["diff"] >= target and row["diff_low"] > 0)
        print(f"\nat {smallest} labeled cases, {row['init']} - scratch = {row['diff']:+.3f} {metric} "
              f"[{row['diff_low']:+.3f}, {row['diff_high']:+.3f}] -> goal (>= +{target:.2f}, CI > 0) "
              f"{'MET' if goals[row['init']] else 'NOT met'}", end="")
    if args.plain_monai:
        versus = summarize(results[results["init"].isin(["scratch", "plain_monai"])], metric, baseline="plain_monai",
                           n_resamples=config.study.bootstrap, seed=config.seed)
        row = versus[(versus["init"] == "scratch") & (versus["n_labeled"] == smallest)].iloc[0]
        goals["a_recipe_vs_plain_monai"] = bool(row["diff"] >= 0.10 and row["diff_low"] > 0)
        print(f"\n(a) medssl's labels-only recipe - plain MONAI at {smallest} labeled = {row['diff']:+.3f} "
              f"[{row['diff_low']:+.3f}, {row['diff_high']:+.3f}] -> goal (>= +0.10) "
              f"{'MET' if goals['a_recipe_vs_plain_monai'] else 'NOT met'}", end="")
    print("\n\ntimings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    record = {"seed": config.seed, "overrides": scale_overrides(args), "quick": args.quick, "timings": timings,
              "goal_met": goals, "table": table.to_dict("records"), "n_test_cases": int(n_test),
              "torch_threads": torch.get_num_threads()}
    (out / "benchmark.json").write_text(json.dumps(record, indent=2, default=float) + "\n")
    print(f"report: {out / 'study' / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
