"""Every method that takes a CNN pretrains the network nnU-Net v2 planned (encoder ``nnunet``).

The issue's promise: registered as an encoder (pooled and skip features), the planned network is
pretrained by every method, and by ``spark`` decoder included (the restoration tasks with
``decoder: network`` train it too: tests/models/test_nnunet.py). Each method runs ``run_pretraining`` from its shipped config on
the tiny cohort of ``test_every_method_on_cohort``, with the encoder swapped for the tiny plans of
``tests/models/nnunet_plans_fixture.py`` (an anisotropic first stage and a transposed axis order) and
the same shrinking overrides. ``mae`` and ``simmim`` mask the tokens of a transformer, which the
planned CNN has not: they refuse it with a clear error.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from medssl.config import load_config
from medssl.engine.pretrain import run_pretraining
from medssl.errors import ConfigError
from test_every_method_on_cohort import METHODS, PRETRAIN_CONFIGS, check_run, cohort, tiny_overrides  # noqa: F401

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from nnunet_plans_fixture import write_tiny_plans  # noqa: E402

TRANSFORMER_ONLY = ("mae", "simmim")


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    return write_tiny_plans(tmp_path_factory.mktemp("plans"))


def nnunet_overrides(method: str, cohort, plans) -> list[str]:
    # 16^3 patches fit the plans' strides (2, 4, 4) and give spark 128 cells; local_contrastive's
    # regions need room for its shifted sub-crops (40^3, as in test_every_method_on_cohort)
    patch = (40,) * 3 if method == "local_contrastive" else (16,) * 3
    overrides = [o for o in tiny_overrides(method, cohort, patch=patch) if not o.startswith("pretrain.encoder.args")]
    overrides += ["pretrain.encoder.name=nnunet", f"pretrain.encoder.args={{plans: {plans}, configuration: 3d_fullres}}"]
    return overrides


@pytest.mark.parametrize("method", [m for m in METHODS if m not in TRANSFORMER_ONLY])
def test_method_pretrains_the_planned_network(cohort, plans, tmp_path, method):
    pytest.importorskip("dynamic_network_architectures")
    config = load_config(PRETRAIN_CONFIGS / f"{method}.yaml", nnunet_overrides(method, cohort, plans))
    result = run_pretraining(config, tmp_path / method)
    check_run(result, config, method)


@pytest.mark.parametrize("method", TRANSFORMER_ONLY)
def test_transformer_methods_refuse_the_planned_cnn(cohort, plans, tmp_path, method):
    pytest.importorskip("dynamic_network_architectures")
    config = load_config(PRETRAIN_CONFIGS / f"{method}.yaml", nnunet_overrides(method, cohort, plans))
    with pytest.raises(ConfigError):
        run_pretraining(config, tmp_path / method)
