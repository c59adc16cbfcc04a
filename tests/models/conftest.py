"""Fixtures shared by the model tests."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture
def cli_logging():
    """``medssl.cli.main`` attaches a stderr handler to the ``medssl`` logger once per process; made
    here under ``capsys``, it would outlive this test's captured stream, so it is removed after."""
    root = logging.getLogger("medssl")
    before = list(root.handlers)
    yield
    for handler in [h for h in root.handlers if h not in before]:
        root.removeHandler(handler)
