"""The usage examples in the docstrings of the transforms and presets run and give what they show."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "medssl.transforms",
    "medssl.transforms.intensity",
    "medssl.transforms.intensity_base",
    "medssl.transforms.intensity_bias_field",
    "medssl.transforms.intensity_contrast",
    "medssl.transforms.intensity_ct",
    "medssl.transforms.intensity_filters",
    "medssl.transforms.intensity_kspace",
    "medssl.transforms.intensity_noise",
    "medssl.transforms.intensity_speckle",
    "medssl.transforms.intensity_randomization",
    "medssl.transforms.finetune_intensity",
    "medssl.transforms.presets",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no usage example"
    assert result.failed == 0
