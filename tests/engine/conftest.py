import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the engine_toys module beside the tests
os.environ.setdefault("MEDSSL_PROGRESS", "0")


@pytest.fixture(autouse=True)
def _two_threads():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
