"""The shipped finetune/study configs validate, and the pipeline scripts run a tiny study end to end."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

from medssl.config import load_config

from tests.study.cohort import write_disk_cohort

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "pretrain.encoder.name=resnet10_tiny", "pretrain.encoder.spatial_dims=2", "data.modalities=null",
    "data.preprocess.target_spacing=null", "data.preprocess.crop_foreground=false", "finetune.patch_size=[32,32]",
    "finetune.input_size=[32,32]", "finetune.steps=2", "finetune.device=cpu", "study.budgets=[2]", "study.seeds=[0]",
    "study.test_fraction=0.34", "study.bootstrap=50",
]


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "finetune").glob("*.yaml"))
                         + sorted((ROOT / "configs" / "study").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    config = load_config(path)
    assert config.study.budgets and config.finetune.steps > 0


def _script(name):
    spec = importlib.util.spec_from_file_location(f"pipeline_{name}", ROOT / "pipelines" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_label_efficiency_and_probe_pipelines(tmp_path, capsys):
    labels = write_disk_cohort(tmp_path / "cohort", 9)
    common = TINY + [f"study.labels={labels}", f"data.cache_dir={tmp_path / 'cache'}"]
    seg = _script("label_efficiency").main(
        ["--config", str(ROOT / "configs/study/label_efficiency_ct.yaml"), "--run-dir", str(tmp_path / "seg"),
         *common, "finetune.mask_labels=[1]", "finetune.num_classes=2", "finetune.eval_metrics=[dice]"])
    assert seg == 0
    out = capsys.readouterr().out
    assert "dice: mean ± sd over seeds" in out and "scratch" in out
    assert (tmp_path / "seg" / "report.html").is_file()

    probe = _script("linear_probe").main(
        ["--config", str(ROOT / "configs/study/linear_probe.yaml"), "--run-dir", str(tmp_path / "probe"), "--knn",
         *common, "study.knn_k=1"])
    assert probe == 0
    assert "auc: mean ± sd" in capsys.readouterr().out
    results = pd.read_csv(tmp_path / "probe" / "results.csv")
    assert {"prob_0", "prob_1", "target"} <= set(results["metric"])


def test_pipeline_reports_bad_input_without_a_traceback(tmp_path, capsys):
    code = _script("label_efficiency").main(
        ["--config", str(ROOT / "configs/study/label_efficiency_ct.yaml"), "--run-dir", str(tmp_path / "x"),
         *TINY, f"study.labels={tmp_path / 'missing.csv'}"])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err


def test_method_comparison_pretrains_each_method_then_compares_them(tmp_path, capsys):
    labels = write_disk_cohort(tmp_path / "cohort", 9)
    args = ["--config", str(ROOT / "configs/study/method_comparison.yaml"), "--run-dir", str(tmp_path / "cmp"),
            "--methods", "simclr", "vicreg", *TINY, f"study.labels={labels}", f"data.cache_dir={tmp_path / 'cache'}",
            f"data.root={tmp_path / 'cohort' / 'images'}", "pretrain.augmentation.patch_size=[16,16]",
            "pretrain.steps=2", "pretrain.batch_size=4", "pretrain.device=cpu", "pretrain.tensorboard=false",
            "finetune.mask_labels=[1]", "finetune.num_classes=2", "finetune.eval_metrics=[dice]"]
    module = _script("method_comparison")
    assert module.main(args) == 0
    for method in ("simclr", "vicreg"):
        assert (tmp_path / "cmp" / "pretrain" / method / "encoder.pt").is_file()
    results = pd.read_csv(tmp_path / "cmp" / "study" / "results.csv")
    assert set(results["init"]) == {"scratch", "simclr", "vicreg"}
    capsys.readouterr()
    assert module.main(args + ["--study-only"]) == 0  # reuses the encoders and the finished cells
    assert "pretraining" not in capsys.readouterr().out
