"""A tiny label-efficiency study end to end: determinism, resumption, patient-level splits, report."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from medssl.config import load_config
from medssl.models import build_encoder, export_encoder
from medssl.study import label_efficiency
from medssl.study.label_efficiency import run_label_efficiency, run_study_from_config

from tests.study.cohort import write_disk_cohort

BASE = [
    "pretrain.encoder.name=resnet10_tiny", "pretrain.encoder.spatial_dims=2",
    "data.preprocess.target_spacing=null", "data.preprocess.crop_foreground=false",
    "finetune.patch_size=[32,32]", "finetune.steps=6", "finetune.batch_size=4", "finetune.device=cpu",
    "finetune.mask_labels=[1,2]", "finetune.num_classes=3", "finetune.optimizer.lr=0.01",
    "finetune.eval_metrics=[dice,hd95]",
    "study.budgets=[2,4]", "study.seeds=[0,1]", "study.test_fraction=0.34", "study.bootstrap=100",
]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return write_disk_cohort(tmp_path_factory.mktemp("cohort"), 12)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    torch.manual_seed(11)
    encoder = build_encoder("resnet10_tiny", spatial_dims=2)
    with torch.no_grad():
        for p in encoder.parameters():
            p.mul_(1.5)
    return export_encoder(encoder, tmp_path_factory.mktemp("enc") / "encoder.pt", {"method": "test"})


def _config(cohort, tmp_path, *extra):
    return load_config(None, BASE + [f"study.labels={cohort}", f"data.cache_dir={tmp_path / 'cache'}", *extra])


def test_same_config_twice_gives_identical_results_and_resumes(cohort, pretrained, tmp_path, monkeypatch):
    inits = f"study.inits={{scratch: null, pretrained: {pretrained}}}"
    config = _config(cohort, tmp_path, inits)
    first = run_label_efficiency(config, tmp_path / "run1")
    second = run_label_efficiency(config, tmp_path / "run2")
    pd.testing.assert_frame_equal(first, second)
    assert set(first["init"]) == {"scratch", "pretrained"}
    assert len(first.groupby(["init", "budget", "seed"])) == 8
    # the two inits trained on the same cases for each (budget, seed): a paired comparison
    records = {p.name: json.loads(p.read_text()) for p in (tmp_path / "run1" / "cells" / "scratch").glob("*.json")}
    for name, record in records.items():
        other = json.loads((tmp_path / "run1" / "cells" / "pretrained" / name).read_text())
        assert other["train_ids"] == record["train_ids"] and other["cell_seed"] == record["cell_seed"]
        assert other["transfer"]["n_loaded"] > 0 and other["transfer"]["n_missing"] == 0

    # a re-run reuses every finished cell ...
    def refuse(*args, **kwargs):
        raise AssertionError("a finished cell was recomputed")

    monkeypatch.setattr(label_efficiency, "train_and_evaluate", refuse)
    pd.testing.assert_frame_equal(run_label_efficiency(config, tmp_path / "run1"), first)
    # ... and recomputes only a cell whose file is gone (a run killed before writing it)
    monkeypatch.undo()
    (tmp_path / "run1" / "cells" / "pretrained" / "b4_s1_f0.csv").unlink()
    calls = []
    original = label_efficiency.train_and_evaluate
    monkeypatch.setattr(label_efficiency, "train_and_evaluate",
                        lambda *a, **k: calls.append(k["seed"]) or original(*a, **k))
    pd.testing.assert_frame_equal(run_label_efficiency(config, tmp_path / "run1"), first)
    assert len(calls) == 1


def test_changed_settings_invalidate_finished_cells(cohort, tmp_path, monkeypatch):
    config = _config(cohort, tmp_path, "study.seeds=[0]", "study.budgets=[2]")
    run_label_efficiency(config, tmp_path / "run")
    calls = []
    original = label_efficiency.train_and_evaluate
    monkeypatch.setattr(label_efficiency, "train_and_evaluate",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    changed = _config(cohort, tmp_path, "study.seeds=[0]", "study.budgets=[2]", "finetune.steps=3")
    run_label_efficiency(changed, tmp_path / "run")
    assert calls == [1]


def test_tuning_the_semi_supervised_arm_reuses_the_labels_only_cells(cohort, tmp_path, monkeypatch):
    """finetune.semi settings change the semi-supervised cells only: a sweep over them does not
    retrain scratch."""
    arms = ("study.seeds=[0]", "study.budgets=[2]", "study.semi=[none, mean_teacher]")
    run_label_efficiency(_config(cohort, tmp_path, *arms), tmp_path / "run")
    recomputed = []
    original = label_efficiency.train_and_evaluate
    monkeypatch.setattr(label_efficiency, "train_and_evaluate",
                        lambda config, *a, **k: recomputed.append(config.finetune.semi.method) or original(config, *a, **k))
    run_label_efficiency(_config(cohort, tmp_path, *arms, "finetune.semi.weight=0.3"), tmp_path / "run")
    assert recomputed == ["mean_teacher"]


def test_patient_level_split_and_fixed_test_set(cohort, tmp_path):
    config = _config(cohort, tmp_path, "study.budgets=[2,4]", "study.seeds=[0,1]")
    results = run_label_efficiency(config, tmp_path / "run")
    labels = pd.read_csv(cohort)
    patient_of = dict(zip(labels["case_id"], labels["patient_key"]))
    test_cases = set(results["case_id"])
    assert all(set(g["case_id"]) == test_cases for _, g in results.groupby(["budget", "seed"]))
    for path in (tmp_path / "run" / "cells" / "scratch").glob("*.json"):
        record = json.loads(path.read_text())
        train_patients = {patient_of[c] for c in record["train_ids"]}
        assert not train_patients & {patient_of[c] for c in test_cases}
        assert len(record["train_ids"]) == int(record["budget"])
    # nested budgets: the 2 labeled cases of a seed lie inside its 4
    cells = tmp_path / "run" / "cells" / "scratch"
    for seed in (0, 1):
        small = json.loads((cells / f"b2_s{seed}_f0.json").read_text())["train_ids"]
        large = json.loads((cells / f"b4_s{seed}_f0.json").read_text())["train_ids"]
        assert set(small) <= set(large)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert set(manifest["splits"][0]["test"]) == test_cases
    assert manifest["data_fingerprint"] and manifest["environment"]["torch"]
    assert manifest["seeds"]["study_seeds"] == [0, 1] and manifest["finished"]


@pytest.mark.filterwarnings("ignore:The least populated class:UserWarning")  # 12 cases in 3 stratified folds
def test_kfold_scores_every_case_once_per_seed(cohort, tmp_path):
    config = _config(cohort, tmp_path, "study.folds=3", "study.budgets=[2]", "study.seeds=[0]",
                     "finetune.steps=2")
    results = run_label_efficiency(config, tmp_path / "run")
    dice = results[results["metric"] == "dice"]
    assert sorted(dice["case_id"]) == sorted(pd.read_csv(cohort)["case_id"])
    assert set(dice["fold"]) == {0, 1, 2}


def test_report_files_hold_the_expected_tables(cohort, pretrained, tmp_path):
    config = _config(cohort, tmp_path, f"study.inits={{scratch: null, ssl: {pretrained}}}", "study.seeds=[0,1]")
    report = run_study_from_config(config, tmp_path / "run")
    run = tmp_path / "run"
    text = report.read_text()
    assert "| init | 2 cases | 4 cases |" in text
    assert "Difference to `scratch`" in text and "| ssl |" in text
    assert "![Dice against labeled cases](plots/dice_vs_labels.png)" in text
    assert all((run / "plots" / f"{m}_{kind}.png").stat().st_size > 1000
               for m in ("dice", "hd95") for kind in ("vs_labels", "per_case"))
    # overlays: the cells of the largest budget and first seed kept one slice per test case ...
    kept = sorted(p.relative_to(run / "cells").as_posix() for p in (run / "cells").rglob("*.slices.npz"))
    assert kept == ["scratch/b4_s0_f0.slices.npz", "ssl/b4_s0_f0.slices.npz"]
    # ... drawn for the best, median and worst test cases: image, ground truth, each arm
    overlays = sorted((run / "overlays").glob("*.png"))
    assert [p.name.split("_")[0] for p in overlays] == ["best", "median", "worst"]
    import matplotlib.image

    picture = matplotlib.image.imread(overlays[0])
    assert picture.shape[1] > 3 * picture.shape[0] / 2  # a row of 4 panels
    assert "## Predictions on test cases" in text and "![Best test case" in text
    # each run's per-class fit on its own training batches (medssl.study.training_fit)
    fit = json.loads((run / "cells" / "scratch" / "b2_s0_f0.json").read_text())["history"]["train_class_dice"]
    assert len(fit) == config.finetune.num_classes and fit[0] is None and 0 <= fit[1] <= 1
    assert "own labeled training batches" in text
    html = (run / "report.html").read_text()
    # the curves, the per-case boxes and the training fit; three overlays
    assert html.count("data:image/png;base64,") == 4 + 1 + 3 and "<table" in html and "src='plots/" not in html
    summary = pd.read_csv(run / "summary.csv")
    assert {"metric", "init", "n_labeled", "mean", "sd", "ci_low", "ci_high", "diff", "diff_low",
            "diff_high"} <= set(summary.columns)
    scratch_rows = summary[(summary["init"] == "scratch") & (summary["metric"] == "dice")]
    assert (scratch_rows["diff"] == 0).all()
    results = pd.read_csv(run / "results.csv")
    per_run = results[results["metric"] == "dice"].groupby(["init", "n_labeled", "seed"])["value"].mean()
    for _, row in summary[summary["metric"] == "dice"].iterrows():
        runs = per_run.loc[(row["init"], row["n_labeled"])]
        assert row["mean"] == pytest.approx(runs.mean())
        assert row["sd"] == pytest.approx(runs.std(ddof=1))
        assert row["ci_low"] <= row["mean"] <= row["ci_high"]


def test_linear_and_knn_probe_studies(cohort, pretrained, tmp_path, caplog):
    for evaluation in ("linear_probe", "knn_probe"):
        config = _config(cohort, tmp_path, f"study.inits={{scratch: null, ssl: {pretrained}}}",
                         f"study.evaluation={evaluation}", "finetune.task=classification", "finetune.num_classes=2",
                         "study.metric=auc", "study.knn_k=3")
        caplog.clear()
        with caplog.at_level("INFO"):
            report = run_study_from_config(config, tmp_path / evaluation)
        cells = [r.getMessage() for r in caplog.records if r.getMessage().startswith("cell ")]
        assert cells and all(": auc " in m for m in cells)  # each cell logs the study's headline metric
        if evaluation == "knn_probe":  # k = 3 on 2 labeled cases: said, and the k used is kept
            records = [json.loads(p.read_text()) for p in (tmp_path / evaluation / "cells").rglob("*.json")]
            assert {(r["n_train"], r["knn_k"]) for r in records} == {(2, 2), (4, 3)}
            assert any("k=3 is more than the 2 labeled case(s)" in r.getMessage() for r in caplog.records)
            assert "k = 3 (`study.knn_k`) is more than the 2 labeled cases" in report.read_text()
        results = pd.read_csv(tmp_path / evaluation / "results.csv")
        assert {"target", "prediction", "correct", "prob_0", "prob_1"} <= set(results["metric"])
        text = report.read_text()
        assert text.index("## AUC (primary metric)") < text.index("## Balanced accuracy")
        summary = pd.read_csv(tmp_path / evaluation / "summary.csv")
        auc = summary[summary["metric"] == "auc"]
        assert len(auc) == 4 and np.isfinite(auc["mean"]).all()


def test_bad_configs_fail_clearly(cohort, tmp_path):
    from medssl.errors import ConfigError, DataError

    with pytest.raises(ConfigError, match="does not exist"):
        run_label_efficiency(_config(cohort, tmp_path, "study.inits={x: nowhere/encoder.pt}"), tmp_path / "a")
    with pytest.raises(ConfigError, match="classification"):
        run_label_efficiency(_config(cohort, tmp_path, "study.evaluation=linear_probe"), tmp_path / "b")
    broken = tmp_path / "labels.csv"
    pd.read_csv(cohort).drop(columns=["mask"]).to_csv(broken, index=False)
    with pytest.raises(DataError, match="mask"):
        run_label_efficiency(_config(broken, tmp_path), tmp_path / "c")
    with pytest.raises(DataError, match="budget"):
        run_label_efficiency(_config(cohort, tmp_path, "study.budgets=[50]"), tmp_path / "d")


@pytest.mark.parametrize("source", ["whole", "patch"])
def test_classification_finetune_study(cohort, tmp_path, source):
    config = _config(cohort, tmp_path, "finetune.task=classification", "finetune.num_classes=2",
                     f"finetune.classification_input={source}", "finetune.input_size=[32,32]", "finetune.steps=3",
                     "study.budgets=[4]", "study.seeds=[0]", "study.metric=auc")
    results = run_label_efficiency(config, tmp_path / "run")
    probs = results[results["metric"].isin(["prob_0", "prob_1"])].pivot_table(
        index="case_id", columns="metric", values="value")
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    targets = results[results["metric"] == "target"].set_index("case_id")["value"]
    labels = pd.read_csv(cohort).set_index("case_id")["label"]
    assert (targets == labels.loc[targets.index]).all()


def test_fraction_budgets_count_cases_of_the_pool(cohort, tmp_path):
    config = _config(cohort, tmp_path, "study.budgets=[0.5]", "study.seeds=[0]", "finetune.steps=1")
    results = run_label_efficiency(config, tmp_path / "run")
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    pool = manifest["splits"][0]["pool_size"]
    assert set(results["n_labeled"]) == {round(0.5 * pool)}
    assert (tmp_path / "run" / "cells" / "scratch" / "b0p5_s0_f0.csv").is_file()


def test_a_patch_size_the_network_cannot_take_is_refused_before_any_data_is_read(cohort, tmp_path):
    from medssl.errors import ConfigError

    config = _config(cohort, tmp_path, "finetune.patch_size=[36,36]")
    with pytest.raises(ConfigError) as info:
        run_label_efficiency(config, tmp_path / "run")
    message = str(info.value)
    assert "finetune.patch_size=[36, 36]" in message and "multiple of 32" in message
    assert "[32, 32] or [64, 64]" in message and "resnet10_tiny" in message
    assert not (tmp_path / "cache").exists()  # refused up front, nothing preprocessed


def test_a_segmentation_table_without_a_class_column_is_split_unstratified_and_says_so(cohort, tmp_path, caplog):
    no_label = cohort.parent / "labels_without_class.csv"  # beside the images its paths start from
    pd.read_csv(cohort).drop(columns=["label"]).to_csv(no_label, index=False)
    config = _config(no_label, tmp_path, "study.budgets=[2]", "study.seeds=[0]", "finetune.steps=1")
    assert config.study.stratify_column == "auto"
    with caplog.at_level("INFO"):
        results = run_label_efficiency(config, tmp_path / "run")
    assert len(results)
    stratify = [r for r in caplog.records if "stratif" in r.getMessage()]
    assert stratify and all(r.levelname == "INFO" for r in stratify)
    assert any("has no 'label' column, so splits are not stratified" in r.getMessage() for r in stratify)


def test_medssl_study_prints_the_table_and_the_warnings(cohort, tmp_path, capsys):
    from medssl.cli import main

    overrides = BASE + [f"study.labels={cohort}", f"data.cache_dir={tmp_path / 'cache'}", "finetune.steps=1",
                        "study.seeds=[0]"]
    assert main(["study", "--run-dir", str(tmp_path / "run"), *overrides]) == 0
    out = capsys.readouterr().out
    assert "dice: mean ± sd over seeds [95% bootstrap CI]" in out and "2 cases" in out and "4 cases" in out
    assert "report: " in out and "report.html" in out


def test_four_arms_inits_crossed_with_semi_supervised_methods(cohort, pretrained, tmp_path):
    """scratch, pretrained, scratch+fixmatch, pretrained+fixmatch: same labeled cases, unlabeled pool
    outside them and outside the test set, costs recorded and reported."""
    inits = f"study.inits={{scratch: null, pretrained: {pretrained}}}"
    config = _config(cohort, tmp_path, inits, "study.semi=[none, fixmatch]", "study.seeds=[0]",
                     "finetune.semi.threshold=0.5")
    report = run_study_from_config(config, tmp_path / "arms")
    results = pd.read_csv(tmp_path / "arms" / "results.csv")
    assert set(results["init"]) == {"scratch", "pretrained", "scratch+fixmatch", "pretrained+fixmatch"}
    cells = tmp_path / "arms" / "cells"
    for path in (cells / "scratch+fixmatch").glob("*.json"):
        semi = json.loads(path.read_text())
        plain = json.loads((cells / "scratch" / path.name).read_text())
        assert semi["train_ids"] == plain["train_ids"] and semi["cell_seed"] == plain["cell_seed"]
        assert semi["semi"] == "fixmatch" and semi["n_unlabeled"] > 0
        assert semi["history"]["forward_items"] > plain["history"]["forward_items"]
        manifest = json.loads((tmp_path / "arms" / "manifest.json").read_text())
        test = set(manifest["splits"][0]["test"])
        assert semi["n_unlabeled"] == manifest["splits"][0]["pool_size"] - len(semi["train_ids"])
        assert not test & set(semi["train_ids"])
    text = report.read_text()
    assert "What each arm cost" in text and "scratch+fixmatch" in text
    assert "pretrained+fixmatch" in pd.read_csv(tmp_path / "arms" / "summary.csv")["init"].tolist()


def test_semi_supervised_cells_add_an_unlabeled_archive_without_test_patients(cohort, tmp_path):
    """study.unlabeled: a manifest of further volumes. Labeled images are not counted twice and no
    test patient's volume reaches the unlabeled pool."""
    import shutil

    from medssl.data.manifest import write_manifest

    archive = tmp_path / "archive"
    shutil.copytree(cohort.parent / "images", archive)  # the labeled cases' own images ...
    for i in range(3):                                   # ... and three volumes nobody annotated
        shutil.copy(cohort.parent / "images" / "case00.nii.gz", archive / f"extra{i}.nii.gz")
    write_manifest(archive, tmp_path / "manifest.csv", progress=False)
    labels = pd.read_csv(cohort)
    labels["image"] = [str(archive / p.split("/")[-1]) for p in labels["image"]]
    labels["mask"] = [str(cohort.parent / p) for p in labels["mask"]]
    table = tmp_path / "labels.csv"
    labels.to_csv(table, index=False)
    config = load_config(None, BASE + [
        f"study.labels={table}", f"data.cache_dir={tmp_path / 'cache'}", "study.semi=[fixmatch]",
        "study.seeds=[0]", "study.budgets=[2]", f"study.unlabeled={tmp_path / 'manifest.csv'}",
        "finetune.steps=2", "data.modalities=null",
    ])
    run_label_efficiency(config, tmp_path / "run")
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "run" / "cells" / "scratch+fixmatch").glob("*.json")]
    pool = manifest["splits"][0]["pool_size"]
    assert record["n_unlabeled"] == pool - 2 + 3


def test_cells_in_worker_processes_give_the_numbers_of_one_process(cohort, tmp_path):
    """study.workers: cells computed in parallel processes, committed by the study, same results."""
    config = _config(cohort, tmp_path, "study.seeds=[0]", "finetune.steps=3", "study.semi=[none, mean_teacher]")
    one = run_label_efficiency(config, tmp_path / "one")
    config.study.workers = 2
    two = run_label_efficiency(config, tmp_path / "two")
    pd.testing.assert_frame_equal(one, two)
    assert len(list((tmp_path / "two" / "cells").glob("*/*.csv"))) == 4


def test_the_report_scores_each_subgroup_for_runs_with_and_without_it_labeled(cohort, tmp_path):
    from medssl.study.subgroups import subgroup_table

    config = _config(cohort, tmp_path, "study.subgroup_columns=[label]", "study.budgets=[2]", "study.seeds=[0,1,2]")
    report = run_study_from_config(config, tmp_path / "run")
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    labels = pd.read_csv(cohort, dtype={"case_id": str})
    assert manifest["subgroups"] == {"label": {c: str(v) for c, v in zip(labels["case_id"], labels["label"])}}
    runs = {r["seed"]: r["case_ids"] for r in manifest["labeled_cases"]}
    for path in (tmp_path / "run" / "cells" / "scratch").glob("*.json"):
        record = json.loads(path.read_text())
        assert runs[record["seed"]] == record["train_ids"]  # the labeled cases each cell trained on
    results = pd.read_csv(tmp_path / "run" / "results.csv", dtype={"case_id": str})
    table = subgroup_table(results, manifest["subgroups"]["label"],
                           {(2.0, s, 0): ids for s, ids in runs.items()}, "dice", column="label")
    assert set(table["label"]) == {"0", "1"} and (table["seen runs"] + table["unseen runs"] == 3).all()
    assert "Dice by `label` of the test cases" in report.read_text()


def test_a_subgroup_column_the_labels_table_lacks_is_refused_before_any_cell(cohort, tmp_path):
    from medssl.errors import ConfigError

    with pytest.raises(ConfigError, match="'scanner'.*its columns: case_id"):
        run_label_efficiency(_config(cohort, tmp_path, "study.subgroup_columns=[scanner]"), tmp_path / "run")
    assert not (tmp_path / "run" / "cells").exists()
