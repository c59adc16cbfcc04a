"""The 2D slice track end to end: a 2D (and 2.5D) network fine-tuned on slices of 3D volumes,
scored on the same 3D test cases, with the same 3D metrics, as a 3D network."""

from __future__ import annotations

import pytest

from medssl.config import load_config
from medssl.errors import ConfigError
from medssl.eval.data import load_labeled_data
from medssl.eval.experiment import train_and_evaluate
from medssl.models import build_encoder, export_encoder

from tests.study.cohort import write_disk_cohort


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Six balls in 3D volumes of 20x20x18 voxels at 1.2 x 1.2 x 3.0 mm (thick z: the slice axis)."""
    folder = tmp_path_factory.mktemp("balls")
    labels = write_disk_cohort(folder, 6, shape=(20, 20, 18))
    return labels, folder / "cache"


def _config(labels, *extra):
    return load_config(None, [
        f"study.labels={labels}", "data.preprocess.target_spacing=null", "data.preprocess.crop_foreground=false",
        "pretrain.encoder.name=resnet10_tiny", "finetune.steps=2", "finetune.batch_size=2", "finetune.device=cpu",
        "finetune.mask_labels=[1,2]", "finetune.num_classes=3", "finetune.eval_metrics=[dice,hd95]", *extra,
    ])


TRAIN, TEST = ["case00", "case01", "case02"], ["case03", "case04", "case05"]


@pytest.mark.parametrize(("axis", "context"), [("auto", 0), ("auto", 1), (0, 0)])
def test_2d_and_2_5d_fine_tuning_is_scored_on_the_3d_test_cases(cohort, axis, context):
    labels, cache = cohort
    config = _config(labels, "pretrain.encoder.spatial_dims=2", "finetune.patch_size=[32,32]",
                     f"finetune.slice_axis={axis}", f"finetune.slice_context={context}")
    data = load_labeled_data(config, cache)
    assert data.cases["case03"].image.shape == (1, 20, 20, 18)

    outcome = train_and_evaluate(config, data, None, train_ids=TRAIN, test_ids=TEST, seed=0, keep_model=True)

    assert outcome.model.spatial_dims == 2
    first_conv = next(p for p in outcome.model.network.parameters() if p.ndim == 4)
    assert first_conv.shape[1] == 2 * context + 1  # 2.5D: neighbours as input channels
    assert outcome.per_case["case_id"].tolist() == TEST
    assert {"dice", "dice_1", "dice_2", "hd95"} <= set(outcome.per_case.columns)
    assert outcome.per_case["dice"].between(0, 1).all()
    assert outcome.record["history"]["steps"] == 2
    assert (outcome.record["spatial_dims"], outcome.record["slice_context"]) == (2, context)


def test_3d_arm_scores_the_same_cases_with_the_same_columns(cohort):
    labels, cache = cohort
    two_d = _config(labels, "pretrain.encoder.spatial_dims=2", "finetune.patch_size=[32,32]")
    three_d = _config(labels, "finetune.patch_size=[32,32,32]")
    data = load_labeled_data(two_d, cache)
    tables = [train_and_evaluate(c, data, None, train_ids=TRAIN, test_ids=TEST, seed=0).per_case
              for c in (two_d, three_d)]
    assert tables[0]["case_id"].tolist() == tables[1]["case_id"].tolist()
    assert list(tables[0].columns) == list(tables[1].columns)


def test_a_pretrained_2d_encoder_must_take_the_2_5d_channels(cohort, tmp_path):
    labels, cache = cohort
    init = export_encoder(build_encoder("resnet10_tiny", spatial_dims=2), tmp_path / "encoder.pt", {"method": "test"})
    config = _config(labels, "pretrain.encoder.spatial_dims=2", "finetune.patch_size=[32,32]",
                     "finetune.slice_context=2")
    data = load_labeled_data(config, cache)
    with pytest.raises(ConfigError, match=r"slice_context=2 on 1-channel images gives 5 input channels.*takes 1"):
        train_and_evaluate(config, data, str(init), train_ids=TRAIN, test_ids=TEST, seed=0)


def test_contrast_randomisation_trains_every_arm_and_is_recorded(cohort):
    labels, cache = cohort
    config = _config(labels, "pretrain.encoder.spatial_dims=2", "finetune.patch_size=[32,32]",
                     "finetune.intensity_augmentation=contrast_randomization")
    data = load_labeled_data(config, cache)
    outcome = train_and_evaluate(config, data, None, train_ids=TRAIN, test_ids=TEST, seed=0)
    assert outcome.record["intensity_augmentation"] == "contrast_randomization"
    assert outcome.per_case["dice"].between(0, 1).all()


def test_overlay_slices_of_a_2_5d_network_are_the_scored_prediction(cohort):
    """The report's overlays show what was scored: the 2.5D network's slice-by-slice 3D prediction."""
    import numpy as np

    from medssl.eval.evaluate import predict_case
    from medssl.study.overlays import overlay_slices

    labels, cache = cohort
    config = _config(labels, "pretrain.encoder.spatial_dims=2", "finetune.patch_size=[32,32]",
                     "finetune.slice_context=1")
    data = load_labeled_data(config, cache)
    outcome = train_and_evaluate(config, data, None, train_ids=TRAIN, test_ids=TEST, seed=0, keep_model=True)
    slices = overlay_slices(outcome.model, data.subset(TEST), config.finetune)
    assert sorted(slices) == TEST
    for case_id, entry in slices.items():
        case = data.cases[case_id]
        z = int(entry["index"])
        assert entry["image"].shape == entry["reference"].shape == entry["prediction"].shape == (20, 20)
        assert (entry["reference"] > 0).sum() == max((np.asarray(case.mask)[0, :, :, k] > 0).sum() for k in range(18))
        scored = predict_case(outcome.model, case, config.finetune).numpy()
        np.testing.assert_array_equal(entry["prediction"], scored[..., z])
