"""``medssl finetune``'s library entry: one run on a patient split of a labels table, files written."""

from __future__ import annotations

import json

import pandas as pd
import torch

from medssl.config import load_config
from medssl.eval.run import run_finetuning
from medssl.models import build_encoder, export_encoder

from tests.study.cohort import write_disk_cohort


def test_run_finetuning_writes_tables_metrics_and_weights(tmp_path):
    labels = write_disk_cohort(tmp_path / "cohort", 8)
    encoder = build_encoder("resnet10_tiny", spatial_dims=2)
    init = export_encoder(encoder, tmp_path / "enc" / "encoder.pt", {"method": "test"})
    config = load_config(None, [
        f"study.labels={labels}", "data.preprocess.target_spacing=null", "data.preprocess.crop_foreground=false",
        "pretrain.encoder.name=resnet10_tiny", "pretrain.encoder.spatial_dims=2", "finetune.patch_size=[32,32]",
        "finetune.steps=3", "finetune.device=cpu", "finetune.mask_labels=[1,2]", "finetune.num_classes=3",
        "finetune.eval_metrics=[dice]", "study.test_fraction=0.3", "study.val_fraction=0.2", "finetune.val_every=2",
    ])
    run = run_finetuning(config, tmp_path / "run", init=str(init))
    per_case = pd.read_csv(tmp_path / "run" / "per_case.csv")
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert len(per_case) == run.n_test == len(record["test_ids"])
    assert not set(record["train_ids"]) & set(record["test_ids"])
    assert record["transfer"]["n_loaded"] == len(encoder.state_dict()) and record["transfer"]["n_missing"] == 0
    assert record["history"]["validation"] and record["history"]["best_step"] in (2, 3)
    assert set(run.metrics) == {"dice", "dice_1", "dice_2"}
    # how many test cases contain each class (the disk in all, the spot in the lesion cases)
    assert record["classes"]["1"]["test_cases_containing"] == len(per_case)
    assert record["classes"]["2"]["test_cases_containing"] == int(per_case["present_2"].sum())
    state = torch.load(tmp_path / "run" / "network.pt", weights_only=True)
    assert any(k.startswith("decoder") for k in state)
    assert "init" in str(run) and "per_case.csv" in str(run)
