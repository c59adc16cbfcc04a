"""The study's result as text for a terminal: what ``medssl study`` and the pipeline scripts print.

:func:`study_table_text` reads a finished run folder (``summary.csv``, ``results.csv``,
``manifest.json``) and gives the init x budget table of the headline metric, the differences to
the baseline, and the warnings a reader must not miss (the baseline does not rise with labels, a
class never predicted where present, :mod:`medssl.study.findings`; a run that never fit a class on
its own training batches, :mod:`medssl.study.training_fit`).

Example::

    print(study_table_text("runs/study", "dice"))
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pandas as pd


def _plain(text: str) -> str:
    """Markdown emphasis and code marks dropped for a terminal."""
    return re.sub(r"\*\*|`", "", text)


def study_table_text(run_dir: str | os.PathLike, metric: str, baseline: str = "scratch") -> str:
    """The headline table, the difference table and the warnings of the study in ``run_dir``."""
    from medssl.study.report import difference_table, performance_table

    run_dir = Path(run_dir)
    summary = pd.read_csv(run_dir / "summary.csv")
    if metric not in set(summary["metric"]):
        metric = summary["metric"].iloc[0]
    table = summary[summary["metric"] == metric]
    lines = [f"{metric}: mean ± sd over seeds [95% bootstrap CI]", performance_table(table, metric).to_string(index=False)]
    if baseline in set(table["init"]) and table["init"].nunique() > 1:
        lines += ["", f"difference to {baseline} [paired 95% CI] (* excludes zero)",
                  difference_table(table, metric, baseline).to_string(index=False)]
    lines += ["\n" + warning for warning in study_warnings(run_dir, metric, baseline)]
    lines += ["", f"report: {run_dir / 'report.md'} and {run_dir / 'report.html'}"]
    return "\n".join(lines)


def study_warnings(run_dir: str | os.PathLike, metric: str, baseline: str = "scratch") -> list[str]:
    """The warnings of the study in ``run_dir`` as plain text: the baseline does not rise with labels
    (fine-tuning studies), a class never predicted where present (:mod:`medssl.study.findings`), a
    run that never fit a class on its training batches (:mod:`medssl.study.training_fit`)."""
    from medssl.study import findings
    from medssl.study.report import class_label_of, read_results
    from medssl.study.training_fit import stalled_class_warning, training_fit_table

    run_dir = Path(run_dir)
    results_path = run_dir / "results.csv"
    if not results_path.is_file():
        return []
    manifest_path = run_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.is_file() else {}
    config = manifest.get("config") or {}
    results = read_results(results_path)
    warnings = [findings.never_predicted_warning(results, class_label_of(manifest)),
                stalled_class_warning(training_fit_table(run_dir), class_label_of(manifest))]
    if (config.get("study") or {}).get("evaluation", "finetune") == "finetune":
        warnings.insert(0, findings.labels_matter_warning(results, metric, baseline=baseline,
                                                          steps=(config.get("finetune") or {}).get("steps")))
    return [_plain(w) for w in warnings if w]
