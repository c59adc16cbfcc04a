"""The study report: ``results.csv``, ``summary.csv``, plots, ``report.md`` and a self-contained ``report.html``.

:func:`write_report` turns the tidy per-case results (see :mod:`medssl.study.summary`) into:

* ``results.csv``: the tidy table itself (one row per init x budget x seed x fold x case x metric);
* ``summary.csv``: per metric, init and budget: mean, sd over seeds, bootstrap interval, the
  difference to scratch with its paired interval;
* ``plots/<metric>_vs_labels.png`` and ``plots/<metric>_per_case.png`` (or ``_per_run`` for set-level
  metrics such as AUC);
* ``report.md``: for each metric a table init x budget (``mean ± sd [CI low, CI high]``) and a table
  of differences to scratch (``+diff [low, high]``, starred when the interval excludes zero), the
  plots, how to read them, and the run facts (commit, versions, data fingerprint);
* ``report.html``: the same, with the plots embedded as base64 PNG so one file can be e-mailed.

Example:
    >>> import pandas as pd, tempfile
    >>> rows = [dict(init=i, budget=b, n_labeled=int(b), seed=s, fold=0, case_id=c, metric="dice",
    ...              value=0.5 + 0.02 * b + (0.05 if i == "ssl" else 0) + 0.01 * s + 0.1 * k)
    ...         for i in ("scratch", "ssl") for b in (2.0, 4.0) for s in (0, 1) for k, c in enumerate("abc")]
    >>> files = write_report(pd.DataFrame(rows), tempfile.mkdtemp(), n_resamples=100)
    >>> sorted(p.name for p in (files.results, files.markdown, files.html))
    ['report.html', 'report.md', 'results.csv']
"""

from __future__ import annotations

import base64
import html
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from medssl.study.plots import metric_label, plot_label_efficiency, plot_per_case, plot_per_run
from medssl.study.summary import (
    RESULT_COLUMNS,
    SET_LEVEL_METRICS,
    available_metrics,
    higher_is_better,
    per_run_table,
    summarize,
)
from medssl.utils.atomic import atomic_write, atomic_write_text

log = logging.getLogger(__name__)


@dataclass
class ReportFiles:
    """Paths written by :func:`write_report`."""

    results: Path
    summary: Path
    markdown: Path
    html: Path
    plots: list[Path] = field(default_factory=list)
    summary_table: pd.DataFrame | None = None


# ---- a tiny document model rendered to both Markdown and HTML ---------------------------------


@dataclass
class _Heading:
    text: str
    level: int = 2


@dataclass
class _Paragraph:
    text: str


@dataclass
class _Table:
    frame: pd.DataFrame


@dataclass
class _Image:
    path: Path
    caption: str


def _markdown_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def _render_markdown(blocks: Sequence[Any], base: Path) -> str:
    parts = []
    for block in blocks:
        if isinstance(block, _Heading):
            parts.append("#" * block.level + " " + block.text)
        elif isinstance(block, _Paragraph):
            parts.append(block.text)
        elif isinstance(block, _Table):
            parts.append(_markdown_table(block.frame))
        elif isinstance(block, _Image):
            parts.append(f"![{block.caption}]({block.path.relative_to(base).as_posix()})")
    return "\n\n".join(parts) + "\n"


_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:980px;margin:2em auto;
padding:0 1em;color:#222}table{border-collapse:collapse;margin:1em 0;font-size:0.9em}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}th:first-child,td:first-child{text-align:left}
th{background:#f3f3f3}img{max-width:100%}code{background:#f3f3f3;padding:1px 3px}"""


def _inline_markdown(text: str) -> str:
    """Escape, then turn ``code`` spans and **bold** into HTML (all this report uses)."""
    escaped = html.escape(text)
    pieces = escaped.split("`")
    for k in range(1, len(pieces), 2):
        pieces[k] = f"<code>{pieces[k]}</code>"
    joined = "".join(pieces)
    bold = joined.split("**")
    for k in range(1, len(bold), 2):
        bold[k] = f"<b>{bold[k]}</b>"
    return "".join(bold)


def _render_html(blocks: Sequence[Any], title: str) -> str:
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body>"]
    for block in blocks:
        if isinstance(block, _Heading):
            parts.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, _Paragraph):
            for paragraph in block.text.split("\n\n"):
                lines = paragraph.splitlines()
                if lines and all(line.startswith("- ") for line in lines):
                    items = "".join(f"<li>{_inline_markdown(line[2:])}</li>" for line in lines)
                    parts.append(f"<ul>{items}</ul>")
                else:
                    parts.append(f"<p>{_inline_markdown(paragraph)}</p>")
        elif isinstance(block, _Table):
            parts.append(block.frame.to_html(index=False, escape=True, border=0))
        elif isinstance(block, _Image):
            data = base64.b64encode(block.path.read_bytes()).decode("ascii")
            parts.append(f"<figure><img alt='{html.escape(block.caption)}' src='data:image/png;base64,{data}'>"
                         f"<figcaption>{html.escape(block.caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


# ---- tables -----------------------------------------------------------------------------------


def _digits(metric: str) -> int:
    return 1 if metric.startswith("hd95") else 3


def _fmt(value: float, digits: int, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _budget_label(n_labeled: int) -> str:
    return f"{n_labeled} case" + ("" if n_labeled == 1 else "s")


def performance_table(summary: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Init x budget table of ``mean ± sd [ci_low, ci_high]`` strings."""
    d = _digits(metric)
    budgets = sorted(summary["n_labeled"].unique())
    rows = []
    for init in dict.fromkeys(summary["init"]):
        row = {"init": init}
        for n in budgets:
            match = summary[(summary["init"] == init) & (summary["n_labeled"] == n)]
            if match.empty:
                row[_budget_label(n)] = ""
                continue
            r = match.iloc[0]
            sd = "" if math.isnan(r["sd"]) else f" ± {_fmt(r['sd'], d)}"
            row[_budget_label(n)] = f"{_fmt(r['mean'], d)}{sd} [{_fmt(r['ci_low'], d)}, {_fmt(r['ci_high'], d)}]"
        rows.append(row)
    return pd.DataFrame(rows)


def difference_table(summary: pd.DataFrame, metric: str, baseline: str) -> pd.DataFrame:
    """Init x budget table of ``+diff [low, high]`` to ``baseline``; ``*`` marks intervals excluding 0."""
    d = _digits(metric)
    budgets = sorted(summary["n_labeled"].unique())
    rows = []
    for init in dict.fromkeys(summary["init"]):
        if init == baseline:
            continue
        row = {"init": init}
        for n in budgets:
            match = summary[(summary["init"] == init) & (summary["n_labeled"] == n)]
            if match.empty or math.isnan(match.iloc[0]["diff"]):
                row[_budget_label(n)] = "n/a"
                continue
            r = match.iloc[0]
            star = " *" if r["diff_excludes_zero"] else ""
            row[_budget_label(n)] = (f"{_fmt(r['diff'], d, signed=True)} "
                                     f"[{_fmt(r['diff_low'], d, signed=True)}, {_fmt(r['diff_high'], d, signed=True)}]{star}")
        rows.append(row)
    return pd.DataFrame(rows)


def per_class_table(results: pd.DataFrame, metric: str, mask_labels: Sequence[int] | None = None,
                    class_names: Mapping[int, str] | None = None) -> pd.DataFrame:
    """Rows (init, labeled cases), one column per class: ``metric_<k>`` averaged over seeds and test cases.

    Empty when the results hold a single class. ``mask_labels`` gives class ``k``'s mask value
    (class ``k`` is mask value ``k`` without it); ``class_names`` names a mask value:
    ``liver (mask 1)``, else ``class 1 (mask 1)``.
    """
    pattern = rf"^{metric}_(\d+)$"
    per_class = results[results["metric"].astype(str).str.match(pattern)]
    classes = sorted({int(m.rsplit("_", 1)[1]) for m in per_class["metric"].unique()})
    if len(classes) < 2:
        return pd.DataFrame()
    means = per_class.groupby(["init", "n_labeled", "metric"], sort=False)["value"].mean()
    d = _digits(metric)
    rows = []
    for init in dict.fromkeys(results["init"]):
        for n in sorted(results.loc[results["init"] == init, "n_labeled"].unique()):
            row = {"init": init, "labeled cases": int(n)}
            for k in classes:
                name = _class_column(k, mask_labels, class_names)
                value = means.get((init, n, f"{metric}_{k}"), float("nan"))
                row[name] = _fmt(float(value), d)
            rows.append(row)
    return pd.DataFrame(rows)


def _setup_paragraph(manifest: dict[str, Any] | None, results: pd.DataFrame) -> str:
    inits = ", ".join(f"`{i}`" for i in dict.fromkeys(results["init"]))
    budgets = ", ".join(str(int(n)) for n in sorted(results["n_labeled"].unique()))
    seeds = results["seed"].nunique()
    folds = results["fold"].nunique()
    cases = results["case_id"].nunique()
    text = (f"Initialisations {inits}; labeled-case budgets {budgets} (nested: the smaller labeled sets lie "
            f"inside the larger ones); {seeds} seed(s) per budget; {cases} test case(s)")
    text += f" over {folds} fold(s)." if folds > 1 else ", the same patient-level test set for every run."
    if manifest:
        task = manifest.get("task")
        evaluation = manifest.get("evaluation")
        if task or evaluation:
            text = f"Task: {task or ''}{' by ' + evaluation if evaluation else ''}. " + text
    return text


def _class_column(k: int, mask_labels: Sequence[int] | None, class_names: Mapping[int, str] | None) -> str:
    if k == 0:
        return "background"
    value = mask_labels[k - 1] if mask_labels and k <= len(mask_labels) else (None if mask_labels else k)
    name = (class_names or {}).get(value) if value is not None else None
    if name:
        return f"{name} (mask {value})"
    return f"class {k}" + (f" (mask {value})" if mask_labels and value is not None else "")


def _class_names(manifest: dict[str, Any] | None) -> dict[int, str] | None:
    try:
        names = manifest["config"]["finetune"].get("class_names")  # type: ignore[index]
    except (KeyError, TypeError, AttributeError):
        return None
    return {int(k): str(v) for k, v in names.items()} if names else None


def _mask_labels(manifest: dict[str, Any] | None) -> list[int] | None:
    try:
        return list(manifest["config"]["finetune"]["mask_labels"])  # type: ignore[index]
    except (KeyError, TypeError):
        return None


_VERSIONS = ("medssl", "torch", "monai", "numpy", "pandas", "scikit-learn")


def class_label_of(manifest: dict[str, Any] | None):
    """``k -> "liver (mask 1)"``: class names of a study from its manifest (finetune.mask_labels, class_names)."""
    return _class_label(manifest)


def _class_label(manifest: dict[str, Any] | None):
    mask_labels, names = _mask_labels(manifest), _class_names(manifest)
    return lambda k: _class_column(k, mask_labels, names)


def _labels_matter_blocks(results: pd.DataFrame, metric: str, baseline: str,
                          manifest: dict[str, Any] | None) -> list[Any]:
    """The check that the baseline rises with labels (:func:`medssl.study.findings.labels_matter_warning`)."""
    from medssl.study.findings import labels_matter_warning

    config = (manifest or {}).get("config") or {}
    if (config.get("study") or {}).get("evaluation", "finetune") != "finetune":
        return []
    warning = labels_matter_warning(results, metric, baseline=baseline,
                                    steps=(config.get("finetune") or {}).get("steps"))
    return [_Paragraph(warning)] if warning else []


def _class_presence_blocks(results: pd.DataFrame, manifest: dict[str, Any] | None) -> list[Any]:
    """Per class: test cases containing it, how often it is predicted there; a class never predicted,
    or lost by one run where others learned it."""
    from medssl.study.findings import class_presence_table, lost_class_warning, never_predicted_warning

    label = _class_label(manifest)
    table = class_presence_table(results, label)
    if table.empty:
        return []
    blocks: list[Any] = [_Paragraph("Classes in the test cases (a class is scored only on the cases that "
                                    "contain it) and how often each initialisation predicts it there:"),
                         _Table(table)]
    for warning in (never_predicted_warning(results, label), lost_class_warning(results, label)):
        if warning:
            blocks.append(_Paragraph(warning))
    return blocks


def _subgroup_blocks(results: pd.DataFrame, manifest: dict[str, Any] | None, metric: str) -> list[Any]:
    """Per ``study.subgroup_columns`` column: the metric on each subgroup of the test cases, for the
    runs whose labeled cases had that subgroup and those that did not (:mod:`medssl.study.subgroups`)."""
    from medssl.study.subgroups import subgroup_blocks_data, unseen_gap_warning

    blocks: list[Any] = []
    digits = _digits(metric)
    label = metric_label(metric)
    for column, table in subgroup_blocks_data(results, manifest, metric):
        blocks.append(_Paragraph(f"{label} by `{column}` of the test cases (mean over seeds and cases): in the runs "
                                 f"whose labeled cases included a case of that `{column}`, and in those whose labeled "
                                 "cases had none (`runs with` and `runs without`: how many seeds fell on each side)."))
        shown = table.copy()
        for side in ("seen", "unseen"):
            shown[side] = [("n/a" if pd.isna(v) else _fmt(v, digits)) for v in shown[side]]
        shown = shown.rename(columns={"seen": "labeled cases include it", "seen runs": "runs with",
                                      "unseen": "labeled cases lack it", "unseen runs": "runs without"})
        blocks.append(_Table(shown))
        warning = unseen_gap_warning(table, column) if higher_is_better(metric) else None
        if warning:
            blocks.append(_Paragraph(warning))
    return blocks


def _study_notes(results: pd.DataFrame, manifest: dict[str, Any] | None) -> list[str]:
    """Notes on the design that change how to read the numbers: a budget that is the whole pool,
    a kNN probe whose k exceeds the labeled cases."""
    from medssl.study.findings import whole_pool_note

    notes = []
    pools = [int(s["pool_size"]) for s in (manifest or {}).get("splits", []) if "pool_size" in s]
    pool = whole_pool_note(results, pools)
    if pool:
        notes.append(pool)
    study = ((manifest or {}).get("config") or {}).get("study") or {}
    if study.get("evaluation") == "knn_probe":
        k = int(study.get("knn_k", 5))
        small = sorted(int(n) for n in results["n_labeled"].unique() if int(n) < k)
        if small:
            budgets = ", ".join(str(n) for n in small)
            notes.append(f"Note: the kNN probe's k = {k} (`study.knn_k`) is more than the {budgets} labeled cases "
                         "of the smallest budget(s); those runs voted with all their labeled cases (the k used is "
                         "`knn_k` in each cell's record).")
    return notes


def _training_fit_blocks(table: pd.DataFrame | None, curves: pd.DataFrame | None,
                         manifest: dict[str, Any] | None, plots_dir: Path) -> list[Any]:
    """Each class's soft Dice on the runs' own training batches (a table, and the curves over the
    steps as a plot), and the warning of :func:`medssl.study.training_fit.stalled_class_warning`."""
    from medssl.study.plots import plot_training_fit
    from medssl.study.training_fit import stalled_class_warning, training_fit_summary

    if table is None or table.empty:
        return []
    label = _class_label(manifest)
    blocks: list[Any] = [
        _Paragraph("Each class's soft Dice on the runs' own labeled training batches over their last steps, mean "
                   "over seeds (lowest run). A class that fit in training but scores low on the test cases did not "
                   "generalise to them; one that never fit stalled (`medssl/study/training_fit.py`)."),
        _Table(training_fit_summary(table, label)),
    ]
    if curves is not None and not curves.empty:
        picture = plot_training_fit(curves, plots_dir / "training_fit.png", label)
        blocks.append(_Image(picture, "Training soft Dice per class against the step, one line per run"))
    warning = stalled_class_warning(table, label)
    if warning:
        blocks.append(_Paragraph(warning))
    return blocks


def _teacher_blocks(teacher: pd.DataFrame, manifest: dict[str, Any] | None) -> list[Any]:
    """The semi-supervised arms' pseudo-labels against the unlabeled cases' annotation, and the
    warning of :func:`medssl.study.teacher_diagnostics.teacher_warning`."""
    from medssl.study.teacher_diagnostics import teacher_warning

    label = _class_label(manifest)
    named = teacher.rename(columns={c: f"{c.rsplit(' ', 1)[0]} {label(int(c.rsplit(' ', 1)[1]))}"
                                    for c in teacher.columns if c.startswith(("coverage ", "accuracy ", "dice "))})
    blocks: list[Any] = [
        _Heading("What the teacher got right on the unlabeled volumes", 2),
        _Paragraph("Per semi-supervised arm, mean over seeds, on the unlabeled cases that have an annotation (never "
                   "used for training): *coverage*, the fraction of the voxels the teacher gave a class on which its "
                   "confidence reached `finetune.semi.threshold`; *accuracy*, the fraction of those confident voxels "
                   "the annotation agrees with. Consistency training is only as good as these targets. For "
                   "`self_training`, which labels whole volumes, *coverage* is the fraction of the class's voxels in "
                   "the volumes kept for the student, *accuracy* their agreement with the annotation, and *dice* the "
                   "mean Dice of the kept pseudo-labels (with `finetune.semi.rounds` > 1, those of the last round's "
                   "teacher)."),
        _Table(named),
    ]
    warning = teacher_warning(teacher, label)
    if warning:
        blocks.append(_Paragraph(warning))
    return blocks


def _classification_blocks(results: pd.DataFrame, manifest: dict[str, Any] | None) -> list[Any]:
    """Test-set class balance, per-class and macro F1, confusion matrices at the largest budget."""
    from medssl.study.classification import class_balance_table, confusion_table, per_class_f1_table

    balance = class_balance_table(results)
    if balance.empty:
        return []
    blocks: list[Any] = [_Heading("Classes", 2),
                         _Paragraph("Test cases per class (a classifier that always answers the majority class "
                                    "scores its share as accuracy):"), _Table(balance),
                         _Paragraph("F1 per class and macro F1 (the mean of the per-class F1s; the report's `f1`), "
                                    "means over seeds:"), _Table(per_class_f1_table(results))]
    for init in dict.fromkeys(results["init"]):
        n_labeled = int(results.loc[results["init"] == init, "n_labeled"].max())
        seeds = results.loc[(results["init"] == init) & (results["n_labeled"] == n_labeled), "seed"].nunique()
        blocks.append(_Paragraph(f"Confusion matrix of `{init}` with {n_labeled} labeled cases (rows: true class; "
                                 f"counts summed over {seeds} seed(s), each test case once per seed):"))
        blocks.append(_Table(confusion_table(results, init, n_labeled)))
    return blocks


def how_to_read(metrics: Sequence[str], baseline: str, resample_seeds: bool = True) -> str:
    """The report's "how to read" text, true to the metrics it holds: per-case box plots for
    case-level metrics (Dice...), one point per seed for set-level ones (AUC, F1...)."""
    text = _HOW_TO_READ.format(baseline=baseline,
                               resampled="test cases and seeds" if resample_seeds else "test cases (seeds fixed)")
    set_level = [m for m in metrics if m in SET_LEVEL_METRICS]
    case_level = [m for m in metrics if m not in SET_LEVEL_METRICS]
    lines = []
    if case_level:
        lines.append("- the box plots of a per-case metric show the spread over test cases (each the mean over "
                     "seeds): a mean can hide a few failed cases.")
    if set_level:
        lines.append("- AUC, balanced accuracy, F1 and accuracy are computed over the whole test set of a run, so "
                     "their box plots hold one point per seed (the training spread), not one per test case; "
                     "F1 is stated per class and as the macro mean over classes (the mean of the per-class "
                     "F1s), never silently as the F1 of class 1.")
    return text + "\n" + "\n".join(lines)


_HOW_TO_READ = (
    "- each cell: the metric's mean over seeds ± its standard deviation over seeds (how much the result "
    "moves with which cases got labeled and the initial weights), then in brackets a 95% percentile "
    "bootstrap interval that resamples {resampled};\n"
    "- difference tables: initialisation minus `{baseline}` on the same test cases and seeds (paired "
    "bootstrap, 95%); `*` marks an interval that excludes zero, i.e. a difference unlikely to be "
    "noise of the test set and of the seeds alone;\n"
    "- the curves show the mean over seeds (line), the interval (band) and each seed's run (dots);"
)


def recipe_line(manifest: dict) -> str | None:
    """The fine-tuning recipe every arm shared, in one line, from the run record's resolved config
    (``None`` without one): the scratch network, the track, patches, steps and batch, the intensity
    augmentation, how patch centres were drawn, and the post-processing of the scored prediction.

    Example:
        >>> recipe_line({"scratch_encoder": {"name": "basicunet"}, "config": {"finetune": {
        ...     "task": "segmentation", "patch_size": [64, 64], "steps": 600, "batch_size": 8,
        ...     "class_balanced": True, "keep_largest_components": {"1": 1, "2": 2}}}})
        '- recipe (every arm): network `basicunet`, 2D slices of 64 x 64, 600 steps of batch 8, intensity augmentation `none`, class-balanced patch centres, post-processing: the largest 1 component(s) of class 1, 2 of class 2'
    """
    config = manifest.get("config") or {}
    finetune = config.get("finetune")
    if not finetune:
        return None
    network = (((config.get("pretrain") or {}).get("encoder") or {}).get("name")  # as the user named it
               or (manifest.get("scratch_encoder") or {}).get("name") or finetune.get("network", "auto"))
    patch = [int(v) for v in finetune.get("patch_size", [])]
    context = int(finetune.get("slice_context", 0) or 0)
    track = (f"2D slices of {' x '.join(map(str, patch))}" + (f" with {context} neighbour(s) a side (2.5D)" if context else "")
             if len(patch) == 2 else f"3D patches of {' x '.join(map(str, patch))}")
    parts = [f"network `{network}`", track,
             f"{finetune.get('steps', '?')} steps of batch {finetune.get('batch_size', '?')}"]
    if finetune.get("task", "segmentation") == "segmentation":
        parts.append(f"intensity augmentation `{finetune.get('intensity_augmentation', 'none')}`")
        parts.append("class-balanced patch centres" if finetune.get("class_balanced")
                     else f"foreground patch centres with probability {finetune.get('pos_fraction', '?')}")
        kept = sorted((finetune.get("keep_largest_components") or {}).items(), key=lambda kv: int(kv[0]))
        text = "none"
        if kept:
            (label, count), rest = kept[0], kept[1:]
            text = f"the largest {count} component(s) of class {label}" + "".join(f", {c} of class {l}" for l, c in rest)
        parts.append(f"post-processing: {text}")
    return "- recipe (every arm): " + ", ".join(parts)


def write_report(
    results: pd.DataFrame,
    out_dir: str | Path,
    *,
    metrics: Sequence[str] | None = None,
    primary: str | None = None,
    baseline: str = "scratch",
    manifest: dict[str, Any] | None = None,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    resample_seeds: bool = True,
    title: str = "Label-efficiency study",
    costs: pd.DataFrame | None = None,
    overlays: Sequence[tuple[str, Path]] = (),
    teacher: pd.DataFrame | None = None,
    training_fit: pd.DataFrame | None = None,
    training_curves: pd.DataFrame | None = None,
) -> ReportFiles:
    """Write ``results.csv``, ``summary.csv``, plots, ``report.md`` and ``report.html`` into ``out_dir``.

    ``costs``: what each arm cost (:func:`medssl.study.label_efficiency.arm_costs`), shown as a table.
    ``teacher``: the semi-supervised arms' pseudo-label coverage and accuracy per class
    (:func:`medssl.study.teacher_diagnostics.pseudo_label_table`), with a warning for a class the
    teacher was rarely confident on or mostly wrong about. ``training_fit``: each run's per-class soft
    Dice on its own training batches (:func:`medssl.study.training_fit.training_fit_table`), with a
    warning for a run that never fit a class; ``training_curves``: the same over the steps
    (:func:`medssl.study.training_fit.training_fit_curves`), drawn as ``plots/training_fit.png``."""
    missing = set(RESULT_COLUMNS) - set(results.columns)
    if missing:
        raise ValueError(f"results lack the column(s) {sorted(missing)}")
    if results.empty:
        raise ValueError("results are empty: no finished run to report")
    out_dir = Path(out_dir)
    plots_dir = out_dir / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    results = results[RESULT_COLUMNS].sort_values(["init", "budget", "seed", "fold", "case_id", "metric"],
                                                  kind="stable").reset_index(drop=True)
    results_path = out_dir / "results.csv"
    with atomic_write(results_path, "w", encoding="utf-8", newline="") as handle:
        results.to_csv(handle, index=False)

    metrics = list(metrics) if metrics else available_metrics(results)
    if primary and primary in metrics:
        metrics = [primary] + [m for m in metrics if m != primary]
    if not metrics:
        raise ValueError(f"no reportable metric in the results (metrics: {sorted(results['metric'].unique())})")

    blocks: list[Any] = [_Heading(title, 1), _Paragraph(_setup_paragraph(manifest, results))]
    blocks += [_Paragraph(note) for note in _study_notes(results, manifest)]
    summaries, plot_paths = [], []
    for k, metric in enumerate(metrics):
        summary = summarize(results, metric, baseline=baseline, n_resamples=n_resamples, level=level, seed=seed,
                            resample_seeds=resample_seeds)
        summary.insert(0, "metric", metric)
        summaries.append(summary)
        per_run = per_run_table(results, metric)
        label = metric_label(metric)
        direction = "higher is better" if higher_is_better(metric) else "lower is better"
        blocks.append(_Heading(f"{label}{' (primary metric)' if k == 0 else ''}", 2))
        curve = plot_label_efficiency(summary, per_run, metric, plots_dir / f"{metric}_vs_labels.png")
        blocks.append(_Image(curve, f"{label} against labeled cases"))
        blocks.append(_Paragraph(f"{label} ({direction}): mean ± sd over seeds [95% bootstrap CI]."))
        blocks.append(_Table(performance_table(summary, metric)))
        if baseline in set(summary["init"]) and summary["init"].nunique() > 1:
            blocks.append(_Paragraph(f"Difference to `{baseline}` [paired 95% bootstrap CI]; `*`: the interval "
                                     "excludes zero."))
            blocks.append(_Table(difference_table(summary, metric, baseline)))
        if k == 0:
            blocks += _labels_matter_blocks(results, metric, baseline, manifest)
        classes = per_class_table(results, metric, _mask_labels(manifest), _class_names(manifest))
        if not classes.empty:
            blocks.append(_Paragraph(f"{label} per class (mean over seeds and the test cases that contain the "
                                     "class; a class absent from a case is not scored there):"))
            blocks.append(_Table(classes))
        if k == 0:
            blocks += _class_presence_blocks(results, manifest)
            blocks += _subgroup_blocks(results, manifest, metric)
            fit_blocks = _training_fit_blocks(training_fit, training_curves, manifest, plots_dir)
            plot_paths += [block.path for block in fit_blocks if isinstance(block, _Image)]
            blocks += fit_blocks
        if metric in SET_LEVEL_METRICS:
            boxes = plot_per_run(per_run, metric, plots_dir / f"{metric}_per_run.png")
            blocks.append(_Image(boxes, f"{label} per run"))
        else:
            boxes = plot_per_case(results, metric, plots_dir / f"{metric}_per_case.png")
            blocks.append(_Image(boxes, f"{label} per test case"))
        plot_paths += [curve, boxes]

    blocks += _classification_blocks(results, manifest)
    if overlays:
        blocks.append(_Heading("Predictions on test cases", 2))
        blocks.append(_Paragraph("The best, median and worst test cases by the primary metric (averaged over the "
                                 "arms): one axial slice (the one with the most ground truth), the ground truth and "
                                 "each arm's prediction; the patient's right on the viewer's left. The PNGs are in "
                                 "`overlays/`."))
        blocks += [_Image(Path(path), caption) for caption, path in overlays]
    if costs is not None and not costs.empty:
        blocks.append(_Heading("What each arm cost", 2))
        blocks.append(_Paragraph("Per cell (one fine-tuning run), mean over seeds: wall-clock seconds of training and "
                                 "scoring, and the images the networks were run on in training (student and "
                                 "teacher forward passes; a semi-supervised step also runs on unlabeled patches)."))
        blocks.append(_Table(costs))
    if teacher is not None and not teacher.empty:
        blocks += _teacher_blocks(teacher, manifest)
    blocks.append(_Heading("How to read this report", 2))
    blocks.append(_Paragraph(how_to_read(metrics, baseline, resample_seeds)))
    if manifest:
        blocks.append(_Heading("Run", 2))
        env = manifest.get("environment", {})
        commit = env.get("git_commit")
        versions = ", ".join(f"{name} {env[name]}" for name in _VERSIONS if env.get(name))
        facts = [
            f"- started {manifest.get('started', '?')}, finished {manifest.get('finished', '?')}",
            f"- medssl commit `{commit or 'unknown'}`" + (" (`+dirty`: with local changes)" if commit and
                                                          commit.endswith("+dirty") else ""),
            f"- {versions}" if versions else "- package versions: see `manifest.json`",
            f"- data fingerprint `{manifest.get('data_fingerprint', '?')}`; the full record is in `manifest.json`",
        ]
        recipe = recipe_line(manifest)
        if recipe:
            facts.insert(0, recipe)
        blocks.append(_Paragraph("\n".join(facts)))

    summary_all = pd.concat(summaries, ignore_index=True)
    summary_path = out_dir / "summary.csv"
    with atomic_write(summary_path, "w", encoding="utf-8", newline="") as handle:
        summary_all.to_csv(handle, index=False)
    markdown_path = out_dir / "report.md"
    atomic_write_text(markdown_path, _render_markdown(blocks, out_dir))
    html_path = out_dir / "report.html"
    atomic_write_text(html_path, _render_html(blocks, title))
    log.info("report written to %s (%d metric(s), %d plot(s))", markdown_path, len(metrics), len(plot_paths))
    return ReportFiles(results_path, summary_path, markdown_path, html_path, plot_paths, summary_all)


def read_results(path: str | Path) -> pd.DataFrame:
    """Read a ``results.csv`` back with stable dtypes (case ids as text)."""
    frame = pd.read_csv(path, dtype={"case_id": str, "init": str, "metric": str})
    return frame


def load_and_report(results_path: str | Path, out_dir: str | Path | None = None, **kwargs) -> ReportFiles:
    """Re-render a report from an existing ``results.csv`` (e.g. with other metrics)."""
    results_path = Path(results_path)
    return write_report(read_results(results_path), out_dir or results_path.parent, **kwargs)

