"""Quiet progress bars and one torch thread per test in this area (the machine's cores are shared)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _quiet_single_thread(monkeypatch):
    monkeypatch.setenv("MEDSSL_PROGRESS", "0")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
