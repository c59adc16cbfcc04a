"""What a reader of a study must see before its means: checks of the results, as tables and warnings.

* :func:`class_presence_table`: per class, how many test cases contain it (a class absent from a
  case is not scored there, see :mod:`medssl.eval.metrics`) and, per initialisation, on how many
  of them it was predicted at all;
* :func:`never_predicted_warning`: a class present in test cases but predicted on none of them by
  some initialisation at some budget: its Dice there is 0 on every such case, the network has not
  learned it, and a mean over classes hides that;
* :func:`lost_class_warning`: a run (one seed) that predicted a class on none of the test cases
  containing it while other runs of the same initialisation and budget did: training that fell
  into a state without the class, which a mean over seeds shows only as a lower mean;
* :func:`labels_matter_warning`: the baseline (scratch) arm must rise with labels. If it does not
  (flat, or falling beyond the seed noise), the fine-tuning is too short (or too easy) for labels
  to matter, and a difference between initialisations says which one starts learning sooner, not
  what pretraining is worth (docs/studies.md, "A second warning");
* :func:`whole_pool_note`: a budget that uses the whole training pool gives every seed the same
  labeled cases, so its seed spread is only the training noise.

Each function takes the tidy results (:data:`medssl.study.summary.RESULT_COLUMNS`) and returns a
table or a text (None when there is nothing to say).

Example:
    >>> import pandas as pd
    >>> rows = [dict(init="scratch", budget=float(b), n_labeled=b, seed=s, fold=0, case_id="a",
    ...              metric="dice", value=v) for b, v in ((2, 0.46), (4, 0.45), (8, 0.44)) for s in (0, 1)]
    >>> print(labels_matter_warning(pd.DataFrame(rows), "dice", steps=150))  # doctest: +ELLIPSIS
    **Warning: `scratch` does not rise with labels** (Dice 0.460 with 2 cases, 0.450 with 4 cases, 0.440 with 8 cases): it falls from 2 to 4 cases ...
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd

from medssl.study.plots import metric_label
from medssl.study.summary import higher_is_better, per_run_table


def _class_indices(results: pd.DataFrame) -> list[int]:
    names = results.loc[results["metric"].astype(str).str.match(r"^present_\d+$"), "metric"].unique()
    return sorted(int(str(m).rsplit("_", 1)[1]) for m in names)


def _presence(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (init, budget, n_labeled, seed, fold, case_id, class): present, predicted."""
    sub = results[results["metric"].astype(str).str.match(r"^(present|predicted)_\d+$")].copy()
    if sub.empty:
        return pd.DataFrame(columns=["init", "n_labeled", "seed", "case_id", "class", "present", "predicted"])
    parts = sub["metric"].astype(str).str.rsplit("_", n=1, expand=True)
    sub["kind"], sub["class"] = parts[0], parts[1].astype(int)
    wide = sub.pivot_table(index=["init", "budget", "n_labeled", "seed", "fold", "case_id", "class"],
                           columns="kind", values="value", aggfunc="first").reset_index()
    return wide


def class_presence_table(results: pd.DataFrame, class_label: Callable[[int], str] = lambda k: f"class {k}"
                         ) -> pd.DataFrame:
    """Per class: the test cases that contain it (``k of N``) and, per initialisation at its largest
    budget, the share of (seed, case) runs where it was predicted on a case containing it."""
    presence = _presence(results)
    if presence.empty:
        return pd.DataFrame()
    n_cases = results["case_id"].nunique()
    rows = []
    for k in _class_indices(results):
        mine = presence[presence["class"] == k]
        containing = mine.loc[mine["present"] == 1, "case_id"].nunique()
        row = {"class": class_label(k), "test cases containing it": f"{containing} of {n_cases}"}
        for init in dict.fromkeys(results["init"]):
            at = mine[mine["init"] == init]
            if at.empty:
                continue
            largest = at["n_labeled"].max()
            present = at[(at["n_labeled"] == largest) & (at["present"] == 1)]
            label = f"`{init}` predicts it where present ({int(largest)} cases)"
            row[label] = "n/a" if present.empty else f"{present['predicted'].mean():.0%}"
        rows.append(row)
    return pd.DataFrame(rows)


def never_predicted_warning(results: pd.DataFrame, class_label: Callable[[int], str] = lambda k: f"class {k}"
                            ) -> str | None:
    """A warning naming each class that an initialisation at a budget predicted on none of the
    test cases containing it (over all its seeds); None when every class is predicted somewhere."""
    presence = _presence(results)
    if presence.empty:
        return None
    present = presence[presence["present"] == 1]
    never = present.groupby(["class", "init", "n_labeled"], sort=True)["predicted"].max()
    never = never[never == 0]
    if never.empty:
        return None
    lines = []
    for k, frame in never.reset_index().groupby("class", sort=True):
        where = []
        for init, runs in frame.groupby("init", sort=False):
            budgets = ", ".join(str(int(n)) for n in sorted(runs["n_labeled"]))
            where.append(f"`{init}` at {budgets} labeled case(s)")
        lines.append(f"- {class_label(int(k))}: never predicted on a test case containing it by "
                     + "; ".join(where))
    return ("**Warning: a class is never predicted where it is present.** Its Dice is 0 on every test "
            "case containing it: the network has not learned it, and a mean over classes hides that. "
            "Remedies: more labeled cases that contain it, `finetune.class_balanced: true` (patch "
            "centres drawn per class), more `finetune.steps`.\n\n" + "\n".join(lines))


def lost_class_warning(results: pd.DataFrame, class_label: Callable[[int], str] = lambda k: f"class {k}"
                       ) -> str | None:
    """A warning naming each run (initialisation, budget, seed, fold) that predicted a class on none
    of the test cases containing it, where at least one other run of the same initialisation and
    budget did predict it (arms that never predict it are :func:`never_predicted_warning`'s); None
    when there is no such run.

    On the built-in cohort a few runs lost the kidneys this way (kidney Dice 0.00 where the other
    seeds reached 0.5-0.7), and a change of learning rate alone moved one such cell from one outcome
    to the other: an unstable recipe, not missing information.

    >>> rows = [dict(init="scratch", budget=8.0, n_labeled=8, seed=s, fold=0, case_id="a", metric=m, value=v)
    ...         for s in (0, 1, 2) for m, v in (("present_2", 1), ("predicted_2", int(s != 1)))]
    >>> print(lost_class_warning(pd.DataFrame(rows), lambda k: "kidneys"))  # doctest: +ELLIPSIS
    **Warning: a run lost a class that other runs learned.** ...
    - kidneys: `scratch` at 8 labeled case(s), seed 1 (1 of 3 runs)
    """
    presence = _presence(results)
    if presence.empty:
        return None
    present = presence[presence["present"] == 1]
    runs = present.groupby(["class", "init", "n_labeled", "seed", "fold"], sort=True)["predicted"].max().reset_index()
    lines = []
    for (k, init, n_labeled), group in runs.groupby(["class", "init", "n_labeled"], sort=True):
        lost = group[group["predicted"] == 0]
        if lost.empty or len(lost) == len(group):
            continue
        which = ", ".join(f"seed {int(r.seed)}" + (f" fold {int(r.fold)}" if int(r.fold) else "")
                          for r in lost.itertuples())
        lines.append(f"- {class_label(int(k))}: `{init}` at {int(n_labeled)} labeled case(s), {which} "
                     f"({len(lost)} of {len(group)} runs)")
    if not lines:
        return None
    return ("**Warning: a run lost a class that other runs learned.** It predicted the class on none of the "
            "test cases containing it, so its Dice there is 0 and the arm's mean over seeds falls with it. "
            "Training fell into a state without the class: compare that run's loss with the others', and "
            "judge the arm from several seeds, never one.\n\n" + "\n".join(lines))


def labels_matter_warning(results: pd.DataFrame, metric: str, *, baseline: str = "scratch",
                          steps: int | None = None) -> str | None:
    """A warning when the ``baseline`` arm's ``metric`` does not rise with labels, else None.

    With the per-run values ``v[budget, seed]`` (the seeds are paired across budgets: nested
    labeled sets), the rise from the smallest to the largest budget is ``d_s = v[max, s] - v[min, s]``
    (sign flipped for lower-is-better metrics). Noise is its standard error over seeds,
    ``se = sd(d) / sqrt(S)`` (0 with one seed). The curve fails the check when ``mean(d) <= se``
    (flat within noise) or when any step between consecutive budgets falls by more than its own
    standard error.
    """
    runs = per_run_table(results[results["init"] == baseline], metric) if (results["init"] == baseline).any() \
        else pd.DataFrame()
    if runs.empty or runs["n_labeled"].nunique() < 2:
        return None
    sign = 1.0 if higher_is_better(metric) else -1.0
    wide = runs.pivot_table(index="seed", columns="n_labeled", values="value").dropna()
    if wide.empty:
        return None
    budgets = list(wide.columns)

    def rise(low, high) -> tuple[float, float]:
        d = sign * (wide[high] - wide[low]).to_numpy()
        se = float(np.std(d, ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
        return float(d.mean()), se

    overall, overall_se = rise(budgets[0], budgets[-1])
    falls = []
    for low, high in zip(budgets[:-1], budgets[1:]):
        step, step_se = rise(low, high)
        if step < 0 and step < -step_se:
            falls.append((low, high))
    if overall > overall_se and not falls:
        return None
    means = wide.mean()
    curve = ", ".join(f"{means[n]:.3f} with {int(n)} cases" for n in budgets)
    label = metric_label(metric)
    reason = (f"it falls from {int(falls[0][0])} to {int(falls[0][1])} cases by more than the seed noise"
              if falls else f"its rise from {int(budgets[0])} to {int(budgets[-1])} cases "
              f"({overall:+.3f}) is within the seed noise (± {overall_se:.3f})")
    length = f"`finetune.steps` (now {steps}; try 4x)" if steps else "`finetune.steps` (try 4x)"
    return (f"**Warning: `{baseline}` does not rise with labels** ({label} {curve}): {reason}. At this "
            "fine-tuning length the labels do not matter yet, so a difference between initialisations "
            "says which one starts learning sooner, not what pretraining is worth. Remedy: fine-tune "
            f"longer, {length}, and check that `{baseline}` rises with labels before comparing.")


def whole_pool_note(results: pd.DataFrame, pool_sizes: Sequence[int]) -> str | None:
    """A note when a budget labels the whole training pool: every seed then trains on the same
    cases, and its spread over seeds is only the training noise (initial weights, patch order)."""
    if not pool_sizes:
        return None
    pool = min(int(p) for p in pool_sizes)
    budgets = sorted(int(n) for n in results["n_labeled"].unique() if int(n) >= pool)
    if not budgets or results["seed"].nunique() < 2:
        return None
    return (f"Note: the budget of {budgets[0]} labeled cases is the whole training pool, so every seed "
            "trains on the same cases; its spread over seeds is the training noise only, and with a "
            "deterministic evaluation (a probe) every seed gives the same result.")
