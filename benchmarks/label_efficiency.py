"""Benchmark: does self-supervised pretraining beat training from scratch with very few labels?

On the built-in synthetic CT cohort (:func:`medssl.data.synthetic.make_synthetic_cohort`) this script,
in one run:

1. writes the cohort (annotated CT cases plus unlabeled CT patients);
2. fixes the patient-level test set exactly as the study does (same function, same seed);
3. pretrains an encoder (``--method``, default SimCLR) with the engine on every CT volume *except* the
   test patients' (labeled training pool + unlabeled patients; no label is used);
4. runs the label-efficiency study (scratch against the pretrained encoder, ``--budgets``,
   ``--seeds``; the same labeled cases and random decoder for both inits of a seed);
5. prints, at the smallest budget, the mean Dice of each init over seeds with its bootstrap interval,
   and the paired difference (SSL - scratch) with its 95% interval, against the goal
   (+0.05 Dice with an interval excluding zero), plus the timings.

Usage::

    python benchmarks/label_efficiency.py            # the full benchmark (tens of minutes on 2 cores)
    python benchmarks/label_efficiency.py --quick    # a smoke run of a few minutes

Everything lands in ``--out`` (default ``runs/bench_label_efficiency``): the cohort, the pretraining
run folder, the study folder with ``report.md``/``report.html``. The numbers are what this run
measured; nothing is tuned after the fact.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench_label_efficiency"))
    parser.add_argument("--quick", action="store_true", help="small cohort, few steps: a smoke test")
    parser.add_argument("--method", default="simclr")
    parser.add_argument("--n-ct", type=int, default=None, help="annotated CT cases")
    parser.add_argument("--n-unlabeled", type=int, default=None, help="extra unlabeled CT patients")
    parser.add_argument("--size", type=int, default=None, help="cohort grid size knob (64: 64x64x40 CT)")
    parser.add_argument("--pretrain-steps", type=int, default=None)
    parser.add_argument("--finetune-steps", type=int, default=None)
    parser.add_argument("--budgets", type=float, nargs="+", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides for pretraining and study")
    return parser.parse_args(argv)


def settings(args: argparse.Namespace) -> dict:
    quick = args.quick
    return {
        "n_ct": args.n_ct or (12 if quick else 24),
        "n_unlabeled": args.n_unlabeled if args.n_unlabeled is not None else (4 if quick else 16),
        "size": args.size or (48 if quick else 64),
        "pretrain_steps": args.pretrain_steps or (40 if quick else 400),
        "finetune_steps": args.finetune_steps or (30 if quick else 300),
        "budgets": args.budgets or ([2] if quick else [2, 4, 8]),
        "seeds": args.seeds or ([0, 1] if quick else [0, 1, 2]),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import pandas as pd
    import torch

    from medssl.config import load_config
    from medssl.data.synthetic import make_synthetic_cohort
    from medssl.engine.pretrain import run_pretraining
    from medssl.eval.data import load_labeled_data
    from medssl.study.label_efficiency import make_splits, run_study_from_config
    from medssl.study.summary import summarize
    from medssl.utils.logging import configure_logging

    configure_logging("INFO")
    if args.threads:
        torch.set_num_threads(args.threads)
    s = settings(args)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    started = time.perf_counter()
    cohort = out / "cohort"
    if not (cohort / "labels.csv").is_file():
        make_synthetic_cohort(cohort, n_ct=s["n_ct"], n_mr=0, n_unlabeled_ct=s["n_unlabeled"], n_unlabeled_mr=0,
                              size=s["size"], seed=0, messy=False, progress=False)
    timings["cohort_s"] = time.perf_counter() - started
    series_folders = {p.parent for p in (cohort / "archive" / "CT").rglob("*") if p.is_file()}
    unlabeled = sorted(str(p) for p in series_folders)

    overrides = [
        f"study.labels={cohort / 'labels.csv'}", f"data.cache_dir={out / 'cache'}",
        f"study.budgets={s['budgets']}", f"study.seeds={s['seeds']}", f"finetune.steps={s['finetune_steps']}",
        f"pretrain.method={args.method}", f"pretrain.steps={s['pretrain_steps']}",
        "pretrain.augmentation.preset=ct", "pretrain.augmentation.patch_size=[32,32,32]", "pretrain.batch_size=8",
        "pretrain.optimizer.lr=0.001", "pretrain.optimizer.warmup_steps=10", "pretrain.checkpoint_every=1000",
        *args.overrides,
    ]
    config = load_config(ROOT / "configs" / "study" / "label_efficiency_ct.yaml", overrides)

    # the test patients' volumes stay out of pretraining
    started = time.perf_counter()
    data = load_labeled_data(config, out / "cache")
    (split,) = make_splits(config, data)
    test_images = {data.entries.set_index("case_id").loc[c, "path"] for c in split.test}
    labeled_images = [p for p in data.entries["path"] if p not in test_images]
    all_labeled = set(data.entries["path"])
    unlabeled_images = [p for p in unlabeled if p not in all_labeled]
    entries = pd.DataFrame({"path": labeled_images + unlabeled_images, "modality": "CT"})
    timings["preprocess_s"] = time.perf_counter() - started
    print(f"pretraining on {len(entries)} CT volumes ({len(labeled_images)} labeled-pool images, "
          f"{len(unlabeled_images)} unlabeled); {len(split.test)} test cases held out")

    started = time.perf_counter()
    pretrain_dir = out / f"pretrain_{args.method}"
    encoder = pretrain_dir / "encoder.pt"
    if not encoder.is_file():
        resume = (pretrain_dir / "checkpoints" / "last.pt").is_file()
        encoder = run_pretraining(config, pretrain_dir, resume=resume, entries=entries).encoder_path
    timings["pretrain_s"] = time.perf_counter() - started

    started = time.perf_counter()
    config.study.inits = {"scratch": None, args.method: str(encoder)}
    run_study_from_config(config, out / "study")
    timings["study_s"] = time.perf_counter() - started

    results = pd.read_csv(out / "study" / "results.csv", dtype={"case_id": str})
    summary = summarize(results, "dice", n_resamples=config.study.bootstrap, seed=config.seed)
    smallest = summary["n_labeled"].min()
    print(f"\nbenchmark: label efficiency on the synthetic CT cohort ({s['n_ct']} annotated cases, "
          f"{len(split.test)} test), {len(s['seeds'])} seeds, method {args.method}, "
          f"{s['pretrain_steps']} pretraining steps, {s['finetune_steps']} fine-tuning steps")
    print(f"mean Dice over seeds [95% bootstrap CI over test cases and seeds]")
    for _, row in summary.iterrows():
        print(f"  {row['init']:>10} {int(row['n_labeled']):>3} labeled: {row['mean']:.3f} ± {row['sd']:.3f} "
              f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
              + ("" if row["init"] == "scratch" else
                 f"   diff {row['diff']:+.3f} [{row['diff_low']:+.3f}, {row['diff_high']:+.3f}]"))
    at_smallest = summary[(summary["n_labeled"] == smallest) & (summary["init"] != "scratch")].iloc[0]
    goal = bool(at_smallest["diff"] >= 0.05 and at_smallest["diff_low"] > 0)
    print(f"\nat {int(smallest)} labeled cases: SSL - scratch = {at_smallest['diff']:+.3f} Dice "
          f"[{at_smallest['diff_low']:+.3f}, {at_smallest['diff_high']:+.3f}] -> goal (>= +0.05, CI > 0) "
          f"{'MET' if goal else 'NOT met'}")
    print("timings: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    record = {"settings": s, "method": args.method, "timings": timings, "goal_met": goal,
              "summary": summary.to_dict("records")}
    (out / "benchmark.json").write_text(json.dumps(record, indent=2, default=float) + "\n")
    print(f"report: {out / 'study' / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
