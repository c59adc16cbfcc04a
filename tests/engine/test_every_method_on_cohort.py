"""Every registered SSL method pretrains end to end on the built-in cohort from its shipped config.

Issue 5 "done when": every method pretrains on the built-in cohort. One small synthetic cohort (CT
DICOM series, scanned into a manifest) and one preprocessing cache are shared by all cases; each
method runs ``run_pretraining`` from ``configs/pretrain/<method>.yaml`` with overrides that only
shrink it (steps, batch, patch and head sizes), keeping the config's method, encoder, optimiser,
augmentation preset and loss settings. Checked per method: finite losses and collapse monitors in
``metrics.csv``, the encoder actually trained, ``encoder.pt`` loadable with
``medssl.models.load_pretrained`` and equal to the checkpoint's encoder, the checkpoint present.
Whether the loss *falls* over a real run is measured by ``benchmarks/methods_on_cohort.py``.

A 2D run pretrains a 2D encoder on 2D images (axial slices of the cohort written as ``Z == 1``
NIfTI files), and on slices sampled from the cohort's 3D volumes along their slice axis (plain 2D
and 2.5D); the encoder then loads into the 2D fine-tuning network (tested too).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from medssl.config import load_config
from medssl.data.manifest import load_manifest, load_manifest_volume, manifest_root, write_manifest
from medssl.synthetic import make_synthetic_cohort
from medssl.demo import method_augmentation
from medssl.engine.pretrain import build_method_from_config, run_pretraining
from medssl.errors import ConfigError
from medssl.eval.networks import build_finetune_model
from medssl.io import save_volume
from medssl.io.volume import Volume
from medssl.methods import PRETEXT_TASKS, build_method, list_methods
from medssl.models import build_encoder, load_pretrained
from medssl.utils.seeding import seed_everything

ROOT = Path(__file__).resolve().parents[2]
PRETRAIN_CONFIGS = ROOT / "configs" / "pretrain"
STEPS = 3
PATCH = 16

#: head sizes small enough for a CPU test; every other method argument stays the config's
SMALL_HEADS: dict[str, dict[str, object]] = {
    "barlow_twins": {"projection_hidden_dim": 32, "projection_dim": 32},
    "byol": {"projection_hidden_dim": 32, "projection_dim": 16, "prediction_hidden_dim": 32},
    "dino": {"out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16},
    "moco": {"projection_dim": 16, "queue_size": 32},
    "nnclr": {"projection_hidden_dim": 32, "projection_dim": 16, "prediction_hidden_dim": 32, "support_set_size": 32},
    "simclr": {"projection_hidden_dim": 32, "projection_dim": 16},
    "simsiam": {"projection_dim": 32, "prediction_hidden_dim": 16},
    "swav": {"projection_hidden_dim": 32, "projection_dim": 16, "num_prototypes": 16, "freeze_prototypes_steps": 1},
    "vicreg": {"projection_hidden_dim": 32, "projection_dim": 32},
    "local_contrastive": {"embedding_dim": 8, "num_regions": 16},
    "voco": {"projection_hidden_dim": 32, "projection_dim": 16},
    **{task: {"hidden_dim": 32, "decoder_width": 8} for task in PRETEXT_TASKS},
}
#: encoder arguments that only shrink a transformer for a CPU test (SimMIM's Swin on 64^3)
SMALL_ENCODER: dict[str, dict[str, object]] = {
    "simmim": {"depths": "[1,1,1,1]", "num_heads": "[1,1,2,2]", "window_size": 4},
}
#: methods that train the whole segmentation network need patches its 5 levels can halve (32 + shift);
#: SparK and SimMIM (Swin) need at least two 32-voxel mask cells; the MAE config's ViT takes 32^3
PATCH_OF = {"local_contrastive": 40, "spark": 64, "mae": 32, "simmim": 64}
#: "pretext" is the generic pretext method that needs task=...; each task is registered on its own
METHODS = [m for m in list_methods() if m != "pretext"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> dict[str, Path]:
    """A tiny built-in cohort (4 CT series of 24x24x15), its manifest and one shared cache folder."""
    base = tmp_path_factory.mktemp("cohort")
    make_synthetic_cohort(base / "cohort", n_ct=4, n_mr=0, n_unlabeled_ct=0, n_unlabeled_mr=0, size=24,
                          messy=False, progress=False)
    manifest = base / "manifest.csv"
    write_manifest(base / "cohort" / "archive", manifest, workers=0, progress=False)
    return {"manifest": manifest, "cache": base / "cache", "base": base}


def tiny_overrides(method: str, cohort: dict[str, Path], patch: tuple[int, ...] | None = None) -> list[str]:
    patch = patch or (PATCH_OF.get(method, PATCH),) * 3
    heads = [f"pretrain.method_args.{key}={value}" for key, value in SMALL_HEADS.get(method, {}).items()]
    heads += [f"pretrain.encoder.args.{key}={value}" for key, value in SMALL_ENCODER.get(method, {}).items()]
    overrides = [
        f"data.manifest={cohort['manifest']}", f"data.cache_dir={cohort['cache']}",
        f"pretrain.steps={STEPS}", "pretrain.batch_size=4", "pretrain.log_every=1", f"pretrain.checkpoint_every={STEPS}",
        f"pretrain.augmentation.patch_size={list(patch)}", "pretrain.tensorboard=false", "pretrain.device=cpu", *heads,
    ]
    config = load_config(PRETRAIN_CONFIGS / f"{method}.yaml")
    if config.pretrain.augmentation.local_crops:  # multi-crop: local crops smaller than the global views
        overrides.append(f"pretrain.augmentation.local_patch_size={[PATCH * 3 // 4] * len(patch)}")
    return overrides


def check_run(result, config, method: str) -> None:
    """The run folder of a finished pretraining holds finite metrics, a checkpoint and a trained encoder."""
    metrics = pd.read_csv(result.metrics_path)
    assert metrics["step"].tolist() == list(range(1, STEPS + 1))
    assert np.isfinite(metrics["loss"]).all(), metrics["loss"].tolist()
    assert np.isfinite(metrics[["embed_std", "effective_rank"]].to_numpy()).all()
    assert (metrics["effective_rank"] >= 1.0 - 1e-6).all()
    assert result.steps == STEPS and math.isfinite(result.final_loss)

    checkpoint_path = result.run_dir / "checkpoints" / "last.pt"
    assert result.checkpoint_path == checkpoint_path and checkpoint_path.is_file()
    checkpoint = torch.load(checkpoint_path, weights_only=True, map_location="cpu")
    assert checkpoint["position"]["step"] == STEPS

    encoder, card = load_pretrained(result.encoder_path)
    assert card["method"] == method and card["steps"] == STEPS
    exported = encoder.state_dict()
    seed_everything(config.seed)  # the untrained method the run started from
    untrained = build_method_from_config(config)
    key = untrained.export_key  # "encoder"; DINO exports its teacher, as the paper evaluates it
    assert card["exported_from"] == key
    for name, value in exported.items():  # the exported encoder is the checkpoint's
        assert torch.equal(value, checkpoint["model"][f"{key}.{name}"]), name
    initial = untrained.exported_encoder().state_dict()
    changed = [n for n, v in exported.items() if v.is_floating_point() and not torch.equal(v, initial[n])]
    assert changed, f"{method}: no encoder weight changed in {STEPS} steps"

    spatial = tuple(config.pretrain.augmentation.patch_size)
    features = encoder.eval()(torch.rand(2, 1, *spatial))
    assert features.shape == (2, encoder.feature_dim) and torch.isfinite(features).all()


@pytest.mark.parametrize("method", METHODS)
def test_method_pretrains_on_the_cohort(cohort, tmp_path, method):
    assert (PRETRAIN_CONFIGS / f"{method}.yaml").is_file(), f"configs/pretrain/{method}.yaml is missing"
    config = load_config(PRETRAIN_CONFIGS / f"{method}.yaml", tiny_overrides(method, cohort))
    assert config.pretrain.method == method and config.data.modalities == ["CT"]

    result = run_pretraining(config, tmp_path / method)

    check_run(result, config, method)


@pytest.fixture(scope="module")
def slices(cohort) -> pd.DataFrame:
    """2D images: three axial slices of each cohort CT, written as ``Z == 1`` NIfTI files (in HU)."""
    manifest = load_manifest(cohort["manifest"], require_locations=True)
    folder = cohort["base"] / "slices"
    folder.mkdir()
    rows = []
    for index, (_, row) in enumerate(manifest[manifest["status"] == "ok"].iterrows()):
        volume = load_manifest_volume(row, manifest_root(manifest))
        depth = volume.array.shape[3]
        for z in (depth // 3, depth // 2, 2 * depth // 3):
            affine = volume.affine.copy()
            affine[:3, 3] = volume.affine[:3, :3] @ np.array([0.0, 0.0, z]) + volume.affine[:3, 3]
            path = folder / f"ct{index}_z{z:02d}.nii.gz"
            save_volume(Volume(volume.array[..., z:z + 1].copy(), affine, "CT"), path)
            rows.append({"path": str(path), "modality": "CT", "status": "ok"})
    return pd.DataFrame(rows)


def test_2d_pretraining_on_2d_images(cohort, slices, tmp_path):
    overrides = tiny_overrides("simclr", cohort, patch=(PATCH, PATCH)) + ["pretrain.encoder.spatial_dims=2"]
    config = load_config(PRETRAIN_CONFIGS / "simclr.yaml", overrides)

    result = run_pretraining(config, tmp_path / "simclr_2d", entries=slices)

    check_run(result, config, "simclr")
    encoder, _ = load_pretrained(result.encoder_path)
    assert encoder.spatial_dims == 2


@pytest.mark.parametrize(("method", "context"), [("simclr", 0), ("genesis", 0), ("simclr", 1)])
def test_2d_pretraining_on_slices_of_3d_volumes_loads_into_the_2d_network(cohort, tmp_path, method, context):
    patch = 32 if method == "genesis" else PATCH  # the whole network halves a patch 5 times
    whole_network = ["pretrain.method_args.decoder=network"] if method == "genesis" else []  # Models Genesis
    overrides = tiny_overrides(method, cohort, patch=(patch, patch)) + whole_network + [
        "pretrain.encoder.spatial_dims=2", "pretrain.steps=2", "pretrain.checkpoint_every=2",
        f"pretrain.augmentation.slice_context={context}", f"pretrain.encoder.in_channels={2 * context + 1}",
    ]
    config = load_config(PRETRAIN_CONFIGS / f"{method}.yaml", overrides)

    result = run_pretraining(config, tmp_path / method)  # the cohort's 3D CT volumes, sliced

    metrics = pd.read_csv(result.metrics_path)
    assert metrics["step"].tolist() == [1, 2] and np.isfinite(metrics["loss"]).all()
    encoder, card = load_pretrained(result.encoder_path)
    assert encoder.spatial_dims == 2 and card["encoder"]["in_channels"] == 2 * context + 1
    model = build_finetune_model("segmentation", None, result.encoder_path, num_classes=3, seed=0)
    transfer = model.transfer_summary()
    assert model.spatial_dims == 2
    assert transfer["n_loaded"] == len(encoder.state_dict()) and transfer["n_missing"] == transfer["n_mismatched"] == 0
    if method == "genesis":  # the restoration decoder comes along, all but the 1-channel output layer
        assert transfer["decoder"]["n_loaded"] > 0
        assert len(transfer["decoder"]["mismatched"]) == 2  # its weight and bias cannot fit 3 classes
    logits = model.network.eval()(torch.rand(2, 2 * context + 1, 32, 32))
    assert logits.shape == (2, 3, 32, 32)


def test_2d_pretraining_checks_the_channels_of_2_5d_slices_and_the_patch_dims(cohort, tmp_path):
    overrides = tiny_overrides("simclr", cohort, patch=(PATCH, PATCH)) + [
        "pretrain.encoder.spatial_dims=2", "pretrain.augmentation.slice_context=1"]  # 3 channels, encoder takes 1
    with pytest.raises(ConfigError, match=r"gives 3 input channels .* set pretrain.encoder.in_channels=3"):
        run_pretraining(load_config(PRETRAIN_CONFIGS / "simclr.yaml", overrides), tmp_path / "refused")
    assert not (tmp_path / "refused" / "metrics.csv").exists()
    mismatch = tiny_overrides("simclr", cohort, patch=(PATCH, PATCH))  # 3D encoder, 2D patches
    with pytest.raises(ConfigError, match=r"patch_size=\[16, 16\] has 2 sizes but pretrain.encoder.spatial_dims is 3"):
        run_pretraining(load_config(PRETRAIN_CONFIGS / "simclr.yaml", mismatch), tmp_path / "mismatch")


SHIPPED = sorted(PRETRAIN_CONFIGS.glob("*.yaml")) + sorted((ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_shipped_config_validates(path):
    config = load_config(path)
    if path.parent == PRETRAIN_CONFIGS:  # named after its method (<method>_mr: its MR variant)
        method_name = path.stem.removesuffix("_mr")
        assert config.pretrain.method == method_name and method_name in list_methods()
        if path.stem.endswith("_mr"):
            assert config.data.modalities == ["MR"] and config.pretrain.augmentation.preset == "mr"
        method = build_method_from_config(config)
        assert method.encoder.spatial_dims == len(config.pretrain.augmentation.patch_size)
    assert set(config.demo.methods) <= set(list_methods())
    encoder_cfg = config.pretrain.encoder
    for name, args in config.demo.method_args.items():  # what `medssl demo` builds
        assert name in config.demo.methods
        encoder = build_encoder(encoder_cfg.name, spatial_dims=encoder_cfg.spatial_dims,
                                in_channels=encoder_cfg.in_channels, **encoder_cfg.args)
        build_method(name, encoder, **args)
    for name in config.demo.method_augmentation:  # fields of pretrain.augmentation for one method
        assert name in config.demo.methods
        method_augmentation(config, name)


def test_every_method_has_a_config():
    shipped = {p.stem for p in PRETRAIN_CONFIGS.glob("*.yaml")}
    assert set(METHODS) <= shipped, f"methods without configs/pretrain/<method>.yaml: {sorted(set(METHODS) - shipped)}"


def test_intermediate_encoders_are_exported_every_n_steps(cohort, tmp_path):
    overrides = tiny_overrides("simclr", cohort) + ["pretrain.steps=4", "pretrain.checkpoint_every=2",
                                                    "pretrain.export_every=2"]
    config = load_config(PRETRAIN_CONFIGS / "simclr.yaml", overrides)
    result = run_pretraining(config, tmp_path / "run")

    kept = sorted(p.parent.name for p in (tmp_path / "run" / "encoders").glob("*/encoder.pt"))
    assert kept == ["step_000002"], "every multiple of export_every before the end; the end is encoder.pt"
    middle, card = load_pretrained(tmp_path / "run" / "encoders" / "step_000002" / "encoder.pt")
    final, final_card = load_pretrained(result.encoder_path)
    assert card["steps"] == 2 and final_card["steps"] == 4 and card["config_hash"] == final_card["config_hash"]
    seed_everything(config.seed)
    initial = build_method_from_config(config).encoder.state_dict()
    for other in (initial, final.state_dict()):  # a step-2 encoder: trained, and not yet the final one
        assert any(not torch.equal(v, other[k]) for k, v in middle.state_dict().items() if v.is_floating_point())


def test_export_every_must_fall_on_checkpoints():
    with pytest.raises(ConfigError, match="multiple of pretrain.checkpoint_every"):
        load_config(PRETRAIN_CONFIGS / "simclr.yaml", ["pretrain.checkpoint_every=3", "pretrain.export_every=4"])
