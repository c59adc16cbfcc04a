"""Pretraining says which preset and spacing it uses for the volumes' modality, and warns on a mismatch."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medssl.config import load_config
from medssl.engine.modality_checks import log_modality_choices

ROOT = Path(__file__).resolve().parents[2]
MR_HEADS = pd.DataFrame({"modality": ["MR"] * 4, "spacing_x": [1.0] * 4, "spacing_y": [1.0] * 4,
                         "spacing_z": [5.0, 5.0, 6.0, 5.0]})  # 2D sequences: thick slices


def test_the_mr_config_fits_an_mr_archive(caplog):
    config = load_config(ROOT / "configs" / "pretrain" / "simclr_mr.yaml",
                         ["data.preprocess.target_spacing=[1.0, 1.0, 5.0]"])
    with caplog.at_level("INFO", logger="medssl.engine.modality_checks"):
        assert log_modality_choices(config, MR_HEADS) == []
    assert "volumes by modality: MR 4 (preset mr); pretrain.augmentation.preset is mr" in caplog.text
    assert "native spacing (median over volumes) [1.0, 1.0, 5.0] mm" in caplog.text


def test_a_ct_config_on_mr_and_thin_targets_for_thick_slices_are_warned():
    ct = load_config(ROOT / "configs" / "pretrain" / "simclr.yaml", ["data.preprocess.target_spacing=[1.5,1.5,1.5]"])
    warnings = log_modality_choices(ct, MR_HEADS)
    assert any("preset is 'ct' but the volumes are MR: use preset mr" in w for w in warnings)
    assert any("finer than half the native spacing [1.0, 1.0, 5.0] mm along z" in w for w in warnings)
