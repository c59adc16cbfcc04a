"""Label-efficiency studies and their reports.

- :func:`run_label_efficiency` / :func:`run_study_from_config` (``medssl study``): budgets x seeds x
  initialisations (x folds), resumable, patient-level fixed test set;
- :func:`write_report`: ``results.csv``, ``summary.csv``, plots, ``report.md``, ``report.html``;
- :func:`summarize`: mean, sd over seeds, bootstrap interval, paired difference to scratch.
"""

from medssl.study.label_efficiency import run_label_efficiency, run_study_from_config
from medssl.study.report import ReportFiles, load_and_report, write_report
from medssl.study.summary import RESULT_COLUMNS, summarize

__all__ = ["RESULT_COLUMNS", "ReportFiles", "load_and_report", "run_label_efficiency", "run_study_from_config",
           "summarize", "write_report"]
