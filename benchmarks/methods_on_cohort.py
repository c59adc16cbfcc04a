"""Every SSL method on the built-in cohort: does its loss fall, and at what speed? (issue 5 "done when")

For each method of ``medssl.methods.list_methods()`` (but the generic ``pretext`` entry, which needs a
task; each task is registered on its own), the script pretrains with the method's shipped
``configs/pretrain/<method>.yaml`` (encoder, heads, optimiser, batch, patch size and augmentation
unchanged) on the demo-size synthetic cohort (``configs/demo.yaml``: 24 annotated + 24 unlabeled CT
patients at size 64, messy export; the manifest leaves out what is not an image) for ``--steps``
steps, logging every step, through the real engine (:func:`medssl.engine.pretrain.run_pretraining`).
All methods share one preprocessing cache, warmed before the first timed run.

The table, from each run's ``metrics.csv``:

* ``from``: the first step measured: 1 for every method but MoCo and DINO, whose first losses are
  not comparable with the later ones. MoCo's queue starts as random unit vectors (as in the
  reference), far easier negatives than real keys, so its loss first *rises* while the queue fills;
  MoCo is measured from the first step whose negatives are all real keys, after
  ``ceil(queue_size / keys per step)`` steps (keys per step: ``batch_size``, twice that with
  ``symmetric``): 1024 / 16 = 64 steps with ``configs/pretrain/moco.yaml``, so steps 65-74 are
  compared with the last 10. DINO's centre starts at 0 and follows the teacher's batch mean with
  momentum 0.9, so for the first steps the teacher's output common to all samples is not centred
  away and the target is sharp *and* trivially predictable (the student starts as the teacher): the
  first losses are too low (with ``configs/pretrain/dino.yaml``: 6.7 at step 1, 7.1 at step 25 once
  centred). DINO is measured from the step at which the centre keeps less than 1% of its zero
  start, ``ceil(log 0.01 / log 0.9) = 44`` steps: steps 45-54 against the last 10. A run too short
  to have 2 x 2 measured steps after that is reported ``NO`` (``z`` n/a), never ``yes`` (so
  ``--quick``'s 30 steps cannot judge DINO);
* ``first10`` / ``last10``: mean loss over the first and the last 10 measured steps (5 each when
  fewer than 20 steps are measured, and so on);
* ``drop``: ``(first10 - last10) / |first10|`` (meaningless for losses near 0, such as SimSiam's
  negative cosine, which starts at about 0 and has its optimum at -1);
* ``z``: ``(first10 - last10) / SE`` with ``SE = sqrt(var_first / 10 + var_last / 10)``, the
  step-to-step noise of the two windows;
* ``falls``: ``yes`` when ``z > 2``, else ``NO``;
* ``embed_std``, ``eff_rank``: collapse monitors over the last 10 steps (:mod:`medssl.engine.monitors`:
  the mean per-dimension std of the L2-normalised embeddings and the RankMe effective rank of the
  last micro-batch's embeddings; a collapsed method shows std near 0 and rank near 1);
* ``seconds`` (wall clock of ``run_pretraining``) and ``samples/s`` (the engine's own figure).

Methods whose loss does not fall are listed at the end. The table is also written to
``<out>/methods_on_cohort.csv``.

Usage:
    python benchmarks/methods_on_cohort.py                         # all methods, 150 steps (~20 min on 2 cores)
    python benchmarks/methods_on_cohort.py --methods simclr,vicreg --steps 300
    python benchmarks/methods_on_cohort.py --quick                 # small cohort and 30 steps: a smoke test
                                                                   # (MoCo's queue shrunk to fill in 10 steps)
    python benchmarks/methods_on_cohort.py --set pretrain.optimizer.lr=0.0005   # extra overrides for every method
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("MEDSSL_PROGRESS", "0")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from medssl.config import load_config  # noqa: E402
from medssl.errors import MedsslError  # noqa: E402
from medssl.methods import list_methods  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WINDOW = 10
#: DINO is measured once the zero-initialised centre keeps less than this share of its start
CENTRE_LEFT = 0.01


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="all", help="comma-separated names (default: every registered method)")
    parser.add_argument("--steps", type=int, default=150, help="optimiser steps per method (default 150)")
    parser.add_argument("--out", type=Path, help="work folder: cohort, manifest, cache, runs (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (always kept when --out is given)")
    parser.add_argument("--quick", action="store_true", help="4+4 CT patients at size 32 and 30 steps: a smoke test")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="an extra dotted override for every method (repeatable), e.g. pretrain.batch_size=8")
    return parser.parse_args(argv)


def make_cohort(work: Path, quick: bool) -> Path:
    """The demo's cohort (``configs/demo.yaml`` sizes) and its manifest; both reused when present."""
    from medssl.data.manifest import write_manifest
    from medssl.synthetic import make_synthetic_cohort

    demo = load_config(ROOT / "configs" / "demo.yaml").demo
    cohort = work / "cohort"
    manifest = work / "manifest.csv"
    if not (cohort / "cohort.json").is_file():
        started = time.perf_counter()
        make_synthetic_cohort(
            cohort, n_ct=4 if quick else demo.n_ct, n_mr=demo.n_mr, n_unlabeled_ct=4 if quick else demo.n_unlabeled_ct,
            n_unlabeled_mr=demo.n_unlabeled_mr, size=32 if quick else demo.size, messy=demo.messy, progress=False,
            overwrite=True,
        )
        print(f"cohort written in {time.perf_counter() - started:.1f} s: {cohort}", flush=True)
    if not manifest.is_file():
        frame = write_manifest(cohort / "archive", manifest, progress=False)
        counts = {str(k): int(v) for k, v in frame["status"].value_counts().items()}
        print(f"manifest: {counts} -> {manifest}", flush=True)
    return manifest


def method_config(method: str, manifest: Path, cache: Path, steps: int, device: str, extra: list[str]):
    path = ROOT / "configs" / "pretrain" / f"{method}.yaml"
    if not path.is_file():
        raise MedsslError(f"no config for method {method!r}: {path} is missing")
    return load_config(path, [
        f"data.manifest={manifest}", f"data.cache_dir={cache}", f"pretrain.steps={steps}", "pretrain.log_every=1",
        f"pretrain.checkpoint_every={steps}", "pretrain.tensorboard=false", f"pretrain.device={device}", *extra,
    ])


def warm_cache(config: Any) -> int:
    """Preprocess the cohort once (shared by every method); returns the number of usable volumes."""
    from medssl.data.cache import PreprocessedCache
    from medssl.engine.pretrain import resolve_entries

    table, root = resolve_entries(config)
    started = time.perf_counter()
    report = PreprocessedCache(config.data.cache_dir, config.data.preprocess).warm(
        table, workers=config.data.num_workers, root=root)
    print(f"cache warmed in {time.perf_counter() - started:.1f} s: {int((report['status'] == 'ok').sum())} of "
          f"{len(table)} volumes", flush=True)
    return int((report["status"] == "ok").sum())


def warmup_steps(method: str, config: Any) -> tuple[int, str]:
    """Leading steps whose loss is not comparable with the rest, and why (``(0, "")`` if none).

    MoCo: until ``queue_size`` real keys have been enqueued, some negatives are the initial random
    unit vectors of the queue (easy negatives), so the early loss is too low. Keys per optimiser
    step: the global ``batch_size`` (every micro-batch and rank enqueues its keys), doubled by
    ``symmetric``. DINO: the centre starts at 0 and moves with ``center_momentum`` ``m``; its weight
    on that start is ``m^n`` after ``n`` steps, left out until it is below ``CENTRE_LEFT``.
    """
    if method not in ("moco", "dino"):
        return 0, ""
    import inspect

    from medssl.methods import DINO, MoCo

    cls = MoCo if method == "moco" else DINO
    defaults = {k: v.default for k, v in inspect.signature(cls.__init__).parameters.items()
                if v.default is not inspect.Parameter.empty}
    args = {**defaults, **dict(config.pretrain.method_args or {})}
    if method == "dino":
        momentum = float(args["center_momentum"])
        steps = math.ceil(math.log(CENTRE_LEFT) / math.log(momentum)) if momentum > 0 else 0
        return steps, (f"{method}: measured from step {steps + 1}: its centre starts at 0 and is a moving average "
                       f"(momentum {momentum}); until {momentum}^n < {CENTRE_LEFT} the teacher's common output is "
                       "not yet centred away, which makes the early loss too low")
    keys_per_step = int(config.pretrain.batch_size) * (2 if args["symmetric"] else 1)
    steps = math.ceil(int(args["queue_size"]) / keys_per_step)
    return steps, (f"{method}: measured from step {steps + 1}: its queue of {args['queue_size']} keys holds only real "
                   f"keys after {args['queue_size']} / {keys_per_step} keys per step = {steps} steps; the loss "
                   "against the initial random queue (easy negatives) is not comparable")


def summarise(method: str, metrics: pd.DataFrame, seconds: float, samples_per_s: float,
              skip: int = 0) -> dict[str, Any]:
    """One table row from a run's per-step metrics (see the module docstring for the columns); the
    first ``skip`` steps (see :func:`warmup_steps`) are left out of the comparison."""
    measured = metrics[metrics["step"] > skip]
    loss = measured["loss"].to_numpy(float)
    window = min(WINDOW, len(loss) // 2)
    if window < 2:  # too short to compare two noisy windows: never "yes"
        return {"method": method, "steps": int(metrics["step"].iloc[-1]), "from": skip + 1,
                "first10": float("nan"), "last10": float("nan"), "drop": float("nan"), "z": float("nan"),
                "falls": "NO", "embed_std": float("nan"), "eff_rank": float("nan"), "seconds": seconds,
                "samples/s": samples_per_s}
    first, last = loss[:window], loss[-window:]
    difference = float(first.mean() - last.mean())
    noise = math.sqrt(first.var(ddof=1) / window + last.var(ddof=1) / window)
    tail = measured.iloc[-window:]
    return {
        "method": method,
        "steps": int(metrics["step"].iloc[-1]),
        "from": int(measured["step"].iloc[0]),
        "first10": float(first.mean()),
        "last10": float(last.mean()),
        "drop": difference / abs(float(first.mean())) if first.mean() != 0 else float("nan"),
        "z": difference / noise if noise > 0 else float("nan"),
        "falls": "yes" if np.isfinite(metrics["loss"].to_numpy(float)).all() and difference > 2.0 * noise else "NO",
        "embed_std": float(tail["embed_std"].mean()) if "embed_std" in tail else float("nan"),
        "eff_rank": float(tail["effective_rank"].mean()) if "effective_rank" in tail else float("nan"),
        "seconds": seconds,
        "samples/s": samples_per_s,
    }


def run_method(method: str, config: Any, run_dir: Path, skip: int = 0) -> dict[str, Any]:
    from medssl.engine.pretrain import run_pretraining

    if run_dir.exists():
        shutil.rmtree(run_dir)
    started = time.perf_counter()
    result = run_pretraining(config, run_dir)
    seconds = time.perf_counter() - started
    return summarise(method, pd.read_csv(result.metrics_path), seconds, result.samples_per_second, skip)


def format_table(rows: list[dict[str, Any]]) -> str:
    header = f"{'method':<22} {'from':>4} {'first10':>9} {'last10':>9} {'drop':>7} {'z':>6} {'falls':>5} " \
             f"{'embed_std':>9} {'eff_rank':>8} {'seconds':>8} {'samples/s':>9}"
    lines = [header, "-" * len(header)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['method']:<22} FAILED: {r['error']}")
            continue
        drop = f"{r['drop']:>6.1%}" if abs(r["drop"]) < 10 else f"{'n/a':>7}"
        lines.append(f"{r['method']:<22} {r.get('from', 1):>4} {r['first10']:>9.4f} {r['last10']:>9.4f} {drop:>7} "
                     f"{r['z']:>6.1f} {r['falls']:>5} {r['embed_std']:>9.4f} {r['eff_rank']:>8.2f} "
                     f"{r['seconds']:>8.1f} {r['samples/s']:>9.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = [m for m in list_methods() if m != "pretext"] if args.methods == "all" else args.methods.split(",")
    steps = 30 if args.quick and args.steps == 150 else args.steps
    work = args.out or Path(tempfile.mkdtemp(prefix="medssl_methods_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"{len(methods)} methods x {steps} steps, torch {torch.__version__} with {torch.get_num_threads()} "
          f"thread(s), device {args.device}; work folder {work}", flush=True)
    rows: list[dict[str, Any]] = []
    try:
        manifest = make_cohort(work, args.quick)
        cache = work / "cache"
        warm_cache(method_config(methods[0], manifest, cache, steps, args.device, args.overrides))
        notes: list[str] = []
        for method in methods:
            try:
                config = method_config(method, manifest, cache, steps, args.device, args.overrides)
                if args.quick and method == "moco":  # a smoke test: let the queue fill within the first third
                    queue = config.pretrain.batch_size * max(1, steps // 3)
                    config = method_config(method, manifest, cache, steps, args.device,
                                           [f"pretrain.method_args.queue_size={queue}", *args.overrides])
                    notes.append(f"moco (--quick): queue_size={config.pretrain.method_args.get('queue_size')} (smoke "
                                 "test: the shipped queue would not fill in 30 steps)")
                skip, note = warmup_steps(method, config)
                if note:
                    notes.append(note)
                if skip and steps - skip < 4:
                    notes.append(f"{method}: {steps} steps are too few to judge after step {skip}: reported NO")
                row = run_method(method, config, work / "runs" / method, skip)
            except MedsslError as exc:
                row = {"method": method, "error": f"{type(exc).__name__}: {exc}"}
            rows.append(row)
            done = row.get("error") or (f"loss {row['first10']:.4f} -> {row['last10']:.4f} ({row['drop']:.1%}) "
                                        f"from step {row['from']}, {row['seconds']:.0f} s")
            print(f"  {method}: {done}", flush=True)
        print()
        print(format_table(rows))
        for note in notes:
            print(f"note: {note}")
        table = pd.DataFrame(rows)
        table.to_csv(work / "methods_on_cohort.csv", index=False)
        flat = [r["method"] for r in rows if r.get("falls") != "yes"]
        print()
        print("every method's loss falls" if not flat else f"loss does NOT fall (or the run failed): {', '.join(flat)}")
        if args.out is not None or args.keep:
            print(f"table: {work / 'methods_on_cohort.csv'}")
        return 0 if not flat else 1
    finally:
        if args.out is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
