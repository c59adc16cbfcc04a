"""A pretraining run on a bad day: full disks, broken volumes, one-slice series, shared run folders.

The rule pinned here: a run stops with a clear medssl error naming the setting or the pseudonymised
volume and the cause, exits non-zero and keeps what it wrote; or it skips a volume up front, says
why (log, ``environment.json``, its summary line) and never names a file location in a log.
"""

import errno
import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from medssl.config import load_config
from medssl.synthetic import make_tiny_ct_series, make_tiny_mr_nifti
from medssl.engine.pretrain import run_pretraining
from medssl.engine.run_lock import LOCK_FILE, RunFolderLock
from medssl.errors import ConfigError, DiskFullError, RunError

PATIENT = "ROSSI^AMARA_46845436"  # export folders are named after patients


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("archive")
    make_tiny_ct_series(root / PATIENT / "CT1", seed=1, shape=(24, 24, 16))
    make_tiny_ct_series(root / PATIENT / "CT2", seed=2, shape=(24, 24, 16))
    make_tiny_mr_nifti(root / PATIENT / "t1.nii.gz", seed=3)
    return root


def tiny_config(archive, tmp_path, *extra):
    return load_config(None, [
        f"data.root={archive}", f"data.cache_dir={tmp_path / 'cache'}",
        "data.preprocess.target_spacing=[8.0, 8.0, 8.0]",
        "pretrain.method=simclr", "pretrain.method_args={projection_hidden_dim: 16, projection_dim: 8}",
        "pretrain.encoder.name=resnet10_tiny", "pretrain.augmentation.patch_size=[16, 16, 16]",
        "pretrain.steps=1", "pretrain.batch_size=2", "pretrain.log_every=1", "pretrain.checkpoint_every=1",
        "pretrain.tensorboard=false", "seed=3", *extra,
    ])


def _fsync_fails_under(folder: Path, real_fsync=os.fsync):
    """An ``os.fsync`` that raises ENOSPC for files under ``folder`` (a full disk there only)."""

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(folder)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    return fsync


# ------------------------------------------------------------------------ item 3: a full disk
@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to tell which file is written")
def test_full_cache_disk_stops_the_run_naming_the_cache_folder(archive, tmp_path, monkeypatch):
    config = tiny_config(archive, tmp_path)
    monkeypatch.setattr(os, "fsync", _fsync_fails_under(tmp_path / "cache"))
    with pytest.raises(DiskFullError, match="disk full") as raised:
        run_pretraining(config, tmp_path / "run")
    assert str(tmp_path / "cache") in str(raised.value) and "data.cache_dir" in str(raised.value)
    assert not (tmp_path / "run" / "encoder.pt").exists()  # it did not go on with what was left
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and ".tmp" in p.name]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to tell which file is written")
def test_full_disk_at_a_checkpoint_keeps_the_last_good_one(archive, tmp_path, monkeypatch):
    config = tiny_config(archive, tmp_path, "pretrain.steps=2")
    run_dir = tmp_path / "run"
    run_pretraining(config.model_copy(update={"pretrain": config.pretrain.model_copy(update={"steps": 1})}),
                    tmp_path / "first")  # warms the cache
    real_fsync = os.fsync
    saves = []

    def fsync(fd):  # the second checkpoint hits a full disk
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(run_dir / "checkpoints")):
            saves.append(fd)
            if len(saves) == 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(DiskFullError, match="disk full.*checkpoint") as raised:
        run_pretraining(config.model_copy(update={"pretrain": config.pretrain.model_copy(
            update={"checkpoint_every": 1})}), run_dir)
    assert str(run_dir / "checkpoints") in str(raised.value)
    kept = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)
    assert kept["position"]["step"] == 1  # the last good checkpoint, intact
    assert not list((run_dir / "checkpoints").glob(".*.tmp"))
    assert not (run_dir / LOCK_FILE).exists()  # the lock went with the run


def test_full_disk_when_writing_a_manifest_keeps_the_previous_one(archive, tmp_path, monkeypatch):
    import pandas as pd

    from medssl.data.manifest import build_manifest, save_manifest

    rows = build_manifest(archive, progress=False)
    target = tmp_path / "manifest.csv"
    save_manifest(rows, target)
    before = target.read_bytes()

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pd.DataFrame, "to_csv", full)
    with pytest.raises(DiskFullError, match="disk full") as raised:
        save_manifest(rows.iloc[:1], target)
    assert str(tmp_path) in str(raised.value)
    assert target.read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp*"))


# ------------------------------------------------- items 4 and 5: skipped volumes, said and unnamed
@pytest.fixture(scope="module")
def bad_archive(tmp_path_factory):
    """Two good CT series; a one-slice scout; a NIfTI that resamples to one voxel in z; a NIfTI with
    NaNs; a file that breaks after the manifest was made. All under a folder named after a patient."""
    from medssl.data.manifest import build_manifest, save_manifest
    from medssl.io.nifti import save_volume
    from medssl.io.volume import Volume

    root = tmp_path_factory.mktemp("bad")
    folder = root / PATIENT
    make_tiny_ct_series(folder / "CT1", seed=1, shape=(24, 24, 16))
    make_tiny_ct_series(folder / "CT2", seed=2, shape=(24, 24, 16))
    make_tiny_ct_series(folder / "SCOUT", seed=3, shape=(24, 24, 1))
    thin = np.random.default_rng(0).normal(100, 20, (1, 24, 24, 2)).astype(np.float32)
    save_volume(Volume(thin, np.diag([8.0, 8.0, 1.0, 1.0]), "MR"), folder / "thin.nii.gz")
    nan = np.random.default_rng(1).normal(100, 20, (1, 24, 24, 24)).astype(np.float32)
    nan[0, :4] = np.nan
    save_volume(Volume(nan, np.diag([8.0, 8.0, 8.0, 1.0]), "MR"), folder / "nan.nii.gz")
    make_tiny_mr_nifti(folder / "broken.nii.gz", seed=4)
    manifest = root / "lists" / "manifest.csv"
    save_manifest(build_manifest(root, progress=False), manifest)
    (folder / "broken.nii.gz").write_bytes(b"\x1f\x8b" + b"\x00" * 40)  # broken after the scan
    return root, manifest


def test_skipped_volumes_are_said_with_their_keys_never_their_paths(bad_archive, tmp_path, caplog):
    root, manifest = bad_archive
    config = load_config(None, [
        f"data.manifest={manifest}", f"data.root={root}", f"data.cache_dir={tmp_path / 'cache'}",
        "data.preprocess.target_spacing=[8.0, 8.0, 8.0]", "pretrain.method=simclr",
        "pretrain.method_args={projection_hidden_dim: 16, projection_dim: 8}",
        "pretrain.encoder.name=resnet10_tiny", "pretrain.augmentation.patch_size=[16, 16, 16]",
        "pretrain.steps=2", "pretrain.batch_size=4", "pretrain.log_every=1", "pretrain.tensorboard=false",
    ])
    run_dir = tmp_path / "run"
    with caplog.at_level(logging.DEBUG, logger="medssl"):
        result = run_pretraining(config, run_dir)  # the scout and the thin volume never reach the loader

    assert result.steps == 2 and result.num_volumes == 6
    reasons = {entry["volume_id"]: entry["reason"] for entry in result.skipped}
    assert len(reasons) == 3  # broken, one-slice scout, one voxel in z after resampling
    assert sum("one voxel" in r for r in reasons.values()) == 2
    assert sum(r.startswith("cannot be preprocessed") for r in reasons.values()) == 1
    summary = result.summary()
    assert "3 of 6 volumes skipped" in summary and "one voxel" in summary
    environment = json.loads((run_dir / "environment.json").read_text())
    assert environment["num_volumes"] == 3 and len(environment["skipped_volumes"]) == 3

    logged = caplog.text + (run_dir / "train.log").read_text()
    assert "NaN" in logged  # the replacement is still reported...
    for secret in (PATIENT, "ROSSI", str(root)):  # ...but no location reaches a log record
        assert secret not in logged, secret
    for volume_id in reasons:
        assert volume_id in logged and volume_id.startswith("volume-")
    assert all(PATIENT not in r for r in reasons.values())


# ----------------------------------------------------------------------- item 6: the run-folder lock
def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_live_run_holds_its_folder_and_a_stale_lock_is_taken_over(archive, tmp_path, caplog):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run_dir / LOCK_FILE).write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname()}))
        with pytest.raises(RunError, match=f"in use by.*PID {sleeper.pid}.*{socket.gethostname()}"):
            run_pretraining(tiny_config(archive, tmp_path), run_dir)
        assert json.loads((run_dir / LOCK_FILE).read_text())["pid"] == sleeper.pid  # not touched
    finally:
        sleeper.kill()
        sleeper.wait()

    dead = _dead_pid()
    (run_dir / LOCK_FILE).write_text(json.dumps({"pid": dead, "host": socket.gethostname()}))
    with caplog.at_level(logging.WARNING, logger="medssl"):
        result = run_pretraining(tiny_config(archive, tmp_path), run_dir)
    assert result.steps == 1
    assert f"stale lock" in caplog.text and f"PID {dead}" in caplog.text
    assert not (run_dir / LOCK_FILE).exists()  # released on exit


def test_lock_names_its_owner_and_refuses_a_second_holder(tmp_path):
    with RunFolderLock(tmp_path) as lock:
        owner = json.loads((tmp_path / LOCK_FILE).read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        with pytest.raises(RunError, match=f"PID {os.getpid()}"):
            RunFolderLock(tmp_path).acquire()
        assert lock.held
    assert not (tmp_path / LOCK_FILE).exists()

    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "another-host.example"}))
    with pytest.raises(RunError, match="another-host.example"):  # cannot tell from here: refused
        RunFolderLock(tmp_path).acquire()
    (tmp_path / LOCK_FILE).write_text("garbage")
    with pytest.raises(RunError, match="unreadable lock"):
        RunFolderLock(tmp_path).acquire()


# ------------------------------------------------------------------ item 8: settings that cannot work
def test_unusable_run_folder_is_a_clear_error(archive, tmp_path):
    config = tiny_config(archive, tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunError, match="cannot use .*file/run as the run folder"):
        run_pretraining(config, tmp_path / "file" / "run")
    with pytest.raises(RunError, match="cannot use /proc/medssl-no-such/run as the run folder"):
        run_pretraining(config, "/proc/medssl-no-such/run")


def test_bool_for_a_number_is_refused():
    with pytest.raises(ConfigError, match="pretrain.steps"):
        load_config(None, ["pretrain.steps=true"])
    with pytest.raises(ConfigError, match="pretrain.augmentation.patch_size"):
        load_config(None, ["pretrain.augmentation.patch_size=[true, 16, 16]"])
    with pytest.raises(ConfigError, match="pretrain.optimizer.lr"):
        load_config(None, ["pretrain.optimizer.lr=false"])
    with pytest.raises(ConfigError, match="seed"):
        load_config(None, ["seed=yes"])  # YAML 1.1: yes is a boolean
    config = load_config(None, ["pretrain.steps=3", "pretrain.augmentation.device_side=true",
                                "pretrain.method_args={flag: true}", "pretrain.optimizer.lr=1"])
    assert config.pretrain.steps == 3 and config.pretrain.augmentation.device_side is True
    assert config.pretrain.method_args == {"flag": True} and config.pretrain.optimizer.lr == 1.0


def test_finetuning_runs_hold_their_folder_too(tmp_path):
    from medssl.eval.run import run_finetuning

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname()}))
        with pytest.raises(RunError, match=f"in use by PID {sleeper.pid}"):
            run_finetuning(load_config(None), tmp_path)
        assert not (tmp_path / "config.yaml").exists()  # refused before writing anything
    finally:
        sleeper.kill()
        sleeper.wait()


def test_full_disk_while_appending_metrics_is_named(tmp_path):
    from medssl.engine.metrics_log import MetricsLog

    log = MetricsLog.open(tmp_path, tensorboard=False)
    log.write({"step": 1, "loss": 2.0})

    class FullDisk:
        closed = False

        def write(self, text):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        flush = close = write

    good, log._handle = log._handle, FullDisk()
    with pytest.raises(DiskFullError, match=f"disk full: no space left in folder {tmp_path} to write the metrics log"):
        log.write({"step": 2, "loss": 1.5})
    good.close()
    assert (tmp_path / "metrics.csv").read_text().splitlines() == ["step,loss", "1,2.0"]  # what was written stays
