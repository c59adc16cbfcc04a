"""One fine-tuning run from a config, as ``medssl finetune`` runs it: split, train, score, write.

:func:`run_finetuning` splits the labeled cases by patient, runs
:func:`medssl.eval.experiment.train_and_evaluate` once on every training case, and writes the
run folder. The training loops themselves live in :mod:`medssl.eval.finetune`.

Example::

    run = run_finetuning(load_config("configs/finetune/segmentation_ct.yaml"), "runs/ft",
                         init="runs/simclr/encoder.pt")
    print(run)      # init ..., trained on N case(s), tested on M: dice ...
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medssl.config import dump_config
from medssl.data.fixed_split import split_with_designated_test
from medssl.engine.run_lock import RunFolderLock, prepare_run_dir
from medssl.eval.data import PATIENT, load_labeled_data, resolve_stratify_column
from medssl.eval.experiment import scratch_encoder_config, train_and_evaluate
from medssl.eval.metrics import classification_metrics_from_table
from medssl.eval.networks import check_patch_size
from medssl.utils.atomic import atomic_torch_save, atomic_write, atomic_write_text

log = logging.getLogger(__name__)


@dataclass
class FinetuneRun:
    """What :func:`run_finetuning` wrote and measured."""

    run_dir: Any
    metrics: dict[str, float]
    n_train: int
    n_test: int
    init: str

    def __str__(self) -> str:
        scores = ", ".join(f"{k} {v:.4f}" for k, v in self.metrics.items())
        return (f"init {self.init}: trained on {self.n_train} case(s), tested on {self.n_test}: {scores}\n"
                f"per-case table: {self.run_dir}/per_case.csv; weights: {self.run_dir}/network.pt")


def run_finetuning(config: Any, run_dir: Any, init: str | None = None) -> FinetuneRun:
    """Fine-tune once on every training case of a patient-level split and score the test cases.

    The split is :func:`medssl.data.splits.split_by_patient` of ``study.labels`` (``test_fraction``,
    ``val_fraction``, seed ``config.seed``), or the designated test set (``study.test_cases`` or the
    table's ``study.split_column``; :mod:`medssl.data.fixed_split`) used as given. ``init``: an
    exported ``encoder.pt`` or None (scratch).
    Writes ``config.yaml``, ``per_case.csv``, ``metrics.json`` (mean metrics, training record,
    transfer report) and ``network.pt`` (the fine-tuned network's state dict) into ``run_dir``.
    """
    run_dir = Path(run_dir)
    inits = {"init": init} if init else {}
    if config.finetune.task == "segmentation":
        check_patch_size(scratch_encoder_config(config, inits), config.finetune.patch_size)
    prepare_run_dir(run_dir)
    with RunFolderLock(run_dir):  # one live run per folder (docs/distributed.md)
        atomic_write_text(run_dir / "config.yaml", dump_config(config))
        data = load_labeled_data(config, config.data.cache_dir or run_dir / "cache")
        stratify = resolve_stratify_column(config, data.table.columns)
        sides = split_with_designated_test(data.table, test_cases=config.study.test_cases,
                                           split_column=config.study.split_column, patient_col=PATIENT,
                                           test_fraction=config.study.test_fraction,
                                           val_fraction=config.study.val_fraction, seed=config.seed,
                                           stratify_col=stratify)
        ids = {side: list(data.table.loc[sides == side, "case_id"]) for side in ("train", "val", "test")}
        outcome = train_and_evaluate(config, data, init, train_ids=ids["train"], test_ids=ids["test"],
                                     val_ids=ids["val"], seed=config.seed,
                                     encoder_config=scratch_encoder_config(config, inits), keep_model=True)
        table = outcome.per_case
        if "target" in table.columns:
            metrics = classification_metrics_from_table(table)
        else:  # means over the cases that contain each class (absent classes are NaN, not scored)
            metrics = {c: float(table[c].mean()) for c in table.columns
                       if c != "case_id" and not c.startswith(("present_", "predicted_"))}
        with atomic_write(run_dir / "per_case.csv", "w", encoding="utf-8", newline="") as handle:
            table.to_csv(handle, index=False)
        record = dict(outcome.record, metrics=metrics, train_ids=ids["train"], val_ids=ids["val"], test_ids=ids["test"],
                      data_fingerprint=data.fingerprint)
        if "target" not in table.columns:  # per class: test cases containing it, and predicted there
            record["classes"] = {
                column[len("present_"):]: {
                    "test_cases_containing": int(table[column].sum()),
                    "predicted_where_present": int((table[column] * table["predicted_" + column[len("present_"):]]).sum()),
                } for column in table.columns if column.startswith("present_")}
        atomic_write_text(run_dir / "metrics.json", json.dumps(record, indent=2, default=str) + "\n")
        if outcome.model is not None:
            atomic_torch_save(outcome.model.network.state_dict(), run_dir / "network.pt")
        log.info("fine-tuning run written to %s", run_dir)
    return FinetuneRun(run_dir, metrics, len(ids["train"]), len(ids["test"]), outcome.record["init"])
