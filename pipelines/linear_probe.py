"""Linear (or kNN) probe study: how well frozen encoder features separate the case-level classes.

    python pipelines/linear_probe.py --config configs/study/linear_probe.yaml \
        study.inits="{scratch: null, simclr: runs/simclr/encoder.pt}" [--knn]

Every initialisation's encoder is frozen; each case's whole volume is embedded once; a logistic
regression (or a kNN vote) is fitted on the labeled cases of each budget and seed and scored on the
fixed patient-level test set (AUC, balanced accuracy, F1). Same outputs as the label-efficiency study.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import base_parser, load, print_summary  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0], "configs/study/linear_probe.yaml")
    parser.add_argument("--knn", action="store_true", help="a kNN probe (study.knn_k neighbours) instead of linear")
    args = parser.parse_args(argv)
    probe = "knn_probe" if args.knn else "linear_probe"
    config, run_dir = load(args, [f"study.evaluation={probe}", "finetune.task=classification"])
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
