"""The `medssl` command, sub-command by sub-command, on a tiny cohort: what a user types in the docs.

Errors of the medssl family print one line naming the problem and exit with status 2.
"""

from __future__ import annotations

import pandas as pd
import pytest

from medssl.cli import build_parser, main

TINY_PRETRAIN = [
    "data.modalities=[CT]",
    "data.preprocess.target_spacing=[6.0, 6.0, 8.0]",
    "pretrain.encoder.name=resnet10_tiny",
    "pretrain.augmentation.patch_size=[16, 16, 16]",
    "pretrain.steps=3",
    "pretrain.batch_size=4",
    "pretrain.checkpoint_every=3",
    "pretrain.log_every=1",
    "pretrain.device=cpu",
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    mp = pytest.MonkeyPatch()
    mp.setenv("MEDSSL_DEID_SALT", "cli-test-salt")
    mp.setenv("MEDSSL_PROGRESS", "0")
    assert main(["synth", "--out", str(root / "cohort"), "--n-ct", "6", "--n-mr", "0", "--n-unlabeled-ct", "2",
                 "--n-unlabeled-mr", "0", "--size", "32"]) == 0
    yield root
    mp.undo()


def test_help_lists_every_sub_command():
    text = build_parser().format_help()
    for command in ("demo", "synth", "manifest", "split", "pretrain", "finetune", "study"):
        assert command in text


def test_manifest_then_split(workspace, capsys):
    out = workspace / "manifest.csv"
    assert main(["manifest", str(workspace / "cohort" / "archive"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "manifest of" in printed and "keep that file inside the hospital" in printed
    manifest = pd.read_csv(out)
    assert (manifest["status"] == "ok").sum() == 8
    assert main(["split", str(out), "--out", str(workspace / "splits.csv"), "--test-fraction", "0.25",
                 "--val-fraction", "0"]) == 0
    splits = pd.read_csv(workspace / "splits.csv")
    assert set(splits["split"].dropna()) == {"train", "test"}


def test_pretrain_then_resume_then_finetune(workspace):
    manifest = workspace / "manifest.csv"
    if not manifest.exists():
        main(["manifest", str(workspace / "cohort" / "archive"), "--out", str(manifest)])
    run = workspace / "runs" / "simclr"
    args = ["pretrain", "--run-dir", str(run), f"data.manifest={manifest}", "pretrain.method=simclr", *TINY_PRETRAIN]
    assert main(args) == 0
    assert (run / "encoder.pt").is_file() and (run / "checkpoints" / "last.pt").is_file()
    assert main([*args[:1], "--resume", *args[1:]]) == 0  # a finished run resumes to the same end
    finetune_run = workspace / "runs" / "finetune"
    assert main([
        "finetune", "--run-dir", str(finetune_run), "--init", str(run / "encoder.pt"),
        f"study.labels={workspace / 'cohort' / 'labels.csv'}", "data.modalities=[CT]",
        "data.preprocess.target_spacing=[6.0, 6.0, 8.0]", "pretrain.encoder.name=resnet10_tiny",
        "finetune.mask_labels=[1]", "finetune.num_classes=2", "finetune.patch_size=[32, 32, 32]",
        "finetune.steps=2", "finetune.batch_size=2", "finetune.device=cpu", "study.test_fraction=0.34",
    ]) == 0
    per_case = pd.read_csv(finetune_run / "per_case.csv")
    assert len(per_case) >= 2


def test_a_config_error_is_one_clear_line_and_status_2(workspace, capsys):
    status = main(["pretrain", "--run-dir", str(workspace / "bad"), "pretrain.lerning_rate=0.1"])
    err = capsys.readouterr().err
    assert status == 2
    assert "pretrain.lerning_rate" in err and "Traceback" not in err


def test_a_missing_manifest_is_named(workspace, capsys):
    status = main(["pretrain", "--run-dir", str(workspace / "bad2"), f"data.manifest={workspace / 'nope.csv'}"])
    assert status == 2
    assert "nope.csv" in capsys.readouterr().err


def test_a_new_run_refuses_to_overwrite_a_run_folder_with_a_checkpoint(workspace, capsys):
    manifest = workspace / "manifest.csv"
    if not manifest.exists():
        main(["manifest", str(workspace / "cohort" / "archive"), "--out", str(manifest)])
    run = workspace / "runs" / "twice"
    args = ["pretrain", "--run-dir", str(run), f"data.manifest={manifest}", *TINY_PRETRAIN]
    assert main(args) == 0
    capsys.readouterr()
    status = main(args)
    assert status == 2
    assert "resume" in capsys.readouterr().err
