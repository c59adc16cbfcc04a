"""The label-efficiency benchmark's command line resolves to the config it claims to run."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from label_efficiency import parse_args, scale_overrides  # noqa: E402

from medssl.demo import load_demo_config, method_augmentation  # noqa: E402


def resolved(argv: list[str]):
    return load_demo_config(False, scale_overrides(parse_args(argv)))


def test_full_scale_fine_tunes_long_enough_for_labels_to_matter():
    config = resolved([])
    assert config.finetune.steps == 600 and config.demo.n_ct == 40 and list(config.study.seeds) == [0, 1, 2, 3, 4]
    assert resolved(["--demo-scale"]).finetune.steps == load_demo_config(False, []).finetune.steps
    assert config.pretrain.encoder.spatial_dims == 2 and config.finetune.patch_size == (64, 64)  # the demo's track
    three = resolved(["--track", "3d"])
    assert three.pretrain.encoder.spatial_dims == 3 and three.finetune.patch_size == (32, 32, 32)
    assert three.study.semi == config.study.semi == ["none", "self_training"]


def test_methods_get_their_own_augmentation_and_overrides_stay_overrides():
    config = resolved(["--methods", "simclr", "local_contrastive", "study.budgets=[2]", "--seed", "1"])
    assert config.demo.methods == ["simclr", "local_contrastive"] and config.study.budgets == [2] and config.seed == 1
    own = method_augmentation(config, "local_contrastive")
    assert own.shared_geometry and own.patch_size == (40, 40, 40)
    assert method_augmentation(config, "simclr") == config.pretrain.augmentation


def test_plain_monai_baseline_trains_on_the_same_cases_and_is_scored_like_every_arm(tmp_path):
    """Goal (a)'s reference: MONAI's tutorial UNet and augmentation, medssl's preprocessing and scoring."""
    from plain_monai import train_plain_monai

    from medssl.config import load_config
    from medssl.eval.data import load_labeled_data
    from tests.study.cohort import write_disk_cohort

    labels = write_disk_cohort(tmp_path / "cohort", 6, shape=(24, 24, 24))
    config = load_config(None, [
        f"study.labels={labels}", "data.preprocess.target_spacing=null", "data.preprocess.crop_foreground=false",
        "finetune.patch_size=[16,16,16]", "finetune.steps=8", "finetune.batch_size=2", "finetune.mask_labels=[1,2]",
        "finetune.num_classes=3", "finetune.eval_metrics=[dice]", "finetune.device=cpu",
    ])
    data = load_labeled_data(config, tmp_path / "cache")
    per_case, record = train_plain_monai(data, ["case00", "case01"], ["case04", "case05"], config.finetune, seed=0)
    again, _ = train_plain_monai(data, ["case00", "case01"], ["case04", "case05"], config.finetune, seed=0)
    assert list(per_case["case_id"]) == ["case04", "case05"] and {"dice", "dice_1", "dice_2"} <= set(per_case.columns)
    assert record["steps"] == 8 and record["final_loss"] < record["first_loss"]
    assert per_case["dice"].tolist() == again["dice"].tolist()  # seeded


def test_plain_monai_baseline_is_3d_and_unprocessed_whatever_the_study_track():
    """Against a 2D-track study the plain recipe stays MONAI's 3D one, without medssl's post-processing."""
    from plain_monai import BATCH_3D, PATCH_3D, plain_monai_finetune

    from medssl.config import FinetuneConfig

    study = FinetuneConfig(num_classes=3, patch_size=(64, 64), batch_size=8, slice_context=1,
                           keep_largest_components={1: 1, 2: 2})
    plain = plain_monai_finetune(study)
    assert plain.patch_size == PATCH_3D and plain.batch_size == BATCH_3D
    assert plain.keep_largest_components is None and plain.slice_context == 0
    assert plain.steps == study.steps
    three_d = plain_monai_finetune(study.model_copy(update={"patch_size": (24, 24, 24), "batch_size": 2}))
    assert three_d.patch_size == (24, 24, 24) and three_d.batch_size == 2
