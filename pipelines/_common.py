"""Shared argument handling of the pipeline scripts (config file, dotted overrides, run folder)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def base_parser(description: str, default_config: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", type=Path, default=Path(default_config), help=f"YAML config (default {default_config})")
    parser.add_argument("--run-dir", type=Path, default=None, help="run folder (default: run_dir of the config)")
    parser.add_argument("--fresh", action="store_true", help="recompute finished cells instead of resuming")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. study.seeds=[0,1]")
    return parser


def load(args: argparse.Namespace, extra_overrides: list[str] | None = None):
    """The config of ``args`` with overrides applied, and its run folder; exits cleanly on bad input."""
    from medssl.config import load_config
    from medssl.errors import MedsslError
    from medssl.utils.logging import configure_logging

    configure_logging(args.log_level)
    try:
        config = load_config(args.config, list(args.overrides) + list(extra_overrides or []))
    except MedsslError as exc:
        sys.exit(f"error: {exc}")
    run_dir = Path(args.run_dir or config.run_dir or f"runs/{args.config.stem}")
    return config, run_dir


def print_summary(run_dir: Path, metric: str, baseline: str = "scratch") -> None:
    """The init x budget table of ``metric``, the differences and the study's warnings
    (:func:`medssl.study.console.study_table_text`, what ``medssl study`` prints too)."""
    from medssl.study.console import study_table_text

    print()
    print(study_table_text(run_dir, metric, baseline))
