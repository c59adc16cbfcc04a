"""PrecisionPolicy's errors name the config key the user has to change (pretrain. or finetune.)."""

import pytest
import torch

from medssl.engine.precision import PrecisionPolicy
from medssl.errors import ConfigError


@pytest.mark.parametrize("section", ["pretrain", "finetune"])
def test_errors_name_the_section_that_set_precision(section):
    with pytest.raises(ConfigError, match=rf"^{section}\.precision=fp16 needs a CUDA GPU.*set {section}\.precision=bf16"):
        PrecisionPolicy("fp16", torch.device("cpu"), section=section)
    with pytest.raises(ConfigError, match=rf"^{section}\.precision must be fp32, bf16 or fp16 \(got 'fp8'\)"):
        PrecisionPolicy("fp8", torch.device("cpu"), section=section)
    policy = PrecisionPolicy("bf16", torch.device("cpu"), section=section)
    with pytest.raises(ConfigError, match=rf"config asks for {section}\.precision='bf16'"):
        policy.load_state_dict({"precision": "fp32", "scaler": None})


def test_default_section_is_pretrain():
    with pytest.raises(ConfigError, match=r"^pretrain\.precision=fp16"):
        PrecisionPolicy("fp16", torch.device("cpu"))
