"""The usage examples in the pretext modules' docstrings run and give what they show."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "medssl.pretext",
    "medssl.pretext.base",
    "medssl.pretext.corrupted_region",
    "medssl.pretext.genesis",
    "medssl.pretext.intensity_restoration",
    "medssl.pretext.jigsaw",
    "medssl.pretext.permutations",
    "medssl.pretext.relative_position",
    "medssl.pretext.rotation",
    "medssl.pretext.slice_order",
    "medssl.pretext.tiling",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no usage example"
    assert result.failed == 0
