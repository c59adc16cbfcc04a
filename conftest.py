"""Suite-wide settings: quiet progress bars and one torch thread per test and per docstring example.

Beside the suite (``tests/``), pytest runs the usage examples in the docstrings of ``medssl/``
(``--doctest-modules`` in ``pyproject.toml``), so this file lives at the repository root.

The tensors in the tests are tiny (16 to 32 voxels a side), so a second thread buys nothing and
makes timings depend on what else the machine runs; exact-equality tests also need a fixed thread
count (some reductions round differently with more threads).
"""

import pytest
import torch


@pytest.fixture(autouse=True)
def _quiet_single_thread(monkeypatch):
    monkeypatch.setenv("MEDSSL_PROGRESS", "0")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
