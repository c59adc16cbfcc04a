"""run_pretraining end to end on a tiny hospital-like archive (DICOM series + NIfTI), real components."""

import json

import pandas as pd
import pytest
import torch

from medssl.config import dump_config, load_config
from medssl.synthetic import make_tiny_ct_series, make_tiny_mr_nifti
from medssl.engine.pretrain import resolve_entries, run_pretraining
from medssl.errors import CheckpointError, ConfigError, DataError


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("archive")
    make_tiny_ct_series(root / "CT" / "PAT1" / "SE1", seed=1, shape=(24, 24, 16))
    make_tiny_ct_series(root / "CT" / "PAT2" / "SE1", seed=2, shape=(24, 24, 16))
    make_tiny_mr_nifti(root / "MR" / "sub-1_T1w.nii.gz", seed=3)
    make_tiny_mr_nifti(root / "MR" / "sub-2_T1w.nii.gz", seed=4)
    return root


def tiny_config(archive, tmp_path, *extra):
    return load_config(None, [
        f"data.root={archive}", f"data.cache_dir={tmp_path / 'cache'}",
        "data.preprocess.target_spacing=[8.0, 8.0, 8.0]",
        "pretrain.method=simclr", "pretrain.method_args={projection_hidden_dim: 32, projection_dim: 16}",
        "pretrain.encoder.name=resnet10_tiny", "pretrain.augmentation.patch_size=[16, 16, 16]",
        "pretrain.steps=3", "pretrain.batch_size=4", "pretrain.log_every=1", "pretrain.checkpoint_every=2",
        "pretrain.optimizer.name=lars", "pretrain.optimizer.lr=0.3", "seed=5", *extra,
    ])


def test_run_folder_is_complete_and_resumable(archive, tmp_path):
    config = tiny_config(archive, tmp_path)
    run_dir = tmp_path / "run"
    result = run_pretraining(config, run_dir)

    assert result.steps == 3 and result.encoder_path == run_dir / "encoder.pt"
    rows = pd.read_csv(result.metrics_path)
    assert rows["step"].tolist() == [1, 2, 3]
    assert {"loss", "lr", "samples_per_s", "embed_std", "effective_rank"} <= set(rows.columns)
    assert rows["loss"].notna().all() and result.final_loss == pytest.approx(rows["loss"].iloc[-1])
    assert load_config(run_dir / "config.yaml") == config
    environment = json.loads((run_dir / "environment.json").read_text())
    assert environment["num_volumes"] == 4 and len(environment["data_fingerprint"]) == 16
    assert environment["torch"] == torch.__version__.split("+")[0] or environment["torch"].startswith("2.")
    assert any((run_dir / "tensorboard").iterdir())
    assert "pretraining done" in (run_dir / "train.log").read_text()

    from medssl.models import load_pretrained

    encoder, card = load_pretrained(result.encoder_path)
    assert card["method"] == "simclr" and card["steps"] == 3
    assert card["data_fingerprint"] == environment["data_fingerprint"]
    exported = torch.load(result.encoder_path, weights_only=True)
    checkpoint = torch.load(run_dir / "checkpoints/last.pt", weights_only=True)
    for name, value in exported.items():  # the exported encoder is the trained one
        assert torch.equal(value, checkpoint["model"][f"encoder.{name}"])

    # a second start into the same folder is refused; resume continues (here: nothing left to do)
    with pytest.raises(ConfigError, match="already holds a run"):
        run_pretraining(config, run_dir)
    again = run_pretraining(config, run_dir, resume=True)
    assert again.steps == 3 and again.final_loss == pytest.approx(result.final_loss)
    resumed_environment = json.loads((run_dir / "environment.json").read_text())
    assert resumed_environment["created"] == environment["created"] and len(resumed_environment["resumes"]) == 1
    with pytest.raises(CheckpointError, match="different configuration"):
        run_pretraining(tiny_config(archive, tmp_path, "pretrain.optimizer.lr=0.1"), run_dir, resume=True)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        run_pretraining(config, tmp_path / "fresh", resume=True)


def test_entries_manifest_and_modalities(archive, tmp_path):
    config = tiny_config(archive, tmp_path, "data.modalities=[CT]")
    table, root = resolve_entries(config)
    assert sorted(table["path"]) == ["CT/PAT1/SE1", "CT/PAT2/SE1"] and root == archive

    from medssl.data.manifest import build_manifest, save_manifest

    rows = build_manifest(archive, progress=False)
    rows.loc[rows["path"] == "MR/sub-2_T1w.nii.gz", "status"] = "error"
    manifest = tmp_path / "lists" / "manifest.csv"
    save_manifest(rows, manifest)
    table, root = resolve_entries(load_config(None, [f"data.manifest={manifest}", f"data.root={archive}"]))
    assert sorted(table["path"]) == ["CT/PAT1/SE1", "CT/PAT2/SE1", "MR/sub-1_T1w.nii.gz"] and root == archive
    assert table.loc[table["path"] == "MR/sub-1_T1w.nii.gz", "files"].isna().all()  # a file, not a series
    save_manifest(rows, archive / "manifest.csv")
    _, root = resolve_entries(load_config(None, [f"data.manifest={archive / 'manifest.csv'}"]))
    assert root == archive  # without data.root, paths are relative to the manifest's folder
    (archive / "manifest.csv").unlink()

    with pytest.raises(ConfigError, match="data.manifest .* does not exist"):
        resolve_entries(load_config(None, [f"data.manifest={archive / 'nope.csv'}"]))
    with pytest.raises(ConfigError, match="set data.manifest"):
        resolve_entries(load_config(None))
    with pytest.raises(DataError, match="no usable volume"):
        resolve_entries(config, entries=pd.DataFrame({"path": ["a.nii.gz"], "modality": ["MR"]}))


def test_pretext_method_trains_from_an_entries_table(archive, tmp_path):
    entries = pd.DataFrame({"path": [str(p) for p in sorted((archive / "MR").glob("*.nii.gz"))]})
    config = tiny_config(archive, tmp_path, "pretrain.method=rotation", "pretrain.method_args={hidden_dim: 16}",
                         "pretrain.steps=2", "pretrain.batch_size=2", "pretrain.optimizer.name=adamw",
                         "pretrain.optimizer.lr=0.001")
    result = run_pretraining(config, tmp_path / "rotation", entries=entries)
    rows = pd.read_csv(result.metrics_path)
    assert rows["step"].tolist() == [1, 2] and "accuracy" in rows.columns
    assert json.loads((tmp_path / "rotation/environment.json").read_text())["num_volumes"] == 2
    assert dump_config(config) == (tmp_path / "rotation/config.yaml").read_text()
