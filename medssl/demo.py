"""``medssl demo``: the whole mission end to end on built-in data.

1. write the synthetic hospital cohort (:func:`medssl.synthetic.make_synthetic_cohort`): CT
   DICOM series with planted identifiers and a messy export, masks and ``labels.csv``;
2. scan its archive into a de-identified manifest (:func:`medssl.data.manifest.write_manifest`);
3. split the labeled cases by patient; the test patients are kept out of pretraining;
4. pretrain each method of ``demo.methods`` on the remaining CT volumes
   (:func:`medssl.engine.pretrain.run_pretraining`); ``pretrain/volumes.csv`` lists them by
   pseudonymous volume id;
5. run the label-efficiency study: scratch against every pretrained encoder at each label budget over
   several seeds (:func:`medssl.study.label_efficiency.run_study_from_config`), and print the table.

Every stage writes into one run folder and is skipped when its output is already there, so a demo
that was interrupted continues where it stopped. The defaults live in ``configs/demo.yaml``.

Example:
    >>> from pathlib import Path
    >>> result = run_demo(Path("demo_run"), quick=True)  # doctest: +SKIP
    >>> result.report  # doctest: +SKIP
    PosixPath('demo_run/study/report.md')
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd
from pydantic import ValidationError

from medssl.config import AugmentationConfig, Config, load_config
from medssl.errors import ConfigError, DataError
from medssl.utils.atomic import atomic_write

log = logging.getLogger(__name__)

#: Overrides that make ``--quick`` a smoke test of every stage (tens of seconds on 2 cores).
QUICK_OVERRIDES = (
    "demo.n_ct=10",
    "demo.n_unlabeled_ct=4",
    "demo.size=32",
    "demo.messy=true",
    "pretrain.steps=6",
    "pretrain.batch_size=4",
    "pretrain.checkpoint_every=3",
    "pretrain.log_every=2",
    "pretrain.augmentation.patch_size=[32, 32]",
    "finetune.patch_size=[32, 32]",
    "finetune.steps=6",
    "finetune.batch_size=2",
    "finetune.semi.start_step=2",
    "finetune.semi.rampup_steps=2",
    "study.workers=1",
    "study.budgets=[2, 4]",
    "study.seeds=[0]",
    "study.bootstrap=50",
)


def demo_config_path() -> Path:
    """``configs/demo.yaml`` as shipped with the package."""
    return Path(__file__).resolve().parent / "configs" / "demo.yaml"


def load_demo_config(quick: bool = False, overrides: Sequence[str] = ()) -> Config:
    """The demo's config: ``configs/demo.yaml``, then the ``--quick`` overrides, then the user's."""
    return load_config(demo_config_path(), [*(QUICK_OVERRIDES if quick else ()), *overrides])


@dataclass
class DemoResult:
    run_dir: Path
    manifest: Path
    encoders: dict[str, Path]
    report: Path
    summary: pd.DataFrame
    seconds: float


def _write_cohort(config: Config, cohort_dir: Path) -> None:
    from medssl.synthetic import make_synthetic_cohort

    if (cohort_dir / "cohort.json").is_file() and (cohort_dir / "labels.csv").is_file():
        log.info("cohort already written in %s: reused", cohort_dir)
        return
    demo = config.demo
    info = make_synthetic_cohort(
        cohort_dir,
        n_ct=demo.n_ct,
        n_mr=demo.n_mr,
        n_unlabeled_ct=demo.n_unlabeled_ct,
        n_unlabeled_mr=demo.n_unlabeled_mr,
        size=demo.size,
        seed=config.seed,
        messy=demo.messy,
        overwrite=True,
    )
    log.info("%s", info.summary())


def _test_patients(config: Config, cache_dir: Path) -> tuple[set[str], pd.DataFrame]:
    """The image paths (absolute) of the study's test patients, and the labels table."""
    from medssl.eval.data import load_labeled_data
    from medssl.study.label_efficiency import make_splits

    data = load_labeled_data(config, cache_dir)
    test_ids: set[str] = set()
    for split in make_splits(config, data):
        test_ids.update(split.test)
    test_paths = set(data.entries.loc[data.entries["case_id"].isin(test_ids), "path"].map(_resolved))
    return test_paths, data.table


def _resolved(path: str | Path) -> str:
    return str(Path(path).resolve())


def pretraining_entries(manifest: pd.DataFrame, root: Path, exclude_images: set[str], modalities: list[str] | None) -> pd.DataFrame:
    """Manifest rows usable for pretraining: readable, of the wanted modalities, and not of a patient
    whose images are in ``exclude_images`` (:func:`medssl.data.unlabeled.unlabeled_entries`)."""
    from medssl.data.unlabeled import unlabeled_entries

    return unlabeled_entries(manifest, root, exclude_images, modalities)


def method_augmentation(config: Config, method: str) -> AugmentationConfig:
    """``pretrain.augmentation`` with the fields of ``demo.method_augmentation[method]`` replaced
    (validated: an unknown field or a bad value is a :class:`ConfigError` naming the method)."""
    changes = dict(config.demo.method_augmentation.get(method) or {})
    if not changes:
        return config.pretrain.augmentation.model_copy(deep=True)
    try:
        return AugmentationConfig.model_validate({**config.pretrain.augmentation.model_dump(), **changes})
    except ValidationError as exc:
        raise ConfigError(f"demo.method_augmentation.{method}: {exc}") from exc


def _pretrain(config: Config, method: str, entries: pd.DataFrame, run_dir: Path) -> Path:
    from medssl.engine.pretrain import run_pretraining

    encoder_path = run_dir / "encoder.pt"
    if encoder_path.is_file() and (run_dir / "metrics.csv").is_file():
        log.info("%s: encoder already exported in %s: reused", method, run_dir)
        return encoder_path
    method_config = config.model_copy(deep=True)
    method_config.pretrain.method = method
    method_config.pretrain.method_args = dict(config.demo.method_args.get(method, {}))
    method_config.pretrain.augmentation = method_augmentation(config, method)
    resume = (run_dir / "checkpoints" / "last.pt").is_file()
    result = run_pretraining(method_config, run_dir, resume=resume, entries=entries)
    log.info("%s: pretrained in %s (final loss %.4f)", method, run_dir, result.final_loss)
    return Path(result.encoder_path)


def format_summary(summary: pd.DataFrame, metric: str) -> str:
    """The study's headline table: one row per budget, one column per initialisation."""
    table = summary[summary["metric"] == metric] if "metric" in summary.columns else summary
    if table.empty:
        return "(no results)"
    cells = {}
    for _, row in table.iterrows():
        text = f"{row['mean']:.3f} ± {row['sd']:.3f}" if pd.notna(row.get("sd")) else f"{row['mean']:.3f}"
        if pd.notna(row.get("ci_low")) and pd.notna(row.get("ci_high")):
            text += f" [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
        cells[(row["n_labeled"], row["init"])] = text
    budgets = sorted({k[0] for k in cells})
    inits = list(dict.fromkeys(k[1] for k in cells))
    wide = pd.DataFrame([[cells.get((b, i), "") for i in inits] for b in budgets], index=budgets, columns=inits)
    wide.index.name = "labeled cases"
    return wide.to_string()


def run_demo(out: Path, quick: bool = False, overrides: Sequence[str] = ()) -> DemoResult:
    """Run the demo into ``out`` (see the module docstring) and print where everything is."""
    import torch

    from medssl.data.manifest import manifest_root, write_manifest
    from medssl.study.label_efficiency import run_study_from_config

    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = load_demo_config(quick, overrides)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    cohort_dir = out / "cohort"
    cache_dir = out / "cache"
    config.data.cache_dir = str(cache_dir)
    config.study.labels = str(cohort_dir / "labels.csv")

    print(f"[1/5] writing the synthetic hospital cohort to {cohort_dir}", flush=True)
    _write_cohort(config, cohort_dir)

    print("[2/5] scanning the archive into a de-identified manifest", flush=True)
    manifest_path = out / "manifest.csv"
    manifest = write_manifest(cohort_dir / "archive", manifest_path, progress=False)
    counts = manifest["status"].value_counts().to_dict()
    print(f"      {len(manifest)} entries: {counts} -> {manifest_path}", flush=True)

    print("[3/5] splitting the labeled cases by patient; test patients are left out of pretraining", flush=True)
    test_images, _ = _test_patients(config, cache_dir)
    exclude = test_images if config.demo.exclude_test_patients else set()
    entries = pretraining_entries(manifest, manifest_root(manifest) or cohort_dir / "archive", exclude,
                                  config.data.modalities)

    volumes_path = out / "pretrain" / "volumes.csv"
    volumes_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(volumes_path, "w", encoding="utf-8", newline="") as handle:
        entries[["volume_id", "patient_key", "modality"]].to_csv(handle, index=False)

    encoders: dict[str, Path] = {}
    for number, method in enumerate(config.demo.methods, start=1):
        print(f"[4/5] pretraining {method} ({number}/{len(config.demo.methods)}) on {len(entries)} volumes", flush=True)
        encoders[method] = _pretrain(config, method, entries, out / "pretrain" / method)

    arms = "scratch against each pretrained encoder" + (
        f", each also with {', '.join(m for m in config.study.semi or [] if m != 'none')} on the unlabeled volumes"
        if any(m != "none" for m in config.study.semi or []) else "")
    print(f"[5/5] label-efficiency study: {arms}", flush=True)
    config.study.inits = {"scratch": None, **{m: str(p) for m, p in encoders.items()}}
    semi_arms = [m for m in (config.study.semi or []) if m != "none"]
    if semi_arms and config.study.unlabeled is None:  # the archive a second time, test patients left out
        config.study.unlabeled = str(manifest_path)
    study_dir = out / "study"
    report = run_study_from_config(config, study_dir)
    summary_path = study_dir / "summary.csv"
    summary = pd.read_csv(summary_path) if summary_path.is_file() else pd.DataFrame()
    seconds = time.perf_counter() - started

    print()
    print(f"Mean {config.study.metric} on the test patients (± sd over seeds, [95% bootstrap interval]):")
    print(format_summary(summary, config.study.metric))
    from medssl.study.console import study_warnings

    for warning in study_warnings(study_dir, config.study.metric, config.study.baseline):
        print()
        print(warning)
    print()
    print(f"Run folder: {out.resolve()}  ({seconds / 60:.1f} min)")
    print(f"  report:      {report}")
    print(f"  report.html: {report.with_suffix('.html')}")
    print(f"  results:     {study_dir / 'results.csv'}")
    print(f"  manifest:    {manifest_path}")
    for method, path in encoders.items():
        print(f"  encoder ({method}): {path}")
    return DemoResult(out, manifest_path, encoders, Path(report), summary, seconds)
