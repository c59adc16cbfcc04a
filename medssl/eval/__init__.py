"""Fine-tuning on few labels, probes on frozen features, metrics and confidence intervals.

- :mod:`medssl.eval.networks`: :func:`build_finetune_model` (scratch or pretrained encoder, transfer report);
- :mod:`medssl.eval.finetune`: :func:`finetune_segmentation`, :func:`finetune_classification` (the training loops);
- :mod:`medssl.eval.run`: :func:`run_finetuning`, one run of ``medssl finetune`` (split, train, score, write);
- :mod:`medssl.eval.inference`: :func:`predict_segmentation` (MONAI sliding window, 2D and 3D);
- :mod:`medssl.eval.evaluate`: per-case tables of a fine-tuned network;
- :mod:`medssl.eval.probes`: :func:`linear_probe`, :func:`knn_probe`, :func:`extract_features`;
- :mod:`medssl.eval.metrics`: Dice, HD95, surface Dice (MONAI); AUC, balanced accuracy, F1 (scikit-learn);
- :mod:`medssl.eval.bootstrap`: percentile and paired bootstrap intervals over cases and seeds;
- :mod:`medssl.eval.experiment`: :func:`train_and_evaluate`, one run of a study;
- :mod:`medssl.eval.data`: :func:`load_labeled_data`, labeled cases through the preprocessing cache.

Example:
    >>> import numpy as np
    >>> from medssl.eval import bootstrap_ci
    >>> round(bootstrap_ci(np.array([0.6, 0.7, 0.8]), n_resamples=200).estimate, 3)
    0.7
"""

from medssl.eval.bootstrap import Interval, bootstrap_ci, bootstrap_statistic, paired_bootstrap_ci
from medssl.eval.cases import LabeledCase, WholeVolumeDataset, remap_mask, whole_volume_input
from medssl.eval.data import LabeledData, load_labeled_data
from medssl.eval.evaluate import evaluate_segmentation, predict_classification
from medssl.eval.experiment import RunOutcome, train_and_evaluate
from medssl.eval.finetune import FinetuneHistory, finetune_classification, finetune_segmentation
from medssl.eval.inference import predict_labels, predict_segmentation
from medssl.eval.metrics import (
    classification_metrics,
    classification_table,
    segmentation_case_metrics,
    segmentation_table,
)
from medssl.eval.networks import FinetuneModel, build_finetune_model
from medssl.eval.probes import extract_features, knn_probe, linear_probe
from medssl.eval.run import FinetuneRun, run_finetuning

__all__ = [
    "FinetuneHistory", "FinetuneModel", "FinetuneRun", "Interval", "LabeledCase", "LabeledData", "RunOutcome",
    "WholeVolumeDataset", "bootstrap_ci", "bootstrap_statistic", "build_finetune_model", "classification_metrics",
    "classification_table", "evaluate_segmentation", "extract_features", "finetune_classification",
    "finetune_segmentation", "knn_probe", "linear_probe", "load_labeled_data", "paired_bootstrap_ci",
    "predict_classification", "predict_labels", "predict_segmentation", "remap_mask", "run_finetuning",
    "segmentation_case_metrics", "segmentation_table", "train_and_evaluate", "whole_volume_input",
]
