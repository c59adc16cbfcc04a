"""Run every benchmark in its quick mode, one after the other (``make bench``).

Each benchmark prints its own table with the ratios measured in the same run; this runner only
sequences them and reports which failed. Full measurements: run a script directly (see README.md).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

QUICK_RUNS = [
    ["manifest_scan.py", "--slices", "600", "--repeat", "2"],
    ["data_throughput.py", "--quick"],
    ["pretrain_throughput.py", "--methods", "simclr,barlow_twins", "--steps", "5", "--small-heads"],
    ["methods_on_cohort.py", "--quick"],
    ["label_efficiency.py", "--quick"],
]


def main() -> int:
    failed = []
    for command in QUICK_RUNS:
        script = HERE / command[0]
        if not script.is_file():
            print(f"== {command[0]}: missing, skipped", flush=True)
            continue
        print(f"== {' '.join(command)}", flush=True)
        started = time.perf_counter()
        status = subprocess.call([sys.executable, str(script), *command[1:]])
        print(f"== {command[0]}: exit {status} in {time.perf_counter() - started:.0f} s", flush=True)
        if status != 0:
            failed.append(command[0])
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
