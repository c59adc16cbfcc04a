"""Label-efficiency study: fine-tune from scratch and from each pretrained encoder at several label budgets.

    python pipelines/label_efficiency.py --config configs/study/label_efficiency_ct.yaml \
        study.inits="{scratch: null, simclr: runs/simclr/encoder.pt}" study.seeds=[0,1,2]

Writes results.csv, summary.csv, plots/, report.md, report.html and manifest.json into the run
folder and prints the table of the primary metric. Re-running the same command resumes: finished
cells are reused (see docs/studies.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import base_parser, load, print_summary  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0], "configs/study/label_efficiency_ct.yaml")
    args = parser.parse_args(argv)
    config, run_dir = load(args)
    from medssl.errors import MedsslError
    from medssl.study.label_efficiency import run_study_from_config

    try:
        run_study_from_config(config, run_dir, resume=not args.fresh)
    except MedsslError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_summary(run_dir, config.study.metric)
    return 0


if __name__ == "__main__":
    sys.exit(main())
