"""``torchrun --nproc_per_node 2 -m medssl pretrain`` trains as one ``medssl pretrain`` process.

Through the command line, on a cohort written by ``medssl synth``: the same config and seed give
the same loss and the same logged monitors at every step with one process (global batch 8) and
with two gloo processes (4 items each). The data path derives everything from the seed, the epoch
and an item's global index (the sampler's order, each item's views), batch norm is synchronised
everywhere (``pretrain.sync_batchnorm=all``; with the default ``heads`` the encoder's batch norm
normalises each process's own 4 items, which docs/distributed.md quantifies), and the monitors
are computed on the embeddings of both processes together.
"""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from medssl.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    assert main(["synth", "--out", str(root / "cohort"), "--n-ct", "4", "--n-mr", "0", "--n-unlabeled-ct", "4",
                 "--n-unlabeled-mr", "0", "--size", "24", "--clean"]) == 0
    assert main(["manifest", str(root / "cohort" / "archive"), "--out", str(root / "manifest.csv")]) == 0
    return root


def _pretrain(launcher, run_dir, cohort):
    overrides = [
        f"data.manifest={cohort / 'manifest.csv'}", f"data.cache_dir={cohort / 'cache'}",
        "data.preprocess.target_spacing=null", "pretrain.augmentation.patch_size=[16,16,16]",
        "pretrain.steps=3", "pretrain.batch_size=8", "pretrain.log_every=1", "pretrain.checkpoint_every=3",
        "pretrain.device=cpu", "pretrain.tensorboard=false", "pretrain.sync_batchnorm=all", "seed=4",
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    env.update(MEDSSL_PROGRESS="0", OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]))
    completed = subprocess.run(
        [sys.executable, *launcher, "-m", "medssl", "pretrain", "--config", str(REPO / "configs/pretrain/simclr.yaml"),
         "--run-dir", str(run_dir), *overrides],
        env=env, capture_output=True, text=True, timeout=300, cwd=cohort,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout, pd.read_csv(run_dir / "metrics.csv")


def test_two_processes_through_the_cli_train_as_one(cohort):
    out_one, one = _pretrain([], cohort / "one", cohort)  # the cache is warm for the second run
    out_two, two = _pretrain(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
                             cohort / "two", cohort)

    assert two["step"].tolist() == one["step"].tolist() == [1, 2, 3]
    assert two["loss"].tolist() == pytest.approx(one["loss"].tolist(), rel=1e-5)
    for monitor in ("embed_std", "embed_std_ratio", "effective_rank"):  # over all 8 embeddings
        assert two[monitor].tolist() == pytest.approx(one[monitor].tolist(), rel=1e-4), monitor
    assert abs(one["loss"].iloc[-1] - one["loss"].iloc[0]) > 1e-3  # it trained
    assert out_one.count("pretraining finished: 3 steps on 8 volumes") == 1
    assert out_two.count("pretraining finished") == 1  # rank 0 alone sums up the job
