"""Label-efficiency studies: how much does an initialisation buy at 2, 4, 8... labeled cases?

:func:`run_label_efficiency` runs every cell ``init x budget x seed (x fold)`` of a study and
returns the tidy per-case results (:data:`medssl.study.summary.RESULT_COLUMNS`);
:func:`run_study_from_config` (``medssl study``, ``pipelines/label_efficiency.py``) also writes the
report (:func:`medssl.study.report.write_report`) and the run record (:mod:`medssl.study.run_record`).

Design (what makes the numbers trustworthy):

* **Patient-level, fixed test set.** The labeled cases are split once by patient
  (:func:`medssl.data.splits.split_by_patient`, seed ``config.seed``, stratified on
  ``study.stratify_column``), or the designated test set is used as given (``study.test_cases``
  or a ``split`` column of the labels table, :mod:`medssl.data.fixed_split`); the test cases are
  the same for every budget, seed and initialisation. With ``study.folds >= 2`` each patient-level fold
  (:func:`~medssl.data.splits.kfold_by_patient`) is the test set in turn and the results cover
  every case once per seed.
* **Nested budgets per seed.** For seed ``s`` the labeled subsets of the training pool come from
  :func:`~medssl.data.splits.nested_label_budgets` (seeded by ``s``): the 2 cases lie inside the 4,
  inside the 8, and every initialisation trains on the *same* cases for a given seed, so the
  comparison between initialisations is paired.
* **Common random numbers.** A cell's seed depends on ``(config.seed, seed, fold, budget)`` and not
  on the initialisation: scratch and pretrained runs start from the same random decoder and see the
  same patches in the same order; only the encoder weights differ.
* **Resumable.** A finished cell is written atomically to ``cells/<init>/<cell>.csv`` with a JSON
  record (its key hashes the config, the data fingerprint, the encoder file and the case ids it
  used; ``finetune.semi`` and ``study.unlabeled`` only for the semi-supervised arms); a re-run skips
  cells whose key matches and recomputes the others. The same config on the
  same data gives the same numbers on CPU, whether or not it was interrupted.

Layout of ``run_dir``: ``config.yaml``, ``manifest.json``, ``cells/``, ``results.csv``,
``summary.csv``, ``plots/``, ``report.md``, ``report.html``, ``cache/`` (preprocessed volumes,
unless ``data.cache_dir`` is set).

Example::

    config = load_config("configs/study/label_efficiency_ct.yaml", ["study.seeds=[0,1]"])
    report = run_study_from_config(config, "runs/study")
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from medssl.config import Config, dump_config
from medssl.errors import ConfigError, DataError
from medssl.eval.data import PATIENT, LabeledData, load_labeled_data, resolve_stratify_column
from medssl.eval.experiment import scratch_encoder_config, train_and_evaluate, whole_volume_features
from medssl.eval.networks import check_patch_size, is_scratch
from medssl.study.overlays import SLICES_SUFFIX, overlay_cell, overlay_slices, save_slices
from medssl.study.run_record import cell_records, collect_environment, now_iso, write_run_record
from medssl.study.summary import RESULT_COLUMNS
from medssl.utils.atomic import atomic_write, atomic_write_text
from medssl.utils.provenance import file_fingerprint, text_fingerprint
from medssl.utils.seeding import derive_seed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CellPlan:
    """One run of a study: an arm (an init, and a semi-supervised method or ``none``) trained on
    ``train_ids`` (and, semi-supervised, the ``unlabeled_ids`` without their annotation) and scored
    on ``test_ids``."""

    init: str
    budget: float
    seed: int
    fold: int
    train_ids: tuple[str, ...]
    val_ids: tuple[str, ...]
    test_ids: tuple[str, ...]
    semi: str = "none"
    unlabeled_ids: tuple[str, ...] = ()

    @property
    def arm(self) -> str:
        """The arm's name in tables and folders: the init, ``+method`` when semi-supervised."""
        return arm_name(self.init, self.semi)

    @property
    def n_labeled(self) -> int:
        return len(self.train_ids)

    @property
    def name(self) -> str:
        budget = f"{self.budget:g}".replace(".", "p")
        return f"b{budget}_s{self.seed}_f{self.fold}"


@dataclass(frozen=True)
class Split:
    """One fixed test set (a fold) and its training pool (and validation cases)."""

    fold: int
    pool: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]


def arm_name(init: str, semi: str) -> str:
    """``scratch`` + ``none`` -> ``scratch``; ``simclr`` + ``fixmatch`` -> ``simclr+fixmatch``."""
    return init if semi == "none" else f"{init}+{semi}"


def study_arms(config: Config) -> list[tuple[str, str]]:
    """``(init, semi method)`` of every arm: ``study.inits`` crossed with ``study.semi`` (or with
    ``finetune.semi.method`` alone when ``study.semi`` is not set)."""
    methods = config.study.semi if config.study.semi is not None else [config.finetune.semi.method]
    return [(init, method) for method in methods for init in config.study.inits]


def arm_config(config: Config, semi: str) -> Config:
    """``config`` with ``finetune.semi.method`` set to the arm's method (everything else the same)."""
    if config.finetune.semi.method == semi:
        return config
    arm = config.model_copy(deep=True)
    arm.finetune.semi.method = semi  # type: ignore[assignment]
    return arm


def _stratify(config: Config, table: pd.DataFrame, quiet: bool = False) -> str | None:
    return resolve_stratify_column(config, table.columns, quiet=quiet)


def make_splits(config: Config, data: LabeledData) -> list[Split]:
    """The patient-level test set(s) of the study (see module docstring); a designated test set
    (``study.test_cases`` or the labels table's ``study.split_column``) is used as given."""
    from medssl.data.fixed_split import designated_sides
    from medssl.data.splits import kfold_by_patient

    study, table = config.study, data.table
    stratify = _stratify(config, table)
    if study.folds >= 2 and designated_sides(table, study.split_column) is not None:
        raise ConfigError(f"the labels table's {study.split_column!r} column designates a test set; it does not "
                          "combine with study.folds (set study.split_column: null to draw k folds)")
    if study.folds >= 2:
        if study.val_fraction > 0:
            raise ConfigError("study.val_fraction with study.folds is not supported: use one or the other")
        folds = kfold_by_patient(table, study.folds, seed=config.seed, patient_col=PATIENT, stratify_col=stratify)
        return [Split(int(f), tuple(table.loc[folds != f, "case_id"]), (), tuple(table.loc[folds == f, "case_id"]))
                for f in sorted(folds.unique())]
    sides = study_sides(config, table, stratify)
    return [Split(0, tuple(table.loc[sides == "train", "case_id"]), tuple(table.loc[sides == "val", "case_id"]),
                  tuple(table.loc[sides == "test", "case_id"]))]


def designated_test_set(config: Config, table: pd.DataFrame) -> bool:
    """Whether the study's test set is designated (``study.test_cases`` or a split column) rather than drawn."""
    from medssl.data.fixed_split import designated_sides

    return bool(config.study.test_cases) or designated_sides(table, config.study.split_column) is not None


def study_sides(config: Config, table: pd.DataFrame, stratify: str | None = None) -> pd.Series:
    """``train``/``val``/``test`` (or ``excluded``) per row of the labels table: the designated test
    set when there is one, else a patient-level draw (:func:`medssl.data.fixed_split.split_with_designated_test`)."""
    from medssl.data.fixed_split import split_with_designated_test

    study = config.study
    return split_with_designated_test(table, test_cases=study.test_cases, split_column=study.split_column,
                                      patient_col=PATIENT, test_fraction=study.test_fraction,
                                      val_fraction=study.val_fraction, seed=config.seed, stratify_col=stratify)


def plan_cells(config: Config, data: LabeledData, splits: Sequence[Split]) -> list[CellPlan]:
    """Every cell, ordered fold, seed, budget, init (so partial results fill the table evenly)."""
    from medssl.data.splits import nested_label_budgets

    study, table = config.study, data.table.set_index("case_id", drop=False)
    stratify = _stratify(config, data.table, quiet=True)
    cells = []
    for split in splits:
        pool = table.loc[list(split.pool)].reset_index(drop=True)
        for seed in study.seeds:
            subsets = nested_label_budgets(pool, study.budgets, seed=derive_seed(config.seed, "budgets", seed, split.fold),
                                           patient_col=PATIENT, stratify_col=stratify, id_col="case_id")
            for budget in sorted(study.budgets):
                labeled = tuple(subsets[budget])
                unlabeled = tuple(c for c in split.pool if c not in set(labeled))
                for init, semi in study_arms(config):
                    cells.append(CellPlan(init, float(budget), int(seed), split.fold, labeled, split.val, split.test,
                                          semi=semi, unlabeled_ids=unlabeled if semi != "none" else ()))
    return cells


def study_subgroups(config: Config, data: LabeledData) -> dict[str, dict[str, str]]:
    """``column -> {case id -> value}`` for each of ``study.subgroup_columns`` (the report's table of
    scores by subgroup, :mod:`medssl.study.subgroups`).

    Raises:
        ConfigError: a column is not in the labels table (named with the table's columns)."""
    from medssl.study.subgroups import subgroup_values

    found = {}
    for column in config.study.subgroup_columns:
        if column not in data.table.columns:
            raise ConfigError(f"study.subgroup_columns: the labels table {config.study.labels or ''} has no column "
                              f"{column!r} (its columns: {', '.join(map(str, data.table.columns))})")
        found[column] = subgroup_values(data.table, column)
    return found


def labeled_cases_of(plans: Sequence[CellPlan]) -> list[dict[str, Any]]:
    """Each run's labeled cases, once per ``(budget, seed, fold)`` (every arm of a run has the same)."""
    runs: dict[tuple[float, int, int], list[str]] = {}
    for plan in plans:
        runs.setdefault((float(plan.budget), int(plan.seed), int(plan.fold)), list(plan.train_ids))
    return [{"budget": b, "seed": s, "fold": f, "case_ids": ids} for (b, s, f), ids in runs.items()]


def _init_fingerprints(inits: dict[str, str | None]) -> dict[str, str]:
    return {name: "scratch" if is_scratch(path) else file_fingerprint(path) for name, path in inits.items()}


def study_key(config: Config, data: LabeledData) -> str:
    """Everything a labels-only cell's numbers depend on besides its init, seed, fold and cases.

    ``finetune.semi`` and ``study.unlabeled`` are left out: they change the semi-supervised arms
    only (:func:`semi_key`), so tuning those arms reuses the finished labels-only cells.
    """
    return text_fingerprint(
        json.dumps(config.finetune.model_dump(mode="json", exclude={"semi"}), sort_keys=True),
        json.dumps(config.data.preprocess.model_dump(mode="json"), sort_keys=True),
        json.dumps(config.pretrain.encoder.model_dump(mode="json"), sort_keys=True),
        config.study.evaluation, config.study.knn_k, config.study.probe_c, config.seed, data.fingerprint,
        data.content_key,
    )


def semi_key(config: Config) -> str:
    """What a semi-supervised cell depends on beyond :func:`study_key`: the ``finetune.semi``
    settings and the ``study.unlabeled`` manifest's content."""
    return text_fingerprint(
        json.dumps(config.finetune.semi.model_dump(mode="json"), sort_keys=True),
        file_fingerprint(config.study.unlabeled) if config.study.unlabeled else "",
    )


def unlabeled_archive(config: Config, data: LabeledData, splits: Sequence[Split]) -> dict[int, pd.DataFrame]:
    """Per fold, the volumes of ``study.unlabeled`` (a manifest) usable as unlabeled data: readable,
    of ``data.modalities``, of no patient with a test or validation case in that fold, and not one of
    the labeled cases' own images (those reach the pool as labeled-table cases already)."""
    from medssl.data.manifest import load_manifest, manifest_root
    from medssl.data.unlabeled import unlabeled_entries

    path = Path(config.study.unlabeled)  # type: ignore[arg-type]
    manifest = load_manifest(path, require_locations=True)
    root = manifest_root(manifest) or path.parent
    table = data.entries.set_index("case_id")
    labeled_images = {str(Path(p).resolve()) for p in table["path"]}
    per_fold = {}
    for split in splits:
        held_out = list(split.test) + list(split.val)
        images = {str(Path(p).resolve()) for p in table.loc[held_out, "path"]}
        patients = set(data.table.loc[data.table["case_id"].isin(held_out), PATIENT].astype(str))
        rows = unlabeled_entries(manifest, root, images, config.data.modalities, exclude_patients=patients,
                                 purpose="consistency training")
        per_fold[split.fold] = rows[~rows["path"].isin(labeled_images)].reset_index(drop=True)
    return per_fold


def _cell_key(base: str, semi_settings: str, plan: CellPlan, init_fingerprint: str) -> str:
    semi = () if plan.semi == "none" else (plan.semi, semi_settings, sorted(plan.unlabeled_ids))
    return text_fingerprint(base, init_fingerprint, plan.budget, plan.seed, plan.fold,
                            sorted(plan.train_ids), sorted(plan.val_ids), sorted(plan.test_ids), *semi)


def _cell_paths(run_dir: Path, plan: CellPlan) -> tuple[Path, Path]:
    folder = run_dir / "cells" / plan.arm
    return folder / f"{plan.name}.csv", folder / f"{plan.name}.json"


def _load_finished(run_dir: Path, plan: CellPlan, key: str) -> pd.DataFrame | None:
    csv_path, json_path = _cell_paths(run_dir, plan)
    if not (csv_path.is_file() and json_path.is_file()):
        return None
    try:
        record = json.loads(json_path.read_text(encoding="utf-8"))
        if record.get("cell_key") != key:
            log.warning("cell %s/%s was computed with other settings or data; recomputing it", plan.arm, plan.name)
            return None
        rows = pd.read_csv(csv_path, dtype={"case_id": str, "init": str, "metric": str})
    except (OSError, ValueError) as exc:
        log.warning("cell %s/%s is unreadable (%s); recomputing it", plan.arm, plan.name, exc)
        return None
    if list(rows.columns) != RESULT_COLUMNS or rows.empty:
        log.warning("cell %s/%s holds an unexpected table; recomputing it", plan.arm, plan.name)
        return None
    return rows


def to_long(per_case: pd.DataFrame, plan: CellPlan) -> pd.DataFrame:
    """A per-case table (``case_id`` + metric columns) -> tidy rows of :data:`RESULT_COLUMNS`."""
    long = per_case.melt(id_vars=["case_id"], var_name="metric", value_name="value")
    long["value"] = long["value"].astype(float)
    long.insert(0, "init", plan.arm)
    long.insert(1, "budget", plan.budget)
    long.insert(2, "n_labeled", plan.n_labeled)
    long.insert(3, "seed", plan.seed)
    long.insert(4, "fold", plan.fold)
    return long[RESULT_COLUMNS]


def run_label_efficiency(
    config: Config,
    run_dir: str | os.PathLike,
    *,
    data: LabeledData | None = None,
    resume: bool = True,
) -> pd.DataFrame:
    """Run (or resume) every cell of the study in ``run_dir``; returns the tidy results.

    ``data`` defaults to :func:`medssl.eval.data.load_labeled_data` of ``config``. With
    ``resume=False`` finished cells are recomputed.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    study = config.study
    if study.evaluation != "finetune" and config.finetune.task != "classification":
        raise ConfigError(f"study.evaluation={study.evaluation} is a probe of case-level classes: "
                          "set finetune.task=classification (and finetune.label_column)")
    arms = [arm_name(init, semi) for init, semi in study_arms(config)]
    if study.baseline not in arms:
        log.warning("study.baseline %r is not among the arms %s: no difference tables", study.baseline, arms)
    for name, path in study.inits.items():
        if not is_scratch(path) and not Path(path).is_file():
            raise ConfigError(f"study.inits.{name}: encoder file {path} does not exist")
    check_segmentation_patch_size(config)
    atomic_write_text(run_dir / "config.yaml", dump_config(config))
    data_from_config = data is None
    if data is None:
        data = load_labeled_data(config, config.data.cache_dir or run_dir / "cache")
        if not config.data.cache_dir:  # worker processes find the same cache
            config = config.model_copy(deep=True)
            config.data.cache_dir = str(run_dir / "cache")
    splits = make_splits(config, data)
    plans = plan_cells(config, data, splits)
    base_key, semi_settings = study_key(config, data), semi_key(config)
    needs_archive = study.unlabeled and any(plan.semi != "none" for plan in plans)
    archive = unlabeled_archive(config, data, splits) if needs_archive else {}
    init_prints = _init_fingerprints(study.inits)
    encoder_config = scratch_encoder_config(config, study.inits)

    subgroups = study_subgroups(config, data)
    manifest: dict[str, Any] = {
        "kind": "label_efficiency",
        "task": config.finetune.task,
        "evaluation": study.evaluation,
        "started": now_iso(),
        "finished": None,
        "config": config.model_dump(mode="json"),
        "environment": collect_environment(),
        "data_fingerprint": data.fingerprint,
        "n_cases": len(data.cases),
        "n_patients": int(data.table[PATIENT].nunique()),
        "seeds": {"config_seed": config.seed, "study_seeds": list(study.seeds),
                  "cell_seed": "derive_seed(config.seed, 'cell', seed, fold, budget)"},
        "test_set": "designated" if designated_test_set(config, data.table) else "drawn",
        "splits": [{"fold": s.fold, "test": list(s.test), "val": list(s.val), "pool_size": len(s.pool)} for s in splits],
        "inits": {name: {"path": None if is_scratch(path) else str(Path(path).resolve()),
                         "fingerprint": init_prints[name]} for name, path in study.inits.items()},
        "arms": {arm_name(init, semi): {"init": init, "semi": semi} for init, semi in study_arms(config)},
        "scratch_encoder": encoder_config,
        "study_key": base_key,
        "cells": len(plans),
        "labeled_cases": labeled_cases_of(plans),
        "subgroups": subgroups,
    }
    write_run_record(run_dir / "manifest.json", manifest)

    features: dict[str, dict] = {}
    segmentation = config.finetune.task == "segmentation" and study.evaluation == "finetune"
    frames: dict[int, pd.DataFrame] = {}
    pending: list[tuple[int, CellPlan, dict[str, Any]]] = []
    for number, plan in enumerate(plans, start=1):
        key = _cell_key(base_key, semi_settings, plan, init_prints[plan.init])
        finished = _load_finished(run_dir, plan, key) if resume else None
        if finished is not None:
            frames[number] = finished
            continue
        init_path = study.inits[plan.init]
        if study.evaluation != "finetune" and plan.init not in features:
            features[plan.init] = whole_volume_features(config, data, init_path, encoder_config)
        pending.append((number, plan, {
            "key": key, "seed": derive_seed(config.seed, "cell", plan.seed, plan.fold, plan.budget) % (2**31),
            "encoder_config": encoder_config, "run_dir": run_dir,
            "pictures": bool(segmentation and overlay_cell(plan, study.budgets, study.seeds)),
            "unlabeled_entries": archive.get(plan.fold) if plan.semi != "none" else None,
        }))

    def commit(number: int, plan: CellPlan, long: pd.DataFrame, record: dict[str, Any]) -> None:
        csv_path, json_path = _cell_paths(run_dir, plan)
        atomic_write_text(json_path, json.dumps(record, indent=2, default=str) + "\n")
        with atomic_write(csv_path, "w", encoding="utf-8", newline="") as handle:  # the commit marker
            long.to_csv(handle, index=False)
        frames[number] = long
        log.info("cell %d/%d: %s, %d labeled case(s), seed %d, fold %d: %s (%.1f s)", number, len(plans),
                 plan.arm, plan.n_labeled, plan.seed, plan.fold, cell_headline(long, study.metric),
                 record.get("seconds", 0.0))

    workers = min(study.workers, len(pending))
    if workers > 1 and study.evaluation == "finetune" and data_from_config:
        _run_cells_in_processes(config, pending, workers, commit)
    else:
        for number, plan, job in pending:
            long, record = compute_cell(config, data, plan, features=features.get(plan.init), **job)
            commit(number, plan, long, record)
    log.info("study: %d cell(s) computed, %d reused from %s", len(pending), len(plans) - len(pending),
             run_dir / "cells")
    computed = len(pending)
    frames = [frames[number] for number in sorted(frames)]
    if not frames:
        raise DataError("the study has no cell to run")
    results = pd.concat(frames, ignore_index=True)
    manifest["finished"] = now_iso()
    manifest["cells_computed"] = computed
    write_run_record(run_dir / "manifest.json", manifest)
    return results


def compute_cell(config: Config, data: LabeledData, plan: CellPlan, *, key: str, seed: int, encoder_config: Any,
                 run_dir: Path, pictures: bool, unlabeled_entries: pd.DataFrame | None,
                 features: dict | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One cell: train the arm on its labeled (and unlabeled) cases, score its test cases; the tidy
    rows and the cell record. With ``pictures`` the slices of the report's overlays are saved too."""
    outcome = train_and_evaluate(arm_config(config, plan.semi), data, config.study.inits[plan.init],
                                 train_ids=plan.train_ids, test_ids=plan.test_ids, val_ids=plan.val_ids, seed=seed,
                                 encoder_config=encoder_config, features=features, unlabeled_ids=plan.unlabeled_ids,
                                 unlabeled_entries=unlabeled_entries, keep_model=pictures)
    if pictures and outcome.model is not None:  # one slice per test case for the report's overlays
        save_slices(_cell_paths(run_dir, plan)[0].with_suffix(SLICES_SUFFIX),
                    overlay_slices(outcome.model, data.subset(list(plan.test_ids)), config.finetune))
        outcome.model = None
    record = dict(outcome.record, cell_key=key, init=plan.init, arm=plan.arm, semi=plan.semi,
                  budget=plan.budget, seed=plan.seed, fold=plan.fold, cell_seed=seed,
                  train_ids=list(plan.train_ids), finished=now_iso())
    return to_long(outcome.per_case, plan), record


def _cell_in_worker(config_json: dict[str, Any], plan: CellPlan, job: dict[str, Any]
                    ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """:func:`compute_cell` in a worker process: one torch thread, the labeled data read back from the
    (warm) cache."""
    import torch

    torch.set_num_threads(1)
    config = Config.model_validate(config_json)
    data = load_labeled_data(config, config.data.cache_dir)
    return compute_cell(config, data, plan, **job)


def _run_cells_in_processes(config: Config, pending: Sequence[tuple[int, CellPlan, dict[str, Any]]], workers: int,
                            commit: Any) -> None:
    """``study.workers`` cells at a time in separate processes (spawned: no state shared with the
    parent but the config and the cache on disk); each cell is committed by this process as it ends.
    A cell's numbers do not depend on the process that computed it (its seed is its own)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    log.info("study: %d cell(s) in %d worker processes (one torch thread each)", len(pending), workers)
    config_json = config.model_dump(mode="json")
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_cell_in_worker, config_json, plan, job): (number, plan)
                   for number, plan, job in pending}
        for future in as_completed(futures):
            number, plan = futures[future]
            long, record = future.result()
            commit(number, plan, long, record)


def check_segmentation_patch_size(config: Config) -> None:
    """``finetune.patch_size`` fits the segmentation network of every init (checked before any data
    is read; :func:`medssl.eval.networks.check_patch_size`)."""
    from medssl.models import read_card

    if config.finetune.task != "segmentation" or config.study.evaluation != "finetune":
        return
    architectures = [scratch_encoder_config(config, config.study.inits)]
    architectures += [read_card(path)["encoder"] for path in config.study.inits.values() if not is_scratch(path)]
    for architecture in architectures:
        check_patch_size(architecture, config.finetune.patch_size)


def cell_headline(long: pd.DataFrame, metric: str) -> str:
    """One run's value of the study's headline ``metric`` for the log: the mean over the test cases
    that have it (a case-level metric), or the metric of the whole test set (AUC, F1...)."""
    from medssl.eval.metrics import CLASSIFICATION_METRICS, classification_metrics

    values = long.loc[long["metric"] == metric, "value"]
    if len(values) and values.notna().any():
        return f"{metric} {values.mean():.3f} (mean over {int(values.notna().sum())} test case(s))"
    if metric in CLASSIFICATION_METRICS and (long["metric"] == "target").any():
        wide = long.pivot_table(index="case_id", columns="metric", values="value", aggfunc="first")
        probs = sorted((c for c in wide.columns if str(c).startswith("prob_")), key=lambda c: int(str(c)[5:]))
        score = classification_metrics(wide["target"].to_numpy(), wide[probs].to_numpy(), num_classes=len(probs))
        return f"{metric} {score[metric]:.3f} (over {len(wide)} test case(s))"
    return f"{long['case_id'].nunique()} test case(s)"


def arm_costs(run_dir: str | os.PathLike) -> pd.DataFrame:
    """What each arm cost, from the cell records in ``run_dir/cells``: per arm and labeled cases, the
    mean seconds of a cell, its fine-tuning steps and the images forwarded in training."""
    rows = []
    for record in cell_records(run_dir):
        history = record.get("history") or {}
        rows.append({"arm": record.get("arm", record.get("init")), "labeled cases": record.get("n_train"),
                     "seconds": record.get("seconds"), "steps": history.get("steps"),
                     "images forwarded": history.get("forward_items")})
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame(rows).groupby(["arm", "labeled cases"], sort=True).mean(numeric_only=True).reset_index()
    return table.round({"seconds": 1, "steps": 0, "images forwarded": 0})


def run_study_from_config(config: Config, run_dir: str | os.PathLike, *, resume: bool = True) -> Path:
    """Run the study of ``config`` in ``run_dir`` and write its report; returns ``report.md``."""
    from medssl.study.overlays import write_overlays
    from medssl.study.report import class_label_of, write_report
    from medssl.study.teacher_diagnostics import pseudo_label_table
    from medssl.study.training_fit import training_fit_curves, training_fit_table

    run_dir = Path(run_dir)
    results = run_label_efficiency(config, run_dir, resume=resume)
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    metric = config.study.metric
    overlays = write_overlays(run_dir, results, metric if metric in set(results["metric"]) else "dice",
                              class_label=class_label_of(manifest))
    files = write_report(results, run_dir, primary=metric, baseline=config.study.baseline, manifest=manifest,
                         n_resamples=config.study.bootstrap, level=config.study.level, seed=config.seed,
                         resample_seeds=config.study.bootstrap_seeds, costs=arm_costs(run_dir), overlays=overlays,
                         teacher=pseudo_label_table(run_dir), training_fit=training_fit_table(run_dir),
                         training_curves=training_fit_curves(run_dir))
    return files.markdown
