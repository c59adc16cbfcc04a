import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # the engine_toys module beside the tests
os.environ.setdefault("MEDSSL_PROGRESS", "0")
