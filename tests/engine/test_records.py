"""metrics.csv (whole rows, truncation on resume), environment.json data fingerprint, config hash."""

import shutil

import pandas as pd

from medssl.config import load_config
from medssl.engine.checkpoint import config_hash
from medssl.engine.environment import environment_info
from medssl.engine.metrics_log import MetricsLog, truncate_metrics
from medssl.utils.provenance import volume_files_fingerprint as data_fingerprint


def test_metrics_rows_are_whole_and_truncated_on_resume(tmp_path):
    log = MetricsLog.open(tmp_path, tensorboard=False)
    for step in (1, 2, 3):
        log.write({"step": step, "loss": 1.0 / step, "lr": 0.1})
    log.write({"step": 4, "loss": float("nan"), "new_key": 5})  # unknown key dropped, missing lr empty
    log.close()
    rows = pd.read_csv(tmp_path / "metrics.csv")
    assert rows.columns.tolist() == ["step", "loss", "lr"] and rows["step"].tolist() == [1, 2, 3, 4]
    assert rows["lr"].isna().tolist() == [False, False, False, True]
    with open(tmp_path / "metrics.csv", "a") as handle:  # a crash in the middle of a row
        handle.write("5,0.2")
    assert truncate_metrics(tmp_path / "metrics.csv", last_step=2) == ["step", "loss", "lr"]
    assert pd.read_csv(tmp_path / "metrics.csv")["step"].tolist() == [1, 2]
    resumed = MetricsLog.open(tmp_path, tensorboard=False, resume_step=2)
    resumed.write({"step": 3, "loss": 0.3, "lr": 0.05})
    resumed.close()
    assert pd.read_csv(tmp_path / "metrics.csv")["step"].tolist() == [1, 2, 3]
    MetricsLog.open(tmp_path, tensorboard=False).close()  # a fresh run starts a fresh file
    assert not (tmp_path / "metrics.csv").exists() or (tmp_path / "metrics.csv").read_text() == ""


def test_data_fingerprint_survives_copying_and_sees_changes(tmp_path):
    first = tmp_path / "a"
    (first / "series").mkdir(parents=True)
    (first / "ct.nii.gz").write_bytes(b"x" * 100)
    (first / "series" / "1.dcm").write_bytes(b"y" * 10)
    (first / "series" / "2.dcm").write_bytes(b"y" * 10)
    paths = ["ct.nii.gz", "series"]
    fingerprint = data_fingerprint(paths, first)
    copy = tmp_path / "b"
    shutil.copytree(first, copy)
    assert data_fingerprint(paths, copy) == fingerprint
    assert data_fingerprint([str(copy / p) for p in reversed(paths)], copy) == fingerprint  # absolute, any order
    (copy / "series" / "3.dcm").write_bytes(b"y" * 10)
    assert data_fingerprint(paths, copy) != fingerprint
    assert data_fingerprint(paths[:1], first) != fingerprint
    info = environment_info(fingerprint)
    assert info["data_fingerprint"] == fingerprint and info["torch"]


def test_config_hash_ignores_bookkeeping_only():
    base = load_config(None)
    same = load_config(None, ["pretrain.log_every=3", "pretrain.checkpoint_every=7", "data.num_workers=4",
                              "run_dir=elsewhere", "study.seeds=[5]", "pretrain.device=cpu"])
    assert config_hash(base) == config_hash(same)
    for change in ("seed=1", "pretrain.optimizer.lr=0.5", "pretrain.steps=7", "pretrain.method=byol",
                   "data.root=/data", "pretrain.batch_size=16"):
        assert config_hash(load_config(None, [change])) != config_hash(base), change
