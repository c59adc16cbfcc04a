"""Two CPU processes under torchrun (gloo) train as one process with the same global batch.

In float64 the two runs agree to rounding (1e-9): same samples per step, gradients averaged by
DDP, contrastive negatives gathered with gradients, head batch-norm statistics over both
processes, so the losses and every weight agree. In float32 (medssl's own NT-Xent loss) the
losses agree to 1e-3: batch norm's backward cancels large terms, so summation order alone moves
the gradients of the layers below it (the conv bias most) by ~1e-4 relative, and four LARS steps
carry that into the loss; weights are compared in the float64 run only.
"""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import ddp_worker

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    saved = {k: os.environ.pop(k) for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK") if k in os.environ}
    try:
        ddp_worker.run(root / "one")
    finally:
        os.environ.update(saved)
    env = {**os.environ, "MEDSSL_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(HERE / "ddp_worker.py"), str(root / "two")],
        env=env, capture_output=True, text=True, timeout=180,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return root


@pytest.mark.parametrize("setup, rtol", [("exact", 1e-9), ("float32", 1e-3)])
def test_two_process_torchrun_equals_one_process(runs, setup, rtol):
    one, two = runs / "one" / setup, runs / "two" / setup
    rows_one = pd.read_csv(one / "metrics.csv")
    rows_two = pd.read_csv(two / "metrics.csv")
    assert rows_two["step"].tolist() == [1, 2, 3, 4]  # rank 0 alone wrote: no duplicated rows
    assert rows_two["loss"].tolist() == pytest.approx(rows_one["loss"].tolist(), rel=rtol)
    assert abs(rows_one["loss"].iloc[-1] - rows_one["loss"].iloc[0]) > 100 * rtol  # it trained
    assert (two / "checkpoints/last.pt").is_file()
    if setup == "exact":
        final_one = torch.load(one / "final_1.pt")
        final_two = torch.load(two / "final_2.pt")
        for name, value in final_one.items():
            torch.testing.assert_close(final_two[name], value, rtol=rtol, atol=1e-12, msg=name)
