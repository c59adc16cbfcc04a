"""The ``medssl`` command: ``demo``, ``synth``, ``manifest``, ``split``, ``pretrain``, ``export``, ``finetune``,
``study``.

Each sub-command is a thin layer over a library function; heavy imports happen inside the handlers so
``medssl --help`` is instant. Errors of the ``medssl.errors`` family print as one clear line and exit
with status 2; anything else is a bug and shows its traceback.

Example:
    $ medssl synth --out cohort
    $ medssl manifest cohort/archive --out cohort/manifest.csv
    $ medssl pretrain --config configs/pretrain/simclr.yaml data.manifest=cohort/manifest.csv
    $ medssl export --to monai-bundle --encoder runs/pretrain/encoder.pt --out bundles/simclr_ct
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from medssl.errors import MedsslError

log = logging.getLogger("medssl.cli")

#: Sub-commands that train or evaluate with torch: their intra-op threads are set from the cores
#: available (:func:`medssl.utils.threads.configure_intra_op_threads`).
TORCH_COMMANDS = frozenset({"demo", "pretrain", "finetune", "study"})


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML config file (see configs/)")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="dotted overrides applied after the file, e.g. pretrain.steps=200 seed=1",
    )


def _cmd_synth(args: argparse.Namespace) -> int:
    from medssl.synthetic import make_synthetic_cohort

    info = make_synthetic_cohort(
        args.out,
        n_ct=args.n_ct,
        n_mr=args.n_mr,
        n_unlabeled_ct=args.n_unlabeled_ct,
        n_unlabeled_mr=args.n_unlabeled_mr,
        size=args.size,
        seed=args.seed,
        messy=not args.clean,
        overwrite=args.overwrite,
    )
    print(f"synthetic cohort written to {args.out}")
    print(info.summary() if hasattr(info, "summary") else info)
    return 0


def _cmd_manifest(args: argparse.Namespace) -> int:
    from medssl.data.manifest import write_manifest

    manifest = write_manifest(
        args.root, args.out, workers=args.workers, rescan=not args.full_rescan, on_uneven=args.on_uneven
    )
    counts = manifest["status"].value_counts().to_dict()
    from medssl.data.manifest import locations_path

    print(f"manifest of {len(manifest)} entries written to {args.out}: {counts}")
    print(f"file locations written to {locations_path(args.out)}: keep that file inside the hospital")
    problems = manifest[manifest["status"] != "ok"]
    skipped = problems[problems["status"] == "skipped"]
    if len(skipped):
        for reason, count in skipped["reason"].value_counts().items():
            print(f"  skipped {count}: {reason}")
    errors = problems[problems["status"] != "skipped"]
    for _, row in errors.head(20).iterrows():
        print(f"  {row['status']}: {row['volume_id']}: {row['reason']}")
    if len(errors) > 20:
        print(f"  ... and {len(errors) - 20} more (see the manifest's status and reason columns)")
    return 0


def _cmd_split(args: argparse.Namespace) -> int:
    from medssl.data.splits import write_splits

    out = write_splits(
        args.manifest,
        args.out,
        k=args.k,
        test_fraction=args.test_fraction,
        val_fraction=args.val_fraction,
        stratify_col=args.stratify,
        seed=args.seed,
    )
    print(f"splits written to {out}")
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from medssl.config import load_config
    from medssl.engine.pretrain import run_pretraining

    config = load_config(args.config, args.overrides)
    run_dir = Path(args.run_dir or config.run_dir or "runs/pretrain")
    result = run_pretraining(config, run_dir, resume=args.resume)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one summary for the job
        print(result.summary())
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from medssl.models.export import card_path

    if args.to == "nnunet":
        from medssl.models.export_nnunet import export_nnunet_checkpoint

        out = export_nnunet_checkpoint(args.encoder, args.out)
        import json

        info = json.loads(card_path(out).read_text(encoding="utf-8"))["nnunet"]
        print(f"nnU-Net v2 checkpoint written to {out} ({info['num_tensors']} tensors of "
              f"{info['network_class_name'].rsplit('.', 1)[-1]}, decoder: {info['decoder']}); model card {card_path(out)}")
        print(f"use it with: {info['usage']}")
        return 0
    from medssl.models.export_bundle import export_monai_bundle

    out = export_monai_bundle(args.encoder, args.out, out_channels=args.out_channels, overwrite=args.overwrite)
    print(f"MONAI bundle written to {out} (configs/metadata.json, configs/inference.json, models/model.pt)")
    print(f"load it with: monai.bundle.load({out.name!r}, bundle_dir={str(out.parent)!r}, workflow_type='inference')")
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    from medssl.config import load_config
    from medssl.eval.run import run_finetuning

    config = load_config(args.config, args.overrides)
    run_dir = Path(args.run_dir or config.run_dir or "runs/finetune")
    result = run_finetuning(config, run_dir, init=args.init)
    print(f"fine-tuning finished in {run_dir}")
    print(result)
    return 0


def _cmd_study(args: argparse.Namespace) -> int:
    from medssl.config import load_config
    from medssl.study.label_efficiency import run_study_from_config

    config = load_config(args.config, args.overrides)
    run_dir = Path(args.run_dir or config.run_dir or "runs/study")
    from medssl.study.console import study_table_text

    run_study_from_config(config, run_dir, resume=not args.fresh)
    print()
    print(study_table_text(run_dir, config.study.metric, config.study.baseline))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from medssl.demo import run_demo

    run_demo(Path(args.out), quick=args.quick, overrides=args.overrides)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medssl",
        description="Self-supervised learning for medical images: archive -> manifest -> pretraining -> study.",
    )
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="synth + manifest + pretrain + study on built-in data, end to end")
    demo.add_argument("--out", default="demo_run", help="run folder (default: demo_run)")
    demo.add_argument("--quick", action="store_true", help="a much smaller run (a smoke test)")
    demo.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides of the demo config")
    demo.set_defaults(handler=_cmd_demo)

    synth = sub.add_parser("synth", help="write the built-in synthetic hospital cohort")
    synth.add_argument("--out", type=Path, required=True)
    synth.add_argument("--n-ct", type=int, default=24)
    synth.add_argument("--n-mr", type=int, default=8)
    synth.add_argument("--n-unlabeled-ct", type=int, default=8, help="CT volumes without masks")
    synth.add_argument("--n-unlabeled-mr", type=int, default=4, help="MR volumes without masks")
    synth.add_argument("--size", type=int, default=64, help="voxels along the longest axis")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--overwrite", action="store_true", help="replace an existing cohort at --out")
    synth.add_argument("--clean", action="store_true", help="leave out the messy files of a real export")
    synth.set_defaults(handler=_cmd_synth)

    manifest = sub.add_parser("manifest", help="scan an archive (DICOM, NIfTI) into a de-identified manifest")
    manifest.add_argument("root", type=Path)
    manifest.add_argument("--out", type=Path, required=True, help=".csv or .parquet")
    manifest.add_argument("--workers", type=int, default=None)
    manifest.add_argument("--full-rescan", action="store_true", help="ignore an existing manifest at --out")
    manifest.add_argument(
        "--on-uneven",
        choices=["error", "resample"],
        default="error",
        help="series with missing slices or uneven spacing: record as errors (default) or resample",
    )
    manifest.set_defaults(handler=_cmd_manifest)

    split = sub.add_parser("split", help="patient-level train/val/test or k-fold splits of a manifest")
    split.add_argument("manifest", type=Path)
    split.add_argument("--out", type=Path, required=True)
    split.add_argument("--k", type=int, default=None, help="k-fold instead of train/val/test")
    split.add_argument("--test-fraction", type=float, default=0.2)
    split.add_argument("--val-fraction", type=float, default=0.1)
    split.add_argument("--stratify", default=None, help="a label column to stratify on")
    split.add_argument("--seed", type=int, default=0)
    split.set_defaults(handler=_cmd_split)

    pretrain = sub.add_parser("pretrain", help="self-supervised pretraining of an encoder")
    _add_config_arguments(pretrain)
    pretrain.add_argument("--run-dir", type=Path, default=None)
    pretrain.add_argument("--resume", action="store_true", help="continue from run-dir/checkpoints/last.pt")
    pretrain.set_defaults(handler=_cmd_pretrain)

    export = sub.add_parser("export", help="export a pretrained encoder for nnU-Net v2 or as a MONAI bundle")
    export.add_argument("--to", choices=["nnunet", "monai-bundle"], required=True,
                        help="nnunet: a checkpoint for nnUNetv2_train -pretrained_weights (encoder nnunet); "
                             "monai-bundle: a bundle folder that monai.bundle.load reads")
    export.add_argument("--encoder", type=Path, required=True, help="the pretrained encoder (run/encoder.pt)")
    export.add_argument("--out", type=Path, required=True, help="the checkpoint file (nnunet) or bundle folder")
    export.add_argument("--out-channels", type=int, default=2,
                        help="monai-bundle: output channels of the network's (untrained) output layer (2)")
    export.add_argument("--overwrite", action="store_true", help="monai-bundle: replace an existing bundle folder")
    export.set_defaults(handler=_cmd_export)

    finetune = sub.add_parser("finetune", help="fine-tune on labeled cases (segmentation or classification)")
    _add_config_arguments(finetune)
    finetune.add_argument("--run-dir", type=Path, default=None)
    finetune.add_argument("--init", default=None, help="pretrained encoder (encoder.pt); default: scratch")
    finetune.set_defaults(handler=_cmd_finetune)

    study = sub.add_parser("study", help="label-efficiency study: budgets x seeds x initialisations")
    _add_config_arguments(study)
    study.add_argument("--run-dir", type=Path, default=None)
    study.add_argument("--fresh", action="store_true", help="recompute finished cells instead of reusing them")
    study.set_defaults(handler=_cmd_study)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from medssl.utils.logging import configure_logging

    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        if args.command in TORCH_COMMANDS:
            from medssl.utils.threads import configure_intra_op_threads

            configure_intra_op_threads()
        return handler(args)
    except MedsslError as exc:
        print(f"medssl {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        from medssl.errors import is_disk_full

        if not is_disk_full(exc):
            raise
        where = f" writing {exc.filename}" if exc.filename else ""
        print(f"medssl {args.command}: error: disk full{where} ({exc.strerror}); files written before are kept: "
              "free space or choose another folder and run again", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"medssl {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
