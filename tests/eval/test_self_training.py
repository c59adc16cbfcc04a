"""Offline self-training (``finetune.semi.method: self_training``): the pieces, then whole runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from medssl.config import load_config
from medssl.errors import ConfigError, DataError
from medssl.eval.self_training import (
    PatchMixture,
    checkpoint_steps,
    class_agreement,
    classes_to_mask_values,
    prediction_stability,
    select_reliable,
)

from tests.study.cohort import write_disk_cohort

# ---- the pieces ----------------------------------------------------------------------------------


def test_class_agreement_is_the_mean_foreground_dice_of_the_classes_present():
    a = torch.tensor([0, 1, 1, 1, 2, 0])
    b = torch.tensor([0, 1, 1, 0, 0, 0])
    # class 1: 2 * 2 / (3 + 2) = 0.8; class 2: present in a only, Dice 0
    assert class_agreement(a, b, 3) == pytest.approx(0.4)
    assert class_agreement(a, a, 3) == 1.0
    assert class_agreement(torch.zeros(4), torch.zeros(4), 3) == 1.0  # no foreground in either: no disagreement


def test_stability_averages_the_earlier_checkpoints_against_the_final_prediction():
    final = torch.tensor([0, 1, 1, 1])
    same, half = final.clone(), torch.tensor([0, 1, 0, 0])  # half: 2 * 1 / (1 + 3) = 0.5
    assert prediction_stability(final, [same, half], 2) == pytest.approx(0.75)
    assert prediction_stability(final, [], 2) == 1.0


def test_select_reliable_keeps_the_most_stable_volumes():
    assert select_reliable([0.2, 0.9, 0.5, 0.8], 0.5) == [1, 3]
    assert select_reliable([0.2, 0.9, 0.5], 0.5) == [1, 2]  # ceil(1.5) = 2
    assert select_reliable([0.3, 0.3, 0.3], 0.34) == [0, 1]  # ties: the earlier volume
    assert select_reliable([0.1, 0.2], 1.0) == [0, 1]
    assert select_reliable([0.1, 0.2], 0.01) == [1]  # at least one
    with pytest.raises(ConfigError, match="select_fraction"):
        select_reliable([0.1], 0.0)


def test_pseudo_labels_go_back_to_the_masks_values():
    labels = torch.tensor([[[0, 1, 2, 1]]])
    assert classes_to_mask_values(labels, [6, 3]).tolist() == [[[[0, 6, 3, 6]]]]
    kept = classes_to_mask_values(labels, None)
    assert kept.dtype == np.uint8 and kept.shape == (1, 1, 1, 4) and kept.tolist() == [[[[0, 1, 2, 1]]]]


def test_checkpoints_are_evenly_spaced_before_the_final_network():
    assert checkpoint_steps(600, 3) == [200, 400]
    assert checkpoint_steps(600, 1) == []
    assert checkpoint_steps(4, 8) == [1, 2, 3]  # never the final step, never twice the same


class _Items:
    def __init__(self, name: str, n: int):
        self.name, self.n, self.epoch = name, n, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return (self.name, i, self.epoch)


def test_a_patch_mixture_indexes_its_parts_in_order_and_passes_the_epoch_on():
    mixture = PatchMixture([_Items("labeled", 2), _Items("pseudo", 3)])
    assert len(mixture) == 5
    assert [mixture[i][:2] for i in range(5)] == [("labeled", 0), ("labeled", 1), ("pseudo", 0), ("pseudo", 1),
                                                  ("pseudo", 2)]
    mixture.set_epoch(4)
    assert mixture.epoch == 4 and mixture[0][2] == 4 and mixture[4][2] == 4
    with pytest.raises(IndexError):
        mixture[5]


def test_a_labeled_patch_dataset_takes_its_masks_from_the_given_ones(tmp_path):
    """The given mask steers the centres and is what the patch carries; the file's own is ignored."""
    from medssl.config import PreprocessConfig
    from medssl.data.cache import PreprocessedCache
    from medssl.data.labeled_patches import LabeledPatchDataset
    from medssl.io import Volume, save_volume

    image = np.zeros((1, 24, 24, 24), np.float32)
    own = np.zeros((1, 24, 24, 24), np.float32)
    own[0, 2:6, 2:6, 2:6] = 1
    save_volume(Volume(image, np.eye(4), "CT"), tmp_path / "ct.nii.gz")
    save_volume(Volume(own, np.eye(4), "OT"), tmp_path / "seg.nii.gz")
    cache = PreprocessedCache(tmp_path / "cache", PreprocessConfig(target_spacing=None, crop_foreground=False))
    given = np.zeros((1, 24, 24, 24), np.uint8)
    given[0, 18:22, 18:22, 18:22] = 2
    rows = pd.DataFrame({"path": ["ct.nii.gz"], "modality": ["CT"]})  # no mask column: the given mask is enough
    patches = LabeledPatchDataset(cache, rows, (4, 4, 4), seed=0, root=tmp_path, masks=[given],
                                  samples_per_volume=6)
    for i in range(6):  # every centre is positive (pos=1, neg=1 draws half; check those with a label)
        mask = patches[i]["mask"]
        assert set(mask.unique().tolist()) <= {0, 2}  # never the file's label 1
    assert any(int(patches[i]["mask"].max()) == 2 for i in range(6))
    with pytest.raises(DataError, match="given mask has shape"):
        LabeledPatchDataset(cache, rows, (4, 4, 4), seed=0, root=tmp_path, masks=[given[:, :10]])[0]
    with pytest.raises(ConfigError, match="one per row"):
        LabeledPatchDataset(cache, rows, (4, 4, 4), seed=0, root=tmp_path, masks=[given, given])


# ---- whole runs ----------------------------------------------------------------------------------


def _config(labels, *extra):
    return load_config(None, [
        f"study.labels={labels}", "data.preprocess.target_spacing=null", "data.preprocess.crop_foreground=false",
        "pretrain.encoder.name=resnet10_tiny", "pretrain.encoder.spatial_dims=2", "finetune.patch_size=[32,32]",
        "finetune.steps=6", "finetune.batch_size=2", "finetune.device=cpu", "finetune.mask_labels=[1,2]",
        "finetune.num_classes=3", "finetune.eval_metrics=[dice]", "finetune.semi.method=self_training", *extra,
    ])


UNLABELED = ["case04", "case05", "case06", "case07"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from medssl.eval.data import load_labeled_data

    folder = tmp_path_factory.mktemp("self_training")
    labels = write_disk_cohort(folder / "cohort", 10)
    return labels, load_labeled_data(_config(labels), folder / "cache")


def _run(cohort, *extra, unlabeled=tuple(UNLABELED), data=None):
    from medssl.eval.experiment import train_and_evaluate

    labels, own = cohort
    return train_and_evaluate(_config(labels, *extra), data or own, None, train_ids=["case00", "case01"],
                              test_ids=["case08", "case09"], unlabeled_ids=list(unlabeled), seed=3, keep_model=True)


def _parts(cohort, *extra):
    """The run of :func:`_run`, with every network built and every pseudo-labeled dataset kept."""
    from medssl.eval.experiment import (
        _patch_dataset,
        pseudo_labeled_patch_dataset,
        strong_view_for,
        unlabeled_volumes,
    )
    from medssl.eval.networks import build_finetune_model
    from medssl.eval.self_training import self_train_segmentation

    labels, data = cohort
    config = _config(labels, *extra)
    cfg = config.finetune
    encoder = dict(config.pretrain.encoder.model_dump(), in_channels=1)
    built, pseudo = [], []

    def build_model():
        built.append(build_finetune_model("segmentation", encoder, None, num_classes=3, seed=3))
        return built[-1]

    def pseudo_patches(rows, masks):
        pseudo.append((rows, masks))
        return pseudo_labeled_patch_dataset(data, rows, masks, cfg, 2, 3, strong_view_for(config, data, 2))

    student, history = self_train_segmentation(
        build_model, lambda per_volume: _patch_dataset(data, ["case00", "case01"], cfg, 2, 3, None,
                                                       samples_per_volume=per_volume),
        pseudo_patches, unlabeled_volumes(data, UNLABELED), cfg, seed=3)
    return built, pseudo, student, history


def test_the_teacher_is_the_labels_only_run_and_the_pseudo_labels_its_test_time_predictions(cohort):
    from medssl.eval.evaluate import predict_case

    labels, data = cohort
    (teacher, student), [(rows, masks)], returned, history = _parts(cohort, "finetune.semi.select_fraction=1.0")
    assert returned is student
    labels_only = _run(cohort, "finetune.semi.method=none").model.network.state_dict()
    assert all(torch.equal(v, labels_only[k]) for k, v in teacher.network.state_dict().items())
    assert list(rows["case_id"]) == UNLABELED  # select_fraction 1.0: every volume
    cfg = _config(labels).finetune
    for case_id, mask in zip(UNLABELED, masks):
        predicted = predict_case(teacher, data.cases[case_id], cfg, "cpu")
        assert np.array_equal(mask, classes_to_mask_values(predicted, [1, 2]))
    # the student is a new network from the same init, trained further on labels and pseudo-labels
    assert not all(torch.equal(v, labels_only[k]) for k, v in student.network.state_dict().items())
    record = history.extra["self_training"]
    assert record["volumes"] == 4 and record["kept"] == 4 and record["checkpoint_steps"] == []
    assert record["pseudo_items"] == record["labeled_items"] == 4 * 2  # pseudo_share 0.5: as many of each


def test_st_plus_plus_keeps_the_most_stable_half_by_default(cohort):
    (_teacher, _student), [(rows, masks)], _, history = _parts(cohort, "finetune.semi.pseudo_share=0.25")
    record = history.extra["self_training"]
    assert record["checkpoint_steps"] == [2, 4] and record["kept"] == 2 and len(rows) == len(masks) == 2
    assert len(record["stability"]) == 4 and record["stability"] == sorted(record["stability"])
    assert record["pseudo_items"] == 2 * 2 and record["labeled_items"] == 2 * 6  # 3 labeled items per pseudo one
    coverage = history.extra["pseudo_label_coverage"]
    assert all(c is None or 0.0 <= c <= 1.0 for c in coverage)


def test_a_self_training_run_records_its_pseudo_labels_and_its_cost(cohort):
    outcome = _run(cohort)
    history = outcome.record["history"]
    labels_only = _run(cohort, "finetune.semi.method=none").record["history"]
    assert outcome.record["semi"] == "self_training" and outcome.record["n_unlabeled"] == 4
    assert history["forward_items"] == 2 * labels_only["forward_items"]  # teacher and student, same steps and batch
    assert len(history["pseudo_label_dice"]) == 3 and history["pseudo_label_dice"][0] is None
    assert any(a is not None for a in history["pseudo_label_accuracy"])  # the pool's annotation, a diagnostic
    assert len(outcome.per_case) == 2


def test_the_unlabeled_annotation_never_trains_the_network(cohort, tmp_path):
    """Garbage masks on the unlabeled cases change the diagnostics, never the weights."""
    from medssl.eval.data import load_labeled_data

    from tests.study.cohort import with_garbage_masks

    labels, data = cohort
    dirty_data = load_labeled_data(_config(with_garbage_masks(labels, [4, 5, 6, 7], tmp_path)), tmp_path / "cache")
    clean, dirty = _run(cohort), _run(cohort, data=dirty_data)
    a, b = clean.model.network.state_dict(), dirty.model.network.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert clean.record["history"]["pseudo_label_dice"] != dirty.record["history"]["pseudo_label_dice"]


def test_self_training_needs_unlabeled_volumes_and_a_segmentation_task(cohort):
    with pytest.raises(DataError, match="unlabeled"):
        _run(cohort, unlabeled=())
    with pytest.raises(ConfigError, match="test"):
        _run(cohort, unlabeled=("case04", "case08"))
    with pytest.raises(ConfigError, match="segmentation"):
        _run(cohort, "finetune.task=classification", "finetune.num_classes=2", "finetune.mask_labels=null",
             "finetune.input_size=[32,32]", "finetune.classification_input=whole")


def test_finetune_segmentation_refuses_self_training_on_its_own(cohort):
    from medssl.eval.finetune import finetune_segmentation

    labels, _ = cohort
    with pytest.raises(ConfigError, match="self_train_segmentation"):
        finetune_segmentation(None, None, _config(labels).finetune, seed=0)  # type: ignore[arg-type]


def test_pseudo_labeled_patches_get_the_labeled_recipe_unless_the_strong_view_is_asked_for(cohort):
    """The measured default (docs/studies.md section 7): the strong view on the pseudo-labeled
    patches cost up to 0.31 Dice on the built-in cohort."""
    from medssl.eval.experiment import pseudo_labeled_patch_dataset
    from medssl.transforms.finetune_intensity import FinetuneIntensity

    labels, data = cohort
    rows = data.entries_for(["case04"])
    masks = [np.zeros((1, *np.asarray(data.cases["case04"].image).shape[1:]), np.uint8)]

    def strong(x, generator):
        return x

    labeled = _config(labels, "finetune.intensity_augmentation=mild").finetune
    dataset = pseudo_labeled_patch_dataset(data, rows, masks, labeled, 2, 3, strong)
    assert isinstance(dataset.intensity, FinetuneIntensity) and dataset.intensity.active
    assert dataset.requests[0].mask is None  # the case's own annotation is never read
    asked = _config(labels, "finetune.intensity_augmentation=mild", "finetune.semi.pseudo_view=strong").finetune
    assert pseudo_labeled_patch_dataset(data, rows, masks, asked, 2, 3, strong).intensity is strong


def test_the_pseudo_label_diagnostics_by_hand():
    """Two annotated volumes, one kept: coverage, accuracy and Dice count the kept one, the Dice of
    all volumes both."""
    from medssl.eval.self_training import _PseudoLabelCounts

    counts = _PseudoLabelCounts(2)
    truth = torch.tensor([0, 1, 1, 1])
    counts.add(torch.tensor([0, 1, 1, 0]), True, truth)     # class 1: 2 right of 2, Dice 2*2/(2+3) = 0.8
    counts.add(torch.tensor([1, 1, 0, 0]), False, truth)    # class 1: Dice 2*1/(2+3) = 0.4, not kept
    counts.add(torch.tensor([1, 1, 1, 1]), True, None)      # no annotation: counted, never checked
    found = counts.as_dict()
    assert found["pseudo_label_coverage"] == pytest.approx([2 / 4, 6 / 8])
    assert found["pseudo_label_accuracy"] == pytest.approx([0.5, 1.0])
    assert found["pseudo_label_dice"][1] == pytest.approx(0.8)
    assert found["pseudo_label_dice_all"][1] == pytest.approx(0.6)


def test_selecting_volumes_needs_a_checkpoint_to_rank_them_by(cohort):
    """Without an earlier checkpoint every volume is 'stable' and the selection would be arbitrary."""
    with pytest.raises(ConfigError, match="checkpoints >= 2"):
        _run(cohort, "finetune.semi.checkpoints=1")
    assert _run(cohort, "finetune.semi.checkpoints=1", "finetune.semi.select_fraction=1.0").record["history"][
        "self_training"]["kept"] == 4


def test_st_plus_plus_second_stage_relabels_the_rest_with_the_first_student(cohort):
    """``relabel_rest``: the first student labels the volumes the selection left out, and a third
    network from the init trains on every volume: the reliable ones keep the teacher's labels."""
    from medssl.eval.evaluate import predict_case

    labels, data = cohort
    built, pseudo, returned, history = _parts(cohort, "finetune.semi.relabel_rest=true")
    teacher, first, second = built
    assert returned is second and len(pseudo) == 2
    (reliable_rows, reliable_masks), (all_rows, all_masks) = pseudo
    assert len(reliable_rows) == 2 and list(all_rows["case_id"]) == UNLABELED  # in volume order
    cfg = _config(labels).finetune
    by_case = dict(zip(all_rows["case_id"], all_masks))
    for case_id, mask in zip(reliable_rows["case_id"], reliable_masks):
        assert np.array_equal(by_case[case_id], mask)  # the teacher's label, not relabelled
    for case_id in set(UNLABELED) - set(reliable_rows["case_id"]):
        predicted = predict_case(first, data.cases[case_id], cfg, "cpu")
        assert np.array_equal(by_case[case_id], classes_to_mask_values(predicted, [1, 2]))
    record = history.extra["self_training"]
    assert record["relabelled"] == 2 and record["pseudo_items"] == 4 * 2 and record["labeled_items"] == 4 * 2
    assert len(record["rest_pseudo_label_dice"]) == 3  # per class, the annotated relabelled volumes
    single = _run(cohort).record["history"]
    assert history.forward_items == 3 * single["forward_items"] // 2  # teacher and two students


def test_the_second_stage_needs_volumes_left_out():
    """With every volume kept there is nothing to relabel: refused before any training."""
    from medssl.eval.self_training import self_train_segmentation

    cfg = _config("labels.csv", "finetune.semi.relabel_rest=true", "finetune.semi.select_fraction=1.0").finetune
    never = lambda *args: pytest.fail("nothing may be built or trained")  # noqa: E731
    with pytest.raises(ConfigError, match="relabel_rest"):
        self_train_segmentation(never, never, never, [object()], cfg, seed=0)  # type: ignore[list-item]


def test_more_rounds_make_each_student_the_next_teacher(cohort):
    """``rounds: 2`` (Noisy Student's iteration): the first student labels every volume, its own
    checkpoints rank them, and a third network learns from its most stable half."""
    from medssl.eval.evaluate import predict_case

    labels, data = cohort
    built, pseudo, returned, history = _parts(cohort, "finetune.semi.rounds=2")
    teacher, first, second = built
    assert returned is second and len(pseudo) == 2
    rows, masks = pseudo[1]
    cfg = _config(labels).finetune
    for case_id, mask in zip(rows["case_id"], masks):
        predicted = predict_case(first, data.cases[case_id], cfg, "cpu")
        assert np.array_equal(mask, classes_to_mask_values(predicted, [1, 2]))
    record = history.extra["self_training"]
    assert [r["kept"] for r in record["rounds"]] == [2, 2] and record["kept"] == 2
    assert all(len(r["stability"]) == 4 for r in record["rounds"])
    single = _run(cohort).record["history"]
    assert history.forward_items == 3 * single["forward_items"] // 2  # teacher and two students
