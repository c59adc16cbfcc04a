"""Method comparison: pretrain each SSL method on the same data, then one label-efficiency study of all.

    python pipelines/method_comparison.py --config configs/study/method_comparison.yaml \
        --methods simclr barlow_twins vicreg

For each method, ``pretrain.method`` is set and the engine pretrains into ``RUN/pretrain/<method>``
(a method whose ``encoder.pt`` exists is reused: the script resumes); then the study of the config
runs in ``RUN/study`` with ``scratch`` and every method as initialisations, on the same labeled
cases, budgets, seeds and test set, and prints the table. ``--study-only`` skips pretraining and
uses the encoders already there.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import base_parser, load, print_summary  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0], "configs/study/method_comparison.yaml")
    parser.add_argument("--methods", nargs="+", default=["simclr", "barlow_twins"], help="SSL methods to compare")
    parser.add_argument("--study-only", action="store_true", help="do not pretrain; use RUN/pretrain/<method>/encoder.pt")
    args = parser.parse_args(argv)
    # `--methods a b key=value`: argparse gives the overrides after --methods to --methods
    args.overrides = list(args.overrides) + [m for m in args.methods if "=" in m]
    args.methods = [m for m in args.methods if "=" not in m]
    config, run_dir = load(args)
    from medssl.errors import MedsslError

    inits: dict[str, str | None] = {"scratch": None}
    try:
        for method in args.methods:
            method_dir = run_dir / "pretrain" / method
            encoder = method_dir / "encoder.pt"
            if not encoder.is_file():
                if args.study_only:
                    print(f"error: {encoder} does not exist (run without --study-only first)", file=sys.stderr)
                    return 2
                from medssl.engine.pretrain import run_pretraining

                method_config = config.model_copy(deep=True)
                method_config.pretrain.method = method
                resume = (method_dir / "checkpoints" / "last.pt").is_file()
                print(f"pretraining {method} into {method_dir}" + (" (resuming)" if resume else ""))
                encoder = run_pretraining(method_config, method_dir, resume=resume).encoder_path
            inits[method] = str(encoder)
        config.study.inits = inits
        from medssl.study.label_efficiency import run_study_from_config

        run_study_from_config(config, run_dir / "study", resume=not args.fresh)
    except MedsslError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_summary(run_dir / "study", config.study.metric)
    return 0


if __name__ == "__main__":
    sys.exit(main())
