"""The paper's experiments: the grid of systems x seeds, its cache, report and plots.

    runner  = ExperimentRunner("outputs/experiments")
    specs   = runner.plan(["data/toy"], SYSTEMS, seeds=[0, 1, 2], features_dirs=["data/toy-features"])
    markdown = build_report(results_document(runner.run_grid(specs), specs))

`examples/run_experiments.py` does all of it from the command line.
"""

from .plots import make_plots, plot_history_length, plot_systems
from .published import PUBLISHED, PUBLISHED_TABLE2, PublishedFigure, published_for
from .report import SYSTEM_LABELS, Statistic, aggregate, build_report, missing_runs, relative_improvement
from .runner import (BASELINE_SYSTEMS, LLM_SYSTEMS, SYSTEMS, ExperimentRunner, RunSpec, data_fingerprint, environment,
                     features_fingerprint, results_document)

__all__ = ["BASELINE_SYSTEMS", "LLM_SYSTEMS", "PUBLISHED", "PUBLISHED_TABLE2", "SYSTEMS", "SYSTEM_LABELS",
           "ExperimentRunner", "PublishedFigure", "RunSpec", "Statistic", "aggregate", "build_report", "data_fingerprint",
           "environment", "features_fingerprint", "make_plots", "missing_runs", "plot_history_length", "plot_systems",
           "published_for", "relative_improvement", "results_document"]
