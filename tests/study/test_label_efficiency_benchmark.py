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


def test_methods_get_their_own_augmentation_and_overrides_stay_overrides():
    config = resolved(["--methods", "simclr", "local_contrastive", "study.budgets=[2]", "--seed", "1"])
    assert config.demo.methods == ["simclr", "local_contrastive"] and config.study.budgets == [2] and config.seed == 1
    own = method_augmentation(config, "local_contrastive")
    assert own.shared_geometry and own.patch_size == (40, 40, 40)
    assert method_augmentation(config, "simclr") == config.pretrain.augmentation
